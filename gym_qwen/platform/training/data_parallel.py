"""Data-parallel TD-MPC2 updates: N learner processes share one global batch, and one update of the group equals
one update of a single learner on that whole batch, to float tolerance.

How the pieces of one update are split (rank r of N, global batch B, local b = B / N):
- **Batch.** Every process holds the same replay buffer and buffer RNG; each draws the B start indices of the
  global batch and gathers only rows [r*b, (r+1)*b). The shards are disjoint (no row is learned twice, as
  independent per-process draws from one seed would do) and together they are the single learner's batch.
- **Noise.** The per-sample noise of an update (the policy's Gaussian noise for the TD target and for the policy
  loss, the Q heads' dropout masks) is drawn for the global batch from the learner stream, which every process
  seeds alike, and each process keeps its rows. The random Q heads (a `randperm`) are drawn alike everywhere.
  Every process so consumes its stream exactly as the single learner does.
- **Gradients.** Every loss is a mean over the batch, so the global batch's gradient is the mean of the shards'
  gradients: after each backward pass (world model, then policy) the gradients are all-reduced and divided by N,
  as DDP does, and only then clipped; so clipping acts on the all-reduced gradients and every process takes the
  same optimiser step (both Adam optimisers, all parameter groups) and the same EMA of the target Q-networks.
- **Batch statistics.** The policy's running Q scale uses percentiles over the batch: the Q values are
  all-gathered first. Reported metrics are averaged over the processes (equal shards: the global means).

torch.distributed only (gloo on CPU, NCCL on CUDA); who starts the processes (Ray Train's TorchTrainer in
gym_qwen.actors, or plain processes in a test) does not matter here.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


class DataParallelGroup:
    """This process's place in a group of `world` learner processes (the collectives need torch.distributed
    initialised; the batch and noise shares do not)."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world = int(rank), int(world)

    @classmethod
    def from_process_group(cls) -> "DataParallelGroup":
        return cls(dist.get_rank(), dist.get_world_size())

    def local_size(self, global_size: int) -> int:
        if global_size % self.world:
            raise ValueError(f"a global batch of {global_size} does not split over {self.world} learner workers")
        return global_size // self.world

    def rows(self, global_size: int) -> slice:
        """This process's rows of a global batch of `global_size`."""
        b = self.local_size(global_size)
        return slice(self.rank * b, (self.rank + 1) * b)

    def noise(self, local_shape, device, dtype=torch.float32, batch_dim: int = -2) -> torch.Tensor:
        """Standard normal noise of `local_shape`: this process's rows of a global draw (batch along batch_dim)."""
        shape = list(local_shape)
        b = shape[batch_dim]
        shape[batch_dim] = b * self.world
        return torch.randn(shape, device=device, dtype=dtype).narrow(batch_dim, self.rank * b, b)

    def average_gradients(self, params) -> None:
        """All-reduce the gradients of `params` (one flat buffer) and divide by the group size, as DDP does."""
        grads = [p.grad for p in params if p.grad is not None]
        if self.world == 1 or not grads:
            return
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world)
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The global batch of a per-process tensor whose dim 0 is the batch (rank order = the global order)."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    def mean_metrics(self, metrics: dict, device) -> dict:
        """Float metrics averaged over the group (the same key order on every process)."""
        if self.world == 1 or not metrics:
            return metrics
        keys = sorted(metrics)
        t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return {k: v / self.world for k, v in zip(keys, t.tolist())}

    def broadcast_parameters(self, module_states: list[torch.Tensor]) -> None:
        """Rank 0's values of these tensors on every process (parameters and buffers, at the start)."""
        if self.world == 1:
            return
        for t in module_states:
            dist.broadcast(t.data, src=0)


def default_backend(device: str) -> str:
    """The torch.distributed backend for a learner device: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if str(device).startswith("cuda") else "gloo"
