"""`gym-qwen compare experiment=NAME` (or `sweep=ID`): the evaluation runs of MLflow experiments or sweeps, one
table per task (mode, horizon, corrector, threshold, return ± std, retained vs baseline, planner calls and ms per
step; settings on the Pareto front marked), the two-panel plot as PNG with a CSV beside it, both logged to the
sweep's parent run. Works on `gym-qwen evaluate ... mlflow=true` runs too (mode=all logs one run per setting).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.config import CompareConfig, ConfigError


def _compare(cfg: CompareConfig) -> None:
    compare_runs(cfg)


def compare_runs(cfg: CompareConfig) -> list:
    """Print the tables, write the plot and CSV (and log them); returns the compared settings."""
    from gym_qwen.platform.files import output_folder_problem
    from gym_qwen.platform.sweeps.compare import (
        CompareError, by_task, check_store, load_runs, plot, pool, table_header, table_rows, write_csv)
    from gym_qwen.platform.tracking import browse_hint, client, default_tracking_uri

    name = (cfg.experiment or cfg.sweep)[0]
    output = Path(cfg.output or f"compare-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png")
    problem = output_folder_problem(output.parent if str(output.parent) else Path("."))
    if problem:
        raise ConfigError(f"output={output}: cannot write there ({problem})")
    uri = default_tracking_uri()
    check_store(uri)
    rows, parents, notes = load_runs(uri, cfg.experiment, cfg.sweep, cfg.task, cfg.unfinished)
    if not rows:
        what = f"task {cfg.task} in " if cfg.task else ""
        raise CompareError(f"no finished evaluation runs of {what}{', '.join(cfg.experiment + cfg.sweep)} to compare "
                           "(gym-qwen sweep, or gym-qwen evaluate ... mlflow=true, logs them)")
    unpaired: list[str] = []
    settings = pool(rows, unpaired)
    for line in notes + unpaired:
        print(f"note: {line}")
    for (task, teacher), group in by_task(settings).items():
        print(f"\n{task} ({teacher}): {len(group)} settings from {sum(len(s.runs) for s in group)} runs")
        print(table(table_rows(group), table_header(group)))
    print("\npareto: * on the front of return against planner calls per step, + against ms per step")
    png = plot(settings, output)
    csv_path = write_csv(settings, output.with_suffix(".csv"))
    print(f"plot: {png}  table: {csv_path}")
    c = client(uri)
    for name in sorted({s.experiment for s in settings}):
        experiment = c.get_experiment_by_name(name)
        if experiment is not None:
            print(f"browse {name}: {browse_hint(uri, experiment.experiment_id)}")
    if cfg.log and parents:
        for run_id in parents:
            c.log_artifact(run_id, str(png), "compare")
            c.log_artifact(run_id, str(csv_path), "compare")
        print(f"logged to the sweep's parent run{'s' if len(parents) > 1 else ''} {', '.join(parents)} (compare/)")
    return settings


def main(argv: list[str] | None = None) -> int:
    return run_job("compare", CompareConfig, _compare, argv)


if __name__ == "__main__":
    sys.exit(main())
