"""Speculative execution against the issue's targets, for one teacher, every mode on the same seeds.

    python benchmarks/bench_speculation.py --teacher models/walker-walk-size1-seed1.pt \
        --data data/walker-walk-corrector.parquet --episodes 10 --num-workers 2

1. The adaptive threshold is chosen on the corrector data (collection episodes, seeds 20000+, never the evaluation
   seeds 10000+): the smallest one whose estimated planner calls per step is within --budget at k = --adaptive-k.
2. `gym-qwen evaluate mode=all` runs every mode (k = 1, 3, 6; both shipped correctors; adaptive; the cheap planner)
   on the evaluation seeds and writes docs/speculation-<task>.png with its JSON.
3. Each target is checked on those numbers; everything goes to benchmarks/results/speculation-<task>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pick(settings: list[dict], **match) -> list[dict]:
    return [s for s in settings if all(s.get(k) == v for k, v in match.items()) and not s["planner_overrides"]]


def se_diff(a: dict, b: dict) -> float:
    return math.sqrt(a["return_stderr"] ** 2 + b["return_stderr"] ** 2)


def check_targets(record: dict) -> list[dict]:
    """The issue's targets on one mode=all record (each: name, value, target, met)."""
    s = record["settings"]
    base = pick(s, mode="baseline")[0]  # the run's own baseline (always its first setting)
    out = []

    def add(name, value, target, met):
        out.append({"target": name, "value": value, "goal": target, "met": bool(met)})

    naive3 = pick(s, mode="naive", k=3)
    naive6 = pick(s, mode="naive", k=6)
    for c in pick(s, mode="spec_corrector", k=3):
        add(f"spec_corrector k=3 {c['corrector']}: return retained, planner calls/step",
            f"{100 * c['retained']:.1f}% at {c['planner_calls_per_step']:.3f}", ">= 95% at <= 0.34",
            c["retained"] >= 0.95 and c["planner_calls_per_step"] <= 0.34)
        if naive3:
            gap = c["return_mean"] - naive3[0]["return_mean"]
            add(f"spec_corrector k=3 {c['corrector']} vs naive k=3 (return difference, 2 s.e.)",
                f"{gap:+.1f} (2 s.e. {2 * se_diff(c, naive3[0]):.1f})", "not below naive beyond 2 s.e.",
                gap >= -2 * se_diff(c, naive3[0]))
        add(f"ms per step at k=3 {c['corrector']} vs baseline",
            f"{base['ms_per_decision'] / c['ms_per_decision']:.2f}x lower", ">= 2.5x lower",
            base["ms_per_decision"] / c["ms_per_decision"] >= 2.5)
    for c in pick(s, mode="spec_extended", k=6):
        if naive6:
            lost = base["return_mean"] - naive6[0]["return_mean"]
            recovered = (c["return_mean"] - naive6[0]["return_mean"]) / lost if lost > 0 else float("nan")
            add(f"spec_extended k=6 {c['corrector']}: share of naive k=6's loss recovered",
                f"{100 * recovered:.0f}% (naive loses {lost:.1f})", ">= 50%", recovered >= 0.5)
    for c in pick(s, mode="adaptive"):
        add(f"adaptive k={c['k']} thr={c['threshold']:g} {c['corrector']}: return retained, planner calls/step",
            f"{100 * c['retained']:.1f}% at {c['planner_calls_per_step']:.3f}", ">= 97% at <= 0.5",
            c["retained"] >= 0.97 and c["planner_calls_per_step"] <= 0.5)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True)
    p.add_argument("--data", required=True, help="corrector data of this teacher (for the adaptive threshold)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--adaptive-k", type=int, default=6)
    p.add_argument("--budget", type=float, default=0.45, help="planner calls per step the threshold aims at")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--extra", nargs="*", default=[], help="more evaluate key=value pairs")
    p.add_argument("--name", default=None, help="results and plot as speculation-<task>-<name> (default: "
                   "speculation-<task>), e.g. for correctors beside a copy of the teacher")
    p.add_argument("--check-only", action="store_true", help="do not evaluate: check the targets on the comparison "
                   "JSON an earlier (possibly interrupted) run wrote, and draw its plot")
    args = p.parse_args()

    from gym_qwen.jobs.evaluate import main as evaluate
    from gym_qwen.platform.tdmpc2.checkpoints import load_checkpoint
    from gym_qwen.platform.speculative.calibration import choose_threshold
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data

    columns, _ = read_corrector_data(args.data)
    threshold, estimate = choose_threshold(columns, args.adaptive_k, args.budget)
    threshold = round(threshold, 4)
    print(f"adaptive threshold {threshold:.4f} (estimated {estimate:.3f} planner calls/step at k={args.adaptive_k} "
          f"on {len(set(columns['episode'].tolist()))} collection episodes)", flush=True)
    task = load_checkpoint(args.teacher)["task"]
    stem = f"speculation-{task}" + (f"-{args.name}" if args.name else "")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{stem}-comparison.json"
    horizons = sorted({1, 3, 6, args.adaptive_k})
    argv = [f"checkpoint={args.teacher}", "mode=all", f"episodes={args.episodes}", f"seed={args.seed}",
            f"spec_exec_horizons={','.join(map(str, horizons))}", f"mismatch_threshold={threshold:.4f}",
            f"num_workers={args.num_workers}", "worker_cpus=1", f"torch_threads={args.threads}",
            f"output={out}", f"plot={ROOT / 'docs' / f'{stem}.png'}", *args.extra]
    if args.num_workers == 0:
        argv = [a for a in argv if not a.startswith(("num_workers", "worker_cpus"))]
    print("gym-qwen evaluate " + " ".join(argv), flush=True)
    if not args.check_only:
        rc = evaluate(argv)
        if rc:
            return rc
    record = json.loads(out.read_text())
    if record.get("settings_done", 0) < record.get("settings_planned", 0):
        from gym_qwen.platform.speculative.comparison import plot_comparison

        print(f"the comparison was interrupted: {record['settings_done']} of {record['settings_planned']} settings")
        plot_comparison(record, ROOT / "docs" / f"{stem}.png")
    targets = check_targets(record)
    for t in targets:
        print(f"{'MET ' if t['met'] else 'MISS'}  {t['target']}: {t['value']} (goal {t['goal']})")
    summary = {"task": task, "teacher": args.teacher, "threshold": threshold, "threshold_estimate": estimate,
               "budget": args.budget, "command": "gym-qwen evaluate " + " ".join(argv), "targets": targets,
               "comparison": record}
    (results / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
