"""ms per environment step of the frontier's cheap competitors when many environments are planned as one batch:
the policy prior alone and the planner family (64x2, 128x3, 256x4 and the full 512x6), on the shipped teachers,
through the executor that `gym-qwen evaluate` uses (SpeculativeExecutor.act on B observation rows at once).

On a CPU planning is compute-bound and batching saves little (BENCHMARKS, "Batched planning"); on a GPU one
planner call is bound by kernel launches, so B environments cost about what one does and the frontier's ms axis
moves. This measures that axis: for each batch size B, the median wall time of one batched decision (CUDA
synchronised around it) divided by B. The physics is not included (the environments step on the CPU, in
parallel with nothing here); see `env_step_ms` in the output for one dm_control step measured where the
observations were recorded.

The observations are real ones: the teacher's policy prior played on the task, recorded once on a machine with
dm_control (`--record`), so that the GPU machine needs neither dm_control nor MuJoCo:
    python benchmarks/bench_frontier_batched.py --record .gpu/frontier-observations.npz
    python benchmarks/bench_frontier_batched.py --observations .gpu/frontier-observations.npz --device cuda \
        --batches 1 16 64 256 1024 --out benchmarks/results/frontier-batched-cuda.json
    python benchmarks/bench_frontier_batched.py --observations .gpu/frontier-observations.npz --device cpu \
        --threads 1 --batches 1 16 --out benchmarks/results/frontier-batched-cpu.json
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gym_qwen.platform.files import atomic_write_bytes  # noqa: E402
from gym_qwen.platform.speculative.executor import SpeculativeExecutor  # noqa: E402
from gym_qwen.platform.speculative.modes import SpeculationSettings, budget_overrides, parse_budget  # noqa: E402
from gym_qwen.platform.tdmpc2.checkpoints import load_agent  # noqa: E402

TASKS = ("cheetah-run", "walker-walk")
SETTINGS = ("prior", "64x2", "128x3", "256x4", "512x6")  # 512x6: the full planner (the teacher's own settings)


def checkpoint(task: str) -> str:
    return str(Path(__file__).resolve().parents[1] / "models" / f"{task}-size1-seed1.pt")


def record(path: Path, per_task: int, episodes: int) -> None:
    """Observations of the policy prior playing each task (`episodes` episodes, `per_task` rows in all)."""
    from gym_qwen.platform.envs import make_env

    out = {}
    for task in TASKS:
        agent = load_agent(checkpoint(task), {}, "cpu")[0]
        executor = SpeculativeExecutor(agent, SpeculationSettings(mode="prior"))
        env, rows, step_seconds = make_env(task, seed=123), [], []
        for e in range(episodes):
            obs, _ = env.reset(seed=10_000_000 + e)
            executor.reset()
            for t in range(per_task // episodes):
                rows.append(np.asarray(obs, dtype=np.float32))
                action = executor.act(np.asarray(obs, dtype=np.float32)[None], t=t)[0]
                t0 = time.perf_counter()
                obs, _, terminated, truncated, _ = env.step(action)
                step_seconds.append(time.perf_counter() - t0)
                if terminated or truncated:
                    break
        out[task] = np.stack(rows)
        out[f"{task}/env_step_ms"] = np.float64(1e3 * statistics.median(step_seconds))
        print(f"{task}: {len(rows)} observations, one env step {out[f'{task}/env_step_ms']:.3f} ms")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)


def batched_decision_ms(agent, setting: str, obs: np.ndarray, batch: int, calls: int, device: str) -> dict:
    """Median ms of one decision for `batch` environments (the executor's act on batch rows)."""
    mode = "prior" if setting == "prior" else "baseline"
    executor = SpeculativeExecutor(agent, SpeculationSettings(mode=mode), batch=batch)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rng = np.random.default_rng(batch)
    times = []
    for i in range(calls + 3):
        rows = obs[rng.integers(0, len(obs), batch)]
        sync()
        t0 = time.perf_counter()
        executor.act(rows, t=i)
        sync()
        if i >= 3:  # warm-up: allocations, cuBLAS handles, the warm start's first plan
            times.append(1e3 * (time.perf_counter() - t0))
    ms = statistics.median(times)
    return {"setting": setting, "batch": batch, "ms_per_decision": ms, "ms_per_env_step": ms / batch,
            "min_ms": min(times), "calls": len(times),
            "planner_calls": sum(s.counts["planner_calls"] for s in executor.stats)}


def agent_for(task: str, setting: str, device: str, compile_: bool):
    overrides = {} if setting in ("prior", "512x6") else budget_overrides(*parse_budget(setting))
    if compile_:
        overrides["compile"] = True
    return load_agent(checkpoint(task), overrides, device)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--record", type=Path, help="record observations to this .npz and stop")
    p.add_argument("--observations", type=Path, default=Path(".gpu/frontier-observations.npz"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256, 1024])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS))
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--calls", type=int, default=15)
    p.add_argument("--compile", action="store_true", help="compile=true (the compiled MPPI rollout)")
    p.add_argument("--compile-mode", default=None, choices=("default", "reduce-overhead", "max-autotune"),
                   help="torch.compile's mode for --compile (reduce-overhead: CUDA graphs); an experiment of this "
                        "benchmark, patched in here, not a setting of the platform")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/frontier-batched.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.compile_mode:
        torch.compile = functools.partial(torch.compile, mode=a.compile_mode)
    if a.record:
        record(a.record, per_task=1024, episodes=2)
        return 0
    data = np.load(a.observations)
    results = []
    for task in a.tasks:
        for setting in a.settings:
            agent = agent_for(task, setting, a.device, a.compile)
            for batch in a.batches:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    r = batched_decision_ms(agent, setting, data[task], batch, a.calls, a.device)
                fell_back = [str(w.message)[:300] for w in caught if "torch.compile of" in str(w.message)]
                r.update(task=task, env_step_ms=float(data[f"{task}/env_step_ms"]), compile_fell_back=fell_back)
                results.append(r)
                print(f"{task:12s} {setting:6s} B={batch:5d}  {r['ms_per_decision']:8.2f} ms per decision  "
                      f"{r['ms_per_env_step']:8.3f} ms per env step", flush=True)
                body = json.dumps(meta(a) | {"results": results}, indent=1).encode()
                atomic_write_bytes(a.out, lambda f: f.write(body))
    print(f"wrote {a.out}")
    return 0


def meta(a) -> dict:
    device_name = torch.cuda.get_device_name() if a.device == "cuda" else platform.processor() or platform.machine()
    return {"device": a.device, "device_name": device_name, "torch": torch.__version__, "threads": a.threads,
            "compile": a.compile, "compile_mode": a.compile_mode, "calls": a.calls, "date": time.strftime("%Y-%m-%d")}


if __name__ == "__main__":
    sys.exit(main())
