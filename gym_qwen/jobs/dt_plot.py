"""`gym-qwen dt-plot env_d4rl_name=halfcheetah-medium-v5 smoothing_window=5 plot_avg=true save_fig=true`: training
curves (action loss, D4RL normalised score) of the Decision Transformer runs on one dataset."""
from __future__ import annotations

import sys
from pathlib import Path

from gym_qwen.jobs.common import run_job
from gym_qwen.platform.config import ConfigError, DTPlotConfig
from gym_qwen.platform.dt.plot import find_logs, plot_runs
from gym_qwen.platform.files import require_output_folder
from gym_qwen.platform.tracking import Tracker


def _plot(cfg: DTPlotConfig) -> None:
    if cfg.output:
        require_output_folder(Path(cfg.output).parent, f"output={cfg.output}", ConfigError)
    elif cfg.save_fig:  # the PNG goes beside the logs
        require_output_folder(cfg.log_dir, f"log_dir={cfg.log_dir}", ConfigError)
    files = find_logs(cfg.log_dir, cfg.env_d4rl_name)
    if not files:
        raise ConfigError(f"no logs dt_{cfg.env_d4rl_name}_log_*.csv in {cfg.log_dir}; train with gym-qwen dt-train "
                          "first (the name is the dataset's, e.g. halfcheetah-medium-v5)")
    output = cfg.output
    if output is None and cfg.save_fig:
        output = str(Path(cfg.log_dir) / f"{cfg.env_d4rl_name}{'_avg' if cfg.plot_avg else ''}.png")
    _, drawn = plot_runs(files, cfg.env_d4rl_name, cfg.x_key, cfg.y_key, cfg.smoothing_window, cfg.plot_avg, output)
    for f in files:
        print(f)
    if "eval_d4rl_score" in drawn and cfg.plot_avg:
        print(f"last smoothed mean {cfg.y_key}: {drawn[cfg.y_key]['mean'][-1]:.2f}")
    if output:
        print(f"wrote {output}")
        if cfg.mlflow:
            tracker = Tracker(True, cfg.mlflow_experiment)
            tracker.preflight()
            tracker.start(f"dt-plot-{cfg.env_d4rl_name}", {"env_d4rl_name": cfg.env_d4rl_name, "runs": len(files),
                                                          "smoothing_window": cfg.smoothing_window},
                          tags={"kind": "dt-plot"})
            tracker.log_artifact(output)
            tracker.end()
    else:
        print("(nothing written: pass save_fig=true or output=FILE.png)")


def main(argv: list[str] | None = None) -> int:
    return run_job("dt-plot", DTPlotConfig, _plot, argv)


if __name__ == "__main__":
    sys.exit(main())
