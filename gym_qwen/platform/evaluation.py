"""Evaluation of a TD-MPC2 agent: returns, planner calls per step, decision latency, optional video."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .envs import make_env
from .progress import progress_bar

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


def evaluate(agent, task: str, episodes: int, seed: int, *, video_path: str | None = None,
             show_progress: bool = False, mode: str = "baseline") -> EvalResult:
    """Evaluate `agent` (eval mode, replanning each step) on `episodes` episodes seeded seed+10000+i."""
    if mode != "baseline":
        raise ValueError(f"evaluation mode {mode!r} is not available yet; choose baseline")
    env = make_env(task, seed + EVAL_SEED_OFFSET)
    result = EvalResult(task=task, mode=mode)
    try:
        with progress_bar(total=episodes, desc=f"evaluate {task}", unit="ep", enabled=show_progress) as bar:
            for i in range(episodes):
                frames = [] if (video_path and i == 0) else None
                ret, length, seconds = run_episode(agent, env, seed + EVAL_SEED_OFFSET + i, frames)
                result.returns.append(ret)
                result.lengths.append(length)
                result.decisions += length
                result.planner_calls += length
                result.decision_seconds += seconds
                if frames:
                    result.video = str(write_video(frames, video_path))
                bar.update(1)
                bar.set_postfix(ret=f"{ret:.1f}")
    finally:
        env.close()
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
