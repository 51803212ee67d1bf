"""`gym-qwen curves runs=runs/walker-walk/teacher/seed1,runs/cheetah-run/teacher/seed1`: plot our evaluation
returns against env steps over the published TD-MPC2 curves (PNG + JSON, logged to MLflow). Also
`python -m gym_qwen.jobs.curves`."""
from __future__ import annotations

import sys
from pathlib import Path

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.config import ConfigError, CurvesConfig
from gym_qwen.platform.files import require_output_folder
from gym_qwen.platform.tracking import Tracker
from gym_qwen.platform.training.curves import CurvesError, compare, plot_curves, read_run, write_numbers


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _curves(cfg: CurvesConfig) -> None:
    require_output_folder(Path(cfg.output).parent, f"output={cfg.output}", ConfigError)
    curves = [read_run(r) for r in cfg.runs]
    rows = compare(curves, cfg.published)
    png = plot_curves(curves, cfg.output, cfg.published)
    numbers = write_numbers(rows, curves, Path(cfg.output).with_suffix(".json"))
    print(table([(r["task"], r["seed"], r["model_size"], f"{r['env_steps']:,}" if r["env_steps"] else "-",
                  _fmt(r["return"]), _fmt(r["published_mean"])) for r in rows],
                ("task", "seed", "model size", "env steps", "return", f"published {cfg.published} (3-seed mean)")))
    print(f"plot: {png}\nnumbers: {numbers}")
    if cfg.mlflow:
        tracker = Tracker(True, cfg.mlflow_experiment)
        tracker.start("learning-curves", {"runs": ",".join(cfg.runs), "published": cfg.published},
                      tags={"command": "curves"})
        for r in rows:
            if r["return"] is not None:
                tracker.log_metrics({f"{r['task']}/seed{r['seed']}/return": r["return"]}, step=r["env_steps"])
        tracker.log_artifact(png)
        tracker.log_artifact(numbers)
        tracker.end()
        print(f"mlflow run: {tracker.run_id}")


def main(argv: list[str] | None = None) -> int:
    return run_job("curves", CurvesConfig, _curves, argv, extra_errors=(CurvesError,))


if __name__ == "__main__":
    sys.exit(main())
