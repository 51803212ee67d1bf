"""Evaluation of a TD-MPC2 agent: returns, planner calls per step, decision latency, optional video."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..envs import make_env
from ..files import atomic_write_bytes, sha256_of
from ..progress import progress_bar
from ..rng import derive_seed, seeded
from ..seeds import RESET_SEED_BASE, reset_seed
from ..tdmpc2.checkpoints import agent_from_checkpoint, load_agent
from .clocked import ClockedExecutor, resolve_clock
from .correctors import load_corrector
from .episodes import play_episodes
from .executor import COUNTERS, TIMERS, SpeculativeExecutor
from .modes import ExecutionSpec

EVAL_SEED_OFFSET = RESET_SEED_BASE["evaluation"]  # evaluation episodes never share seeds with other kinds


@dataclass
class EvalResult:
    """Summary of evaluation episodes; `returns` holds one float per episode, counts are summed over episodes
    (each counted by the executor where the work happened), seconds too."""

    task: str
    mode: str
    returns: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    planner_calls: int = 0
    encoder_calls: int = 0
    policy_calls: int = 0
    corrector_calls: int = 0
    extensions: int = 0
    misses: int = 0
    speculative_steps: int = 0
    plans_started: int = 0
    plans_used: int = 0
    plans_discarded: int = 0
    plans_cancelled: int = 0
    steps_plan: int = 0
    steps_corrected: int = 0
    steps_extension: int = 0
    steps_prior: int = 0
    deadline_misses: int = 0
    decisions: int = 0
    decision_seconds: float = 0.0
    plan_seconds: float = 0.0
    encode_seconds: float = 0.0
    policy_seconds: float = 0.0
    verify_seconds: float = 0.0
    correct_seconds: float = 0.0
    extend_seconds: float = 0.0
    predict_seconds: float = 0.0
    wait_seconds: float = 0.0
    late_seconds: float = 0.0
    teacher_sq_error: float = 0.0
    teacher_steps: int = 0
    episode_planner_calls: list = field(default_factory=list)
    late_decisions: list = field(default_factory=list)  # real clock: [episode, decision, ms past the deadline]
    clock: dict | None = None  # the clock the episodes ran under: P, L, d, where L came from, realtime (clock.py)
    video: str | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.returns)) if self.returns else float("nan")

    @property
    def stderr(self) -> float:
        n = len(self.returns)
        return float(np.std(self.returns, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    def per_step(self, count: int | float) -> float:
        return count / max(self.decisions, 1)

    @property
    def planner_calls_per_step(self) -> float:
        return self.per_step(self.planner_calls)

    @property
    def ms_per_decision(self) -> float:
        return 1e3 * self.per_step(self.decision_seconds)

    @property
    def replan_rate(self) -> float:
        """Misses over verified speculative steps (adaptive): how often a verification triggered a replan."""
        verified = self.misses + self.speculative_steps
        return self.misses / verified if verified else 0.0

    @property
    def teacher_action_mse(self) -> float | None:
        return self.teacher_sq_error / self.teacher_steps if self.teacher_steps else None

    def summary(self) -> dict:
        d = asdict(self)
        d.update(episodes=len(self.returns), return_mean=self.mean, return_std=self.std, return_stderr=self.stderr,
                 planner_calls_per_step=self.planner_calls_per_step, ms_per_decision=self.ms_per_decision,
                 corrector_calls_per_step=self.per_step(self.corrector_calls),
                 encoder_calls_per_step=self.per_step(self.encoder_calls),
                 policy_calls_per_step=self.per_step(self.policy_calls), replan_rate=self.replan_rate,
                 teacher_action_mse=self.teacher_action_mse,
                 deadline_misses_per_step=self.per_step(self.deadline_misses),
                 **{f"{k}_ms_per_step": 1e3 * self.per_step(getattr(self, f"{k}_seconds"))
                    for k in TIMERS})
        return d


SUMMED = tuple(k for k in COUNTERS if k != "decisions") + tuple(f"{k}_seconds" for k in TIMERS) + (
    "teacher_sq_error", "teacher_steps")


def episode_seed(seed: int, index: int) -> int:
    return reset_seed("evaluation", seed, index)


def setting_planner(agent, execution=None):
    """The planner an ExecutionSpec plans with: None for the agent's own, else one with its planner overrides."""
    if execution is None or not execution.planner_overrides:
        return None


    settings = replace(agent.planner_settings, **dict(execution.planner_overrides))
    return agent.planner.with_settings(settings)


def build_executor(agent, execution=None, batch: int = 1, corrector=None, teacher_seed: int = 0,
                   planner_seed: int = 0):
    """The executor of an ExecutionSpec (baseline if None), with its planner overrides and corrector; under a
    clock (resolved) a ClockedExecutor whose planner draws from its own generator seeded with `planner_seed`."""
    execution = execution or ExecutionSpec()
    planner = setting_planner(agent, execution)
    if execution.clock is not None:
        if batch != 1:
            raise ValueError("a clock runs one environment at a time")
        return ClockedExecutor(agent, execution.settings, execution.clock, corrector=corrector, planner=planner,
                               planner_seed=planner_seed)
    return SpeculativeExecutor(agent, execution.settings, batch=batch, corrector=corrector,
                               teacher=execution.measure_teacher, teacher_seed=teacher_seed, planner=planner)


def evaluate_episodes(agent, envs: list, seed: int, indices: list[int], execution=None, corrector=None,
                      frames: list | None = None) -> list[dict]:
    """Evaluation episodes `indices` of `seed`, one per environment, planned as one batch. Every mode's episode
    i resets its environment with seed+10000+i, so it starts where baseline's episode i starts; the torch stream
    is seeded from the first index, so a single episode's record depends only on the weights, the setting, the
    seed and the index (evaluator actors reproduce the sequential run)."""
    first = episode_seed(seed, indices[0])
    executor = build_executor(agent, execution, len(indices), corrector, teacher_seed=derive_seed(first, 7),
                              planner_seed=first)  # a clocked planner's generator: seeded like the global stream
    with seeded(first):
        records = play_episodes(executor, envs[:len(indices)], [episode_seed(seed, i) for i in indices], frames)
    for index, rec in zip(indices, records):
        rec["episode"] = index
        if execution is not None and execution.clock is not None:
            rec["clock"] = execution.clock.record()
    return records


def evaluate_episode(agent, env, seed: int, index: int, frames: list | None = None, execution=None,
                     corrector=None) -> dict:
    """One evaluation episode (see evaluate_episodes). Returns its record: episode, return, length, seconds and
    the executor's counts (planner_calls, encoder_calls, ...)."""
    return evaluate_episodes(agent, [env], seed, [index], execution, corrector, frames)[0]


def result_from_records(task: str, mode: str, records: list[dict]) -> EvalResult:
    """An EvalResult from per-episode records (in episode order, whoever ran them)."""
    result = EvalResult(task=task, mode=mode)
    result.clock = next((r["clock"] for r in records if r.get("clock")), None)
    for r in sorted(records, key=lambda r: r["episode"]):
        result.returns.append(float(r["return"]))
        result.lengths.append(int(r["length"]))
        result.decisions += int(r["length"])
        result.decision_seconds += float(r["seconds"])
        result.episode_planner_calls.append(int(r["planner_calls"]))
        for key in SUMMED:
            setattr(result, key, getattr(result, key) + type(getattr(result, key))(r.get(key, 0)))
        result.late_decisions += [[int(r["episode"]), *x] for x in r.get("late_decisions") or []]
    return result


def load_execution_corrector(execution, agent, teacher_sha256: str | None):
    """The corrector an ExecutionSpec names (None when it names none), checked against the teacher."""
    if execution is None or execution.corrector_checkpoint is None:
        return None

    corrector, _ = load_corrector(execution.corrector_checkpoint, teacher_sha256=teacher_sha256,
                                  latent_dim=agent.model.dims.latent_dim, history_len=execution.settings.history_len,
                                  device=agent.device)
    return corrector


def evaluation_setup(ckpt: dict, overrides: dict, device: str, seed: int, execution=None,
                     teacher_sha256: str | None = None) -> dict:
    """What an evaluator needs, built once: the checkpoint's agent, its corrector and an environment."""
    agent, _, _ = agent_from_checkpoint(ckpt, overrides, device)
    execution = with_clock(execution, agent, ckpt["task"], seed)
    return {"agent": agent, "env": make_env(ckpt["task"], seed + EVAL_SEED_OFFSET), "seed": seed,
            "execution": execution, "corrector": load_execution_corrector(execution, agent, teacher_sha256)}


def measure_clocks(checkpoint: str, specs: list, overrides: dict, device: str, seed: int) -> list:
    """`specs` with every clock left to be measured measured, on the checkpoint's agent (loaded once, only if one
    is): a run's episodes, wherever they are played, then share one d."""
    if all(s.clock is None or s.clock.resolved for s in specs):
        return list(specs)

    agent, _, ckpt = load_agent(checkpoint, overrides, device, None)
    return [with_clock(s, agent, ckpt["task"], seed) for s in specs]


def with_clock(execution, agent, task: str, seed: int):
    """`execution` with its clock's planner latency measured here, before any episode, if it was left to be."""
    if execution is None or execution.clock is None or execution.clock.resolved:
        return execution

    return resolve_clock(execution, agent, task, seed, setting_planner(agent, execution))


def evaluation_episode(state: dict, index: int) -> list[dict]:
    """Per-episode function of evaluator actors: the one record of evaluation episode `index`."""
    return [evaluate_episode(state["agent"], state["env"], state["seed"], index, execution=state["execution"],
                             corrector=state["corrector"])]


def evaluate(agent, task: str, episodes: int, seed: int, *, video_path: str | None = None,
             show_progress: bool = False, execution=None, corrector=None, num_envs: int = 1,
             desc: str | None = None, indices: list[int] | None = None, on_record=None) -> EvalResult:
    """Evaluate `agent` (eval mode) on `episodes` episodes under `execution` (an ExecutionSpec; None = baseline,
    replanning each step). num_envs > 1 plans that many episodes as one batch (one executor row each); their
    records then share a random stream, so they differ from the num_envs=1 run's, which evaluator actors equal.
    `indices`: run these episode indices instead of 0..episodes-1; `on_record(record)` gets each episode's
    record as soon as it is finished (a log that a resumed comparison reads).

    Each episode group seeds its own torch stream, so evaluating never moves the caller's stream."""
    execution = with_clock(execution or ExecutionSpec(), agent, task, seed)
    todo = list(range(episodes)) if indices is None else list(indices)
    envs = [make_env(task, seed + EVAL_SEED_OFFSET) for _ in range(max(1, min(num_envs, len(todo))))]
    records, video = [], None
    try:
        with progress_bar(total=len(todo), desc=desc or f"evaluate {task} {execution.label}", unit="ep",
                          enabled=show_progress) as bar:
            for first in range(0, len(todo), len(envs)):
                group = todo[first:first + len(envs)]
                frames = [] if (video_path and first == 0) else None
                done = evaluate_episodes(agent, envs, seed, group, execution, corrector, frames)
                records += done
                for rec in done if on_record else ():
                    on_record(rec)
                if frames:
                    video = str(write_video(frames, video_path))
                bar.update(len(group))
                bar.set_postfix(ret=f"{records[-1]['return']:.1f}")
    finally:
        for env in envs:
            env.close()
    result = result_from_records(task, execution.settings.mode, records)
    result.video = video
    return result


def evaluate_checkpoint(checkpoint: str, episodes: int, seed: int, *, overrides: dict | None = None,
                        device: str = "auto", task: str | None = None, video_path: str | None = None,
                        show_progress: bool = False, execution=None, num_envs: int = 1,
                        indices: list[int] | None = None, on_record=None):
    """Load an agent checkpoint and evaluate it the way `gym-qwen evaluate` does (the same seeds give the same
    returns). `overrides`: agent keys to change, e.g. planner settings; `indices`, `on_record`: see evaluate.
    Returns (EvalResult, checkpoint dict)."""
    agent, _, ckpt = load_agent(checkpoint, overrides or {}, device, task)

    corrector = load_execution_corrector(execution, agent, sha256_of(checkpoint))
    torch.manual_seed(seed)
    result = evaluate(agent, ckpt["task"], episodes, seed, video_path=video_path, show_progress=show_progress,
                      execution=execution, corrector=corrector, num_envs=num_envs, indices=indices,
                      on_record=on_record)
    return result, ckpt


def write_video(frames: list, path: str | Path, fps: int = 25) -> Path:
    """Write RGB frames as GIF (or MP4 if the path says so and an ffmpeg plugin is installed), atomically."""
    # imageio is imported only to write a video
    import imageio.v3 as iio


    path = Path(path)
    ext = path.suffix.lower() or ".gif"
    if ext == ".gif":
        data = iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=int(1000 / fps), loop=0)
    else:
        data = iio.imwrite("<bytes>", np.stack(frames), extension=ext, fps=fps)
    return atomic_write_bytes(path, lambda f: f.write(data))
