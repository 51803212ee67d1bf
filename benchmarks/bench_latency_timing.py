"""How steady are the planner latencies that decide the real-time grid (benchmarks/bench_realtime.py)?

The real-time benchmark times the full planner (L: it sets d = ceil(L / P) at each period) and every planner budget
(which of them fit within P), once per task, and keeps them. On a shared VM one timing can land in a slow spell, and
what matters is less each latency than their ratio: a budget at 0.30 of L fits P = L/3, at 0.53 it does not. This
times the same planners `repeats` times by three methods, in turn (so a slow spell is not pinned on one method):

- `each 5`: each planner in turn, the median of 5 plans after one warm-up (the benchmark's timing before 6dfdf42);
- `each 15`: the same with 15 plans (as many plans as the next, to tell the rounds from the count);
- `interleaved 15`: measure_latencies_ms, 15 rounds each timing one plan of every planner, the order turning.

    python benchmarks/bench_latency_timing.py                      # walker-walk, 1 torch thread, 6 repeats
    python benchmarks/bench_latency_timing.py tasks=walker-walk,cheetah-run repeats=4

Writes docs/latency-timing.json: per task, method and repeat the latencies (ms); per method the spread of each
budget's ratio to the full planner over the repeats (max - min). Run it on an otherwise idle machine
(`scripts/background.sh pause` and `scripts/realtime.sh pause` first): it measures time.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_realtime import parse_args  # noqa: E402  (its key=value parser; this folder is on the path)

DEFAULTS = {"tasks": "walker-walk", "repeats": "6", "threads": "1", "budgets": "32x1,32x2,64x2,128x3,256x4",
            "out": str(ROOT / "docs" / "latency-timing.json")}
METHODS = ("each 5", "each 15", "interleaved 15")


def time_task(task: str, args: dict) -> dict:
    import torch

    from gym_qwen.platform.speculative.clocked import calibration_observation, measure_latencies_ms, measure_latency_ms
    from gym_qwen.platform.speculative.evaluation import setting_planner
    from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings, budget_overrides, parse_budget
    from gym_qwen.platform.tdmpc2.checkpoints import load_agent

    torch.set_num_threads(int(args["threads"]))
    agent, _, _ = load_agent(str(ROOT / "models" / f"{task}-size1-seed1.pt"), {}, "cpu", None)
    obs = calibration_observation(task, 1)
    planners = {"full": None}
    for text in [b.strip() for b in args["budgets"].split(",") if b.strip()]:
        spec = ExecutionSpec(SpeculationSettings("baseline", 1, float("inf")), "none", None,
                             tuple(budget_overrides(*parse_budget(text)).items()))
        planners[text] = setting_planner(agent, spec)
    measure_latencies_ms(agent, obs, planners, repeats=1)  # compiles every planner's rollout before any timing
    runs = {m: [] for m in METHODS}
    for r in range(int(args["repeats"])):
        order = METHODS[r % 3:] + METHODS[:r % 3]
        for method in order:
            t0 = time.perf_counter()
            if method == "interleaved 15":
                ms = measure_latencies_ms(agent, obs, planners, repeats=15)
            else:
                n = int(method.split()[1])
                ms = {name: measure_latency_ms(agent, obs, p, repeats=n) for name, p in planners.items()}
            runs[method].append(ms)
            print(f"{task} repeat {r} {method:>14}: " + ", ".join(f"{k} {v:.1f}" for k, v in ms.items()) +
                  f" ({time.perf_counter() - t0:.1f} s)", flush=True)
    spread = {}
    for method, rs in runs.items():
        spread[method] = {}
        for name in planners:
            if name == "full":
                values = [x["full"] for x in rs]
                spread[method]["full_ms"] = {"min": min(values), "max": max(values)}
                continue
            ratios = [x[name] / x["full"] for x in rs]
            spread[method][name] = {"ratio_min": min(ratios), "ratio_max": max(ratios),
                                    "ratio_spread": max(ratios) - min(ratios)}
    return {"task": task, "runs": runs, "spread": spread}


def main(argv: list[str] | None = None) -> int:
    from gym_qwen.platform.files import atomic_write_bytes

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, DEFAULTS, "bench_latency_timing")
    record = {"command": "python benchmarks/bench_latency_timing.py " + " ".join(argv),
              "threads": int(args["threads"]), "repeats": int(args["repeats"]), "tasks": []}
    for task in [t.strip() for t in args["tasks"].split(",") if t.strip()]:
        record["tasks"].append(time_task(task, args))
        for method, s in record["tasks"][-1]["spread"].items():
            full = s["full_ms"]
            ratios = ", ".join(f"{k} {v['ratio_min']:.2f}-{v['ratio_max']:.2f}" for k, v in s.items() if k != "full_ms")
            print(f"{task} {method:>14}: L {full['min']:.1f}-{full['max']:.1f} ms; budget / L: {ratios}")
    out = Path(args["out"])
    atomic_write_bytes(out, lambda f: f.write(json.dumps(record, indent=1).encode()))
    print(f"numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
