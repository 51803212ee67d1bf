"""`gym-qwen sweep config=configs/sweeps/spec_exec_horizon.yaml [resume=true]`: a Ray Tune sweep of evaluation
settings, every trial in MLflow. The driver is gym_qwen/actors/sweep_runner.py.
"""
from __future__ import annotations

import sys

from gym_qwen.jobs.common import run_job
from gym_qwen.platform.config import SweepConfig


def _sweep(cfg: SweepConfig, command_line: dict) -> int:
    # the Ray path only: importing this module must not load Ray
    from gym_qwen.actors.sweep_runner import run_sweep_file

    return run_sweep_file(cfg, command_line)[0]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = [("file=" + a.split("=", 1)[1]) if a.startswith("config=") else a for a in argv]
    command_line = dict(a.split("=", 1) for a in argv if "=" in a)
    command_line.pop("file", None)
    return run_job("sweep", SweepConfig, lambda cfg: _sweep(cfg, command_line), argv)


if __name__ == "__main__":
    sys.exit(main())
