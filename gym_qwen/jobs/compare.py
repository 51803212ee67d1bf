"""`gym-qwen compare experiment=NAME` (or `sweep=ID`): the evaluation runs of MLflow experiments or sweeps, one
table per task (mode, horizon, corrector, threshold, return ± std, retained vs baseline, planner calls and ms per
step; settings on the Pareto front marked), the two-panel plot as PNG with a CSV beside it, both logged to the
sweep's parent run. Works on `gym-qwen evaluate ... mlflow=true` runs too (mode=all logs one run per setting).
"""
from __future__ import annotations

import sys

from gym_qwen.jobs.common import run_job
from gym_qwen.platform.config import CompareConfig
from gym_qwen.platform.sweeps.compare import compare_runs


def _compare(cfg: CompareConfig) -> None:
    compare_runs(cfg)


def main(argv: list[str] | None = None) -> int:
    return run_job("compare", CompareConfig, _compare, argv)


if __name__ == "__main__":
    sys.exit(main())
