"""How fast can one MPPI plan be on a GPU? The full planner of a shipped size-1 teacher (512 samples, 6 iterations,
horizon 3), eager against the same `MPPIPlanner.plan` captured whole as one CUDA graph and replayed (an experiment
of this benchmark: the platform does not capture graphs yet). Issue 31 asks for "L is a few ms" on a GPU; eager
planning there is bound by kernel launches (BENCHMARKS, "Real-time control on a GPU").

The graph is captured for a fixed batch B from static input buffers (the latents; a cold start, no warm-start
shift) drawing from the default CUDA generator, which CUDA graphs advance safely at each replay. Reported per B:
the median ms of eager plans and of graph replays (CUDA synchronised around each), and a check that the replays
plan: their elite value is close to eager's and their actions differ from replay to replay (fresh samples).
    python benchmarks/bench_planner_cudagraph.py [--batches 1 16 64] [--plans 30]
Writes benchmarks/results/planner_cudagraph.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gym_qwen.platform.files import atomic_write_bytes  # noqa: E402
from gym_qwen.platform.tdmpc2.checkpoints import load_agent  # noqa: E402


def timed(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(1e3 * (time.perf_counter() - t))
    return times


def measure(planner, z: torch.Tensor, plans: int) -> dict:
    eager_values = []

    def eager():
        eager_values.append(float(planner.plan(z, None).value.mean()))

    timed(eager, 3)  # warm-up: cuBLAS handles, allocator
    eager_ms = timed(eager, plans)
    static_z = z.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the allocations a capture needs are made on a side stream first
        for _ in range(3):
            planner.plan(static_z, None)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = planner.plan(static_z, None)
    graph_values, first_actions = [], []

    def replay():
        graph.replay()
        graph_values.append(float(out.value.mean()))
        first_actions.append(out.actions[:, 0].clone())

    timed(replay, 3)
    graph_ms = timed(replay, plans)
    distinct = len({tuple(a.flatten().tolist()) for a in first_actions})
    return {"eager_ms": statistics.median(eager_ms), "graph_ms": statistics.median(graph_ms),
            "eager_min_ms": min(eager_ms), "graph_min_ms": min(graph_ms),
            "eager_value_mean": float(np.mean(eager_values)), "graph_value_mean": float(np.mean(graph_values)),
            "eager_value_std": float(np.std(eager_values)), "graph_value_std": float(np.std(graph_values)),
            "distinct_first_actions": distinct, "replays": len(first_actions)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "models" /
                                               "cheetah-run-size1-seed1.pt"))
    p.add_argument("--observations", default=".gpu/frontier-observations.npz", help="bench_frontier_batched's")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--plans", type=int, default=30)
    p.add_argument("--out", default="benchmarks/results/planner_cudagraph.json")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_planner_cudagraph.py needs a CUDA device", file=sys.stderr)
        return 2
    agent = load_agent(a.checkpoint, {}, "cuda")[0]
    obs = np.load(a.observations)["cheetah-run"]
    results = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
               "device_name": torch.cuda.get_device_name(), "torch": torch.__version__,
               "checkpoint": Path(a.checkpoint).name, "planner": vars(agent.planner.s), "batches": {}}
    for batch in a.batches:
        with torch.inference_mode():
            z = agent.model.encode(torch.as_tensor(obs[:batch], device="cuda"))
            try:
                row = measure(agent.planner, z, a.plans)
            except RuntimeError as e:  # a capture that fails is a result too
                row = {"error": " ".join(str(e).split())[:400]}
        results["batches"][str(batch)] = row
        print(f"B={batch}: {row}", flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        body = (json.dumps(results, indent=2, default=str) + "\n").encode()
        atomic_write_bytes(a.out, lambda f: f.write(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
