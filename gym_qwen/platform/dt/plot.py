"""Training curves of Decision Transformer runs: the action loss and the evaluation score against updates, from
the CSV logs dt-train writes (min-decision-transformer's plot.py: a rolling mean over `smoothing_window`
evaluations; `plot_avg` draws the mean over runs, here with the min-max band of the runs around it)."""
from __future__ import annotations

import csv
import glob
from pathlib import Path

import numpy as np

from gym_qwen.platform.config_schema import ConfigError
from gym_qwen.platform.figures import write_png


def read_log(path: str) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ConfigError(f"{path} has no rows")
    out = {}
    for key in rows[0]:
        try:
            out[key] = np.array([float(r[key]) if r[key] not in ("", None) else np.nan for r in rows])
        except ValueError:
            continue
    return out


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing rolling mean (the first window-1 points average what there is)."""
    if window <= 1:
        return y
    c = np.cumsum(np.insert(np.nan_to_num(y), 0, 0.0))
    n = np.arange(1, len(y) + 1)
    lo = np.maximum(0, n - window)
    return (c[n] - c[lo]) / (n - lo)


def find_logs(log_dir: str, name: str) -> list[str]:
    return sorted(glob.glob(str(Path(log_dir) / f"dt_{glob.escape(name)}_log_*.csv")))


def plot_runs(files: list[str], name: str, x_key: str, y_key: str, window: int, plot_avg: bool, output: str | None):
    """Draw the two panels; returns (figure, numbers drawn)."""
    # matplotlib is imported only where a plot is drawn (import cost)
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib is imported only where a plot is drawn (import cost)
    import matplotlib.pyplot as plt

    logs = [read_log(f) for f in files]
    for f, log in zip(files, logs):
        for key in (x_key, y_key, "action_loss"):
            if key not in log:
                raise ConfigError(f"{f} has no column {key!r} (columns: {', '.join(log)})")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    drawn = {}
    for ax, key, label in ((axes[0], "action_loss", "action loss"), (axes[1], y_key, y_key)):
        if plot_avg:
            n = min(len(log[x_key]) for log in logs)
            x = logs[0][x_key][:n]
            ys = np.stack([smooth(log[key][:n], window) for log in logs])
            mean = ys.mean(axis=0)
            ax.plot(x, mean, label=f"mean of {len(logs)} run" + ("s" if len(logs) > 1 else ""))
            if len(logs) > 1:
                ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), alpha=0.25, label="min-max of runs")
            drawn[key] = {"x": x.tolist(), "mean": mean.tolist()}
        else:
            for f, log in zip(files, logs):
                y = smooth(log[key], window)
                ax.plot(log[x_key], y, label=Path(f).name)
                drawn.setdefault(key, {})[Path(f).name] = y.tolist()
        ax.set_xlabel(x_key)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(f"{name} (smoothing window {window})")
    fig.tight_layout()
    if output:
        write_png(fig, output, dpi=120, close=False)
    return fig, drawn
