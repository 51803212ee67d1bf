"""Evaluation spread over evaluator actors (an EpisodeFarm); equal to the sequential run for the same seeds."""
from __future__ import annotations

import ray

from .cluster import connect, disconnect
from .episode_farm import EpisodeFarm


def evaluate_with_actors(checkpoint: str, episodes: int, seed: int, *, num_workers: int, cpus: float = 1.0,
                         overrides: dict | None = None, task: str | None = None, ray_address: str | None = None,
                         show_progress: bool = False, execution=None):
    """`gym-qwen evaluate ... num_workers=N`: episodes 0..episodes-1 over N CPU evaluator actors, each holding
    the checkpoint's agent (the checkpoint travels once through the object store). Returns (EvalResult, ckpt)."""
    from gym_qwen.platform.tdmpc2.checkpoints import check_compatible, load_checkpoint
    from gym_qwen.platform.speculative.evaluation import evaluation_episode, evaluation_setup, result_from_records
    from gym_qwen.platform.files import sha256_of
    from gym_qwen.platform.progress import progress_bar
    from gym_qwen.platform.speculative.modes import ExecutionSpec

    execution = execution or ExecutionSpec()
    ckpt = load_checkpoint(checkpoint)
    check_compatible(ckpt, task=task, path=checkpoint)
    # Everything an evaluator builds is built once here first: a bad checkpoint, override or corrector fails in
    # one line like the sequential run, instead of in every actor's constructor.
    from gym_qwen.platform.tdmpc2.checkpoints import agent_from_checkpoint
    from gym_qwen.platform.speculative.evaluation import load_execution_corrector

    agent, _, _ = agent_from_checkpoint(ckpt, overrides or {}, "cpu", task, path=checkpoint)
    load_execution_corrector(execution, agent, sha256_of(checkpoint))
    del agent
    connected = connect(ray_address)
    try:
        farm = EpisodeFarm(evaluation_setup, evaluation_episode, min(num_workers, episodes), cpus=cpus,
                           setup_args=(ray.put(ckpt), overrides or {}, "cpu", seed, execution,
                                       sha256_of(checkpoint)), what="evaluator")
        try:
            with progress_bar(total=episodes, desc=f"evaluate {ckpt['task']} {execution.label} ({num_workers} actors)", unit="ep",
                              enabled=show_progress) as bar:
                table = farm.run(range(episodes), on_episode=lambda i, t: bar.update(1))
        finally:
            farm.close()
    finally:
        disconnect(connected)
    return result_from_records(ckpt["task"], execution.settings.mode, table.to_pylist()), ckpt
