"""The data-parallel learner's CUDA path without Ray: the same processes Ray Train's TorchTrainer would start
(`learner=ray_train`), started here by torch.multiprocessing, so that it runs where Ray is not installed (the lent
GPU machine: Ray's wheel alone is larger than what can be carried there).

Three checks, each on the same replay buffer of random episodes and the same starting weights:
1. the single learner on the GPU: median ms per update and peak GPU memory, per model size;
2. `learner_workers=1` with the NCCL backend: the process group is NCCL, one all-reduce is checked, and the
   learner's updates equal the single learner's exactly (with one worker there is nothing to reduce);
3. 2 ranks on the one GPU with gloo's CUDA collectives (NCCL refuses two ranks on one device): their updates follow
   the single learner's on the same global batch, loss by loss (max abs and relative difference), and their
   ms per update and peak memory per rank.
    python benchmarks/bench_data_parallel_cuda.py [--model-sizes 1 48] [--updates 20] [--task HalfCheetah-v5]
Writes benchmarks/results/data_parallel_cuda.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gym_qwen.platform.config import TrainConfig  # noqa: E402
from gym_qwen.platform.files import atomic_write_bytes  # noqa: E402
from gym_qwen.platform.training.data_parallel import DataParallelGroup  # noqa: E402
from bench_ray_train_learner import filled_learner as filled_random  # noqa: E402  (benchmarks/ is on sys.path)


def filled_learner(task: str, size: int, batch: int, device: str, episodes: int = 4):
    cfg = TrainConfig(task=task, model_size=size, batch_size=batch, device=device, mlflow=False, progress=False)
    cfg.validate()
    return filled_random(cfg, episodes)


def timed_updates(learner, updates: int) -> tuple[list[dict], list[float], int]:
    """Metrics and seconds of `updates` single updates, and the peak GPU memory they took (0 on the CPU)."""
    cuda = learner.agent.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    metrics, seconds = [], []
    for _ in range(updates):
        sync()
        t = time.perf_counter()
        metrics.append(learner.update(1))
        sync()
        seconds.append(time.perf_counter() - t)
    return metrics, seconds, torch.cuda.max_memory_allocated() if cuda else 0


def median_ms(seconds: list[float]) -> float:
    return 1e3 * statistics.median(seconds[1:] if len(seconds) > 1 else seconds)  # the first warms up


def differences(a: list[dict], b: list[dict]) -> dict:
    keys = sorted(a[0])
    return {"max_abs": {k: max(abs(x[k] - y[k]) for x, y in zip(a, b)) for k in keys},
            "max_rel": {k: max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-8) for x, y in zip(a, b)) for k in keys}}


def _rank(rank, world, backend, init_file, args, out):
    torch.set_num_threads(1)  # as the main process: the same float sums
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        device = args["device"]
        if device == "cuda":
            torch.cuda.set_device(0)
        check = torch.full((4,), float(rank + 1), device=device)
        dist.all_reduce(check)  # the backend's collective on the device's tensors
        learner = filled_learner(args["task"], args["size"], args["batch"], device)
        learner.set_data_parallel(DataParallelGroup(rank, world))
        metrics, seconds, peak = timed_updates(learner, args["updates"])
        torch.save({"metrics": metrics, "seconds": seconds, "peak": peak, "all_reduce": check.tolist()},
                   f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def group_run(world: int, backend: str, args: dict) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/rank"
        mp.start_processes(_rank, args=(world, backend, f"{tmp}/init", args, out), nprocs=world,
                           start_method="spawn", join=True)
        return [torch.load(f"{out}.{r}", weights_only=True) for r in range(world)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="HalfCheetah-v5")
    p.add_argument("--model-sizes", type=int, nargs="+", default=[1, 48])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run (gloo only)")
    p.add_argument("--out", default="benchmarks/results/data_parallel_cuda.json")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("bench_data_parallel_cuda.py: no CUDA device here (--device cpu runs the gloo checks)", file=sys.stderr)
        return 2
    cuda = a.device == "cuda"
    torch.set_num_threads(1)
    results = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "device": a.device,
               "device_name": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
               "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None, "task": a.task,
               "batch_size": a.batch_size, "updates": a.updates, "sizes": {}}
    for size in a.model_sizes:
        args = {"task": a.task, "size": size, "batch": a.batch_size, "updates": a.updates, "device": a.device}
        single = filled_learner(a.task, size, a.batch_size, a.device)
        params = sum(p.numel() for p in single.agent.model.parameters())
        s_metrics, s_seconds, s_peak = timed_updates(single, a.updates)
        del single
        if cuda:
            torch.cuda.empty_cache()
        row = {"parameters": params, "single_ms_per_update": median_ms(s_seconds), "single_peak_bytes": s_peak}
        one = group_run(1, "nccl" if cuda else "gloo", args)[0]
        row["nccl_1_worker" if cuda else "gloo_1_worker"] = {
            "all_reduce_ok": one["all_reduce"] == [1.0] * 4, "ms_per_update": median_ms(one["seconds"]),
            "peak_bytes": one["peak"], "bitwise_equal_to_single": one["metrics"] == s_metrics,
            **differences(s_metrics, one["metrics"])}
        ranks = group_run(2, "gloo", args)
        row["gloo_2_ranks"] = {"all_reduce_ok": all(r["all_reduce"] == [3.0] * 4 for r in ranks),
                                       "ms_per_update": median_ms(ranks[0]["seconds"]),
                                       "peak_bytes_per_rank": [r["peak"] for r in ranks],
                                       "ranks_agree": ranks[0]["metrics"] == ranks[1]["metrics"],
                                       **differences(s_metrics, ranks[0]["metrics"])}
        results["sizes"][str(size)] = row
        print(f"size {size} ({params / 1e6:.1f}M parameters): single {row['single_ms_per_update']:.1f} ms/update, "
              f"peak {s_peak / 2**30:.2f} GiB; 1 worker max abs loss difference "
              f"{max(differences(s_metrics, one['metrics'])['max_abs'].values()):.2e}; 2 gloo ranks "
              f"{row['gloo_2_ranks']['ms_per_update']:.1f} ms/update, max abs loss difference "
              f"{max(row['gloo_2_ranks']['max_abs'].values()):.2e}", flush=True)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        body = (json.dumps(results, indent=2) + "\n").encode()
        atomic_write_bytes(a.out, lambda f: f.write(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
