"""Running scale of Q values used to normalise the policy objective."""
from __future__ import annotations

import torch
import torch.nn as nn


class RunningScale(nn.Module):
    """EMA (rate `tau`) of the 5th-95th percentile range of Q, floored at 1."""

    def __init__(self, tau: float = 0.01):
        super().__init__()
        self.tau = tau
        self.register_buffer("value", torch.ones(1))
        self.register_buffer("quantiles", torch.tensor([0.05, 0.95]))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().flatten(1) if x.ndim > 1 else x.detach()[:, None]
        lo, hi = torch.quantile(x.float(), self.quantiles.to(x.device), dim=0)  # linear interpolation
        spread = torch.clamp(hi - lo, min=1.0).mean().reshape(1)
        self.value.lerp_(spread, self.tau)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.value
