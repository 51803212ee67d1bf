"""The compute-frontier table of one task, in Markdown, from the episode logs of docs/frontier/ (BENCHMARKS.md).

Every setting logged in docs/frontier/<task>.episodes.jsonl (scripts/frontier.sh) and in the extra comparisons
docs/frontier/<task>-*.episodes.jsonl (single settings played on the same evaluation episodes: same teacher, seed
and reset seeds, checked from each log's header), paired episode by episode with the full planner's baseline of
the main log. ms per step comes from the timing run (docs/frontier/<task>-timing.episodes.jsonl, `frontier.sh
timing`, an idle machine) where it has the setting, and is marked "-" otherwise. A setting from an extra log is
named with the log's tag, e.g. "spec_corrector k=3 +two_tower [64x2-corrected]": the long runs' times were taken
beside other work and are not shown.

    .venv/bin/python scripts/frontier_table.py walker-walk [--min-episodes 30]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from gym_qwen.platform.speculative.statistics import paired_summary

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


def table(task: str, min_episodes: int) -> str:
    header, settings = read_log(FOLDER / f"{task}.episodes.jsonl")
    timing = {}
    for extra in sorted(FOLDER.glob(f"{task}-*.episodes.jsonl")):
        other, found = read_log(extra)
        if other != header:
            sys.exit(f"{extra}: played on other episodes than {task}.episodes.jsonl ({other} vs {header})")
        tag = extra.name[len(task) + 1:-len(".episodes.jsonl")]
        for label, eps in found.items():
            if tag == "timing" or tag.endswith("-timing"):
                name = label if tag == "timing" else f"{label} [{tag[:-len('-timing')]}]"
                timing.setdefault(name, {}).update(eps)
            else:  # a setting of its own (e.g. a cheap planner with its own corrector): named by its log too
                settings[f"{label} [{tag}]"] = eps
    baseline = settings["baseline"]
    rows = ["| setting | episodes | return [95% CI] | IQM | retained % [95% CI] | falls | planner calls/step | "
            "ms/step (idle, 1 thread) |", "|---|---|---|---|---|---|---|---|"]
    for label, eps in settings.items():
        if len(eps) < min_episodes:
            continue
        idx = sorted(eps)
        if not all(i in baseline for i in idx):
            sys.exit(f"{task}: {label} has episodes the baseline has not played")
        s = paired_summary([eps[i]["return"] for i in idx], [baseline[i]["return"] for i in idx])
        calls = per_step([eps[i] for i in idx], "planner_calls")
        ms = f"{1e3 * per_step(list(timing[label].values()), 'seconds'):.1f}" if label in timing else "-"
        retained = "-" if label == "baseline" else \
            f"{100 * s.retained:.1f} [{100 * s.retained_low:.1f}, {100 * s.retained_high:.1f}]"
        rows.append(f"| {label} | {s.episodes} | {s.mean:.1f} [{s.mean_low:.1f}, {s.mean_high:.1f}] | {s.iqm:.1f} | "
                    f"{retained} | {100 * s.fall_rate:.0f}% | {calls:.3f} | {ms} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--min-episodes", type=int, default=30, help="leave out settings with fewer episodes")
    args = parser.parse_args()
    print(table(args.task, args.min_episodes))


if __name__ == "__main__":
    main()
