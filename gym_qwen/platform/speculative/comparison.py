"""Resolving what `gym-qwen evaluate` is asked into ExecutionSpecs, and the comparison of several of them:
table rows (return retained against baseline, calls and milliseconds per step) and the plot of return against
planner calls per step and against ms per step."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..config_schema import ConfigError
from ..figures import pareto_front, write_png
from ..files import atomic_write_bytes
from .clock import ClockSettings, parse_latency
from .modes import (
    ALIASES, BUDGET_RULE, DEFAULT_EXEC_HORIZON, ExecutionSpec, SpeculationSettings, alias_note, budget_name,
    budget_overrides, parse_budget)
from .statistics import FALL_FRACTION, paired_summary


def corrector_path(checkpoint: str, corrector_type: str) -> str:
    """Where a teacher's corrector of `corrector_type` lives by default: `correctors/<stem>-<type>.pt` in the
    teacher's folder (models/correctors/ for the shipped teachers)."""
    path = Path(checkpoint)
    return str(path.parent / "correctors" / f"{path.stem}-{corrector_type}.pt")


def resolve_mode(cfg) -> tuple[dict, str | None]:
    """(mode, exec_horizon, plan_horizon, corrector_type) after applying an alias of the original project, and
    the note saying what the alias maps to (None if no alias was used). Explicit keys win over the alias."""
    mode, k, plan, corrector, note = cfg.mode, cfg.spec_exec_horizon, cfg.spec_plan_horizon, cfg.corrector_type, None
    if mode in ALIASES:
        note = alias_note(mode)
        mode, alias_k, alias_plan, alias_corrector = ALIASES[cfg.mode]
        k = k if k is not None else alias_k
        plan = plan if plan is not None else alias_plan
        if corrector == "none" and alias_corrector is not None:
            corrector = alias_corrector
        if corrector == "none" and mode in ("spec_corrector", "spec_extended"):
            corrector = "two_tower"
    return {"mode": mode, "k": k, "plan": plan, "corrector": corrector}, note


def clock_of(cfg):
    """The ClockSettings the keys ask for (control_period_ms=, planner_latency_ms=, realtime=), or None."""
    if getattr(cfg, "control_period_ms", None) is None:
        return None

    latency = parse_latency(cfg.planner_latency_ms)
    return ClockSettings(cfg.control_period_ms, latency, "given" if latency is not None else "measured",
                         cfg.realtime, cfg.planner_threads or (cfg.torch_threads if cfg.realtime else None))


def single_spec(cfg, resolved: dict, teacher_horizon: int, given=frozenset()) -> ExecutionSpec:
    """The one ExecutionSpec of a non-`all` evaluation, checked against the teacher's planning horizon. `given`:
    the keys set explicitly (async verifies its steps only when mismatch_threshold= is one of them)."""
    mode = resolved["mode"]
    H = resolved["plan"] or teacher_horizon
    k = resolved["k"] if resolved["k"] is not None else DEFAULT_EXEC_HORIZON[mode]
    if mode == "spec_corrector" and k > H:
        raise ConfigError(f"mode=spec_corrector executes k <= H steps: spec_exec_horizon={k} > plan horizon {H}; "
                          "use mode=spec_extended")
    if mode == "spec_extended" and k <= H:
        raise ConfigError(f"mode=spec_extended executes k > H steps: spec_exec_horizon={k} <= plan horizon {H}; "
                          "use mode=spec_corrector")
    corrector = resolved["corrector"]
    path = None
    if corrector != "none":
        path = cfg.corrector_checkpoint or corrector_path(cfg.checkpoint, corrector)
        if not Path(path).is_file():
            raise ConfigError(f"corrector file {path} not found: distill one with gym-qwen distill "
                              f"or give corrector_checkpoint=")
    threshold = cfg.mismatch_threshold
    if mode == "async" and "mismatch_threshold" not in given:
        threshold = float("inf")  # plain async: nothing is cancelled
    return ExecutionSpec(SpeculationSettings(mode, k, threshold, cfg.history_len, cfg.mismatch, cfg.fallback,
                                             cfg.past_horizon),
                         corrector, path, measure_teacher=cfg.measure_teacher, clock=clock_of(cfg))


def budget_specs(cfg, teacher_planner: dict) -> tuple[list[tuple], list[str]]:
    """The planner family of mode=all: the planner overrides of each budget in cfg.planner_budgets, cheapest
    first (samples x iterations), leaving out a budget that is the teacher's own planner (the baseline row)."""
    family, notes = [], []
    for text in cfg.planner_budgets:
        over = budget_overrides(*parse_budget(text))
        if all(teacher_planner.get(k) == v for k, v in over.items()):
            notes.append(f"planner budget {text} is the teacher's own planner: the baseline row")
            continue
        family.append(tuple(over.items()))
    family.sort(key=lambda o: dict(o)["num_samples"] * dict(o)["iterations"])
    return family, notes


def all_specs(cfg, teacher_horizon: int, teacher_planner: dict | None = None,
              one_step_threshold: float | None = None) -> tuple[list[ExecutionSpec], list[str]]:
    """mode=all: baseline, the policy prior alone, the planner family (one row per budget, replanning every
    step), naive at each k > 1, each available corrector at each k > 1 (spec_corrector up to H, spec_extended past
    it), adaptive at the largest k with each corrector and without, speculation (corrected k = H, adaptive) on
    the `spec_budgets` cheapest budgets, adaptive falling back to the policy prior on a miss, and (given
    `one_step_threshold`, chosen for that kind of mismatch) adaptive verified by the one-step mismatch. Ordered so that the settings with nothing to choose come first (the
    competitors, naive, the correctors), and adaptive, whose threshold is chosen on collection episodes, last:
    with an episode log a long run can be resumed with the threshold set before it reaches those rows. `teacher_planner`: the teacher's planner settings (a budget equal to them is the
    baseline). Returns (specs, notes)."""
    H = cfg.spec_plan_horizon or teacher_horizon
    ks = sorted({k for k in cfg.spec_exec_horizons if k > 1})
    thr, hist, teach, kind_mismatch = cfg.mismatch_threshold, cfg.history_len, cfg.measure_teacher, cfg.mismatch
    wanted = ("two_tower", "temporal") if cfg.corrector_type == "none" else (cfg.corrector_type,)
    correctors, notes = {}, []
    for kind in wanted:
        path = cfg.corrector_checkpoint if (cfg.corrector_checkpoint and cfg.corrector_type == kind) \
            else corrector_path(cfg.checkpoint, kind)
        if Path(path).is_file():
            correctors[kind] = path
        else:
            notes.append(f"no {kind} corrector at {path}: its rows are left out")
    family, budget_notes = budget_specs(cfg, teacher_planner or {})
    notes += budget_notes
    spec = lambda mode, k, kind="none", overrides=(), fallback="plan": ExecutionSpec(  # noqa: E731
        SpeculationSettings(mode, k, thr, hist, kind_mismatch if mode == "adaptive" else "open_loop", fallback),
        kind, correctors.get(kind), overrides, teach)
    kinds = list(correctors)
    corrected = lambda k, kind, over=(): spec("spec_corrector" if k <= H else "spec_extended", k, kind, over)  # noqa
    specs = [spec("baseline", 1), spec("prior", 1)] + [spec("baseline", 1, overrides=o) for o in family]
    specs += [spec("naive", k) for k in ks]
    for kind in kinds:
        specs += [corrected(k, kind) for k in ks]
    cheap = family[:cfg.spec_budgets]
    if kinds and H in ks:
        specs += [corrected(H, kinds[0], over) for over in cheap]
    if ks:
        specs += [spec("adaptive", ks[-1], kind) for kind in kinds + ["none"]]
        specs += [spec("adaptive", ks[-1], kinds[0] if kinds else "none", over) for over in cheap]
        specs.append(spec("adaptive", ks[-1], kinds[0] if kinds else "none", fallback="prior"))
        if one_step_threshold is not None:
            kind = kinds[0] if kinds else "none"
            specs.append(ExecutionSpec(SpeculationSettings("adaptive", ks[-1], one_step_threshold, hist, "one_step"),
                                       kind, correctors.get(kind), (), teach))
    return specs, notes


ROW_HEADER = ("task", "setting", "episodes", "return [95% CI]", "IQM", "retained [95% CI]", "falls",
              "planner calls/step", "corrector calls/step", "ms/step", "plan", "encode", "correct", "extend",
              "replan rate", "misses", "teacher MSE")


def _pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}"


def _summaries(results: list[tuple[ExecutionSpec, object]], baseline_returns) -> list:
    """One PairedSummary per result; retained and falls only where the baseline played the same episodes."""
    out = []
    for _, res in results:
        paired = baseline_returns is not None and len(baseline_returns) == len(res.returns)
        out.append(paired_summary(res.returns, baseline_returns if paired else None))
    return out


def comparison_rows(task: str, results: list[tuple[ExecutionSpec, object]], baseline_returns) -> list[tuple]:
    """One table row per (spec, EvalResult). `baseline_returns`: the baseline's returns on the same episodes (in
    episode order) or None; retained is their paired ratio with its bootstrap interval (statistics.py)."""
    rows = []
    for (spec, res), p in zip(results, _summaries(results, baseline_returns)):
        s = res.summary()
        retained = "-" if p.retained is None else f"{_pct(p.retained)}% [{_pct(p.retained_low)}, {_pct(p.retained_high)}]"
        teacher = s["teacher_action_mse"]
        rows.append((task, spec.label, len(res.returns), f"{p.mean:.1f} [{p.mean_low:.1f}, {p.mean_high:.1f}]",
                     f"{p.iqm:.1f}", retained, "-" if p.fall_rate is None else f"{_pct(p.fall_rate)}%",
                     f"{res.planner_calls_per_step:.3f}", f"{s['corrector_calls_per_step']:.3f}",
                     f"{res.ms_per_decision:.1f}", f"{s['plan_ms_per_step']:.1f}", f"{s['encode_ms_per_step']:.1f}",
                     f"{s['correct_ms_per_step']:.1f}", f"{s['extend_ms_per_step']:.1f}",
                     f"{res.replan_rate:.3f}", res.misses, "-" if teacher is None else f"{teacher:.4f}"))
    return rows


CLOCK_HEADER = ("setting", "P ms", "L ms", "d", "clock", "plans started", "used", "discarded", "cancelled",
                "steps plan", "corrected", "extension", "prior", "deadline misses", "wait ms/step")


def clock_rows(results: list[tuple[ExecutionSpec, object]]) -> list[tuple]:
    """The clock's table: for each setting run under a clock, P, L, d, the plans (started, used, discarded,
    cancelled), the decisions by action source, deadline misses and ms per step waiting for a plan."""
    rows = []
    for spec, res in results:
        c = res.clock
        if c is None:
            continue
        latency = "-" if spec.settings.mode == "prior" else f"{c['planner_latency_ms']:.1f}"
        rows.append((spec.label, f"{c['control_period_ms']:g}", latency, c["delay"],
                     "wall" if c["realtime"] else "simulated", res.plans_started, res.plans_used, res.plans_discarded,
                     res.plans_cancelled, res.steps_plan, res.steps_corrected, res.steps_extension, res.steps_prior,
                     res.deadline_misses, f"{1e3 * res.per_step(res.wait_seconds):.1f}"))
    return rows


RECORD_KEYS = ("planner_calls_per_step", "corrector_calls_per_step", "encoder_calls_per_step", "policy_calls_per_step",
               "ms_per_decision", "plan_ms_per_step", "encode_ms_per_step", "policy_ms_per_step",
               "verify_ms_per_step", "correct_ms_per_step", "extend_ms_per_step", "replan_rate", "misses",
               "teacher_action_mse", "planner_calls", "decisions", "clock", "plans_started", "plans_used",
               "plans_discarded", "plans_cancelled", "steps_plan", "steps_corrected", "steps_extension", "steps_prior",
               "deadline_misses", "deadline_misses_per_step", "wait_ms_per_step", "predict_ms_per_step")


def comparison_record(task: str, results: list[tuple[ExecutionSpec, object]], baseline_returns) -> dict:
    """The numbers behind the table and the plot (JSON-serialisable); see comparison_rows."""
    out = []
    for (spec, res), p in zip(results, _summaries(results, baseline_returns)):
        s = res.summary()
        out.append({"setting": spec.label, "mode": spec.settings.mode, "k": spec.steps_per_plan,
                    "corrector": spec.corrector_type,
                    "threshold": spec.settings.mismatch_threshold if math.isfinite(spec.settings.mismatch_threshold)
                    else None,
                    "mismatch": spec.settings.mismatch, "fallback": spec.settings.fallback,
                    "planner_overrides": dict(spec.planner_overrides),
                    "planner_budget": budget_name(spec.planner_overrides), "returns": res.returns,
                    "episode_planner_calls": res.episode_planner_calls,
                    "return_mean": res.mean, "return_std": res.std, "return_stderr": res.stderr,
                    "return_low": p.mean_low, "return_high": p.mean_high, "return_iqm": p.iqm,
                    "retained": p.retained, "retained_low": p.retained_low, "retained_high": p.retained_high,
                    "fall_rate": p.fall_rate, **{k: s[k] for k in RECORD_KEYS}})
    base = None if baseline_returns is None else float(np.mean(baseline_returns))
    return {"task": task, "baseline_return": base, "baseline_returns": baseline_returns,
            "statistics": {"interval": "95% percentile bootstrap over episodes (scipy.stats.bootstrap, paired for "
                                       "retained, 10,000 resamples)",
                           "iqm": "mean of the middle 50% of episodes",
                           "fall": f"an episode below {FALL_FRACTION:g} x the baseline's median return",
                           "planner_budgets": BUDGET_RULE},
            "settings": out}


PLOT_MODES = {"baseline": "baseline", "prior": "policy prior", "naive": "naive", "spec_corrector": "corrected",
              "spec_extended": "extended", "adaptive": "adaptive", "async": "async", "stale": "stale"}
PLOT_CORRECTORS = {"none": "", "two_tower": " 2-tower", "temporal": " temporal"}
FAMILY_COLORS = {"baseline": "black", "prior": "tab:olive", "naive": "tab:red", "spec_corrector": "tab:blue",
                 "spec_extended": "tab:purple", "adaptive": "tab:green", "async": "tab:cyan", "stale": "tab:gray"}


def _plot_label(s: dict) -> str:
    """A setting's short name on the plot (the table and the JSON keep the full one)."""
    name = PLOT_MODES.get(s["mode"], s["mode"])
    if s["mode"] not in ("baseline", "prior"):
        name += f" k={s['k']}"
    name += PLOT_CORRECTORS.get(s["corrector"], f" {s['corrector']}")
    if s.get("fallback", "plan") != "plan":
        name += f" -> {s['fallback']}"
    if s["planner_overrides"]:
        over = dict(s["planner_overrides"])
        budget = s.get("planner_budget") or f"{over.get('num_samples', '?')}x{over.get('iterations', '?')}"
        name = f"planner {budget}" + ("" if s["mode"] == "baseline" else f" + {name}")
    return name


def plot_comparison(record: dict, path: str | Path) -> Path:
    """Two panels: return (mean with its 95% interval) against planner calls per step and against ms per step,
    the non-dominated settings joined, the baseline dashed. Written atomically as PNG, the numbers as JSON beside
    it. The ms axis is logarithmic: the policy prior and the planner family span three orders of magnitude."""
    # matplotlib is imported only where a plot is drawn (import cost)
    import matplotlib

    matplotlib.use("Agg")
    # matplotlib is imported only where a plot is drawn (import cost)
    import matplotlib.pyplot as plt


    settings = record["settings"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.6))
    for ax, xkey, xlabel in ((axes[0], "planner_calls_per_step", "planner calls per step"),
                             (axes[1], "ms_per_decision", "ms per step (decision), log scale")):
        for s in settings:
            color = "tab:orange" if s["planner_overrides"] and s["mode"] == "baseline" else \
                ("tab:brown" if s["planner_overrides"] else FAMILY_COLORS[s["mode"]])
            marker = {"none": "o", "two_tower": "s", "temporal": "^"}[s["corrector"]]
            low, high = s.get("return_low"), s.get("return_high")
            err = None if low is None or low != low else [[s["return_mean"] - low], [high - s["return_mean"]]]
            ax.errorbar(s[xkey], s["return_mean"], yerr=err, fmt=marker, color=color, capsize=3)
            label = ax.annotate(_plot_label(s), (s[xkey], s["return_mean"]), fontsize=7, xytext=(4, 3),
                                textcoords="offset points", clip_on=True)
            label.set_in_layout(False)  # long labels must not squeeze the panels
        front = pareto_front([(s[xkey], s["return_mean"]) for s in settings])
        ax.plot([settings[i][xkey] for i in front], [settings[i]["return_mean"] for i in front], color="grey",
                lw=1, ls="-", zorder=0, label="non-dominated")
        if record["baseline_return"]:
            ax.axhline(record["baseline_return"], color="black", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("return (mean, 95% interval)")
        ax.grid(alpha=0.3)
    axes[0].set_xlim(-0.05, 1.25)  # room for the labels of the settings that plan every step
    positive = [s["ms_per_decision"] for s in settings if s["ms_per_decision"] > 0]
    if positive:
        axes[1].set_xscale("log")
        axes[1].set_xlim(min(positive) / 1.5, 3 * max(positive))
    episodes = sorted({len(s["returns"]) for s in settings})
    fig.suptitle(f"{record['task']}: {'/'.join(map(str, episodes))} episodes per setting, the same episodes for all "
                 "(black baseline, olive policy prior, orange planner family, brown planner + speculation, red naive, "
                 "blue/purple corrected, green adaptive; o none, s two-tower, ^ temporal; grey: non-dominated)",
                 fontsize=8)
    fig.tight_layout()
    path = write_png(fig, path, dpi=130)
    atomic_write_bytes(path.with_suffix(".json"), lambda f: f.write(json.dumps(record, indent=1).encode()))
    return path
