"""Comparing evaluation runs in MLflow: a sweep's trial runs and `gym-qwen evaluate ... mlflow=true` runs (both
carry params mode / spec_exec_horizon / corrector_type / mismatch_threshold / planner_overrides.* and metrics
return_mean, return_std, planner_calls_per_step, ms_per_decision). Runs of one setting (several seeds) are pooled
into one row; each task (and teacher) gets its table, the Pareto front of return against planner calls per step
(and against ms per step), and a two-panel plot with a CSV beside it."""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from pathlib import Path

from ..config_schema import CompareConfig, ConfigError
from ..figures import pareto_front, write_png
from ..files import atomic_write_bytes, output_folder_problem
from ..progress import table
from ..speculative.modes import budget_name
from ..tracking import browse_hint, check_tracking_uri, client, default_tracking_uri
from .runs import ROLE_TAG, SWEEP_TAG

# The original project's published result, for scale (arXiv:2512.17250, humanoid-walk, another task): planner
# calls 500 -> 282 per episode (-43.6%), return 935 -> 869 (-7.1%)
PUBLISHED = {"retained": 869 / 935, "planner_calls_per_step": 282 / 500,
             "label": "seed paper, humanoid-walk (another task): -43.6% planner calls, -7.1% return"}
FAMILY_COLORS = {"baseline": "black", "policy prior": "tab:olive", "planner family": "tab:orange",
                 "speculation": "tab:blue", "planner family + speculation": "tab:brown"}
MODE_COLORS = {"naive": "tab:red", "spec_corrector": "tab:blue", "spec_extended": "tab:purple",
               "adaptive": "tab:green"}
CORRECTOR_MARKERS = {"none": "o", "two_tower": "s", "temporal": "^"}


class CompareError(ConfigError):
    """Nothing to compare, or no store / experiment / sweep of that name (one line; a user error)."""


@dataclasses.dataclass
class RunRow:
    """One finished evaluation run (one setting, one seed)."""

    run_id: str
    experiment: str
    task: str
    teacher: str
    mode: str
    k: int
    corrector: str
    threshold: float | None
    planner: tuple
    fallback: str
    past_horizon: str
    wall_clock: bool
    seed: str
    episodes: int
    return_mean: float
    return_std: float
    planner_calls_per_step: float
    ms_per_step: float
    corrector_calls_per_step: float
    retained_logged: float | None
    sweep_id: str | None
    status: str
    start_time: float = 0.0


@dataclasses.dataclass
class Setting:
    """The runs of one setting pooled (episode-weighted); `pareto_calls` / `pareto_ms`: on the front of return
    (up) against planner calls per step / ms per step (down) among its task's settings."""

    experiment: str
    task: str
    teacher: str
    mode: str
    k: int
    corrector: str
    threshold: float | None
    planner: tuple
    fallback: str
    past_horizon: str
    wall_clock: bool
    runs: list
    seeds: list
    episodes: int
    return_mean: float
    return_std: float
    return_stderr: float
    planner_calls_per_step: float
    ms_per_step: float
    corrector_calls_per_step: float
    retained: float | None = None
    pareto_calls: bool = False
    pareto_ms: bool = False

    @property
    def family(self) -> str:
        if self.mode == "prior":
            return "policy prior"
        if self.mode == "baseline":
            return "planner family" if self.planner else "baseline"
        return "planner family + speculation" if self.planner else "speculation"

    @property
    def label(self) -> str:
        name = self.mode if self.mode in ("baseline", "prior") else f"{self.mode} k={self.k}"
        if self.threshold is not None:
            name += f" thr={self.threshold:g}"
        name += _variant_text(self)
        if self.corrector != "none":
            name += f" +{self.corrector}"
        if self.planner:
            name += f" ({_planner_text(self.planner)})"
        return name


# --- reading MLflow ----------------------------------------------------------------------------------------------
def check_store(uri: str) -> None:
    """A local SQLite store must exist (compare never creates one); a server must answer."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():
            raise CompareError(f"no MLflow store at {path}: run from the folder that holds mlflow.db or set "
                               "MLFLOW_TRACKING_URI")
    check_tracking_uri(uri)


def _value(text):
    """A param's string back to a number where it is one."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def _frame(uri: str, experiments: list[str], sweeps: list[str]):
    # MLflow takes seconds to import; only runs that log need it
    import mlflow


    c = client(uri)
    mlflow.set_tracking_uri(uri)
    frames, ids = [], []
    for name in experiments:
        exp = c.get_experiment_by_name(name)
        if exp is None:
            known = [e.name for e in c.search_experiments()]
            raise CompareError(f"no MLflow experiment {name!r} in {uri}; experiments there: "
                               f"{', '.join(known) or 'none'}")
        ids.append(exp.experiment_id)
    if ids:
        frames.append(mlflow.search_runs(experiment_ids=ids))
    for sweep in sweeps:
        df = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}'")
        if df.empty:
            raise CompareError(f"no runs of sweep {sweep!r} in {uri} (gym-qwen sweep prints its id)")
        frames.append(df)
    # pandas is imported only where a table is built (import cost)
    import pandas as pd

    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(), {}
    df = pd.concat(frames, ignore_index=True).drop_duplicates(subset="run_id")
    names = {i: c.get_experiment(i).name for i in df["experiment_id"].unique()}
    return df, names


def load_runs(uri: str, experiments: list[str], sweeps: list[str], task: str | None = None,
              unfinished: bool = False) -> tuple[list[RunRow], list[str], list[str]]:
    """(evaluation runs, parent run ids of the sweeps among them, notes). Runs that are not evaluations of one
    setting (parents, training runs) are left out; unfinished runs too unless asked."""
    df, names = _frame(uri, experiments, sweeps)
    get = lambda row, col: row.get(col) if col in row and row.get(col) == row.get(col) else None  # noqa: E731
    rows, parents, notes, skipped = [], [], [], 0
    for _, r in (df.iterrows() if not df.empty else []):
        r = r.to_dict()
        if get(r, f"tags.{ROLE_TAG}") == "sweep":
            parents.append((r["run_id"], get(r, f"tags.{SWEEP_TAG}")))
            continue
        if get(r, "metrics.return_mean") is None or get(r, "params.mode") is None \
                or get(r, "metrics.planner_calls_per_step") is None:
            continue
        if r["status"] != "FINISHED" and not unfinished:
            skipped += 1
            continue
        if task is not None and get(r, "tags.task") != task:
            continue
        mode = get(r, "params.mode")
        prefix = "params.planner_overrides."
        planner = tuple(sorted((c[len(prefix):], _value(v)) for c, v in r.items()
                               if c.startswith(prefix) and get(r, c) is not None))
        episodes = _value(get(r, "metrics.episodes_done")) or _value(get(r, "params.episodes")) or 1
        rows.append(RunRow(
            r["run_id"], names.get(r["experiment_id"], r["experiment_id"]), get(r, "tags.task") or "?", Path(str(get(r, "params.checkpoint") or "?")).stem, mode,
            int(_value(get(r, "params.spec_exec_horizon")) or 1), get(r, "params.corrector_type") or "none",
            float(get(r, "params.mismatch_threshold")) if mode == "adaptive" else None, planner,
            get(r, "params.fallback") or "plan",  # runs logged before fallback= existed planned
            get(r, "params.past_horizon") or "extension",  # ... and extended past the plan's horizon
            str(get(r, "params.realtime")) == "True",  # the wall clock; absent or False: simulated or none
            str(get(r, "params.seed")), int(episodes), float(r["metrics.return_mean"]),
            float(get(r, "metrics.return_std") or 0.0), float(r["metrics.planner_calls_per_step"]),
            float(get(r, "metrics.ms_per_decision") or float("nan")),
            float(get(r, "metrics.corrector_calls_per_step") or 0.0), get(r, "metrics.return_retained"),
            get(r, f"tags.{SWEEP_TAG}"), r["status"], r["start_time"].timestamp() if get(r, "start_time") else 0.0))
    if skipped:
        notes.append(f"{skipped} unfinished runs left out (unfinished=true shows them)")
    latest: dict[tuple, RunRow] = {}  # the same setting and seed run twice in one experiment: the newer run
    for row in sorted(rows, key=lambda r: r.start_time):
        latest[(row.experiment, row.task, row.teacher, row.mode, row.k, row.corrector, row.threshold, row.planner,
                row.fallback, row.past_horizon, row.wall_clock, row.seed, row.episodes)] = row
    if len(latest) < len(rows):
        notes.append(f"{len(rows) - len(latest)} runs repeat a setting and seed of their experiment: the newest "
                     "of each is shown")
        rows = [r for r in rows if r in latest.values()]
    sweep_ids = {row.sweep_id for row in rows}
    parents = [pid for pid, sid in parents if sid in sweep_ids]
    return rows, parents, notes


# --- pooling, baseline, Pareto ------------------------------------------------------------------------------------
def pool(rows: list[RunRow], unpaired: list[str] | None = None) -> list[Setting]:
    """One Setting per (task, teacher, mode, k, corrector, threshold, planner, fallback, past horizon, wall clock):
    standard deviation of all episodes together (from each run's mean and std), and retained vs its baseline,
    only where the setting played the baseline's seeds and episodes; a line for each one that did not is
    appended to `unpaired`."""
    unpaired = [] if unpaired is None else unpaired
    groups: dict[tuple, list[RunRow]] = {}
    for row in rows:
        key = (row.experiment, row.task, row.teacher, row.mode, row.k, row.corrector, row.threshold, row.planner,
               row.fallback, row.past_horizon, row.wall_clock)
        groups.setdefault(key, []).append(row)
    settings = []
    for key, runs in groups.items():
        n = sum(r.episodes for r in runs)
        w = lambda attr: sum(getattr(r, attr) * r.episodes for r in runs) / n  # noqa: E731
        mean = w("return_mean")
        var = sum(r.episodes * (r.return_std ** 2 + r.return_mean ** 2) for r in runs) / n - mean ** 2
        std = math.sqrt(max(var, 0.0))
        stderr = std * math.sqrt(n / (n - 1)) / math.sqrt(n) if n > 1 else float("nan")
        settings.append(Setting(*key, runs=[r.run_id for r in runs], seeds=sorted({r.seed for r in runs}),
                                episodes=n, return_mean=mean, return_std=std, return_stderr=stderr,
                                planner_calls_per_step=w("planner_calls_per_step"), ms_per_step=w("ms_per_step"),
                                corrector_calls_per_step=w("corrector_calls_per_step")))
    episodes_of = {}  # run -> (seed, episodes): what it played
    for row in rows:
        episodes_of.setdefault(row.run_id, (row.seed, row.episodes))
    for s in settings:
        base = baseline_of(settings, s.task, s.teacher, s.experiment)
        if base is None or not base.return_mean:
            continue  # no baseline: nothing is called retained (a run's own logged ratio is not re-pooled)
        mine = sorted(episodes_of[r] for r in s.runs)
        theirs = sorted(episodes_of[r] for r in base.runs)
        if mine != theirs:
            unpaired.append(f"{s.task}: no retained for {s.label}: it played {_episodes_text(mine)}, its baseline "
                            f"{_episodes_text(theirs)} (retained divides returns on the same episodes only)")
            continue
        s.retained = s.return_mean / base.return_mean
    for group in by_task(settings).values():
        mark_front(group, "planner_calls_per_step", "pareto_calls")
        mark_front(group, "ms_per_step", "pareto_ms")
    return sorted(settings, key=lambda s: (s.task, s.teacher, -s.planner_calls_per_step, -s.return_mean))


def _episodes_text(seeds: list[tuple]) -> str:
    return "seed " + ", ".join(f"{seed} ({n} episodes)" for seed, n in seeds)


def baseline_of(settings: list[Setting], task: str, teacher: str, experiment: str | None = None) -> Setting | None:
    """The full planner's setting of the task and teacher (of `experiment` if it has one)."""
    bases = [s for s in settings if s.task == task and s.teacher == teacher and s.mode == "baseline"
             and not s.planner]
    return next((s for s in bases if s.experiment == experiment), bases[0] if bases else None)


def by_task(settings: list[Setting]) -> dict[tuple, list[Setting]]:
    out: dict[tuple, list[Setting]] = {}
    for s in settings:
        out.setdefault((s.task, s.teacher), []).append(s)
    return out


def mark_front(group: list[Setting], cost: str, flag: str) -> None:
    for i in pareto_front([(getattr(s, cost), s.return_mean) for s in group]):
        setattr(group[i], flag, True)


# --- table, CSV, plot ---------------------------------------------------------------------------------------------
HEADER = ("mode", "k", "corrector", "threshold", "planner", "seeds", "episodes", "return", "± std", "retained",
          "planner calls/step", "ms/step", "pareto")
SHORT = {"num_samples": "samples", "iterations": "iters", "num_elites": "elites", "num_pi_trajs": "pi"}


def _planner_text(planner: tuple) -> str:
    """The planner a setting plans with: its budget ("64x2"), else the keys it changes, short ("samples=64
    iters=2"); "full" for the teacher's own planner."""
    budget = budget_name(planner)
    if budget:
        return budget
    return " ".join(f"{SHORT.get(k, k)}={v}" for k, v in planner) if planner else "full"


def _front_text(s: Setting) -> str:
    return ("*" if s.pareto_calls else "") + ("+" if s.pareto_ms else "")


def table_header(group: list[Setting]) -> tuple:
    return (("experiment",) if len({s.experiment for s in group}) > 1 else ()) + HEADER


def _variant_text(s: Setting) -> str:
    """What sets a setting apart beyond its mode, k and threshold: the fallback, what async executes past the
    plan's horizon, the wall clock (each shown only where it is not the default)."""
    return ((f" fallback={s.fallback}" if s.fallback != "plan" else "")
            + (f" past_horizon={s.past_horizon}" if s.past_horizon != "extension" else "")
            + (" realtime" if s.wall_clock else ""))


def _mode_text(s: Setting) -> str:
    return s.mode + _variant_text(s)


def table_rows(group: list[Setting]) -> list[tuple]:
    several = len({s.experiment for s in group}) > 1
    return [((s.experiment,) if several else ()) + (_mode_text(s), s.k, s.corrector, "-" if s.threshold is None else f"{s.threshold:g}",
             _planner_text(s.planner), ",".join(s.seeds), s.episodes, f"{s.return_mean:.1f}", f"{s.return_std:.1f}",
             "-" if s.retained is None else f"{100 * s.retained:.1f}%", f"{s.planner_calls_per_step:.3f}",
             f"{s.ms_per_step:.1f}", _front_text(s)) for s in group]


CSV_COLUMNS = ("experiment", "task", "teacher", "setting", "family", "mode", "k", "corrector", "threshold", "planner", "seeds",
               "runs", "episodes", "return_mean", "return_std", "return_stderr", "retained", "planner_calls_per_step",
               "corrector_calls_per_step", "ms_per_step", "pareto_calls", "pareto_ms")


def write_csv(settings: list[Setting], path: str | Path) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for s in settings:
        w.writerow([s.experiment, s.task, s.teacher, s.label, s.family, s.mode, s.k, s.corrector,
                    "" if s.threshold is None else s.threshold, _planner_text(s.planner), " ".join(s.seeds),
                    len(s.runs), s.episodes, f"{s.return_mean:.4f}", f"{s.return_std:.4f}",
                    f"{s.return_stderr:.4f}", "" if s.retained is None else f"{s.retained:.4f}",
                    f"{s.planner_calls_per_step:.4f}", f"{s.corrector_calls_per_step:.4f}", f"{s.ms_per_step:.3f}",
                    int(s.pareto_calls), int(s.pareto_ms)])
    return atomic_write_bytes(path, lambda f: f.write(buf.getvalue().encode()))


def _color(s: Setting) -> str:
    if s.family == "speculation":
        return MODE_COLORS.get(s.mode, "tab:blue")
    return FAMILY_COLORS[s.family]


def _panel(ax, group: list[Setting], xkey: str, flag: str, xlabel: str, base: Setting | None) -> None:
    for s in group:
        err = s.return_stderr if s.return_stderr == s.return_stderr else 0.0
        ax.errorbar(getattr(s, xkey), s.return_mean, yerr=err, fmt=CORRECTOR_MARKERS.get(s.corrector, "o"),
                    color=_color(s), capsize=3, ms=6 if getattr(s, flag) else 4.5,
                    mec="black" if getattr(s, flag) else _color(s))
        ax.annotate(s.label, (getattr(s, xkey), s.return_mean), fontsize=6, xytext=(4, 3), textcoords="offset points")
    front = sorted((s for s in group if getattr(s, flag)), key=lambda s: getattr(s, xkey))
    if front:
        xs = [getattr(s, xkey) for s in front]
        ys = [s.return_mean for s in front]
        ax.step(xs, ys, where="post", color="gray", lw=1.2, alpha=0.8, label="Pareto front")
    cheap = sorted((s for s in group if s.family == "planner family"), key=lambda s: getattr(s, xkey))
    if len(cheap) > 1:
        ax.plot([getattr(s, xkey) for s in cheap], [s.return_mean for s in cheap], color="tab:orange", lw=0.8,
                ls=":", label="planner family (replans every step)")
    if base is not None:
        ax.axhline(base.return_mean, color="black", lw=0.8, ls="--", label="baseline (full planner)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("return (mean ± s.e.)")
    ax.grid(alpha=0.3)


def plot(settings: list[Setting], path: str | Path) -> Path:
    """One row per task (and teacher): return against planner calls per step (the front drawn, the baseline, the
    planner family and the published point on the retained-return axis) and against ms per step."""
    # matplotlib is imported only where a plot is drawn (import cost)
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib is imported only where a plot is drawn (import cost)
    import matplotlib.pyplot as plt

    groups = by_task(settings)
    fig, axes = plt.subplots(len(groups), 2, figsize=(14, 5.4 * len(groups)), squeeze=False)
    for row, ((task, teacher), group) in enumerate(groups.items()):
        base = baseline_of(settings, task, teacher)
        ax = axes[row][0]
        _panel(ax, group, "planner_calls_per_step", "pareto_calls", "planner calls per step", base)
        ax.set_xlim(left=0)
        if base is not None and base.return_mean > 0:
            b = base.return_mean
            sec = ax.secondary_yaxis("right", functions=(lambda y, b=b: 100 * y / b, lambda r, b=b: r * b / 100))
            sec.set_ylabel("retained vs baseline (%)")
            px, py = PUBLISHED["planner_calls_per_step"], PUBLISHED["retained"] * b
            ax.plot([px], [py], marker="*", ms=13, color="gray", ls="none", label=PUBLISHED["label"])
            ax.annotate(f"seed paper: {100 * PUBLISHED['retained']:.1f}% at {px:.3f}", (px, py), fontsize=7,
                        xytext=(6, -10), textcoords="offset points", color="dimgray")
        ax.set_title(f"{task} ({teacher}): return against planner calls per step", fontsize=10)
        ax.legend(fontsize=7, loc="best", framealpha=0.6)
        ax2 = axes[row][1]
        _panel(ax2, group, "ms_per_step", "pareto_ms", "ms per env step (decision)", base)
        ax2.set_title(f"{task}: return against ms per step", fontsize=10)
    fig.suptitle("speculative execution: black baseline, olive policy prior, orange planner family, red naive, blue/purple corrected, "
                 "green adaptive; o no corrector, s two-tower, ^ temporal; black edge = on the Pareto front",
                 fontsize=9)
    fig.tight_layout()
    return write_png(fig, path, dpi=120)


# --- the comparison as `gym-qwen compare` prints it -------------------------------------------------------------
def compare_runs(cfg: CompareConfig) -> list[Setting]:
    """`gym-qwen compare` (and the demo's last stage): print one table per task, write the plot and its CSV, log
    both to the sweeps' parent runs (cfg.log); returns the compared settings."""
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
