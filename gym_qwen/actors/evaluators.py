"""Evaluation spread over evaluator actors (an EpisodeFarm): TD-MPC2 checkpoints, equal to the sequential run for the
same seeds, and Decision Transformer checkpoints (dt-test)."""
from __future__ import annotations

import ray

from gym_qwen.platform.dt.evaluate import dt_eval_episode, dt_eval_setup, result_of
from gym_qwen.platform.files import sha256_of
from gym_qwen.platform.progress import progress_bar
from gym_qwen.platform.speculative.evaluation import (
    evaluation_episode, evaluation_setup, load_execution_corrector, result_from_records)
from gym_qwen.platform.speculative.modes import ExecutionSpec
from gym_qwen.platform.tdmpc2.checkpoints import agent_from_checkpoint, check_compatible, load_checkpoint

from .cluster import ray_session
from .episode_farm import EpisodeFarm


def evaluate_with_actors(checkpoint: str, episodes: int, seed: int, *, num_workers: int, cpus: float = 1.0,
                         overrides: dict | None = None, task: str | None = None, ray_address: str | None = None,
                         show_progress: bool = False, execution=None, indices: list[int] | None = None,
                         on_record=None, scale_wait: float = 0.0):
    """`gym-qwen evaluate ... num_workers=N`: episodes 0..episodes-1 (or `indices`) over N CPU evaluator actors,
    each holding the checkpoint's agent (the checkpoint travels once through the object store); `on_record`
    gets each episode's record as it arrives; `scale_wait`: see EpisodeFarm. Returns (EvalResult, ckpt)."""
    execution = execution or ExecutionSpec()
    ckpt = load_checkpoint(checkpoint)
    check_compatible(ckpt, task=task, path=checkpoint)
    # Everything an evaluator builds is built once here first: a bad checkpoint, override or corrector fails in
    # one line like the sequential run, instead of in every actor's constructor.

    agent, _, _ = agent_from_checkpoint(ckpt, overrides or {}, "cpu", task, path=checkpoint)
    load_execution_corrector(execution, agent, sha256_of(checkpoint))
    del agent
    todo = list(range(episodes)) if indices is None else list(indices)

    def arrived(index, table):
        bar.update(1)
        for record in table.to_pylist() if on_record else ():
            on_record(record)

    with ray_session(ray_address):
        setup_args = (ray.put(ckpt), overrides or {}, "cpu", seed, execution, sha256_of(checkpoint))
        with EpisodeFarm(evaluation_setup, evaluation_episode, max(1, min(num_workers, len(todo))), cpus=cpus,
                         setup_args=setup_args, what="evaluator", scale_wait=scale_wait) as farm, \
                progress_bar(total=len(todo), desc=f"evaluate {ckpt['task']} {execution.label} ({num_workers} actors)",
                             unit="ep", enabled=show_progress) as bar:
            table = farm.run(todo, on_episode=arrived)
    return result_from_records(ckpt["task"], execution.settings.mode, table.to_pylist()), ckpt


def evaluate_dt_with_actors(ckpt: dict, target: float, *, episodes: int, seed: int, max_ep_len: int, num_workers: int,
                            cpus: float, ray_address: str | None, show_progress: bool,
                            scale_wait: float = 0.0) -> dict:
    """`gym-qwen dt-test ... num_workers=N`: a Decision Transformer checkpoint's episodes over N evaluator actors
    (one episode per call, batch 1: equal to eval_batch=1). Returns dt.evaluate's result."""
    with ray_session(ray_address):
        with EpisodeFarm(dt_eval_setup, dt_eval_episode, min(num_workers, episodes), cpus=cpus,
                         setup_args=(ray.put(ckpt), seed, target, max_ep_len), what="evaluator",
                         scale_wait=scale_wait) as farm, \
                progress_bar(total=episodes, desc=f"evaluate DT ({num_workers} actors)", unit="ep",
                             enabled=show_progress) as bar:
            rows = farm.run(range(episodes), on_episode=lambda i, t: bar.update(1)).to_pylist()
    ms = 1000 * sum(r["forward_s"] for r in rows) / max(sum(r["actions"] for r in rows), 1)
    return result_of(ckpt["env"], seed, target, [r["return"] for r in rows], [r["length"] for r in rows], ms, 1)
