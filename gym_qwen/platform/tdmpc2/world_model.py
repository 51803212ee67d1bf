"""TD-MPC2's implicit world model: encoder, latent dynamics, reward, termination, policy prior, Q ensemble."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from .functional import TwoHot, squashed_gaussian
from .layers import QEnsemble, init_weights, mlp


@dataclass(frozen=True)
class ModelDims:
    """The numbers that fix the network shapes (one task, one model size)."""

    obs_dim: int
    action_dim: int
    latent_dim: int
    enc_dim: int
    mlp_dim: int
    num_enc_layers: int
    num_q: int
    num_bins: int = 101
    simnorm_dim: int = 8
    dropout: float = 0.01
    episodic: bool = False


class WorldModel(nn.Module):
    """Decoder-free world model. All heads act on SimNorm latents z of size `latent_dim`."""

    def __init__(self, dims: ModelDims, log_std_min: float = -10.0, log_std_max: float = 2.0,
                 vmin: float = -10.0, vmax: float = 10.0):
        super().__init__()
        self.dims = d = dims
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.two_hot = TwoHot(d.num_bins, vmin, vmax)
        za = d.latent_dim + d.action_dim
        self.encoder = mlp(d.obs_dim, max(d.num_enc_layers - 1, 1) * [d.enc_dim], d.latent_dim,
                           out_act="simnorm", simnorm_dim=d.simnorm_dim)
        self.dynamics = mlp(za, 2 * [d.mlp_dim], d.latent_dim, out_act="simnorm", simnorm_dim=d.simnorm_dim)
        self.reward_head = mlp(za, 2 * [d.mlp_dim], d.num_bins)
        self.termination_head = mlp(d.latent_dim, 2 * [d.mlp_dim], 1) if d.episodic else None
        self.policy = mlp(d.latent_dim, 2 * [d.mlp_dim], 2 * d.action_dim)
        self.qs = QEnsemble(d.num_q, za, d.mlp_dim, d.num_bins, dropout=d.dropout)
        init_weights(self)
        with torch.no_grad():  # reward and value heads start by predicting zero
            self.reward_head[-1].weight.zero_()
            self.qs.weights[-1].zero_()
        self.target_qs = copy.deepcopy(self.qs).requires_grad_(False)

    # ----------------------------------------------------------------- parameters
    def components(self) -> dict[str, nn.Module]:
        parts = {"encoder": self.encoder, "dynamics": self.dynamics, "reward": self.reward_head,
                 "termination": self.termination_head, "policy": self.policy, "q_ensemble": self.qs}
        return {k: v for k, v in parts.items() if v is not None}

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per component (the target Q ensemble is not trained, so not counted)."""
        counts = {k: sum(p.numel() for p in m.parameters()) for k, m in self.components().items()}
        counts["total"] = sum(counts.values())
        return counts

    def train(self, mode: bool = True):
        super().train(mode)
        self.target_qs.train(False)
        return self

    # ----------------------------------------------------------------- heads
    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs)

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.dynamics(torch.cat([z, a], dim=-1))

    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Reward logits (..., num_bins)."""
        return self.reward_head(torch.cat([z, a], dim=-1))

    def termination_logit(self, z: torch.Tensor) -> torch.Tensor:
        return self.termination_head(z)

    def pi(self, z: torch.Tensor, generator: torch.Generator | None = None, eps: torch.Tensor | None = None):
        """Sample from the policy prior: (action, info) with mean, log_prob and the scaled entropy. `generator`:
        draw from it instead of the global stream; `eps`: this standard normal noise instead of a draw."""
        mean, raw_log_std = self.policy(z).chunk(2, dim=-1)
        action, squashed_mean, log_prob, entropy = squashed_gaussian(
            mean, raw_log_std, self.log_std_min, self.log_std_max, eps=eps, generator=generator)
        return action, {"mean": squashed_mean, "log_prob": log_prob, "scaled_entropy": entropy}

    def random_heads(self, k: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randperm(self.dims.num_q, device=self.qs.weights[0].device, generator=generator)[:k]

    def Q(self, z: torch.Tensor, a: torch.Tensor, reduce: str = "min", target: bool = False,
          detach: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Q values. reduce: "all" -> logits of every head; "min"/"avg" -> scalar over 2 random heads (drawn from
        `generator` if given, else the global stream)."""
        za = torch.cat([z, a], dim=-1)
        net = self.target_qs if target else self.qs
        if reduce == "all":
            return net(za, detach=detach)
        values = self.two_hot.decode(net(za, heads=self.random_heads(generator=generator), detach=detach))
        return values.min(0).values if reduce == "min" else values.mean(0)

    # ----------------------------------------------------------------- planning interface
    # MPPIPlanner only uses step / pi / q_value / terminal / action_dim, so any model offering them can be planned.
    @property
    def action_dim(self) -> int:
        return self.dims.action_dim

    def step(self, z: torch.Tensor, a: torch.Tensor):
        """(predicted reward (M, 1), next latent) for latents z and actions a."""
        return self.two_hot.decode(self.reward(z, a)), self.next(z, a)

    def q_value(self, z: torch.Tensor, a: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of 2 random Q heads (only those two heads are evaluated; drawn from `generator` if given)."""
        return self.Q(z, a, reduce="avg", generator=generator)

    def terminal(self, z: torch.Tensor) -> torch.Tensor | None:
        """1.0 where the termination head predicts the episode ended (episodic tasks), else None."""
        if self.termination_head is None:
            return None
        return (self.termination_logit(z) > 0).float()

    @torch.no_grad()
    def soft_update_target(self, tau: float) -> None:
        online = [p.data for p in self.qs.parameters()]
        target = [p.data for p in self.target_qs.parameters()]
        torch._foreach_lerp_(target, online, tau)
