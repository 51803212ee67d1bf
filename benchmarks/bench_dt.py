"""Decision Transformer speed on this CPU: updates per second of our model against the minimal reference's
mathematics written plainly (gym_qwen/platform/dt/reference.py: separate q/k/v, a materialised masked attention
matrix, nn.Dropout, every head computed), both with the same AdamW step, clipping and masked MSE; milliseconds
per evaluation action (one episode, as the reference evaluates; and 10 episodes batched); the fraction of this
CPU's float32 matmul peak an update reaches. Defaults: batch 64, context 20, 3 blocks, embedding 128, 1 head,
dropout 0.1, halfcheetah dimensions (17, 6), 2 threads, median over timed repetitions after a warm-up.

    python benchmarks/bench_dt.py [--threads 2] [--updates 30] [--repeats 5] [--device cpu]
Writes benchmarks/results/dt.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gym_qwen.platform.datasets.d4rl import OfflineData  # noqa: E402
from gym_qwen.platform.dt.data import TrajectoryWindows  # noqa: E402
from gym_qwen.platform.dt.model import DecisionTransformer, DTDims, update_flops  # noqa: E402
from gym_qwen.platform.dt.reference import reference_from  # noqa: E402
from gym_qwen.platform.dt.train import DTTrainer  # noqa: E402

REFERENCE_MEASURED = {"updates_per_s": 4.5, "ms_per_action": 3.3}  # the figures for the original here


def fake_data(n_eps=50, length=1000, S=17, A=6) -> OfflineData:
    rng = np.random.default_rng(0)
    n = n_eps * length
    timeouts = np.zeros(n, bool)
    timeouts[length - 1::length] = True
    return OfflineData("halfcheetah", rng.normal(size=(n, S)).astype(np.float32),
                       rng.uniform(-1, 1, (n, A)).astype(np.float32), rng.normal(size=n).astype(np.float32),
                       np.zeros(n, bool), timeouts)


def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


class RefTrainer(DTTrainer):
    """The same step with the reference model (it returns state, action and return predictions)."""

    def loss(self, timesteps, states, actions, rtg, mask):
        _, pred, _ = self.model(timesteps, states, actions, rtg)
        keep = mask.reshape(-1) > 0
        return F.mse_loss(pred.reshape(-1, actions.shape[-1])[keep], actions.reshape(-1, actions.shape[-1])[keep])


def time_updates(trainer, updates: int, repeats: int) -> float:
    for _ in range(3):
        trainer.step()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(updates):
            trainer.step()
        rates.append(updates / (time.perf_counter() - t))
    return statistics.median(rates)


@torch.no_grad()
def ms_per_action(model, dims: DTDims, batch: int, steps: int = 200, reference: bool = False) -> float:
    """A rollout's forward passes without the environment: the context grows to K, then slides."""
    K = dims.context_len
    states = torch.randn(batch, steps, dims.state_dim)
    actions = torch.rand(batch, steps, dims.act_dim)
    rtg = torch.randn(batch, steps, 1)
    ts = torch.arange(steps).repeat(batch, 1)
    model.eval()
    t0 = time.perf_counter()
    for t in range(steps):
        if reference:  # the original's window: always K slots, zeros after t while t < K
            lo = 0 if t < K else t - K + 1
            _, a, _ = model(ts[:, lo:lo + K], states[:, lo:lo + K], actions[:, lo:lo + K], rtg[:, lo:lo + K])
        else:
            lo = max(0, t - K + 1)
            model(ts[:, lo:t + 1], states[:, lo:t + 1], actions[:, lo:t], rtg[:, lo:t + 1], last_only=True)
    return 1000 * (time.perf_counter() - t0) / (steps * batch)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--updates", type=int, default=30)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "dt.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dims = DTDims(state_dim=17, act_dim=6)
    windows = TrajectoryWindows(fake_data(), dims.context_len, 1000.0)
    kw = dict(lr=1e-4, wt_decay=1e-4, warmup_steps=10_000, grad_clip=0.25, batch_size=args.batch, seed=0,
              device=device)
    torch.manual_seed(0)
    ours = DecisionTransformer(dims).to(device)
    result = {"device": str(device), "threads": args.threads, "batch": args.batch, "dims": dims.__dict__,
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "reference_measured_in_issue": REFERENCE_MEASURED}
    result["ours_updates_per_s"] = time_updates(DTTrainer(ours, windows, **kw), args.updates, args.repeats)
    if not args.skip_reference:
        ref = reference_from(ours.cpu()).to(device)
        result["reference_updates_per_s"] = time_updates(RefTrainer(ref, windows, **kw), args.updates, args.repeats)
        result["speedup"] = result["ours_updates_per_s"] / result["reference_updates_per_s"]
    flops = update_flops(dims, args.batch)
    result["update_gflop"] = flops / 1e9
    if device.type == "cpu":
        peak = matmul_peak_gflops()
        result["matmul_peak_gflops"] = peak
        result["fraction_of_matmul_peak"] = flops * result["ours_updates_per_s"] / 1e9 / peak
        result["ms_per_action_1_episode"] = ms_per_action(ours.cpu(), dims, 1)
        result["ms_per_action_10_episodes_batched"] = ms_per_action(ours.cpu(), dims, 10)
        if not args.skip_reference:
            result["reference_ms_per_action_1_episode"] = ms_per_action(ref.cpu(), dims, 1, reference=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
