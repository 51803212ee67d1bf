"""Execution under a clock (clock.py): one environment whose decisions come every control period, and a planner
whose plans take d = ceil(L / P) decisions.

Timeline. A plan started at decision s is ready for decision s + d - 1; the planner works without a break, so the
plan that takes over at t is followed by one started at t + 1 that takes over at t + d. Before the first plan of
an episode is ready (decisions 0..d-2) the policy prior acts. The modes:

- async (speculative planning): the plan started at t + 1 plans for the state it takes over at, z^(t+d): the real
  latent z(t+1) rolled through the world model with the action decision t + 1 executes (corrected, where a
  corrector acts: the plan starts once that action is chosen) and the current plan's actions for t+2..t+d-1 (the
  first plan: with the policy prior's mean actions). With d = 1 the plan started at t is used at t, so it starts
  before the action is chosen. It is warm-started from the current plan's MPPI mean shifted by d, and
  its action j is the one for decision t+d+j, taken from its predicted latent j (past the plan's horizon H the
  chunk is extended with the policy prior through the dynamics, as spec_extended does; with `past_horizon=prior`
  the policy prior acts at the real latent there instead, closed loop, as stale does, and the prediction of the
  next plan's start rolls the prior's mean action through the dynamics at those steps). Every plan step after the
  plan's start is speculative: corrected when a corrector is given. With a finite `mismatch_threshold` each
  speculative step is verified, ||z_real - z^_j|| <= threshold; a miss cancels the plan in flight (if it was
  started before this step's observation; once per plan) and starts one from the real latent for decision
  t + d - 1 (counted: one plan cancelled, discarded).
- stale (the synchronous planner with late plans): plans from the real latent z(s), not knowing they arrive
  d - 1 decisions late; a plan executes its actions 0, 1, ... from the decision it arrives at until the next
  arrives, and the policy prior once past its horizon H.
- baseline (the synchronous planner ignoring the clock): plans at every decision from the real latent and the
  decision waits for it: a deadline miss whenever d > 1.
- prior: the policy prior's mean action at every decision, never late.

With d = 1, async, stale and baseline are the synchronous baseline, step for step and bit for bit (the planner
draws from its own generator, seeded like the global stream the unclocked baseline draws from).

Simulated clock (the default): plans are computed when they take over (a cancelled plan never is), in the order
they were started, so nothing depends on how fast this machine is; the decision that takes over a plan it started
itself waits L ms (`wait`), and a baseline decision with d > 1 counts a deadline miss. Real clock
(`clock.realtime`): plans run in a BackgroundPlanner thread while this thread encodes, corrects, and sleeps to each
decision's deadline (the period grid starts at the episode's first decision); a decision whose action is ready
after its deadline is a deadline miss, the time spent blocked on a plan is `wait`. A late plan is waited for, so
the actions are the simulated clock's on the same seeds whatever the timing (a cancelled plan's draws are undone
by restoring the generator), and misses say whether the clock held.

Corrector data (collection.py, `collect async_delay=d`): with `on_step`, every speculative step also replans at
the real state with the agent's full planner on a generator of its own (the teacher: not counted, not timed) and
hands `on_step` the row the open-loop collection records, so a corrector can be distilled from (and, with a
corrector executing, DAgger can follow) the states async reaches.

Counts per episode, where they happen: plans started / used (took over) / discarded (cancelled, or in flight when
the episode ended) / cancelled, each decision's action source (plan, corrected, extension, prior), deadline
misses, planner / encoder / policy / corrector calls, extensions, mismatch misses, speculative steps.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..envs import make_env
from ..seeds import reset_seed
from .background_planner import BackgroundPlanner, PlanJob
from .executor import StepStats, collection_row, uncounted_plan
from .features import HistoryWindow, feature_dim, latent_distance, mismatch_feature


@dataclass
class Chunk:
    """The plan executing now: `actions` (K, A) and the latents they are taken from (K, L), the MPPI mean (1, H, A)
    that warm-starts the next plan, the decision it was started at and the one it took over at."""

    actions: torch.Tensor
    latents: torch.Tensor
    mean: torch.Tensor
    started: int = 0
    took_over: int = 0


class ClockedExecutor:
    """Acts for one environment under `clock` (a resolved ClockSettings) in settings.mode (async, stale, baseline or
    prior); see the module docstring. `planner`: plan with this MPPIPlanner over the agent's model instead of the
    agent's (a budget). `planner_seed` seeds the planner's own generator (the evaluation seeds it like the
    episode's global stream). The executor interface of SpeculativeExecutor: reset, act, finish, stats."""

    def __init__(self, agent, settings, clock, corrector=None, planner=None, planner_seed: int = 0,
                 on_step=None, teacher_seed: int = 0):
        self.agent, self.s, self.clock, self.mode = agent, settings, clock, settings.mode
        if self.mode not in ("async", "stale", "baseline", "prior"):
            raise ValueError(f"mode={self.mode} does not run under a clock")
        self.model = agent.model
        self.planner = planner if planner is not None else agent.planner
        self.H = self.planner.s.horizon
        self.d = clock.delay if self.mode != "prior" else 1
        self.adaptive = self.mode == "async" and math.isfinite(settings.mismatch_threshold)
        # past the plan's horizon: the policy prior at the real latent (stale; async with past_horizon=prior)
        self.prior_past_horizon = self.mode == "stale" or (self.mode == "async" and settings.past_horizon == "prior")
        # async with d > 1 starts a plan once this decision's action is chosen, so that the prediction it plans
        # from rolls through the action executed (corrected) rather than the plan's; with d = 1 the plan started
        # at t is the one used at t, so it starts first
        self.starts_after_acting = self.mode == "async" and self.d > 1
        # chunk positions needed: async executes d steps and predicts over the next d - 1; a restart at the chunk's
        # last step executes and predicts d - 1 more (only H where the prior acts at the real latent past them)
        extended = self.mode == "async" and not self.prior_past_horizon
        self.K = max(self.H, self.d, 2 * self.d - 2 if self.adaptive else 0) if extended else self.H
        self.corrector = corrector
        # corrector data (collection.py): at every speculative step the full planner replans at the real state on
        # its own generator (the teacher; never counted or timed) and `on_step` gets the row
        self.on_step = on_step
        self.uses_history = corrector is not None or on_step is not None
        self.teacher_generator = None
        if on_step is not None:
            self.teacher_generator = torch.Generator(device=agent.device)
            self.teacher_generator.manual_seed(int(teacher_seed))
        self.B = 1
        self.device = agent.device
        self.A, self.L = self.model.dims.action_dim, self.model.dims.latent_dim
        self.history = HistoryWindow(1, settings.history_len, feature_dim(self.L, self.A), self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(planner_seed))
        self.latency_s = (clock.planner_latency_ms or 0.0) / 1000.0
        self.period_s = clock.control_period_ms / 1000.0
        self.runner: BackgroundPlanner | None = None
        self.stats = [StepStats()]
        self.chunk: Chunk | None = None
        self.job: PlanJob | None = None
        self.reset()

    # ------------------------------------------------------------------ bookkeeping
    def reset(self, rows=None) -> None:
        """A new episode: no plan, none in flight, empty history, fresh tallies, the period grid restarts."""
        self._close_runner()
        self.stats = [StepStats()]
        self.chunk, self.job = None, None
        self.next_start, self.restarted, self.t0 = 0, False, None
        self.last_z = self.last_action = None  # the previous decision's real latent and action (rows' one-step)
        self.history.reset()
        if self.clock.realtime and self.mode != "prior":
            self.runner = BackgroundPlanner(self._compute, self.clock.planner_threads, self.device)

    def finish(self, rows=None) -> None:
        """The episode ended: a plan still in flight is discarded; the planner thread stops."""
        if self.job is not None:
            self._count("plans_discarded")
            if self.runner is not None:
                self.runner.cancel(self.job)
            self.job = None
        self._close_runner()

    def _close_runner(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[0].counts[key] += n

    def _time(self, key: str, seconds: float) -> None:
        self.stats[0].seconds[key] += seconds

    # ------------------------------------------------------------------ acting
    @torch.inference_mode()
    def act(self, obs: np.ndarray, rows=None, t=0) -> np.ndarray:
        """The action (1, A) in [-1, 1] for decision `t` of the episode (the clock needs it) from observation obs.
        On the real clock, returns at the decision's deadline (or at once, late)."""
        start = time.perf_counter()
        t = int(t) if isinstance(t, (int, np.integer)) else int(list(t)[0])
        if self.t0 is None:
            self.t0 = start
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device).reshape(1, -1)
        self._z = None
        self._obs = obs_t
        self._shadow_s = 0.0
        if self.uses_history:
            self._real()  # the history sees every step
        action = None
        if self.mode != "prior":
            if not self.starts_after_acting and self.job is None and t >= self.next_start:
                self._start(t)
            if self.job is not None and self.job.ready_at == t:
                self._take_over(t)
            if self.chunk is not None:
                action = self._from_chunk(t)
        if action is None:
            action = self._prior()
        action = action.clamp(-1, 1)
        if self.on_step is not None:
            self.last_z, self.last_action = self._real(), action
        if self.starts_after_acting and self.job is None and t >= self.next_start:
            self._start(t, executed=action)
        out = action.cpu().numpy()
        ready = time.perf_counter() - self._shadow_s  # the teacher's replans are not the agent's work
        self._count("decisions")
        self._time("total", ready - start)
        if self.clock.realtime:
            deadline = self.t0 + (t + 1) * self.period_s
            if ready > deadline:
                self._count("deadline_misses")
                self._time("late", ready - deadline)
                self.stats[0].late_decisions.append((t, round(1e3 * (ready - deadline), 3)))
            else:
                time.sleep(deadline - ready)
        return out

    def _real(self) -> torch.Tensor:
        """This decision's encoded observation (encoded once, when first needed)."""
        if self._z is None:
            t0 = time.perf_counter()
            self._z = self.model.encode(self._obs)
            self._time("encode", time.perf_counter() - t0)
            self._count("encoder_calls")
        return self._z

    def _prior(self) -> torch.Tensor:
        """The policy prior's mean action at the real latent: no plan is ready, or the late plan is spent."""
        z = self._real()
        t0 = time.perf_counter()
        action = self.model.pi(z)[1]["mean"]
        self._time("policy", time.perf_counter() - t0)
        self._count("policy_calls")
        self._count("steps_prior")
        if self.uses_history:
            self.history.push(torch.zeros(1, dtype=torch.long, device=self.device), mismatch_feature(z, z, action))
        return action

    def _from_chunk(self, t: int) -> torch.Tensor | None:
        """The current plan's action for decision t (None: past the plan's horizon, where the policy prior acts at
        the real latent), verified (adaptive) and corrected at speculative steps."""
        c = self.chunk
        j = t - c.took_over
        if self.prior_past_horizon and j >= self.H:
            return None
        action, z_pred = c.actions[j:j + 1], c.latents[j:j + 1]
        source = "extension" if j >= self.H else "plan"
        speculative = t > c.started
        if speculative:
            self._count("speculative_steps")
            if self.adaptive:
                self._verify(t, z_pred)
        a_plan = action
        if self.uses_history:
            z = self._real()
            rows = torch.zeros(1, dtype=torch.long, device=self.device)
            self.history.push(rows, mismatch_feature(z, z_pred, action))
            if speculative and self.corrector is not None:
                t0 = time.perf_counter()
                window, mask = self.history.window(rows)
                action = self.corrector(z, z_pred, action, window, mask).clamp(-1, 1)
                self._time("correct", time.perf_counter() - t0)
                self._count("corrector_calls")
                source = "corrected"
        if speculative and self.on_step is not None:
            t0 = time.perf_counter()
            self._shadow(t, j, z_pred, a_plan)
            self._shadow_s += time.perf_counter() - t0
        self._count(f"steps_{source}")
        return action

    def _shadow(self, t: int, j: int, z_pred: torch.Tensor, a_plan: torch.Tensor) -> None:
        """Corrector data: the teacher's action at this real state (the agent's full planner, warm-started from the
        current plan's mean shifted to this decision, drawing from its own generator; not counted) and the row."""
        z = self._real()
        plan = uncounted_plan(self.agent.planner, z, self.chunk.mean, j, generator=self.teacher_generator)
        window, mask = self.history.window(torch.zeros(1, dtype=torch.long, device=self.device))
        one_step = latent_distance(z, self.model.next(self.last_z, self.last_action))  # t > 0: a decision before
        self.on_step(collection_row(0, t, j, self.H, latent_distance(z, z_pred)[0], one_step[0], z[0], z_pred[0],
                                    a_plan[0], plan.actions[0, 0].clamp(-1, 1), plan.mean[0, 0], window[0], mask[0]))

    def _verify(self, t: int, z_pred: torch.Tensor) -> None:
        """adaptive async: a miss cancels the plan in flight, if it planned from an older observation than this
        one and none was cancelled since the current plan took over, and starts one from this real latent."""
        t0 = time.perf_counter()
        miss = bool(latent_distance(self._real(), z_pred)[0] > self.s.mismatch_threshold)
        self._time("verify", time.perf_counter() - t0)
        if not miss:
            return
        self._count("misses")
        job = self.job
        if job is None or job.started >= t or self.restarted:
            return
        if self.runner is not None:
            t0 = time.perf_counter()
            self.runner.cancel(job)
            if job.generator_state is not None:  # undo its draws, as the simulated clock never made them
                self.generator.set_state(job.generator_state)
            self._time("wait", time.perf_counter() - t0)
        self._count("plans_cancelled")
        self._count("plans_discarded")
        self.job = None  # act() starts the new one once this decision's action is chosen
        self.restarted = True

    # ------------------------------------------------------------------ plans
    def _start(self, t: int, executed: torch.Tensor | None = None) -> None:
        """Start a plan at decision t (see the module docstring for what each mode plans from); `executed`: the
        action decision t executes, where it is already chosen."""
        z, c = self._real(), self.chunk
        if self.mode == "async":
            ready_at = t + self.d - 1
            z_start = self._predict(z, t, self.d - 1, executed)
            shift = ready_at - c.took_over if c is not None else 0
        else:
            ready_at = t + self.d - 1 if self.mode == "stale" else t
            z_start = z
            shift = t - c.started if c is not None else 0
        job = PlanJob(started=t, ready_at=ready_at, z_start=z_start,
                      prev_mean=c.mean if c is not None else None, shift=shift)
        self._count("plans_started")
        self._count("planner_calls")
        if self.runner is not None:
            self.runner.submit(job)
        self.job = job

    def _predict(self, z: torch.Tensor, t: int, steps: int, executed: torch.Tensor | None = None) -> torch.Tensor:
        """z rolled `steps` decisions forward with the actions the current plan takes from decision t on (no plan
        yet, or past its horizon where the prior acts at the real latent: the policy prior's mean actions through
        the dynamics); `executed`, where given, is decision t's."""
        if steps == 0:
            return z
        t0 = time.perf_counter()
        c = self.chunk
        for i in range(steps):
            if i == 0 and executed is not None:
                a = executed
            elif c is not None and not (self.prior_past_horizon and t - c.took_over + i >= self.H):
                a = c.actions[t - c.took_over + i].unsqueeze(0)
            else:
                a = self.model.pi(z)[1]["mean"]
                self._count("policy_calls")
            z = self.model.next(z, a)
        self._time("predict", time.perf_counter() - t0)
        return z

    def _take_over(self, t: int) -> None:
        """The plan in flight is ready for decision t: it becomes the chunk."""
        job, self.job = self.job, None
        if self.runner is not None:
            t0 = time.perf_counter()
            chunk = self.runner.result(job)
            self._time("wait", time.perf_counter() - t0)
            self._time("plan", job.seconds)
        else:
            t0 = time.perf_counter()
            chunk = self._compute(job)
            self._time("plan", time.perf_counter() - t0)
            if job.started == t:  # planned within this decision's period: the decision waited L for it
                self._time("wait", self.latency_s)
                if self.d > 1:  # ... longer than the period
                    self._count("deadline_misses")
        if self.K > self.H:
            self._count("extensions")
        chunk.started, chunk.took_over = job.started, t
        self.chunk = chunk
        self._count("plans_used")
        self.next_start, self.restarted = t + 1, False

    def _compute(self, job: PlanJob) -> Chunk:
        """The planner's work for one job (here, or on the planner thread): the plan from job.z_start and, past
        H, its extension by the policy prior, every draw from this executor's generator."""
        g = self.generator
        job.generator_state = g.get_state()
        plan = self.planner.plan(job.z_start, job.prev_mean, shift=job.shift, generator=g,
                                 cancelled=job.cancel.is_set)
        H, K = self.H, self.K
        actions = torch.zeros(K, self.A, device=self.device)
        latents = torch.zeros(K, self.L, device=self.device)
        actions[:H] = plan.actions[0]
        latents[0] = job.z_start[0]
        latents[1:H] = plan.latents[0, :H - 1]
        if K > H:
            ext_actions, ext_latents = self.planner.extend(plan.latents[:, H - 1], K - H, generator=g)
            actions[H:] = ext_actions[0]
            latents[H] = plan.latents[0, H - 1]
            latents[H + 1:] = ext_latents[0, :K - H - 1]
        return Chunk(actions, latents, plan.mean)


# ---------------------------------------------------------------------------------------------------- latency
def measure_latency_ms(agent, obs, planner=None, repeats: int = 5, warmup: int = 1, seed: int = 0) -> float:
    """The planner's median time (ms) for one plan from observation `obs` on this machine, after `warmup` calls
    (a compiled rollout compiles there); drawn from a generator of its own, counted nowhere."""
    return measure_latencies_ms(agent, obs, {"planner": planner}, repeats, warmup, seed)["planner"]


def measure_latencies_ms(agent, obs, planners: dict, repeats: int = 5, warmup: int = 1,
                         seed: int = 0) -> dict[str, float]:
    """The median time (ms) of one plan from observation `obs` for each planner of `planners` (name -> MPPIPlanner,
    or None for the agent's), timed in `repeats` interleaved rounds (one plan of each per round, the order turning
    each round) after `warmup` rounds, so that a slow spell of a shared machine falls on every planner alike and
    their ratios (which budgets fit a period) hold better than timing each in turn. Each planner draws from a
    generator of its own; nothing is counted."""
    chosen = {name: p if p is not None else agent.planner for name, p in planners.items()}
    kept = {name: (p.calls, p.batches) for name, p in chosen.items()}
    gens = {}
    for name in chosen:
        gens[name] = torch.Generator(device=agent.device)
        gens[name].manual_seed(int(seed))
    names, times = list(chosen), {name: [] for name in chosen}
    with torch.inference_mode():
        z = agent.model.encode(torch.as_tensor(np.asarray(obs, dtype=np.float32), device=agent.device).reshape(1, -1))
        for i in range(warmup + repeats):
            turn = i % len(names)
            for name in names[turn:] + names[:turn]:
                t0 = time.perf_counter()
                plan = chosen[name].plan(z, None, generator=gens[name])
                plan.actions.cpu()  # on CUDA: wait for the plan
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
    for name, p in chosen.items():
        p.calls, p.batches = kept[name]
    return {name: 1000.0 * statistics.median(t) for name, t in times.items()}


def measure_thread_latency_ms(agent, task: str, seed: int, period_ms: float, planner=None, plans: int = 8,
                              threads: int | None = None) -> float:
    """The planner's median time (ms) per plan as `realtime=true` runs it: in a BackgroundPlanner thread (`threads`
    torch threads), `plans` plans back to back after one to warm up, while this thread takes a decision every
    `period_ms` as the wall clock does (steps a calibration episode of `task` with the policy prior's mean action,
    encodes, sleeps to the next deadline): the time the wall clock's plans take, where measure_latency_ms times
    them alone, so the d the wall clock can hold at that period (as of now: on a shared VM the planner's speed
    drifts between minutes). Nothing is counted."""
    planner = planner if planner is not None else agent.planner
    calls, batches = planner.calls, planner.batches
    g = torch.Generator(device=agent.device)
    g.manual_seed(int(seed))
    env = make_env(task, reset_seed("calibration", seed, 0))
    runner = BackgroundPlanner(lambda job: planner.plan(job.z_start, None, generator=g, cancelled=job.cancel.is_set),
                               threads, agent.device)
    period_s, times = period_ms / 1000.0, []
    try:
        obs, _ = env.reset(seed=reset_seed("calibration", seed, 0))
        with torch.inference_mode():
            def encode(o):
                return agent.model.encode(torch.as_tensor(np.asarray(o, dtype=np.float32),
                                                          device=agent.device).reshape(1, -1))
            z = encode(obs)
            job = runner.submit(PlanJob(started=0, ready_at=0, z_start=z, prev_mean=None, shift=0))
            deadline = time.perf_counter()
            while len(times) < plans:
                if job.done.is_set():
                    runner.result(job)
                    if job.started > 0:  # the first plan warms up (a compiled rollout compiles there)
                        times.append(job.seconds)
                    job = runner.submit(PlanJob(started=len(times) + 1, ready_at=0, z_start=z, prev_mean=None,
                                                shift=0))
                action = agent.model.pi(z)[1]["mean"].clamp(-1, 1)
                obs, _, terminated, truncated, _ = env.step(action[0].cpu().numpy())
                if terminated or truncated:
                    obs, _ = env.reset()
                z = encode(obs)
                deadline += period_s
                time.sleep(max(0.0, deadline - time.perf_counter()))
            runner.cancel(job)
    finally:
        runner.close()
        env.close()
        planner.calls, planner.batches = calls, batches
    return 1000.0 * statistics.median(times)


def calibration_observation(task: str, seed: int) -> np.ndarray:
    """The first observation of `task`'s first calibration episode: what planner latencies are timed from."""
    env = make_env(task, reset_seed("calibration", seed, 0))
    try:
        obs, _ = env.reset(seed=reset_seed("calibration", seed, 0))
    finally:
        env.close()
    return obs


def resolve_clock(execution, agent, task: str, seed: int, planner=None):
    """`execution` with its clock's planner latency measured (the setting's planner, from the first calibration
    episode's first observation) if it was left to be measured; unchanged otherwise."""
    clock = getattr(execution, "clock", None)
    if clock is None or clock.resolved:
        return execution
    if execution.settings.mode == "prior":  # nothing is planned: no latency to measure
        return replace(execution, clock=clock.with_latency(0.0, "no planner"))

    latency = measure_latency_ms(agent, calibration_observation(task, seed), planner, seed=seed)
    return replace(execution, clock=clock.with_latency(latency, "measured"))
