"""The compute-frontier table of one task, in Markdown, from the episode logs of docs/frontier/ (BENCHMARKS.md).

Every setting logged in docs/frontier/<task>.episodes.jsonl (scripts/frontier.sh) and in the extra comparisons
docs/frontier/<task>-*.episodes.jsonl (single settings played on the same evaluation episodes: same teacher, seed
and reset seeds, checked from each log's header), paired episode by episode with the full planner's baseline of
the main log. ms per step comes from the timing run (docs/frontier/<task>-timing.episodes.jsonl, `frontier.sh
timing`, an idle machine) where it has the setting, and is marked "-" otherwise. A setting from an extra log is
named with the log's tag, e.g. "spec_corrector k=3 +two_tower [64x2-corrected]": the long runs' times were taken
beside other work and are not shown. Each adaptive threshold the long run chose is set beside the planner calls
per step its settings made (the rule's estimate on collection episodes against the evaluation episodes).

    .venv/bin/python scripts/frontier_table.py walker-walk [--min-episodes 30] [--plot docs/frontier-walker-walk.png]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from gym_qwen.platform.speculative.statistics import paired_ratio_interval, paired_summary

FOLDER = Path("docs/frontier")


def read_log(path: Path) -> tuple[dict, dict[str, dict[int, dict]]]:
    """(header, {label: {episode: record}}) of one episode log."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_label: dict[str, dict[int, dict]] = defaultdict(dict)
    for rec in lines[1:]:
        by_label[rec["label"]][rec["episode"]] = rec
    return lines[0], by_label


def per_step(records: list[dict], key: str) -> float:
    return sum(r[key] for r in records) / max(sum(r["length"] for r in records), 1)


def setting_rows(task: str, min_episodes: int) -> list[dict]:
    """Each setting with at least `min_episodes` episodes: its paired summary against the baseline, planner calls
    per step and ms per step (None without a timing run)."""
    header, settings = read_log(FOLDER / f"{task}.episodes.jsonl")
    timing = {}
    for extra in sorted(FOLDER.glob(f"{task}-*.episodes.jsonl")):
        other, found = read_log(extra)
        if other != header:
            sys.exit(f"{extra}: played on other episodes than {task}.episodes.jsonl ({other} vs {header})")
        tag = extra.name[len(task) + 1:-len(".episodes.jsonl")]
        for label, eps in found.items():
            if tag == "timing":
                timing.setdefault(label, {}).update(eps)
            elif tag.endswith("-timing"):  # an extra log's one setting, timed: found by its tag (its label may
                timing.setdefault(f"[{tag[:-len('-timing')]}]", {}).update(eps)  # be newer than the long run's)
            else:  # a setting of its own (e.g. a cheap planner with its own corrector): named by its log too
                settings[f"{label} [{tag}]"] = eps
    baseline = settings["baseline"]
    out = []
    for label, eps in settings.items():
        timed = timing.get(label) or timing.get(label[label.rfind(" ["):].strip() if label.endswith("]") else None)
        if len(eps) < min_episodes:
            continue
        idx = sorted(eps)
        if not all(i in baseline for i in idx):
            sys.exit(f"{task}: {label} has episodes the baseline has not played")
        out.append({"label": label, "returns": {i: eps[i]["return"] for i in idx},
                    "summary": paired_summary([eps[i]["return"] for i in idx], [baseline[i]["return"] for i in idx]),
                    "calls": per_step([eps[i] for i in idx], "planner_calls"),
                    "ms": 1e3 * per_step(list(timed.values()), "seconds") if timed else None})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| setting | episodes | return [95% CI] | IQM | retained % [95% CI] | falls | planner calls/step | "
             "ms/step (idle, 1 thread) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, label = r["summary"], r["label"]
        ms = "-" if r["ms"] is None else f"{r['ms']:.1f}"
        retained = "-" if label == "baseline" else \
            f"{100 * s.retained:.1f} [{100 * s.retained_low:.1f}, {100 * s.retained_high:.1f}]"
        lines.append(f"| {label} | {s.episodes} | {s.mean:.1f} [{s.mean_low:.1f}, {s.mean_high:.1f}] | {s.iqm:.1f} | "
                     f"{retained} | {100 * s.fall_rate:.0f}% | {r['calls']:.3f} | {ms} |")
    return "\n".join(lines)


def is_competitor(label: str) -> bool:
    """The settings speculation must beat: the full planner, the policy prior and the planner family."""
    return label in ("baseline", "prior") or label.startswith("baseline (planner")


def _retained(r: dict) -> tuple[float, float, float]:
    s = r["summary"]
    return (1.0, 1.0, 1.0) if r["label"] == "baseline" else (s.retained, s.retained_low, s.retained_high)


def answer(rows: list[dict]) -> list[str]:
    """The frontier's answer in sentences (issue 30): the cheapest setting by ms per step whose retained interval
    stays above 95% and above 97% (once the timing run has every setting), the settings keeping >= 97% (lower
    bound >= 95%) at <= 0.33 planner calls per step, and for each speculative setting timed, whether it beats the
    best competitor (full planner, prior, planner family) taking no more ms per step, by more than the paired 95%
    interval of their ratio."""
    if not rows:
        return ["no setting has enough episodes yet"]
    lines = []
    for floor in (0.95, 0.97):
        keep = [r for r in rows if _retained(r)[1] >= floor]
        if any(r["ms"] is None for r in rows):  # planner calls of different budgets are not the same cost
            lines.append(f"cheapest keeping >= {100 * floor:.0f}%: needs ms per step of every setting "
                         "(scripts/frontier.sh timing)")
            continue
        if not keep:
            lines.append(f"cheapest keeping >= {100 * floor:.0f}% (interval's lower bound): none")
            continue
        best = min(keep, key=lambda r: (r["ms"], -_retained(r)[0]))
        ret, low, high = _retained(best)
        lines.append(f"cheapest keeping >= {100 * floor:.0f}% (interval's lower bound): {best['label']}, "
                     f"{100 * ret:.1f}% [{100 * low:.1f}, {100 * high:.1f}] at {best['ms']:.1f} ms per step")
    target = [r for r in rows if _retained(r)[0] >= 0.97 and _retained(r)[1] >= 0.95 and r["calls"] <= 0.335]
    lines.append("keeping >= 97% (lower bound >= 95%) at <= 0.33 planner calls per step: " +
                 (", ".join(f"{r['label']} ({100 * _retained(r)[0]:.1f}%, {r['calls']:.3f})" for r in target)
                  or "none"))
    prior = next((r for r in rows if r["label"] == "prior"), None)
    if prior is not None and _retained(prior)[1] > 1:  # a ranking by "retained" would then reward the planner's flaw
        ret, low, high = _retained(prior)
        lines.append(f"the policy prior alone beats the full planner ({100 * ret:.1f}% [{100 * low:.1f}, "
                     f"{100 * high:.1f}]): at this checkpoint the task needs no planning, and a setting above 100% "
                     "measures how much of the planner it leaves out, not a gain of speculation")
    for r in rows:
        if is_competitor(r["label"]) or r["ms"] is None:
            continue
        timed = [c for c in rows if is_competitor(c["label"]) and c["ms"] is not None]
        rivals = [c for c in timed if c["ms"] <= r["ms"]]
        if not rivals:
            lines.append(f"{r['label']}: no competitor as fast ({r['ms']:.1f} ms per step)")
            continue
        line = f"{r['label']} ({r['ms']:.1f} ms) " + _versus(r, max(rivals, key=lambda c: c["summary"].mean))
        slower = [c for c in timed if c["ms"] > r["ms"]]
        if slower:  # and the next competitor up: beating it as well means dominating it
            line += "; against the cheapest slower one it " + _versus(r, min(slower, key=lambda c: c["ms"]))
        lines.append(line)
    return lines


def threshold_lines(task: str, rows: list[dict]) -> list[str]:
    """Each adaptive threshold the long run chose (its output docs/frontier/<task>.json records the choice): the
    planner calls per step the rule estimated on the collection episodes, against what the settings run with that
    threshold made on the evaluation episodes (the main log's; an extra log may reuse the threshold on another
    planner, for which it was not estimated)."""
    path = FOLDER / f"{task}.json"
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    lines = []
    for key in ("threshold_choice", "threshold_choice_one_step"):
        choice = record.get(key)
        if not choice:
            continue
        one_step = choice["mismatch"] == "one_step"
        played = [r for r in rows if "[" not in r["label"] and r["label"].startswith("adaptive")
                  and f"thr={choice['threshold']:g}" in r["label"].split()
                  and ("one_step" in r["label"].split()) == one_step]
        lines.append(f"adaptive threshold {choice['threshold']:g} ({choice['mismatch']}): estimated "
                     f"{choice['estimated_planner_calls_per_step']:.3f} planner calls per step at k={choice['k']} on "
                     f"{choice['episodes']} {choice['seed_kind']} episodes; made on the evaluation episodes: " +
                     (", ".join(f"{r['label']} {r['calls']:.3f}" for r in played) or "no setting yet"))
    return lines


def _versus(r: dict, rival: dict) -> str:
    """`r` against `rival`: beats / loses to / is level with, by the paired 95% interval of their return ratio."""
    shared = sorted(set(r["returns"]) & set(rival["returns"]))
    ratio, low, high = paired_ratio_interval([r["returns"][i] for i in shared], [rival["returns"][i] for i in shared])
    verdict = "beats" if low > 1 else "loses to" if high < 1 else "is level with"
    return (f"{verdict} {rival['label']} ({rival['ms']:.1f} ms): return ratio {ratio:.3f} [{low:.3f}, {high:.3f}] "
            f"on {len(shared)} paired episodes")


GROUPS = {"black": "full planner", "tab:olive": "policy prior", "tab:orange": "planner family (cheap budgets)",
          "tab:blue": "speculation (naive, corrected, extended)", "tab:green": "adaptive",
          "tab:brown": "speculation from the extra logs ([tag] in the table)"}


def _colour(label: str) -> str:
    if label.startswith("prior"):
        return "tab:olive"
    if label == "baseline":
        return "black"
    if label.startswith("baseline (planner"):
        return "tab:orange"
    if "[" in label:
        return "tab:brown"  # speculation from an extra log (a cheap planner, its own corrector, k3-dagger)
    return "tab:green" if label.startswith("adaptive") else "tab:blue"


def plot(task: str, rows: list[dict], path: Path) -> Path:
    """Return retained (95% interval) against planner calls per step, and against ms per step where the timing
    run has the setting; the non-dominated settings joined in grey and named, with the competitors (the rest are
    told apart by colour: the table names them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gym_qwen.platform.figures import pareto_front, write_png

    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, key, xlabel in ((axes[0], "calls", "planner calls per step"),
                            (axes[1], "ms", "ms per step (idle machine, 1 thread), log scale")):
        shown = [r for r in rows if r[key] is not None]
        if not shown:
            ax.set_axis_off()
            ax.text(0.5, 0.5, "no timing run yet (scripts/frontier.sh timing)", ha="center", transform=ax.transAxes)
            continue
        points = [(r[key], 100.0 if r["label"] == "baseline" else 100 * r["summary"].retained) for r in shown]
        front = pareto_front(points)
        for i, r in enumerate(shown):
            s = r["summary"]
            y = points[i][1]
            err = None if r["label"] == "baseline" else [[y - 100 * s.retained_low], [100 * s.retained_high - y]]
            ax.errorbar(r[key], y, yerr=err, fmt="o", color=_colour(r["label"]), capsize=3, markersize=5,
                        elinewidth=1, alpha=0.85)
            if i in front or is_competitor(r["label"]):
                ax.annotate(r["label"], (r[key], y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="grey", lw=1, zorder=0)
        ax.axhline(100, color="black", lw=0.5, ls=":")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("return retained, % of the full planner's (paired, 95% bootstrap)")
        ax.grid(alpha=0.3)
        if key == "ms":
            ax.set_xscale("log")
    episodes = sorted({r["summary"].episodes for r in rows})
    used = {_colour(r["label"]) for r in rows}
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=name) for c, name in GROUPS.items() if c in used]
    handles.append(plt.Line2D([], [], color="grey", lw=1, label="non-dominated (named)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"{task}: compute frontier, {'/'.join(map(str, episodes))} paired episodes per setting", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return write_png(fig, path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--min-episodes", type=int, default=30, help="leave out settings with fewer episodes")
    parser.add_argument("--plot", type=Path, help="also draw the frontier to this PNG (docs/frontier-<task>.png)")
    args = parser.parse_args()
    rows = setting_rows(args.task, args.min_episodes)  # the logs are read once for the table and the plot
    print(table(rows))
    print()
    for line in answer(rows) + threshold_lines(args.task, rows):
        print(f"- {line}")
    if args.plot:
        print(f"plot: {plot(args.task, rows, args.plot)}")


if __name__ == "__main__":
    main()
