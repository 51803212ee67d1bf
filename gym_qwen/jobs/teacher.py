"""`gym-qwen teacher run=runs/walker-walk/teacher/seed1 episodes=10`: ship a finished run as a teacher.

Copies the run's agent to models/<name>.pt, evaluates it exactly as `gym-qwen evaluate` does, and writes its card
models/<name>.json and the models/README.md index. Also `python -m gym_qwen.jobs.teacher`.
"""
from __future__ import annotations

import sys

import torch

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.config import TeacherConfig
from gym_qwen.platform.registry import CHAMPION
from gym_qwen.platform.tracking import Tracker
from gym_qwen.platform.training.teachers import TeacherError, export_teacher, register_teacher


def _teacher(cfg: TeacherConfig) -> None:
    torch.set_num_threads(cfg.torch_threads)
    Tracker(cfg.mlflow).preflight()  # an MLflow server that does not answer, refused before any work
    model_file, card = export_teacher(cfg.run, cfg.output_dir, cfg.name, cfg.episodes, cfg.seed, cfg.force,
                                      show_progress=cfg.progress, note=cfg.note)
    ev, tr = card["evaluation"], card["training"]
    print(table([(card["name"], card["task"], card["model_size"], f"{card['env_steps']:,}", card["seed"],
                  f"{ev['return_mean']:.1f} ± {ev['return_std']:.1f}", ev["episodes"])],
                ("teacher", "task", "model size", "env steps", "seed", "return", "episodes")))
    print(f"teacher: {model_file} ({card['size_bytes'] / 1e6:.1f} MB), card: {model_file.with_suffix('.json')}")
    print(f"reproduce the return: {ev['command']}")
    print(f"retrain it: {tr['command']}")
    if cfg.mlflow:
        registered = register_teacher(model_file, card, cfg.mlflow_experiment)
        print(f"registered {registered}, now the alias {CHAMPION}: gym-qwen evaluate checkpoint="
              f"{registered.rsplit('/', 1)[0]}@{CHAMPION}")


def main(argv: list[str] | None = None) -> int:
    return run_job("teacher", TeacherConfig, _teacher, argv, extra_errors=(TeacherError,))


if __name__ == "__main__":
    sys.exit(main())
