"""MPPI planning in latent space (TD-MPC2), batched over environments, returning the whole plan."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .compiled import CompiledOrEager


@dataclass(frozen=True)
class PlannerSettings:
    """MPPI settings. Defaults are TD-MPC2's (iterations becomes 8 for action_dim >= 20, set by the agent)."""

    horizon: int = 3
    iterations: int = 6
    num_samples: int = 512
    num_elites: int = 64
    num_pi_trajs: int = 24
    min_std: float = 0.05
    max_std: float = 2.0
    temperature: float = 0.5
    discount: float = 0.99


@dataclass
class Plan:
    """What one planner call produced for a batch of B environments.

    actions: (B, H, A) the selected action sequence (no exploration noise); latents: (B, H, L) the predicted
    z_1..z_H along it; rewards: (B, H) predicted rewards; value: (B,) its estimated return; mean/std: (B, H, A)
    the final MPPI distribution (mean is the warm start of the next call); stats: scalar diagnostics as 0-dim
    tensors (float() them to read: converting inside plan() would wait for the GPU at every plan).
    """

    actions: torch.Tensor
    latents: torch.Tensor
    rewards: torch.Tensor
    value: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    stats: dict = field(default_factory=dict)

    @property
    def first_action(self) -> torch.Tensor:
        return self.actions[:, 0]


class PlanCancelled(Exception):
    """A plan given up before it finished (its `cancelled()` said so between MPPI iterations)."""


def _drawing(generator) -> dict:
    """Keyword arguments that make a draw use `generator` (none: the global stream, and models whose methods take
    no generator still work)."""
    return {} if generator is None else {"generator": generator}


def warm_start(prev_mean: torch.Tensor | None, shift, B: int, H: int, A: int, device) -> torch.Tensor:
    """The initial MPPI mean (B, H, A): row b is prev_mean[b] moved `shift[b]` steps earlier, zero-filled."""
    if prev_mean is None:
        return torch.zeros(B, H, A, device=device)
    prev = torch.nan_to_num(prev_mean, nan=0.0)
    shifts = torch.as_tensor(shift, device=device).long().expand(B)
    padded = torch.cat([prev, torch.zeros_like(prev)], dim=1)  # index >= H reads a zero
    index = (torch.arange(H, device=device)[None, :] + shifts[:, None]).clamp(max=2 * H - 1)
    return torch.gather(padded, 1, index.unsqueeze(-1).expand(B, H, A))


class MPPIPlanner:
    """Model predictive path integral control (call under inference mode).

    `model` offers the planning interface of WorldModel: step(z, a) -> (reward, z'), pi(z) -> (a, info),
    q_value(z, a), terminal(z) -> (M, 1) floats or None, and action_dim.
    """

    def __init__(self, model, settings: PlannerSettings, compile: bool = False):
        self.model, self.s = model, settings
        # Counted here, inside the call: one per environment row planned, and one per batched MPPI call.
        self.calls = 0
        self.batches = 0
        self.extensions = 0
        # One graph per MPPI iteration: compiling it fuses the LayerNorm/Mish/SimNorm work between the matmuls.
        self._rollout = CompiledOrEager(self.rollout_value, compile, "the MPPI rollout")

    @property
    def compiled(self) -> bool:
        return self._rollout.active

    def with_settings(self, settings: PlannerSettings) -> "MPPIPlanner":
        """A planner of the same model with other settings (a planner budget), compiled if this one is."""
        return MPPIPlanner(self.model, settings, compile=self.compiled)

    def rollout_value(self, z: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
        """Value of action sequences (H, M, A) from latents z (M, L): discounted predicted rewards plus the
        discounted value of the last latent (mean of 2 random Q heads at the policy prior's action)."""
        m, s = self.model, self.s
        kw = _drawing(generator)
        ret = torch.zeros(z.shape[0], 1, device=z.device)
        alive = torch.ones_like(ret)
        discount = 1.0
        for t in range(actions.shape[0]):
            r, z = m.step(z, actions[t])
            ret = ret + discount * alive * r
            discount *= s.discount
            ended = m.terminal(z)
            if ended is not None:
                alive = alive * (1.0 - ended)
        a, _ = m.pi(z, **kw)
        return ret + discount * alive * m.q_value(z, a, **kw)

    def _prior_actions(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Roll the policy prior through the dynamics: (H, B, P, A)."""
        s, m = self.s, self.model
        kw = _drawing(generator)
        B, P = z.shape[0], s.num_pi_trajs
        zp = z.repeat_interleave(P, dim=0)
        out = []
        for t in range(s.horizon):
            a, _ = m.pi(zp, **kw)
            out.append(a)
            if t < s.horizon - 1:
                zp = m.step(zp, a)[1]
        return torch.stack(out).view(s.horizon, B, P, -1)

    def plan(self, z: torch.Tensor, prev_mean: torch.Tensor | None = None, shift=1,
             generator: torch.Generator | None = None, cancelled=None) -> Plan:
        """Plan from latents z (B, L). prev_mean (B, H, A): the previous plan's mean, warm-starting this one
        shifted by `shift` steps (an int, or one per row: the steps executed since that plan; pass None, or rows
        of NaN, at the first step of an episode). Steps shifted in past the old plan's end start at zero.

        `generator`: draw every random number from it instead of the global stream (a planner in a thread of its
        own: swapping the process's global state is not thread-safe); the draws are the same ones in the same
        order, so a generator seeded like the global stream gives the same plan (compiled too: TorchDynamo takes
        the generator as an input). `cancelled()`: asked before each MPPI iteration; True raises PlanCancelled (a
        background plan that is no longer wanted)."""
        s, m = self.s, self.model
        kw = _drawing(generator)
        B, H, N, P, K = z.shape[0], s.horizon, s.num_samples, s.num_pi_trajs, s.num_elites
        A = m.action_dim
        dev = z.device
        self.calls += B
        self.batches += 1
        mean = warm_start(prev_mean, shift, B, H, A, dev)
        std = torch.full((B, H, A), s.max_std, device=dev)
        actions = torch.empty(H, B, N, A, device=dev)
        if P > 0:
            actions[:, :, :P] = self._prior_actions(z, generator)
        z_rep = z.repeat_interleave(N, dim=0)
        batch_idx = torch.arange(B, device=dev)[:, None]
        for _ in range(s.iterations):
            if cancelled is not None and cancelled():
                raise PlanCancelled
            noise = torch.randn(H, B, N - P, A, device=dev, **kw)
            actions[:, :, P:] = (mean.transpose(0, 1).unsqueeze(2) + std.transpose(0, 1).unsqueeze(2) * noise).clamp(-1, 1)
            value = self._rollout(z_rep, actions.view(H, B * N, A), **kw).view(B, N).nan_to_num(0.0)
            elite_value, elite_idx = torch.topk(value, K, dim=1)
            elite_actions = actions[:, batch_idx, elite_idx]  # (H, B, K, A)
            score = torch.exp(s.temperature * (elite_value - elite_value.max(1, keepdim=True).values))
            score = score / score.sum(1, keepdim=True)
            w = score.unsqueeze(0).unsqueeze(-1)  # (1, B, K, 1)
            mean_hb = (w * elite_actions).sum(2) / (score.sum(1)[None, :, None] + 1e-9)
            var = (w * (elite_actions - mean_hb.unsqueeze(2)) ** 2).sum(2) / (score.sum(1)[None, :, None] + 1e-9)
            mean = mean_hb.transpose(0, 1).contiguous()
            std = var.sqrt().clamp(s.min_std, s.max_std).transpose(0, 1).contiguous()
        # Pick one elite per environment with probability proportional to its score (Gumbel-max trick).
        gumbel = -torch.empty_like(score).exponential_(**kw).log()
        pick = torch.argmax(score.log() + gumbel, dim=1)
        chosen = elite_actions[:, torch.arange(B, device=dev), pick].transpose(0, 1).contiguous()  # (B, H, A)
        latents, rewards = self.imagine(z, chosen)
        return Plan(actions=chosen, latents=latents, rewards=rewards,
                    value=elite_value[torch.arange(B, device=dev), pick], mean=mean, std=std,
                    stats={"elite_value_mean": elite_value.mean(), "std_mean": std.mean()})

    def extend(self, z: torch.Tensor, steps: int, generator: torch.Generator | None = None):
        """Continue plans past their horizon with the policy prior's mean action, rolled through the dynamics
        from the last predicted latents z (B, L): actions (B, steps, A) and the latents (B, steps, L) that follow
        each of them (latent i comes after action i). The prior's sample, unused, still draws (from `generator`
        if given)."""
        self.extensions += z.shape[0]
        actions, latents = [], []
        kw = _drawing(generator)
        for _ in range(steps):
            _, info = self.model.pi(z, **kw)
            a = info["mean"]
            z = self.model.step(z, a)[1]
            actions.append(a)
            latents.append(z)
        return torch.stack(actions, 1), torch.stack(latents, 1)

    def imagine(self, z: torch.Tensor, actions: torch.Tensor):
        """Predicted latents (B, T, L) and rewards (B, T) of action sequences (B, T, A) from z (B, L)."""
        m = self.model
        latents, rewards = [], []
        for t in range(actions.shape[1]):
            r, z = m.step(z, actions[:, t])
            rewards.append(r.squeeze(-1))
            latents.append(z)
        return torch.stack(latents, 1), torch.stack(rewards, 1)
