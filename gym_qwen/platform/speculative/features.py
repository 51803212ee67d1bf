"""Mismatch features: what a corrector sees at one step, and the per-environment window of recent ones.

The feature of a step is [z_real, z_pred, z_real - z_pred, a_plan] (size 3L + A): the encoded real observation,
the latent the plan predicted for this step, their difference and the planned action. At a planning step the
plan starts from z_real itself, so z_pred = z_real there. A window holds the last `history_len` features of an
episode, oldest first and the current step's feature LAST; positions before the episode's first step are zero
and masked. The current step's feature is pushed before the corrector is called, in collection and in
execution alike, so a corrector sees at inference exactly what it saw in training.
"""
from __future__ import annotations

import torch


def feature_dim(latent_dim: int, action_dim: int) -> int:
    return 3 * latent_dim + action_dim


def mismatch_feature(z_real: torch.Tensor, z_pred: torch.Tensor, a_plan: torch.Tensor) -> torch.Tensor:
    """(B, 3L + A) features of B steps."""
    return torch.cat([z_real, z_pred, z_real - z_pred, a_plan], dim=-1)


def latent_distance(z_real: torch.Tensor, z_pred: torch.Tensor) -> torch.Tensor:
    """d = ||z_real - z_pred||_2 over the whole latent, (B,)."""
    return torch.linalg.vector_norm(z_real - z_pred, dim=-1)


class HistoryWindow:
    """The last `length` features of each of B environments; `valid[b]` counts the real (unpadded) ones."""

    def __init__(self, batch: int, length: int, dim: int, device=None):
        self.length, self.dim = length, dim
        self.values = torch.zeros(batch, length, dim, device=device)
        self.valid = torch.zeros(batch, dtype=torch.long, device=device)

    def reset(self, rows=None) -> None:
        """Forget the history of `rows` (all rows if None): a new episode starts there."""
        if rows is None:
            self.values.zero_()
            self.valid.zero_()
        else:
            self.values[rows] = 0.0
            self.valid[rows] = 0

    def push(self, rows: torch.Tensor, features: torch.Tensor) -> None:
        """Append one feature per row in `rows` (a LongTensor of row indices) as the most recent position."""
        self.values[rows] = torch.cat([self.values[rows, 1:], features.unsqueeze(1)], dim=1)
        self.valid[rows] = (self.valid[rows] + 1).clamp(max=self.length)

    def window(self, rows: torch.Tensor):
        """(values (R, K, F), mask (R, K) True where a position holds a real feature) for `rows`."""
        positions = torch.arange(self.length, device=self.values.device)
        mask = positions.unsqueeze(0) >= (self.length - self.valid[rows]).unsqueeze(1)
        return self.values[rows], mask
