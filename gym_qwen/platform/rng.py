"""Independent torch random streams on one process.

TD-MPC2 draws random numbers while acting (planner samples, exploration noise) and while learning (batch
dropout, random Q heads). Giving acting its own stream makes the learning stream independent of who acts:
the in-process loop and a Ray rollout worker feeding a learner actor then draw exactly the same numbers, and
evaluation (its own seeded stream per episode) never perturbs training.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (e.g. (seed, stream id)); distinct keys give unrelated streams."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _cuda_ready() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


class TorchRngStream:
    """A saved torch RNG state (CPU, and CUDA once initialised) swapped in around the code that uses it:
    ``with stream: ...`` draws from this stream and leaves the process's global stream untouched."""

    def __init__(self, seed: int):
        self.reset(seed)

    def reset(self, seed: int) -> None:
        with self._swapped():
            torch.manual_seed(seed)

    @contextlib.contextmanager
    def _swapped(self):
        outer_cpu = torch.get_rng_state()
        outer_cuda = torch.cuda.get_rng_state_all() if _cuda_ready() else None
        if hasattr(self, "_cpu"):
            torch.set_rng_state(self._cpu)
            if outer_cuda is not None and self._cuda is not None:
                torch.cuda.set_rng_state_all(self._cuda)
        try:
            yield
        finally:
            self._cpu = torch.get_rng_state()
            self._cuda = torch.cuda.get_rng_state_all() if outer_cuda is not None else None
            torch.set_rng_state(outer_cpu)
            if outer_cuda is not None:
                torch.cuda.set_rng_state_all(outer_cuda)

    def __enter__(self):
        self._ctx = self._swapped()
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

    def state(self) -> dict:
        return {"cpu": self._cpu.clone(), "cuda": [t.clone() for t in (self._cuda or [])]}

    def load_state(self, state: dict) -> None:
        self._cpu = state["cpu"].clone()
        self._cuda = [t.clone() for t in state.get("cuda", [])] or None
        if self._cuda is not None and (not _cuda_ready() or len(self._cuda) != torch.cuda.device_count()):
            self._cuda = None  # saved on other hardware: CUDA draws continue from the device's own stream


def global_rng_state() -> dict:
    """The process's torch RNG state for a checkpoint: CPU, and every CUDA device's once CUDA is in use."""
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if _cuda_ready() else []}


def set_global_rng_state(state) -> None:
    """Restore what `global_rng_state` saved (or a bare CPU state tensor, as older checkpoints hold). The CUDA
    states are restored only on a machine with as many CUDA devices as the one that saved them."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda", [])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def seeded(seed: int):
    """Run the body on a fresh stream seeded with `seed`, restoring the global stream afterwards."""
    with TorchRngStream(seed):
        yield
