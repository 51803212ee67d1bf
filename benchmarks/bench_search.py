"""Grid against Optuna on the same ground: how many trials does each need to trace the front of return against
planner calls per step?

    python benchmarks/bench_search.py --trials 12 --planner-samples 64 --planner-iterations 2

Runs configs/sweeps/search-grid.yaml (every point) and configs/sweeps/search.yaml (Optuna's multi-objective TPE,
`--trials` points) side by side in one run, on the same teacher, seed and episodes, into a fresh MLflow store
under runs/bench-search/. Each front is scored by its hypervolume (the area of (planner calls, return) it
dominates, up to 1 planner call per step and down to return 0), counted trial by trial in the order the trials
started. Writes benchmarks/results/search.json and docs/search-vs-grid.png.

`--planner-samples/--planner-iterations` run every trial on a cheaper MPPI (the cheap planner) so that the
comparison fits a CPU session; the search machinery is the same at any planner.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hypervolume(points: list[tuple[float, float]], calls_ref: float = 1.0, return_ref: float = 0.0) -> float:
    """Area dominated by (planner calls per step, return) points (fewer calls and more return are better) inside
    [0, calls_ref] x [return_ref, inf)."""
    area, best = 0.0, return_ref
    inside = sorted((c, r) for c, r in points if c <= calls_ref and r > return_ref)
    for i, (c, r) in enumerate(inside):
        best = max(best, r)
        right = inside[i + 1][0] if i + 1 < len(inside) else calls_ref
        area += (right - c) * (best - return_ref)
    return area


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points, by planner calls ascending."""
    out = []
    for c, r in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or r > out[-1][1]:
            out.append((c, r))
    return out


def trials_to_reach(points: list[tuple[float, float]], target: float, draws: int = 2000) -> dict:
    """How many trials of `points` taken in a random order (the grid has no natural order) it takes for their
    front's hypervolume to reach `target`: mean, median, 10th and 90th percentile over `draws` seeded orders."""
    import random

    counts = []
    for seed in range(draws):
        order = points[:]
        random.Random(seed).shuffle(order)
        counts.append(next((n for n in range(1, len(order) + 1) if hypervolume(order[:n]) >= target), None))
    found = sorted(c for c in counts if c is not None)
    if not found:
        return {"reached": 0}
    return {"reached": len(found) / draws, "mean": sum(found) / len(found), "median": found[len(found) // 2],
            "p10": found[int(0.1 * len(found))], "p90": found[int(0.9 * len(found))]}


def _median_curve(points: list[tuple[float, float]], draws: int) -> list[float]:
    import random

    import numpy as np

    curves = []
    for seed in range(draws):
        order = points[:]
        random.Random(seed).shuffle(order)
        curves.append([hypervolume(order[:n]) for n in range(1, len(order) + 1)])
    return [float(v) for v in np.median(np.array(curves), axis=0)]


def summarise(record: dict) -> dict:
    """The comparison's numbers from the two sweeps' points: hypervolume curves, trials to reach shares of the
    grid's hypervolume (Optuna in the order it ran; the grid in random orders)."""
    grid, search = record["grid"]["points"], record["optuna"]["points"]
    curve = {name: [hypervolume([(q["calls"], q["return"]) for q in pts[:n]]) for n in range(1, len(pts) + 1)]
             for name, pts in (("grid", grid), ("Optuna", search))}
    grid_hv = curve["grid"][-1]
    shares = (0.9, 0.95, 0.99, 1.0)
    curve["grid, random order (median of 500)"] = _median_curve([(q["calls"], q["return"]) for q in grid], 500)
    curve["grid (file order)"] = curve.pop("grid")
    record["curve"] = curve
    record["grid"].update(hypervolume=grid_hv, front=front([(q["calls"], q["return"]) for q in grid]),
                          random_order_trials_to_reach_share_of_its_hypervolume={
                              f"{int(100 * s)}%": trials_to_reach([(q["calls"], q["return"]) for q in grid],
                                                                  s * grid_hv) for s in shares})
    record["optuna"].update(hypervolume=curve["Optuna"][-1], front=front([(q["calls"], q["return"]) for q in search]),
                            trials_to_reach_share_of_grid_hypervolume={
                                f"{int(100 * s)}%": next((n for n, v in enumerate(curve["Optuna"], 1)
                                                          if v >= s * grid_hv), None) for s in shares})
    return record


def sweep_points(uri: str, sweep_id: str) -> list[dict]:
    """The finished trials of a sweep in the order they started: params and metrics."""
    from gym_qwen.platform.tracking import client

    c = client(uri)
    exps = [e.experiment_id for e in c.search_experiments()]
    runs = c.search_runs(exps, filter_string=f"tags.sweep_id = '{sweep_id}' and tags.`gym_qwen.role` = 'trial'",
                         order_by=["attributes.start_time ASC"], max_results=1000)
    return [{"calls": r.data.metrics["planner_calls_per_step"], "return": r.data.metrics["return_mean"],
             "ms": r.data.metrics.get("ms_per_decision"), "k": int(r.data.params["spec_exec_horizon"]),
             "threshold": float(r.data.params["mismatch_threshold"]), "corrector": r.data.params["corrector_type"]}
            for r in runs if r.info.status == "FINISHED"]


def run(file: str, overrides: dict, fixed: dict, storage: Path) -> tuple[str, float]:
    from gym_qwen.jobs.sweep import run_sweep_file
    from gym_qwen.platform.config import SweepConfig, config_from_dict

    cfg = config_from_dict(SweepConfig, {"file": file})
    started = time.perf_counter()
    rc, sweep_id = run_sweep_file(cfg, {**overrides, "storage": str(storage)}, fixed)
    if rc or sweep_id is None:
        raise SystemExit(f"the sweep of {file} did not finish (exit {rc})")
    return sweep_id, time.perf_counter() - started


def plot(grid: list[dict], search: list[dict], curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for pts, label, marker in ((grid, f"grid ({len(grid)} trials)", "s"), (search, f"Optuna ({len(search)} trials)", "o")):
        a.scatter([p["calls"] for p in pts], [p["return"] for p in pts], marker=marker, alpha=0.6, label=label)
        f = front([(p["calls"], p["return"]) for p in pts])
        a.step([c for c, _ in f], [r for _, r in f], where="post", alpha=0.8)
    a.set_xlabel("planner calls per env step")
    a.set_ylabel("return (1 episode)")
    a.set_title("every trial, and each search's front")
    a.legend()
    for name, values in curve.items():
        b.plot(range(1, len(values) + 1), values, marker=".", label=name)
    b.set_xlabel("trials run (in the order they started)")
    b.set_ylabel("hypervolume of the front so far")
    b.set_title("how fast each search traces the front")
    b.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12, help="Optuna's budget")
    p.add_argument("--planner-samples", type=int, default=None)
    p.add_argument("--planner-iterations", type=int, default=None)
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--report-only", action="store_true", help="run nothing: recompute the numbers and the plot "
                   "from benchmarks/results/search.json")
    args = p.parse_args()
    if args.report_only:
        report(summarise(json.loads((ROOT / "benchmarks" / "results" / "search.json").read_text())))
        return 0

    out = ROOT / "runs" / "bench-search" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    os.environ["MLFLOW_TRACKING_URI"] = uri = f"sqlite:///{out / 'mlflow.db'}"
    os.chdir(ROOT)  # the sweep files name the shipped teacher relative to the repository
    fixed = {k: v for k, v in (("num_samples", args.planner_samples), ("iterations", args.planner_iterations))
             if v is not None}
    if "num_samples" in fixed:  # the checkpoint's elites and policy trajectories must fit the fewer samples
        from gym_qwen.platform.speculative.modes import budget_overrides

        fixed.update({k: v for k, v in budget_overrides(fixed["num_samples"], fixed.get("iterations", 6)).items()
                      if k in ("num_elites", "num_pi_trajs")})
    common = {"max_concurrent": args.max_concurrent}
    grid_id, grid_wall = run("configs/sweeps/search-grid.yaml", common, fixed, out / "sweeps")
    search_id, search_wall = run("configs/sweeps/search.yaml", {**common, "num_trials": args.trials}, fixed,
                                 out / "sweeps")
    grid, search = sweep_points(uri, grid_id), sweep_points(uri, search_id)
    record = summarise({"grid": {"sweep_id": grid_id, "trials": len(grid), "wall_seconds": grid_wall, "points": grid},
                        "optuna": {"sweep_id": search_id, "trials": len(search), "wall_seconds": search_wall,
                                   "points": search},
                        "planner": fixed or "the teacher's", "store": uri})
    report(record)
    return 0


def report(record: dict) -> None:
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "search.json").write_text(json.dumps(record, indent=1))
    plot(record["grid"]["points"], record["optuna"]["points"], record["curve"], ROOT / "docs" / "search-vs-grid.png")
    g, o = record["grid"], record["optuna"]
    print(f"grid: {g['trials']} trials, hypervolume {g['hypervolume']:.1f}; Optuna: {o['trials']} trials, "
          f"hypervolume {o['hypervolume']:.1f} ({100 * o['hypervolume'] / g['hypervolume']:.1f}% of the grid's)")
    for share, n in o["trials_to_reach_share_of_grid_hypervolume"].items():
        r = g["random_order_trials_to_reach_share_of_its_hypervolume"][share]
        grid_says = f"median {r['median']} (mean {r['mean']:.1f}, 10-90% {r['p10']}-{r['p90']})" if r.get("median") \
            else "never"
        print(f"{share} of the grid's hypervolume: Optuna after {n if n else 'more than ' + str(o['trials'])} "
              f"trials; the grid in a random order after {grid_says}")


if __name__ == "__main__":
    sys.exit(main())
