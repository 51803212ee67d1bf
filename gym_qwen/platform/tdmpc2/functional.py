"""Stateless maths of TD-MPC2: symlog, two-hot regression, SimNorm, Mish, the squashed Gaussian, discount."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish x*tanh(softplus(x)) with a single exponential.

    tanh(log(1+e^x)) = n(n+2) / (n(n+2)+2) with n = e^x. On CPU this is several times faster than
    PyTorch's own Mish kernel and agrees with it to ~1e-6; clamping at 20 keeps n(n+2) finite in float32.
    """
    n = torch.exp(torch.clamp(x, max=20.0))
    m = n * (n + 2.0)
    return x * m / (m + 2.0)


def simnorm(x: torch.Tensor, group: int) -> torch.Tensor:
    """Simplicial normalisation: softmax over consecutive groups of `group` features."""
    shape = x.shape
    return F.softmax(x.reshape(*shape[:-1], shape[-1] // group, group), dim=-1).reshape(shape)


class TwoHot(nn.Module):
    """Discrete regression in symlog space: `num_bins` evenly spaced bins on [vmin, vmax]."""

    def __init__(self, num_bins: int, vmin: float, vmax: float):
        super().__init__()
        if num_bins < 2:
            raise ValueError("two-hot regression needs at least 2 bins")
        self.num_bins, self.vmin, self.vmax = num_bins, float(vmin), float(vmax)
        self.bin_size = (self.vmax - self.vmin) / (num_bins - 1)
        # A buffer made here, not lazily at the first decode: a first decode inside a compiled planner under
        # inference_mode made it an inference tensor, which the policy update then could not save for backward.
        # Not persistent, so checkpoints keep their keys.
        self.register_buffer("bin_values", torch.linspace(self.vmin, self.vmax, num_bins), persistent=False)

    def bins(self, like: torch.Tensor) -> torch.Tensor:
        """The bin values on `like`'s device and dtype (the buffer itself when they match)."""
        return self.bin_values.to(device=like.device, dtype=like.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Scalars (..., 1) -> soft two-hot targets (..., num_bins)."""
        pos = (torch.clamp(symlog(x), self.vmin, self.vmax) - self.vmin) / self.bin_size
        low = torch.floor(pos).clamp(max=self.num_bins - 1)
        frac = pos - low
        low = low.long()
        high = torch.clamp(low + 1, max=self.num_bins - 1)
        out = torch.zeros(*x.shape[:-1], self.num_bins, device=x.device, dtype=x.dtype)
        out.scatter_add_(-1, low, 1.0 - frac)
        out.scatter_add_(-1, high, frac)  # at the top bin frac is 0, so nothing leaks
        return out

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (..., num_bins) -> scalars (..., 1): expectation over bins, mapped back by symexp."""
        expected = F.softmax(logits, dim=-1) @ self.bins(logits)
        return symexp(expected).unsqueeze(-1)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Soft cross-entropy between logits (..., num_bins) and scalar targets (..., 1); returns (..., 1)."""
        return -(self.encode(target) * F.log_softmax(logits, dim=-1)).sum(-1, keepdim=True)


def squashed_gaussian(mean: torch.Tensor, raw_log_std: torch.Tensor, log_std_min: float, log_std_max: float,
                      eps: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """Reparameterised tanh-Gaussian sample.

    Returns (action, squashed mean, log_prob after the tanh correction, entropy term used by the policy loss).
    The entropy term follows TD-MPC2: the Gaussian log-probability scaled by the action dimension, expressed
    relative to the squashed log-probability so that gradients flow through both. `generator`: draw the noise
    from it instead of the global stream (a planner in a thread of its own).
    """
    log_std = log_std_min + 0.5 * (log_std_max - log_std_min) * (torch.tanh(raw_log_std) + 1.0)
    if eps is None:
        eps = torch.randn_like(mean) if generator is None else \
            torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    gauss_logp = (-0.5 * eps.pow(2) - log_std - _HALF_LOG_2PI).sum(-1, keepdim=True)
    pre = mean + eps * log_std.exp()
    action = torch.tanh(pre)
    log_prob = gauss_logp - torch.log(F.relu(1.0 - action.pow(2)) + 1e-6).sum(-1, keepdim=True)
    scale = gauss_logp * mean.shape[-1] / (log_prob + 1e-8)
    return action, torch.tanh(mean), log_prob, -log_prob * scale


def discount_for(episode_length: int, denom: float = 5.0, low: float = 0.95, high: float = 0.995) -> float:
    """TD-MPC2's heuristic discount from the episode length in agent steps."""
    frac = episode_length / denom
    if frac <= 1:
        return float(low)
    return float(min(max((frac - 1) / frac, low), high))
