"""`gym-qwen info task=dog-run model_size=5`: parameter count of each model component."""
from __future__ import annotations

import sys

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.config import InfoConfig
from gym_qwen.platform.devices import resolve_device
from gym_qwen.platform.envs import task_spec
from gym_qwen.platform.tdmpc2.agent import model_dims
from gym_qwen.platform.tdmpc2.world_model import WorldModel


def _info(cfg: InfoConfig) -> None:
    resolve_device(cfg.device)  # the counts do not depend on it, but device=cuda without CUDA is still refused
    spec = task_spec(cfg.task)
    dims = model_dims(cfg, spec.obs_dim, spec.action_dim, spec.episodic)
    counts = WorldModel(dims).parameter_counts()
    print(f"task {cfg.task}: obs {spec.obs_dim}, action {spec.action_dim}, episode {spec.episode_length} decisions "
          f"x action repeat {spec.action_repeat}, {'episodic' if spec.episodic else 'no terminations'}")
    print(f"model_size {cfg.model_size}: " + ", ".join(f"{k}={v}" for k, v in cfg.arch().items()))
    print(table([(k, f"{v:,}") for k, v in counts.items()], ("component", "parameters")))


def main(argv: list[str] | None = None) -> int:
    return run_job("info", InfoConfig, _info, argv)


if __name__ == "__main__":
    sys.exit(main())
