"""`gym-qwen train task=walker-walk model_size=1 steps=100000 seed=1` (also `python -m gym_qwen.jobs.train`)."""
from __future__ import annotations

import signal
import sys

from gym_qwen.jobs.common import run_job
from gym_qwen.platform.config import TrainConfig
from gym_qwen.platform.training.loop import InProcessBackend, TrainingBackendError
from gym_qwen.platform.training.run import train


def _train(cfg: TrainConfig) -> None:
    backend = InProcessBackend
    if cfg.num_workers > 0:  # Ray only when asked for: the in-process loop never imports it
        from gym_qwen.actors.training_backend import RayTrainingBackend
        backend = RayTrainingBackend
    try:
        summary = train(cfg, backend, stop_on_sigterm=True)
    except TrainingBackendError as e:
        print(f"gym-qwen train: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    if summary.get("stopped"):
        print(f"gym-qwen train: stopped by SIGTERM at {summary['env_steps']:,} env steps with a checkpoint "
              f"({summary['checkpoint']}); continue with resume=true", file=sys.stderr)
        return 128 + signal.SIGTERM
    ev = summary["eval"]
    print(f"trained {summary['task']} for {summary['env_steps']:,} env steps ({summary['updates']:,} updates, "
          f"{summary['env_steps_per_second']:.1f} env steps/s)")
    if ev:
        print(f"final evaluation: return {ev['return_mean']:.1f} ± {ev['return_std']:.1f} over {ev['episodes']} episodes")
    print(f"checkpoint: {summary['checkpoint']}")
    if summary["mlflow_run_id"]:
        print(f"mlflow run: {summary['mlflow_run_id']}")


def main(argv: list[str] | None = None) -> int:
    return run_job("train", TrainConfig, _train, argv)


if __name__ == "__main__":
    sys.exit(main())
