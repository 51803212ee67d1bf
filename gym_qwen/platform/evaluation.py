"""Evaluation of a TD-MPC2 agent: returns, planner calls per step, decision latency, optional video."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .envs import make_env
from .progress import progress_bar
from .rng import seeded

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never share seeds with training episodes


@dataclass
class EvalResult:
    """Summary of evaluation episodes; `returns` holds one float per episode."""

    task: str
    mode: str
    returns: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    planner_calls: int = 0
    decisions: int = 0
    decision_seconds: float = 0.0
    video: str | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.returns)) if self.returns else float("nan")

    @property
    def planner_calls_per_step(self) -> float:
        return self.planner_calls / max(self.decisions, 1)

    @property
    def ms_per_decision(self) -> float:
        return 1e3 * self.decision_seconds / max(self.decisions, 1)

    def summary(self) -> dict:
        d = asdict(self)
        d.update(episodes=len(self.returns), return_mean=self.mean, return_std=self.std,
                 planner_calls_per_step=self.planner_calls_per_step, ms_per_decision=self.ms_per_decision)
        return d


def run_episode(agent, env, seed: int, frames: list | None = None):
    """One evaluation episode with replanning at every step. Returns (return, length, decision seconds)."""
    obs, _ = env.reset(seed=seed)
    total, steps, seconds, done = 0.0, 0, 0.0, False
    if frames is not None:
        frames.append(env.render())
    while not done:
        start = time.perf_counter()
        action = agent.act(obs, t0=steps == 0, eval_mode=True)
        seconds += time.perf_counter() - start
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        steps += 1
        done = terminated or truncated
        if frames is not None:
            frames.append(env.render())
    return total, steps, seconds


def evaluate_episode(agent, env, seed: int, index: int, frames: list | None = None) -> dict:
    """Evaluation episode `index` of `seed`: env reset seed and torch stream both seed+10000+index, so the
    record depends only on the weights, the seed and the index. Returns {episode, return, length, seconds,
    planner_calls}."""
    episode_seed = seed + EVAL_SEED_OFFSET + index
    with seeded(episode_seed):
        ret, length, seconds = run_episode(agent, env, episode_seed, frames)
    return {"episode": index, "return": ret, "length": length, "seconds": seconds, "planner_calls": length}


def result_from_records(task: str, mode: str, records: list[dict]) -> EvalResult:
    """An EvalResult from per-episode records (in episode order, whoever ran them)."""
    result = EvalResult(task=task, mode=mode)
    for r in sorted(records, key=lambda r: r["episode"]):
        result.returns.append(float(r["return"]))
        result.lengths.append(int(r["length"]))
        result.decisions += int(r["length"])
        result.planner_calls += int(r["planner_calls"])
        result.decision_seconds += float(r["seconds"])
    return result


def evaluation_setup(ckpt: dict, overrides: dict, device: str, seed: int) -> dict:
    """What an evaluator needs, built once: the checkpoint's agent and an environment of its task."""
    from .checkpoints import agent_from_checkpoint

    agent, _, _ = agent_from_checkpoint(ckpt, overrides, device)
    return {"agent": agent, "env": make_env(ckpt["task"], seed + EVAL_SEED_OFFSET), "seed": seed}


def evaluation_episode(state: dict, index: int) -> list[dict]:
    """Per-episode function of evaluator actors: the one record of evaluation episode `index`."""
    return [evaluate_episode(state["agent"], state["env"], state["seed"], index)]


def evaluate(agent, task: str, episodes: int, seed: int, *, video_path: str | None = None,
             show_progress: bool = False, mode: str = "baseline") -> EvalResult:
    """Evaluate `agent` (eval mode, replanning each step) on `episodes` episodes (see evaluate_episode).

    Each episode seeds its own torch stream, so an episode's return does not depend on which episodes ran
    before it (evaluator actors reproduce the sequential run) and evaluating never moves the caller's stream."""
    if mode != "baseline":
        raise ValueError(f"evaluation mode {mode!r} is not available yet; choose baseline")
    env = make_env(task, seed + EVAL_SEED_OFFSET)
    records, video = [], None
    try:
        with progress_bar(total=episodes, desc=f"evaluate {task}", unit="ep", enabled=show_progress) as bar:
            for i in range(episodes):
                frames = [] if (video_path and i == 0) else None
                records.append(evaluate_episode(agent, env, seed, i, frames))
                if frames:
                    video = str(write_video(frames, video_path))
                bar.update(1)
                bar.set_postfix(ret=f"{records[-1]['return']:.1f}")
    finally:
        env.close()
    result = result_from_records(task, mode, records)
    result.video = video
    return result


def evaluate_checkpoint(checkpoint: str, episodes: int, seed: int, *, overrides: dict | None = None,
                        device: str = "auto", task: str | None = None, video_path: str | None = None,
                        show_progress: bool = False, mode: str = "baseline"):
    """Load an agent checkpoint and evaluate it the way `gym-qwen evaluate` does (the same seeds give the same
    returns). `overrides`: agent keys to change, e.g. planner settings. Returns (EvalResult, checkpoint dict)."""
    import torch

    from .checkpoints import load_agent

    agent, _, ckpt = load_agent(checkpoint, overrides or {}, device, task)
    torch.manual_seed(seed)
    result = evaluate(agent, ckpt["task"], episodes, seed, video_path=video_path, show_progress=show_progress,
                      mode=mode)
    return result, ckpt


def write_video(frames: list, path: str | Path, fps: int = 25) -> Path:
    """Write RGB frames as GIF (or MP4 if the path says so and an ffmpeg plugin is installed), atomically."""
    import imageio.v3 as iio

    from .checkpoints import atomic_write_bytes

    path = Path(path)
    ext = path.suffix.lower() or ".gif"
    if ext == ".gif":
        data = iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=int(1000 / fps), loop=0)
    else:
        data = iio.imwrite("<bytes>", np.stack(frames), extension=ext, fps=fps)
    return atomic_write_bytes(path, lambda f: f.write(data))
