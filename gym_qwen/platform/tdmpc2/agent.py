"""The TD-MPC2 agent: acting with MPPI (whole plans available), and the model/policy update."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..config_schema import ConfigError
from ..devices import resolve_device
from .compiled import CompiledOrEager
from .functional import discount_for
from .graphed_planner import GraphedPlanner
from .planner import MPPIPlanner, Plan, PlannerSettings
from .scale import RunningScale
from .world_model import ModelDims, WorldModel


def model_dims(cfg, obs_dim: int, action_dim: int, episodic: bool) -> ModelDims:
    arch = cfg.arch()
    return ModelDims(obs_dim=obs_dim, action_dim=action_dim, num_bins=cfg.num_bins, simnorm_dim=cfg.simnorm_dim,
                     dropout=cfg.dropout, episodic=episodic, **arch)


class TDMPC2Agent:
    """World model + planner + optimisers for one task. `cfg` is a TDMPC2Config (gym_qwen.platform.config).

    act() plans for one observation or a batch of observations (one per environment) and keeps each
    environment's warm-start mean; plan() exposes the full Plan; update() does one gradient step.
    """

    def __init__(self, cfg, obs_dim: int, action_dim: int, episode_length: int, episodic: bool,
                 device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device) if isinstance(device, torch.device) else resolve_device(device)
        self.discount = discount_for(episode_length, cfg.discount_denom, cfg.discount_min, cfg.discount_max)
        self.model = WorldModel(model_dims(cfg, obs_dim, action_dim, episodic), cfg.log_std_min, cfg.log_std_max,
                                cfg.vmin, cfg.vmax).to(self.device).eval()
        iterations = cfg.iterations if cfg.iterations is not None else (8 if action_dim >= 20 else 6)
        self.planner_settings = PlannerSettings(
            horizon=cfg.horizon, iterations=iterations, num_samples=cfg.num_samples, num_elites=cfg.num_elites,
            num_pi_trajs=cfg.num_pi_trajs, min_std=cfg.min_std, max_std=cfg.max_std, temperature=cfg.temperature,
            discount=self.discount)
        compile_ = bool(getattr(cfg, "compile", False))
        self.planner = MPPIPlanner(self.model, self.planner_settings, compile=compile_)
        if getattr(cfg, "cuda_graph", False):
            if self.device.type != "cuda":
                raise ConfigError(f"cuda_graph=true captures CUDA graphs: it needs a CUDA device, not {self.device}")
            self.planner = GraphedPlanner(self.planner)
        self.scale = RunningScale(cfg.tau).to(self.device)
        m = self.model
        self.optim = torch.optim.Adam([
            {"params": m.encoder.parameters(), "lr": cfg.lr * cfg.enc_lr_scale},
            {"params": [p for k, mod in m.components().items() if k not in ("encoder", "policy")
                        for p in mod.parameters()]},
        ], lr=cfg.lr)
        self.pi_optim = torch.optim.Adam(m.policy.parameters(), lr=cfg.lr, eps=1e-5)
        self._prev_mean: torch.Tensor | None = None  # (B, H, A) warm starts, one per environment
        self._losses = CompiledOrEager(self.model_losses, compile_, "the update losses")
        self._policy_terms = CompiledOrEager(self.policy_terms, compile_, "the policy objective")
        self.rho = cfg.rho ** torch.arange(cfg.horizon + 1, device=self.device, dtype=torch.float32)
        self.data_parallel = None  # a DataParallelGroup (platform.training.data_parallel): see set_data_parallel

    def set_data_parallel(self, group) -> None:
        """Learn as one of a data-parallel group (None: alone): each update then sees this process's rows of the
        global batch, draws the global batch's noise and keeps its rows, and averages gradients, batch
        statistics and metrics over the group (gym_qwen/platform/training/data_parallel.py)."""
        self.data_parallel = group if group is not None and group.world > 1 else None
        self.model.qs.batch_shard = None if self.data_parallel is None else self.data_parallel

    # ----------------------------------------------------------------- acting
    @torch.inference_mode()
    def plan(self, obs, t0=True) -> Plan:
        """Plan for obs (obs_dim,) or (B, obs_dim). t0: bool or (B,) bools marking first steps of episodes."""
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        obs_t = obs_t.unsqueeze(0) if obs_t.ndim == 1 else obs_t
        B = obs_t.shape[0]
        t0_mask = torch.as_tensor(np.broadcast_to(np.asarray(t0, dtype=bool), (B,)).copy(), device=self.device)
        if self._prev_mean is None or self._prev_mean.shape[0] != B:
            self._prev_mean = torch.full((B, self.cfg.horizon, self.model.dims.action_dim), float("nan"),
                                         device=self.device)
        prev = self._prev_mean.clone()
        prev[t0_mask] = float("nan")
        plan = self.planner.plan(self.model.encode(obs_t), prev)
        self._prev_mean = plan.mean
        return plan

    @torch.inference_mode()
    def act(self, obs, t0=True, eval_mode: bool = False) -> np.ndarray:
        """One action per observation, in [-1, 1]. Training adds the planner's final std as exploration noise."""
        plan = self.plan(obs, t0)
        a = plan.first_action
        if not eval_mode:
            a = a + plan.std[:, 0] * torch.randn_like(a)
        a = a.clamp(-1, 1).cpu().numpy()
        return a[0] if np.asarray(obs).ndim == 1 else a

    # ----------------------------------------------------------------- learning
    def _to_device(self, batch: dict) -> dict:
        return {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}

    def update(self, batch: dict) -> dict:
        """One TD-MPC2 update on a batch from EpisodeBuffer.sample. Returns float metrics."""
        b = self._to_device(batch)
        cfg, m = self.cfg, self.model
        m.train()  # dropout only lives in the online Q heads, which the TD target does not use
        total, consistency_loss, reward_loss, value_loss, termination_loss, zs = self._losses(
            b["obs"], b["action"], b["reward"], b["terminated"])
        total.backward()
        model_params = [p for mod in m.components().values() if mod is not m.policy for p in mod.parameters()]
        if self.data_parallel is not None:  # clip the all-reduced gradients, as DDP would hand them over
            self.data_parallel.average_gradients(model_params)
        grad_norm = torch.nn.utils.clip_grad_norm_(model_params, cfg.grad_clip_norm)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        pi_loss, entropy = self._update_policy(zs.detach())
        m.soft_update_target(cfg.tau)
        m.eval()
        losses = {"consistency_loss": consistency_loss, "reward_loss": reward_loss, "value_loss": value_loss,
                  "termination_loss": termination_loss, "total_loss": total, "grad_norm": grad_norm}
        metrics = {**{k: v.detach().item() for k, v in losses.items()}, "pi_loss": pi_loss, "pi_entropy": entropy,
                   "pi_scale": self.scale.value.item()}
        if self.data_parallel is not None:
            metrics = self.data_parallel.mean_metrics(metrics, self.device)
        return metrics

    def _batch_noise(self, z: torch.Tensor):
        """The policy's Gaussian noise for latents z (..., B, latent): None (drawn inside, alone), or this process's
        rows of the global batch's draw (data-parallel)."""
        if self.data_parallel is None:
            return None
        return self.data_parallel.noise((*z.shape[:-1], self.model.dims.action_dim), z.device, z.dtype)

    def model_losses(self, obs, action, reward, terminated):
        """World-model losses over the horizon (consistency, reward, value, termination) and the latents."""
        cfg, m, H = self.cfg, self.model, self.cfg.horizon
        with torch.no_grad():
            next_z = m.encode(obs[1:])
            next_a, _ = m.pi(next_z, eps=self._batch_noise(next_z))
            td_target = reward + self.discount * (1 - terminated) * m.Q(next_z, next_a, reduce="min", target=True)
        z = m.encode(obs[0])
        zs = [z]
        consistency = 0.0
        for t in range(H):
            z = m.next(z, action[t])
            consistency = consistency + F.mse_loss(z, next_z[t]) * self.rho[t]
            zs.append(z)
        zs = torch.stack(zs)
        q_logits = m.Q(zs[:-1], action, reduce="all")  # (num_q, H, B, bins)
        reward_ce = m.two_hot.cross_entropy(m.reward(zs[:-1], action), reward).mean(dim=(1, 2))  # (H,)
        value_ce = m.two_hot.cross_entropy(q_logits, td_target.unsqueeze(0).expand(m.dims.num_q, -1, -1, -1))
        consistency_loss = consistency / H
        reward_loss = (reward_ce * self.rho[:H]).sum() / H
        value_loss = (value_ce.mean(dim=(2, 3)) * self.rho[:H]).sum() / (H * m.dims.num_q)
        total = cfg.consistency_coef * consistency_loss + cfg.reward_coef * reward_loss + cfg.value_coef * value_loss
        termination_loss = torch.zeros((), device=obs.device)
        if m.termination_head is not None:
            termination_loss = F.binary_cross_entropy_with_logits(m.termination_logit(zs[1:]), terminated)
            total = total + cfg.termination_coef * termination_loss
        return total, consistency_loss, reward_loss, value_loss, termination_loss, zs

    def policy_terms(self, zs: torch.Tensor):
        """Q (through detached Q heads) of the policy's actions at zs, its scaled entropy and log-probability."""
        action, info = self.model.pi(zs, eps=self._batch_noise(zs))
        return self.model.Q(zs, action, reduce="avg", detach=True), info["scaled_entropy"], info["log_prob"]

    def _update_policy(self, zs: torch.Tensor):
        m = self.model
        q, scaled_entropy, log_prob = self._policy_terms(zs)
        self.scale.update(q[0] if self.data_parallel is None else self.data_parallel.gather_rows(q[0]))
        q = self.scale(q)
        objective = (self.cfg.entropy_coef * scaled_entropy + q).mean(dim=(1, 2))
        pi_loss = -(objective * self.rho[: len(q)]).mean()
        pi_loss.backward()
        if self.data_parallel is not None:
            self.data_parallel.average_gradients(list(m.policy.parameters()))
        torch.nn.utils.clip_grad_norm_(m.policy.parameters(), self.cfg.grad_clip_norm)
        self.pi_optim.step()
        self.pi_optim.zero_grad(set_to_none=True)
        return pi_loss.item(), -log_prob.detach().mean().item()

    # ----------------------------------------------------------------- state
    def reset_plans(self) -> None:
        self._prev_mean = None

    def state_dict(self, with_optim: bool = True) -> dict:
        d = {"model": self.model.state_dict(), "scale": self.scale.state_dict()}
        if with_optim:
            d.update(optim=self.optim.state_dict(), pi_optim=self.pi_optim.state_dict())
        return d

    def load_state_dict(self, d: dict) -> None:
        self.model.load_state_dict(d["model"])
        self.scale.load_state_dict(d["scale"])
        if "optim" in d:
            self.optim.load_state_dict(d["optim"])
            self.pi_optim.load_state_dict(d["pi_optim"])
