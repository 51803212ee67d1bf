"""Resolving what `gym-qwen evaluate` is asked into ExecutionSpecs, and the comparison of several of them:
table rows (return retained against baseline, calls and milliseconds per step) and the plot of return against
planner calls per step and against ms per step."""
from __future__ import annotations

import json
from pathlib import Path

from ..config_schema import ConfigError
from .modes import ALIASES, DEFAULT_EXEC_HORIZON, ExecutionSpec, SpeculationSettings, alias_note


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


def single_spec(cfg, resolved: dict, teacher_horizon: int) -> ExecutionSpec:
    """The one ExecutionSpec of a non-`all` evaluation, checked against the teacher's planning horizon."""
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
    return ExecutionSpec(SpeculationSettings(mode, k, cfg.mismatch_threshold, cfg.history_len), corrector, path,
                         measure_teacher=cfg.measure_teacher)


def all_specs(cfg, teacher_horizon: int) -> tuple[list[ExecutionSpec], list[str]]:
    """mode=all: baseline, the cheap planner, naive at each k > 1, each available corrector at each k > 1
    (spec_corrector up to H, spec_extended past it), adaptive at the largest k with each corrector and without,
    and the cheap planner speculating with the first corrector at k = H. Ordered so that the settings the
    comparison needs most come first (baseline, then naive and the first corrector at each k, then adaptive):
    an interrupted run has already written those. Returns (specs, notes)."""
    H = cfg.spec_plan_horizon or teacher_horizon
    ks = sorted({k for k in cfg.spec_exec_horizons if k > 1})
    thr, hist, teach = cfg.mismatch_threshold, cfg.history_len, cfg.measure_teacher
    cheap = (("num_samples", cfg.cheap_num_samples), ("iterations", cfg.cheap_iterations),
             ("num_elites", min(64, cfg.cheap_num_samples)), ("num_pi_trajs", min(24, cfg.cheap_num_samples - 1)))
    wanted = ("two_tower", "temporal") if cfg.corrector_type == "none" else (cfg.corrector_type,)
    correctors, notes = {}, []
    for kind in wanted:
        path = cfg.corrector_checkpoint if (cfg.corrector_checkpoint and cfg.corrector_type == kind) \
            else corrector_path(cfg.checkpoint, kind)
        if Path(path).is_file():
            correctors[kind] = path
        else:
            notes.append(f"no {kind} corrector at {path}: its rows are left out")
    spec = lambda mode, k, kind="none", overrides=(): ExecutionSpec(  # noqa: E731
        SpeculationSettings(mode, k, thr, hist), kind, correctors.get(kind), overrides, teach)
    kinds = list(correctors)
    corrected = lambda k, kind: spec("spec_corrector" if k <= H else "spec_extended", k, kind)  # noqa: E731
    specs = [spec("baseline", 1)]
    for k in ks:
        specs.append(spec("naive", k))
        specs += [corrected(k, kind) for kind in kinds[:1]]
    if ks:
        specs += [spec("adaptive", ks[-1], kind) for kind in kinds[:1]]
    specs.append(spec("baseline", 1, overrides=cheap))
    if kinds and H in ks:
        specs.append(spec("spec_corrector", H, kinds[0], cheap))
    for kind in kinds[1:]:
        specs += [corrected(k, kind) for k in ks]
    if ks:
        specs.append(spec("adaptive", ks[-1]))
        specs += [spec("adaptive", ks[-1], kind) for kind in kinds[1:]]
    return specs, notes


ROW_HEADER = ("task", "setting", "episodes", "return", "± std", "retained", "planner calls/step", "corrector calls/step",
              "ms/step", "plan", "encode", "correct", "extend", "replan rate", "misses", "teacher MSE")


def comparison_rows(task: str, results: list[tuple[ExecutionSpec, object]], baseline_mean: float | None) -> list[tuple]:
    """One table row per (spec, EvalResult); `retained` = return / baseline's (empty when unknown)."""
    rows = []
    for spec, res in results:
        s = res.summary()
        retained = f"{100 * res.mean / baseline_mean:.1f}%" if baseline_mean else "-"
        teacher = s["teacher_action_mse"]
        rows.append((task, spec.label, len(res.returns), f"{res.mean:.1f}", f"{res.std:.1f}", retained,
                     f"{res.planner_calls_per_step:.3f}", f"{s['corrector_calls_per_step']:.3f}",
                     f"{res.ms_per_decision:.1f}", f"{s['plan_ms_per_step']:.1f}", f"{s['encode_ms_per_step']:.1f}",
                     f"{s['correct_ms_per_step']:.1f}", f"{s['extend_ms_per_step']:.1f}",
                     f"{res.replan_rate:.3f}", res.misses, "-" if teacher is None else f"{teacher:.4f}"))
    return rows


def comparison_record(task: str, results: list[tuple[ExecutionSpec, object]], baseline_mean: float | None) -> dict:
    """The numbers behind the table and the plot (JSON-serialisable)."""
    out = []
    for spec, res in results:
        s = res.summary()
        out.append({"setting": spec.label, "mode": spec.settings.mode, "k": spec.settings.exec_horizon,
                    "corrector": spec.corrector_type, "threshold": spec.settings.mismatch_threshold,
                    "planner_overrides": dict(spec.planner_overrides), "returns": res.returns,
                    "return_mean": res.mean, "return_std": res.std, "return_stderr": res.stderr,
                    "retained": res.mean / baseline_mean if baseline_mean else None,
                    **{k: s[k] for k in ("planner_calls_per_step", "corrector_calls_per_step", "encoder_calls_per_step",
                                         "ms_per_decision", "plan_ms_per_step", "encode_ms_per_step",
                                         "correct_ms_per_step", "extend_ms_per_step", "replan_rate", "misses",
                                         "teacher_action_mse", "planner_calls", "decisions")}})
    return {"task": task, "baseline_return": baseline_mean, "settings": out}


PLOT_MODES = {"baseline": "baseline", "naive": "naive", "spec_corrector": "corrected", "spec_extended": "extended",
              "adaptive": "adaptive"}
PLOT_CORRECTORS = {"none": "", "two_tower": " 2-tower", "temporal": " temporal"}


def _plot_label(s: dict) -> str:
    """A setting's short name on the plot (the table and the JSON keep the full one)."""
    name = PLOT_MODES.get(s["mode"], s["mode"])
    if s["mode"] != "baseline":
        name += f" k={s['k']}"
    name += PLOT_CORRECTORS.get(s["corrector"], f" {s['corrector']}")
    if s["planner_overrides"]:
        over = dict(s["planner_overrides"])
        name = f"cheap {over.get('num_samples', '?')}x{over.get('iterations', '?')}" + (
            "" if s["mode"] == "baseline" else f" + {name}")
    return name


def plot_comparison(record: dict, path: str | Path) -> Path:
    """Two panels: return against planner calls per step, and against ms per step; one marker per setting with
    its standard error, baseline dashed. Written atomically as PNG, the numbers as JSON beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from ..files import atomic_write_bytes

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    families = {"baseline": "black", "naive": "tab:red", "spec_corrector": "tab:blue", "spec_extended": "tab:purple",
                "adaptive": "tab:green"}
    for ax, xkey, xlabel in ((axes[0], "planner_calls_per_step", "planner calls per step"),
                             (axes[1], "ms_per_decision", "ms per step (decision)")):
        for s in record["settings"]:
            color = "tab:orange" if s["planner_overrides"] else families[s["mode"]]
            marker = {"none": "o", "two_tower": "s", "temporal": "^"}[s["corrector"]]
            err = s["return_stderr"] if s["return_stderr"] == s["return_stderr"] else 0.0
            ax.errorbar(s[xkey], s["return_mean"], yerr=err, fmt=marker, color=color, capsize=3)
            label = ax.annotate(_plot_label(s), (s[xkey], s["return_mean"]), fontsize=7, xytext=(4, 3),
                                textcoords="offset points", clip_on=True)
            label.set_in_layout(False)  # long labels must not squeeze the panels
        if record["baseline_return"]:
            ax.axhline(record["baseline_return"], color="black", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("return (mean ± s.e.)")
        ax.grid(alpha=0.3)
    axes[0].set_xlim(0, 1.22)  # room for the labels of the settings that plan every step
    axes[1].set_xlim(0, 1.3 * max(s["ms_per_decision"] for s in record["settings"]))
    fig.suptitle(f"{record['task']}: speculative execution (black baseline, orange cheap planner, red naive, "
                 "blue/purple corrected, green adaptive; o none, s two-tower, ^ temporal)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
    atomic_write_bytes(path.with_suffix(".json"), lambda f: f.write(json.dumps(record, indent=1).encode()))
    return path
