"""The speculative executor: every execution mode of TD-MPC2 plans, on a batch of environments, counted exactly.

Each of B environments is at its own point of its own chunk. A chunk is one planner call's actions a_0..a_{k-1}
(past the plan horizon H continued by the policy prior through the dynamics) and the latents the plan predicts
for the state each action is taken in: z^_0 = the encoded real observation the plan started from, z^_j the
plan's latent after j actions. Step j of a chunk executes a_j, judged against z^_j (never one step off).

Modes (see SpeculationSettings): baseline replans every step; prior never plans (the policy prior's mean action
at the encoded observation: one encoder and one policy call per step); naive executes k planned actions open loop;
spec_corrector / spec_extended encode the real observation at each speculative step and let a corrector map
(z_real, z^_j, a_j, mismatch history) to the action; adaptive accepts a speculative step while
||z_real - z^_j|| <= threshold and replans at once on a miss (one planner call, counted), never running more
than k steps of one chunk. With mismatch=one_step it compares z_real instead with the world model's one-step
prediction from the previous real latent and the action executed there (one dynamics call per verified step).
With fallback=prior a miss does not replan: the rest of the chunk's k steps act with the policy prior's mean action
at the real latent (one policy call each), and the next plan comes when the k steps are spent. Warm starts shift the previous MPPI mean by the steps actually executed.

Counts are taken where the work happens (planner rows, encoder rows, corrector rows, extension rows) per
environment row; the planner keeps its own tally too. An optional shadow planner (the teacher: the full
planner at the real state, warm-started as a replan there would be) runs on its own random stream and is left
out of every count and timing (its seconds are taken out of the step's total): it gives the teacher's action for corrector data and action-error measurement.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..rng import TorchRngStream
from .features import HistoryWindow, feature_dim, latent_distance, mismatch_feature
from .modes import SpeculationSettings

TIMERS = ("plan", "encode", "policy", "verify", "correct", "extend", "predict", "wait", "late")
# Plans started, used (took over at least one step), discarded (cancelled on a miss, or unfinished when the episode
# ended; only under a clock); each decision's action source (exactly one of plan, corrected, extension, prior); and
# decisions whose action came after its deadline (clock.py). `predict`: rolling the world model forward to the
# state a plan will take over at; `wait`: time the decision waited for a plan (only under a clock); `late`: how far past
# their deadlines late decisions sent their actions (only on the real clock)
PLAN_COUNTERS = ("plans_started", "plans_used", "plans_discarded", "plans_cancelled")
SOURCES = ("plan", "corrected", "extension", "prior")
COUNTERS = ("decisions", "planner_calls", "encoder_calls", "policy_calls", "corrector_calls", "extensions", "misses",
            "speculative_steps") + PLAN_COUNTERS + tuple(f"steps_{s}" for s in SOURCES) + ("deadline_misses",)


@dataclass
class StepStats:
    """Per-environment-row tallies: counters (ints) and seconds spent per kind of work."""

    counts: dict = field(default_factory=lambda: {k: 0 for k in COUNTERS})
    seconds: dict = field(default_factory=lambda: {k: 0.0 for k in TIMERS + ("total",)})
    teacher_sq_error: float = 0.0
    teacher_steps: int = 0
    late_decisions: list = field(default_factory=list)  # real clock: (decision, ms past its deadline) per miss


class SpeculativeExecutor:
    """Acts for B environments under `settings`. `agent`: a TDMPC2Agent (its model and planner are used);
    `corrector`: an nn.Module mapping (z_real, z_pred, a_plan, history, mask) -> action, or None.
    `planner`: plan with another MPPIPlanner over the same model (a cheaper one) instead of the agent's.
    `teacher=True` runs the shadow planner at every speculative step (see module docstring); `on_step`
    receives each speculative step's record (collection)."""

    def __init__(self, agent, settings: SpeculationSettings, batch: int = 1, corrector=None,
                 teacher: bool = False, teacher_seed: int = 0, on_step=None, planner=None):
        self.agent, self.s, self.B = agent, settings, batch
        self.model, self.planner = agent.model, planner if planner is not None else agent.planner
        self.H = self.planner.s.horizon
        self.k = settings.exec_horizon
        self.corrector = corrector
        self.A, self.L = self.model.dims.action_dim, self.model.dims.latent_dim
        dev = self.device = agent.device
        kmax = max(self.k, self.H)
        self.chunk_actions = torch.zeros(batch, kmax, self.A, device=dev)
        self.chunk_latents = torch.zeros(batch, kmax, self.L, device=dev)
        self.prev_mean = torch.full((batch, self.H, self.A), float("nan"), device=dev)
        self.pos = torch.full((batch,), self.k, dtype=torch.long, device=dev)  # k = "no chunk: plan next"
        self.last_z = torch.zeros(batch, self.L, device=dev)  # the previous step's real latent and executed action
        self.last_action = torch.zeros(batch, self.A, device=dev)  # (mismatch=one_step)
        self.fallen = torch.zeros(batch, dtype=torch.bool, device=dev)  # fallback=prior: the chunk missed
        self.uses_history = corrector is not None or on_step is not None
        self.history = HistoryWindow(batch, settings.history_len, feature_dim(self.L, self.A), dev)
        self.teacher = teacher or on_step is not None
        self.teacher_stream = TorchRngStream(teacher_seed) if self.teacher else None
        self.teacher_planner = agent.planner  # always the full planner, whatever plans the chunks
        self.on_step = on_step
        self.stats = [StepStats() for _ in range(batch)]

    # ------------------------------------------------------------------ bookkeeping
    def reset(self, rows=None) -> None:
        """A new episode starts in `rows` (all if None): no chunk, no warm start, empty history, fresh tallies."""
        rows = range(self.B) if rows is None else rows
        for b in rows:
            self.pos[b] = self.k
            self.prev_mean[b] = float("nan")
            self.fallen[b] = False
            self.stats[b] = StepStats()
        self.history.reset(torch.as_tensor(list(rows), dtype=torch.long, device=self.device))

    def _count(self, rows, key: str, n: int = 1) -> None:
        for b in rows:
            self.stats[b].counts[key] += n

    def _time(self, rows, key: str, seconds: float) -> None:
        share = seconds / max(len(rows), 1)  # batched work: each row carries an equal share
        for b in rows:
            self.stats[b].seconds[key] += share

    # ------------------------------------------------------------------ acting
    @torch.inference_mode()
    def act(self, obs: np.ndarray, rows: list[int] | None = None, t: int | list[int] = 0) -> np.ndarray:
        """Actions (R, A) in [-1, 1] for observations obs (R, obs_dim) of environment rows `rows` (all if None).
        `t`: each row's decision index in its episode (records only)."""
        start = time.perf_counter()
        rows = list(range(self.B)) if rows is None else list(rows)
        if self.s.mode == "prior":
            return self._act_prior(obs, rows, start)
        R = len(rows)
        ts = [t] * R if isinstance(t, int) else list(t)
        row_t = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device).reshape(R, -1)
        need_plan = (self.pos[row_t] >= self.k).clone()
        encode = torch.ones(R, dtype=torch.bool, device=self.device)
        if not (self.s.encodes_every_step or self.uses_history or self.teacher):
            encode = need_plan.clone()  # naive: open loop, nothing is looked at between plans
        z = torch.zeros(R, self.L, device=self.device)
        idx = encode.nonzero().squeeze(1)
        if len(idx):
            t0 = time.perf_counter()
            z[idx] = self.model.encode(obs_t[idx])
            self._time([rows[i] for i in idx.tolist()], "encode", time.perf_counter() - t0)
            self._count([rows[i] for i in idx.tolist()], "encoder_calls")
        spec = ~need_plan
        pos = self.pos[row_t].clamp(max=self.chunk_actions.shape[1] - 1)
        z_pred = self.chunk_latents[row_t, pos]
        on_prior = torch.zeros(R, dtype=torch.bool, device=self.device)
        if self.s.mode == "adaptive":
            fallen = self.fallen[row_t] & spec
            miss = spec & ~fallen & (self._mismatch(rows, row_t, spec, z, z_pred) > self.s.mismatch_threshold)
            self._count([rows[i] for i in miss.nonzero().squeeze(1).tolist()], "misses")
            if self.s.fallback == "plan":
                need_plan |= miss
                spec &= ~miss
            else:
                self.fallen[row_t[miss]] = True
                on_prior = fallen | miss
                spec &= ~on_prior
        plan_idx = need_plan.nonzero().squeeze(1)
        if len(plan_idx):
            self._plan([rows[i] for i in plan_idx.tolist()], z[plan_idx])
        actions = self.chunk_actions[row_t, self.pos[row_t].clamp(max=self.chunk_actions.shape[1] - 1)].clone()
        z_pred = torch.where(need_plan.unsqueeze(1), z, self.chunk_latents[row_t, self.pos[row_t].clamp(
            max=self.chunk_latents.shape[1] - 1)])
        spec_idx = spec.nonzero().squeeze(1)
        self._count_sources(rows, need_plan, on_prior, spec)
        if self.uses_history:
            hist_rows = row_t[encode]
            self.history.push(hist_rows, mismatch_feature(z[encode], z_pred[encode], actions[encode]))
        prior_idx = on_prior.nonzero().squeeze(1)
        if len(prior_idx):
            prior_rows = [rows[i] for i in prior_idx.tolist()]
            t0 = time.perf_counter()
            actions[prior_idx] = self.model.pi(z[prior_idx])[1]["mean"]
            self._time(prior_rows, "policy", time.perf_counter() - t0)
            self._count(prior_rows, "policy_calls")
        if len(spec_idx):
            spec_rows = [rows[i] for i in spec_idx.tolist()]
            self._count(spec_rows, "speculative_steps")
            a_plan = actions[spec_idx]
            if self.corrector is not None:
                t0 = time.perf_counter()
                window, mask = self.history.window(row_t[spec_idx])
                corrected = self.corrector(z[spec_idx], z_pred[spec_idx], a_plan, window, mask)
                actions[spec_idx] = corrected.clamp(-1, 1)
                self._time(spec_rows, "correct", time.perf_counter() - t0)
                self._count(spec_rows, "corrector_calls")
            if self.teacher:
                t0 = time.perf_counter()
                self._shadow(spec_rows, spec_idx, z, z_pred, a_plan, actions, ts)
                start += time.perf_counter() - t0  # the shadow is not the agent's work: out of the step's time
        actions = actions.clamp(-1, 1)
        if self.s.mismatch == "one_step" or self.on_step is not None:  # collection records both mismatches
            self.last_z[row_t] = z
            self.last_action[row_t] = actions
        self.pos[row_t] += 1
        self._count(rows, "decisions")
        self._time(rows, "total", time.perf_counter() - start)
        return actions.cpu().numpy()

    def _count_sources(self, rows, need_plan, on_prior, spec) -> None:
        """Each row's action source this step: a fresh plan's first action, the policy prior (fallback=prior), or a
        speculative step (corrected if a corrector runs, else the plan's action, or its extension past H)."""
        extended = self.pos[torch.as_tensor(rows, dtype=torch.long, device=self.device)] >= self.H
        for i, b in enumerate(rows):
            if need_plan[i]:
                source = "plan"
            elif on_prior[i]:
                source = "prior"
            elif self.corrector is not None:
                source = "corrected"
            else:
                source = "extension" if extended[i] else "plan"
            self.stats[b].counts[f"steps_{source}"] += 1

    def finish(self, rows) -> None:
        """The episodes of `rows` ended (nothing is left in flight here: every plan is used at once)."""

    def _act_prior(self, obs, rows: list[int], start: float) -> np.ndarray:
        """mode=prior: the policy prior's mean action at each row's encoded observation; no planner."""
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device).reshape(len(rows), -1)
        t0 = time.perf_counter()
        z = self.model.encode(obs_t)
        t1 = time.perf_counter()
        actions = self.model.pi(z)[1]["mean"].clamp(-1, 1)
        self._time(rows, "encode", t1 - t0)
        self._time(rows, "policy", time.perf_counter() - t1)
        for key in ("encoder_calls", "policy_calls", "decisions", "steps_prior"):
            self._count(rows, key)
        self._time(rows, "total", time.perf_counter() - start)
        return actions.cpu().numpy()

    def _mismatch(self, rows: list[int], row_t, spec, z, z_pred) -> torch.Tensor:
        """adaptive: each row's mismatch (only the speculative rows `spec` are used), against the plan's open-loop
        latent, or (one_step) against the dynamics' prediction from the last real latent and executed action."""
        if self.s.mismatch == "open_loop":
            return latent_distance(z, z_pred)
        idx = spec.nonzero().squeeze(1)
        ref = z_pred.clone()
        if len(idx):
            t0 = time.perf_counter()
            ref[idx] = self.model.next(self.last_z[row_t[idx]], self.last_action[row_t[idx]])
            self._time([rows[i] for i in idx.tolist()], "verify", time.perf_counter() - t0)
        return latent_distance(z, ref)

    def _plan(self, rows: list[int], z: torch.Tensor) -> None:
        """One batched planner call for `rows` from their real latents z; fills their chunks."""
        row_t = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        t0 = time.perf_counter()
        plan = self.planner.plan(z, self.prev_mean[row_t], shift=self.pos[row_t])
        self._time(rows, "plan", time.perf_counter() - t0)
        for key in ("planner_calls", "plans_started", "plans_used"):
            self._count(rows, key)
        self.fallen[row_t] = False
        H = self.H
        self.prev_mean[row_t] = plan.mean
        self.chunk_actions[row_t, :H] = plan.actions
        self.chunk_latents[row_t, 0] = z
        self.chunk_latents[row_t, 1:H] = plan.latents[:, :H - 1]
        if self.k > H:
            t0 = time.perf_counter()
            ext_actions, ext_latents = self.planner.extend(plan.latents[:, H - 1], self.k - H)
            self.chunk_actions[row_t, H:self.k] = ext_actions
            self.chunk_latents[row_t, H] = plan.latents[:, H - 1]
            self.chunk_latents[row_t, H + 1:self.k] = ext_latents[:, :self.k - H - 1]
            self._time(rows, "extend", time.perf_counter() - t0)
            self._count(rows, "extensions")
        self.pos[row_t] = 0

    def _shadow(self, rows, idx, z, z_pred, a_plan, actions, ts) -> None:
        """The teacher's action at the real state (a replan here, on its own stream; never counted or timed)."""
        row_t = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        with self.teacher_stream:
            plan = uncounted_plan(self.teacher_planner, z[idx], self.prev_mean[row_t], self.pos[row_t])
        teacher = plan.actions[:, 0].clamp(-1, 1)
        executed = actions[idx]
        err = ((executed - teacher) ** 2).mean(1)
        for i, b in enumerate(rows):
            self.stats[b].teacher_sq_error += float(err[i])
            self.stats[b].teacher_steps += 1
        if self.on_step is not None:
            window, mask = self.history.window(row_t)
            dist = latent_distance(z[idx], z_pred[idx])
            one_step = latent_distance(z[idx], self.model.next(self.last_z[row_t], self.last_action[row_t]))
            for i, b in enumerate(rows):
                j = int(self.pos[b])
                self.on_step(collection_row(b, ts[int(idx[i])], j, self.H, dist[i], one_step[i], z[idx[i]],
                                            z_pred[idx[i]], a_plan[i], teacher[i], plan.mean[i, 0], window[i],
                                            mask[i]))


def uncounted_plan(planner, z, prev_mean, shift, generator=None):
    """The teacher's plan: `planner`'s plan from z, left out of its own call tally (the executors count their
    planner calls where they happen; a shadow replan is not one of them)."""
    calls, batches = planner.calls, planner.batches
    plan = planner.plan(z, prev_mean, shift=shift, generator=generator)
    planner.calls, planner.batches = calls, batches
    return plan


def collection_row(row: int, t: int, j: int, horizon: int, distance, distance_one_step, z_real, z_pred, a_plan,
                   a_teacher, a_teacher_mean, window, mask) -> dict:
    """One corrector-data row (collection.ROW_KEYS and the environment row) from one speculative step's tensors."""
    return {"row": row, "t": t, "step_in_chunk": j, "extended": j >= horizon, "distance": float(distance),
            "distance_one_step": float(distance_one_step), "z_real": z_real.cpu().numpy(),
            "z_pred": z_pred.cpu().numpy(), "a_plan": a_plan.cpu().numpy(), "a_teacher": a_teacher.cpu().numpy(),
            "a_teacher_mean": a_teacher_mean.cpu().numpy(), "history": window.cpu().numpy(),
            "history_valid": int(mask.sum())}
