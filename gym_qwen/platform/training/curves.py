"""Learning curves: our evaluation returns against env steps, drawn over the published ones.

The published curves (official TD-MPC2 results, 3 seeds, a point every 100k env steps; the paper's baselines
too) ship as package data under ``gym_qwen/data/published/<algorithm>/<task>.csv``.
"""
from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..envs import DMC_TASKS
from ..figures import write_png
from ..files import atomic_write_bytes

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "data" / "published"


class CurvesError(ValueError):
    """A run or published curve cannot be read (one-line message)."""


@dataclass
class RunCurve:
    """One training run's evaluation curve (from its eval.csv)."""

    run_dir: str
    task: str
    seed: int
    model_size: int
    env_steps: list = field(default_factory=list)
    returns: list = field(default_factory=list)
    stds: list = field(default_factory=list)


def published_curve(task: str, algorithm: str = "tdmpc2") -> dict[int, dict[int, float]]:
    """{env_steps: {seed: return}} of a published algorithm on a task; empty if none was published."""
    path = PUBLISHED_DIR / algorithm / f"{task}.csv"
    out: dict[int, dict[int, float]] = defaultdict(dict)
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out[int(float(row["step"]))][int(row["seed"])] = float(row["reward"])
    return dict(out)


def published_mean_at(task: str, env_steps: int, algorithm: str = "tdmpc2") -> float | None:
    seeds = published_curve(task, algorithm).get(int(env_steps))
    return float(np.mean(list(seeds.values()))) if seeds else None


def read_run(run_dir: str | os.PathLike) -> RunCurve:
    """A run directory's task, seed and evaluation curve; or a shipped teacher's card (models/<name>.json), whose
    `training.learning_curve` keeps its run's evaluations after the run directory is gone."""
    # yaml is imported only where presets are read
    import yaml

    run_dir = Path(run_dir)
    if run_dir.suffix == ".json" and run_dir.is_file():
        return _card_curve(run_dir)
    cfg_path, eval_path = run_dir / "config.yaml", run_dir / "eval.csv"
    if not cfg_path.is_file():
        raise CurvesError(f"{run_dir} has no config.yaml: is it a training run directory?")
    if not eval_path.is_file():
        raise CurvesError(f"{run_dir} has no eval.csv yet (no evaluation has run; see eval_freq=)")
    cfg = yaml.safe_load(cfg_path.read_text())
    curve = RunCurve(str(run_dir), cfg["task"], int(cfg["seed"]), int(cfg["model_size"]))
    with open(eval_path, newline="") as f:
        for row in csv.DictReader(f):
            curve.env_steps.append(int(row["env_steps"]))
            curve.returns.append(float(row["return_mean"]))
            curve.stds.append(float(row["return_std"]))
    return curve


def _card_curve(path: Path) -> RunCurve:
    try:
        card = json.loads(path.read_text())
        points = card["training"]["learning_curve"]  # [env steps, mean, std, episodes] per evaluation
        curve = RunCurve(str(path), card["task"], int(card["seed"]), int(card["model_size"]))
    except (ValueError, KeyError, TypeError):
        raise CurvesError(f"{path} is not a teacher card with a training.learning_curve") from None
    for steps, mean, std, *_ in points:
        curve.env_steps.append(int(steps))
        curve.returns.append(float(mean))
        curve.stds.append(float(std))
    return curve


def compare(curves: list[RunCurve], algorithm: str = "tdmpc2") -> list[dict]:
    """One row per run: its last evaluation and the published mean at the same env steps (if published)."""
    rows = []
    for c in curves:
        last = c.env_steps[-1] if c.env_steps else None
        rows.append({"task": c.task, "seed": c.seed, "model_size": c.model_size, "run_dir": c.run_dir,
                     "env_steps": last, "return": c.returns[-1] if c.returns else None,
                     "published_algorithm": algorithm,
                     "published_mean": published_mean_at(c.task, last, algorithm) if last is not None else None})
    return rows


def plot_curves(curves: list[RunCurve], output: str | os.PathLike, algorithm: str = "tdmpc2") -> Path:
    """One panel per task: our runs (mean ± std over evaluation episodes) and the published seeds and mean,
    up to the next published point past our longest run. Written atomically as a PNG."""
    # matplotlib is imported only where a plot is drawn (import cost)
    import matplotlib
    matplotlib.use("Agg")
    # matplotlib is imported only where a plot is drawn (import cost)
    import matplotlib.pyplot as plt
    # matplotlib is imported only where a plot is drawn (import cost)
    from matplotlib.ticker import FuncFormatter

    tasks = list(dict.fromkeys(c.task for c in curves))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [c for c in curves if c.task == task]
        horizon = max((c.env_steps[-1] for c in mine if c.env_steps), default=100_000)
        for c in mine:
            x, y, s = np.array(c.env_steps), np.array(c.returns), np.array(c.stds)
            line, = ax.plot(x, y, marker="o", ms=3, label=f"Gym Qwen size {c.model_size}, seed {c.seed}")
            ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.15)
        published = published_curve(task, algorithm)
        shown = sorted(s for s in published if s <= horizon) or sorted(published)[:2]
        following = [s for s in sorted(published) if s > horizon][:1]
        steps = shown + following
        if steps:
            for i, seed in enumerate(sorted({k for s in steps for k in published[s]})):
                xs = [s for s in steps if seed in published[s]]
                ax.scatter(xs, [published[s][seed] for s in xs], color="grey", s=14, alpha=0.6,
                           label=f"published {algorithm} 5M (3 seeds)" if i == 0 else None)
            # Markers only: the published points are 100k env steps apart, and a line between them would read
            # as a curve nobody measured.
            ax.plot(steps, [np.mean(list(published[s].values())) for s in steps], color="black", ls="none",
                    marker="D", ms=6, label=f"published {algorithm} 5M, mean")
        ax.set_title(task)
        ax.set_xlabel("environment steps (incl. action repeat)")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
        ax.set_ylabel("evaluation return")
        if task in DMC_TASKS:  # DMControl returns lie in [0, 1000]
            ax.set_ylim(0, 1000)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return write_png(fig, output, dpi=110)


def write_numbers(rows: list[dict], curves: list[RunCurve], path: str | os.PathLike) -> Path:
    data = {"comparison": rows,
            "curves": [{"task": c.task, "seed": c.seed, "model_size": c.model_size, "run_dir": c.run_dir,
                        "env_steps": c.env_steps, "return_mean": c.returns, "return_std": c.stds} for c in curves]}
    return atomic_write_bytes(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))
