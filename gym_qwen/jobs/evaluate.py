"""`gym-qwen evaluate checkpoint=runs/.../agent.pt episodes=10 mode=baseline [video=true]`."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.checkpoints import load_checkpoint
from gym_qwen.platform.config import EvaluateConfig, TDMPC2Config


def _evaluate(cfg: EvaluateConfig, explicit: set[str]) -> None:
    import torch

    from gym_qwen.platform.checkpoints import atomic_write_bytes
    from gym_qwen.platform.evaluation import evaluate_checkpoint
    from gym_qwen.platform.tracking import Tracker

    torch.set_num_threads(cfg.torch_threads)
    agent_keys = {f.name for f in dataclasses.fields(TDMPC2Config)} - {"device"}
    overrides = {k: getattr(cfg, k) for k in explicit & agent_keys}
    # default: beside the checkpoint (Path.with_suffix, not str.rsplit('.'), which cuts at a dot in a folder name)
    video_path = None
    if cfg.video:
        task = cfg.task or load_checkpoint(cfg.checkpoint)["task"]
        video_path = cfg.video_path or f"{Path(cfg.checkpoint).with_suffix('')}-{task}.gif"
    if cfg.num_workers > 0:  # Ray only when asked for
        from gym_qwen.actors.evaluators import evaluate_with_actors
        res, ckpt = evaluate_with_actors(cfg.checkpoint, cfg.episodes, cfg.seed, num_workers=cfg.num_workers,
                                         cpus=cfg.worker_cpus, overrides=overrides, task=cfg.task,
                                         ray_address=cfg.ray_address, show_progress=cfg.progress, mode=cfg.mode)
    else:
        res, ckpt = evaluate_checkpoint(cfg.checkpoint, cfg.episodes, cfg.seed, overrides=overrides,
                                        device=cfg.device, task=cfg.task, video_path=video_path,
                                        show_progress=cfg.progress, mode=cfg.mode)
    task = res.task
    print(table([(task, cfg.mode, len(res.returns), f"{res.mean:.1f}", f"{res.std:.1f}",
                  f"{res.planner_calls_per_step:.2f}", f"{res.ms_per_decision:.1f}")],
                ("task", "mode", "episodes", "return", "std", "planner calls/step", "ms/decision")))
    if res.video:
        print(f"video: {res.video}")
    summary = {**res.summary(), "checkpoint": cfg.checkpoint, "checkpoint_env_steps": ckpt["env_steps"]}
    if cfg.output:
        atomic_write_bytes(cfg.output, lambda f: f.write(json.dumps(summary, indent=2).encode()))
    if cfg.mlflow:
        tracker = Tracker(True, cfg.mlflow_experiment)
        tracker.start(f"evaluate-{task}-{cfg.mode}", {"checkpoint": cfg.checkpoint, "episodes": cfg.episodes,
                                                      "mode": cfg.mode, "seed": cfg.seed},
                      tags={"task": task, "command": "evaluate"})
        tracker.log_metrics({"return_mean": res.mean, "return_std": res.std,
                             "planner_calls_per_step": res.planner_calls_per_step,
                             "ms_per_decision": res.ms_per_decision}, step=ckpt["env_steps"])
        if res.video:
            tracker.log_artifact(res.video)
        tracker.end()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    explicit = {a.split("=", 1)[0] for a in argv if "=" in a}
    return run_job("evaluate", EvaluateConfig, lambda cfg: _evaluate(cfg, explicit), argv)


if __name__ == "__main__":
    sys.exit(main())
