"""Per-update time of the single learner beside the data-parallel learner (learner=ray_train) on the same buffer,
and how closely the data-parallel learner's losses follow the single learner's, update by update.

Both start from the same state (weights, optimisers, replay buffer of random episodes, learner stream) and run the
same updates one at a time. The data-parallel learner's time is measured inside its rank 0 (the update only) and
at the driver (one call through the hub: the update plus Ray's round trip).
    python benchmarks/bench_ray_train_learner.py [--workers 2] [--updates 200] [--model-size 1] [--device cpu]
Writes benchmarks/results/ray_train_learner.json. On a 2-core machine 2 CPU workers are not faster than one
learner (they share the cores and add an all-reduce per backward pass); the point is that it scales on GPUs.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gym_qwen.platform.config import TrainConfig, config_to_dict  # noqa: E402
from gym_qwen.platform.files import atomic_write_bytes  # noqa: E402
from gym_qwen.platform.rng import global_rng_state  # noqa: E402
from gym_qwen.platform.tdmpc2.buffer import Episode  # noqa: E402
from gym_qwen.platform.training.loop import build_learning  # noqa: E402


def filled_learner(cfg, episodes: int):
    """The learner of `cfg` with a replay buffer of `episodes` random episodes (seeded: the same every call)."""
    spec, _, learner = build_learning(cfg, cfg.device)
    rng = np.random.default_rng(0)
    T = spec.episode_length
    for i in range(episodes):
        learner.add(Episode(rng.normal(size=(T + 1, spec.obs_dim)).astype(np.float32),
                            rng.uniform(-1, 1, (T, spec.action_dim)).astype(np.float32),
                            rng.uniform(0, 1, T).astype(np.float32), np.zeros(T, bool), episode_id=i))
    return learner


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cartpole-balance")
    p.add_argument("--model-size", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2, help="learner_workers of the data-parallel learner")
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--episodes", type=int, default=4, help="random episodes in the replay buffer")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=1, help="torch threads of each learner process")
    p.add_argument("--tiny", action="store_true", help="the tests' tiny agent (a smoke run)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ray_train_learner.json"))
    args = p.parse_args()

    import ray  # Ray takes seconds to import: after the arguments are checked

    from gym_qwen.actors.ray_train_learner import RayTrainLearner  # imports Ray

    torch.set_num_threads(args.threads)
    tiny = dict(latent_dim=16, enc_dim=32, mlp_dim=32, num_samples=32, num_elites=4, num_pi_trajs=2, iterations=1,
                horizon=1) if args.tiny else {}
    cfg = TrainConfig(task=args.task, model_size=args.model_size, batch_size=args.batch_size, device=args.device,
                      learner="ray_train", learner_workers=args.workers, num_workers=1, mlflow=False, progress=False,
                      learner_cpus=float(args.threads), torch_threads=args.threads, **tiny)
    cfg.validate()
    learner = filled_learner(cfg, args.episodes)
    start = {"agent": copy.deepcopy(learner.agent.state_dict(with_optim=True)), "buffer": learner.buffer.state(),
             "num_updates": 0, "torch_rng": global_rng_state()}

    single_s, single_m = [], []
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.updates):
        _sync(args.device)
        t = time.perf_counter()
        single_m.append(learner.update(1))
        _sync(args.device)
        single_s.append(time.perf_counter() - t)
    single_mem = torch.cuda.max_memory_allocated() if args.device == "cuda" else None

    ray.init(address="local", num_cpus=max(4, args.workers * args.threads + 1), include_dashboard=False,
             logging_level="ERROR", num_gpus=torch.cuda.device_count() if args.device == "cuda" else 0)
    dp_s, dp_wall, dp_m = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        dp = RayTrainLearner(cfg, config_to_dict(cfg), args.device, tmp)
        try:
            t = time.perf_counter()
            ray.get(dp.load_state.remote(start), timeout=1200)
            startup = time.perf_counter() - t
            for _ in range(args.updates):
                t = time.perf_counter()
                m = ray.get(dp.update.remote(1), timeout=1200)
                dp_wall.append(time.perf_counter() - t)
                dp_s.append(m.pop("seconds"))
                dp_m.append(m)
        finally:
            dp.close()
            ray.shutdown()

    keys = sorted(single_m[0])
    diffs = {k: max(abs(a[k] - b[k]) for a, b in zip(single_m, dp_m)) for k in keys}
    rel = {k: max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-8) for a, b in zip(single_m, dp_m)) for k in keys}
    ms = lambda xs: 1000 * statistics.median(xs[1:] if len(xs) > 1 else xs)  # noqa: E731 -- the first warms up
    out = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "task": args.task,
           "model_size": args.model_size, "tiny": args.tiny, "batch_size": args.batch_size, "device": args.device,
           "threads_per_learner": args.threads, "updates": args.updates, "learner_workers": args.workers,
           "single_ms_per_update_median": ms(single_s),
           "ray_train_ms_per_update_median": ms(dp_s),
           "ray_train_ms_per_call_median": ms(dp_wall),
           "ray_train_startup_s": startup,
           "single_peak_gpu_memory_bytes": single_mem,
           "max_abs_loss_difference": diffs, "max_rel_loss_difference": rel,
           "note": "on a machine with fewer cores than learner_workers * threads the data-parallel learner shares "
                   "the cores and adds an all-reduce per backward pass: it is not faster there; it scales on GPUs"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, lambda f: f.write((json.dumps(out, indent=2) + "\n").encode()))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
