"""Real-time control (issue 31): the clock's arithmetic; async, stale and the clocked baseline at d = 1 equal the
baseline step for step; timelines worked out by hand (plans started / used / discarded, action sources, planner
starts and warm-start shifts, deadline misses); adaptive async's cancels; the background planner's generator; the
wall clock against the simulated one with emulated latency; one-line config errors; the evaluate command, the
sweep preset and what a trial logs."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gym_qwen.platform.rng import seeded
from gym_qwen.platform.speculative.background_planner import BackgroundPlanner, PlanJob
from gym_qwen.platform.speculative.clock import ClockSettings, delay_steps, parse_latency
from gym_qwen.platform.speculative.clocked import (ClockedExecutor, measure_latencies_ms, measure_latency_ms,
                                                   measure_thread_latency_ms)
from gym_qwen.platform.speculative.episodes import play_episodes
from gym_qwen.platform.speculative.evaluation import result_from_records
from gym_qwen.platform.speculative.executor import SOURCES
from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings
from test_cli import _assert_user_error, _main_in
from test_speculative import ACT, LineEnv, agent  # noqa: F401  (agent: the toy agent fixture, horizon 3)

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = Path(__file__).resolve().parents[1]
WALKER = REPO / "models" / "walker-walk-size1-seed1.pt"
INF = float("inf")
# The shipped teacher with a tiny planner, in eager mode: fast enough for 500-step episodes in the default suite
TINY_PLANNER = {"num_samples": 16, "iterations": 1, "num_elites": 2, "num_pi_trajs": 1, "compile": False}
TINY_KEYS = [f"{k}={str(v).lower()}" for k, v in TINY_PLANNER.items()]


def settings(mode: str, threshold: float = INF) -> SpeculationSettings:
    return SpeculationSettings(mode, 1, mismatch_threshold=threshold)


class Timeline(ClockedExecutor):
    """A ClockedExecutor that notes each plan it starts (decision, ready-for decision, warm-start shift) and each
    decision's action source."""

    def reset(self, rows=None):
        self.starts, self.sources = [], []
        super().reset(rows)

    def _start(self, t, executed=None):
        super()._start(t, executed)
        self.starts.append((t, self.job.ready_at, self.job.shift))

    def act(self, obs, rows=None, t=0):
        before = {s: self.stats[0].counts[f"steps_{s}"] for s in SOURCES}
        out = super().act(obs, rows, t)
        self.sources += [s for s in SOURCES if self.stats[0].counts[f"steps_{s}"] > before[s]]
        return out


def play_toy(ex, length: int, seed: int = 3) -> dict:
    with seeded(seed):
        return play_episodes(ex, [LineEnv(length)], [seed])[0]


# ------------------------------------------------------------------------------------------------ the clock
@pytest.mark.parametrize("period,latency,d", [
    (10, 0, 1), (10, 5, 1), (10, 10, 1), (10, 10.5, 2), (10, 30, 3), (10, 31, 4), (100 / 3, 100, 3),
    (300 / 8, 300, 8), (0.1 * 3, 0.9, 3), (600, 300, 1), (4, 41.3, 11)])
def test_delay_is_latency_over_period_rounded_up(period, latency, d):
    assert delay_steps(period, latency) == d
    clock = ClockSettings(period, latency)
    assert clock.delay == d and clock.ready_for(5) == 5 + d - 1  # d = 1: ready for the decision that asked
    assert clock.record() == {"control_period_ms": period, "planner_latency_ms": latency, "delay": d,
                              "latency_source": "given", "realtime": False}


def test_clock_inputs_are_checked():
    for period, latency in ((0, 10), (-5, 10), (10, -1)):
        with pytest.raises(ValueError):
            delay_steps(period, latency)
    assert parse_latency("measured") is None and parse_latency(" Measured ") is None
    assert parse_latency("12.5") == 12.5 and parse_latency(0) == 0.0
    for bad in ("-1", "fast", "inf", None):
        with pytest.raises(ValueError):
            parse_latency(bad)
    unmeasured = ClockSettings(10.0)
    assert not unmeasured.resolved and unmeasured.record()["delay"] is None
    with pytest.raises(ValueError):
        unmeasured.delay
    assert unmeasured.with_latency(25.0).delay == 3


# ------------------------------------------------------------------------------------ d = 1 is the baseline
class ShortEnv:
    """A real task's environment cut after `length` decisions, keeping every action it was sent."""

    def __init__(self, task: str, length: int):
        from gym_qwen.platform.envs import make_env

        self.env, self.length = make_env(task, 0), length

    def reset(self, seed=None):
        self.t, self.sent = 0, []
        return self.env.reset(seed=seed)

    def step(self, action):
        self.t += 1
        self.sent.append(np.array(action, dtype=np.float64))
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated or self.t >= self.length, info

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()


@pytest.fixture(scope="module")
def walker():
    from gym_qwen.platform.files import sha256_of
    from gym_qwen.platform.tdmpc2.checkpoints import load_agent

    agent, _, _ = load_agent(str(WALKER), TINY_PLANNER, "cpu", None)
    return agent, sha256_of(WALKER)


def test_every_clocked_mode_with_d1_is_the_baseline_step_for_step(walker):
    from gym_qwen.platform.speculative.evaluation import evaluate_episodes, load_execution_corrector

    agent, sha = walker
    d1 = ClockSettings(20.0, 15.0)  # L <= P: d = 1
    corrector_file = str(REPO / "models" / "correctors" / "walker-walk-size1-seed1-two_tower.pt")
    specs = {"baseline": ExecutionSpec(), "async": ExecutionSpec(settings("async"), clock=d1),
             "async +two_tower": ExecutionSpec(settings("async"), "two_tower", corrector_file, clock=d1),
             "stale": ExecutionSpec(settings("stale"), clock=d1),
             "clocked baseline": ExecutionSpec(settings("baseline"), clock=d1)}
    env = ShortEnv("walker-walk", 25)
    played = {}
    for name, spec in specs.items():
        corrector = load_execution_corrector(spec, agent, sha)
        for i in (0, 1):
            (rec,) = evaluate_episodes(agent, [env], 1, [i], execution=spec, corrector=corrector)
            played[name, i] = (rec, list(env.sent))
    for i in (0, 1):
        base, base_actions = played["baseline", i]
        assert base["length"] == 25 and base["planner_calls"] == base["steps_plan"] == 25
        for name in specs:
            rec, actions = played[name, i]
            assert rec["return"] == base["return"], name
            assert all(np.array_equal(a, b) for a, b in zip(actions, base_actions)) and len(actions) == 25, name
            assert (rec["planner_calls"], rec["plans_started"], rec["plans_used"], rec["steps_plan"]) == \
                (25, 25, 25, 25), name
            assert rec["plans_discarded"] == rec["deadline_misses"] == rec["speculative_steps"] == 0, name
            assert rec["corrector_calls"] == 0, name  # no step is speculative at d = 1: nothing to correct
        assert played["async", i][0]["wait_seconds"] == pytest.approx(25 * 0.015)  # the clock's L, every step
        assert played["async", i][0]["clock"]["delay"] == 1
    assert played["baseline", 0][0]["return"] != played["baseline", 1][0]["return"]  # two different episodes


# ------------------------------------------------------------------------------- timelines worked out by hand
def test_async_stale_baseline_and_prior_timelines_by_hand(agent):
    # P = 10 ms, L = 35 ms: d = 4 decisions per plan, 13 decisions, plan horizon H = 3. A plan started at s is
    # ready for s + 3; the next starts at the decision after a takeover. Plans start at 0, 4, 8, 12 (the last
    # one is still in flight when the episode ends: discarded) and take over at 3, 7, 11; decisions 0-2 have
    # no plan (the policy prior). async executes each plan's actions 0..3, the 4th past H an extension.
    clock = ClockSettings(10.0, 35.0)
    before = agent.planner.calls
    ex = Timeline(agent, settings("async"), clock, planner_seed=3)
    rec = play_toy(ex, 13)
    assert ex.starts == [(0, 3, 0), (4, 7, 4), (8, 11, 4), (12, 15, 4)]  # shift: by d, from the plan in force
    assert ex.sources == ["prior"] * 3 + ["plan"] * 3 + ["extension"] + ["plan"] * 3 + ["extension"] + ["plan"] * 2
    assert (rec["plans_started"], rec["plans_used"], rec["plans_discarded"], rec["plans_cancelled"]) == (4, 3, 1, 0)
    assert (rec["steps_prior"], rec["steps_plan"], rec["steps_extension"], rec["steps_corrected"]) == (3, 8, 2, 0)
    assert rec["planner_calls"] == 4 and agent.planner.calls - before == 3  # the discarded plan is never computed
    assert rec["extensions"] == 3 and rec["speculative_steps"] == 10 and rec["deadline_misses"] == 0
    # encoded: every plan start (0, 4, 8, 12) and every prior step (0, 1, 2); the policy: 3 prior steps and the
    # first plan's prediction of decision 3 (3 steps through the dynamics: the prior's action executed at 0, then
    # the prior at the predicted latents 1 and 2)
    assert rec["encoder_calls"] == 6 and rec["policy_calls"] == 5
    assert rec["wait_seconds"] == 0.0  # every plan was made while earlier decisions ran

    stale = Timeline(agent, settings("stale"), clock, planner_seed=3)
    rec = play_toy(stale, 13)
    # the same starts (shift: decisions since the plan in force was started); a late plan runs its actions
    # 0, 1, 2 and then, past H, the policy prior until the next one arrives
    assert stale.starts == [(0, 3, 0), (4, 7, 4), (8, 11, 4), (12, 15, 4)]
    assert stale.sources == ["prior"] * 3 + ["plan"] * 3 + ["prior"] + ["plan"] * 3 + ["prior"] + ["plan"] * 2
    assert (rec["plans_started"], rec["plans_used"], rec["plans_discarded"]) == (4, 3, 1)
    assert (rec["steps_prior"], rec["steps_plan"], rec["steps_extension"]) == (5, 8, 0)
    assert rec["encoder_calls"] == 8 and rec["policy_calls"] == 5 and rec["extensions"] == 0

    sync = Timeline(agent, settings("baseline"), clock, planner_seed=3)
    rec = play_toy(sync, 13)
    # the synchronous planner ignoring the clock: a plan at every decision, each waited for L = 35 ms > P
    assert sync.starts == [(0, 0, 0)] + [(t, t, 1) for t in range(1, 13)]
    assert sync.sources == ["plan"] * 13
    assert rec["deadline_misses"] == 13 and rec["wait_seconds"] == pytest.approx(13 * 0.035)
    assert (rec["plans_started"], rec["plans_used"], rec["plans_discarded"]) == (13, 13, 0)

    prior = Timeline(agent, settings("prior"), ClockSettings(10.0), planner_seed=3)
    rec = play_toy(prior, 13)
    assert prior.starts == [] and prior.sources == ["prior"] * 13
    assert rec["planner_calls"] == rec["deadline_misses"] == 0 and rec["policy_calls"] == 13


def test_async_with_a_corrector_corrects_every_speculative_step(agent):
    from gym_qwen.platform.speculative.correctors import build_corrector

    clock = ClockSettings(10.0, 35.0)
    plain = play_toy(ClockedExecutor(agent, settings("async"), clock, planner_seed=3), 13)
    identity = build_corrector("two_tower", 16, ACT, history_len=4).eval()  # the identity at initialisation
    ex = Timeline(agent, settings("async"), clock, corrector=identity, planner_seed=3)
    rec = play_toy(ex, 13)
    assert ex.sources == ["prior"] * 3 + ["corrected"] * 10  # each plan's first action too: it was predicted
    assert rec["corrector_calls"] == rec["steps_corrected"] == rec["speculative_steps"] == 10
    assert rec["return"] == plain["return"]  # the identity changes no action
    assert rec["encoder_calls"] == 13  # the corrector looks at every decision


class Rolls(Timeline):
    """A Timeline that also notes what each plan started from: (decision, real latent, action rolled through first,
    the plan's start latent), and every action sent."""

    def reset(self, rows=None):
        self.rolls, self.sent = [], []
        super().reset(rows)

    def _start(self, t, executed=None):
        super()._start(t, executed)
        self.rolls.append((t, self._real().clone(), executed, self.job.z_start.clone()))

    def act(self, obs, rows=None, t=0):
        out = super().act(obs, rows, t)
        self.sent.append(torch.as_tensor(out).clone())
        return out


def test_async_plans_from_the_action_the_decision_executed(agent):
    # d = 2 (P = 10, L = 15): the plan started at t plans for t + 1 from z(t) rolled through the action t executed.
    # The corrector flips every action, so the plan's own action for t (what the prediction rolled through before)
    # is not the one executed.
    def flip(z, z_pred, action, window, mask):
        return -action

    ex = Rolls(agent, settings("async"), ClockSettings(10.0, 15.0), corrector=flip, planner_seed=3)
    play_toy(ex, 9)
    assert [t for t, *_ in ex.rolls] == [0, 2, 4, 6, 8]
    for t, z, executed, z_start in ex.rolls:
        assert torch.equal(executed, ex.sent[t])
        assert torch.allclose(z_start, agent.model.next(z, executed))
    assert ex.sources == ["prior"] + ["corrected"] * 8
    t, z, executed, z_start = ex.rolls[1]
    assert not torch.allclose(agent.model.next(z, -executed), z_start)  # the plan's action leads elsewhere


def test_async_with_the_prior_past_the_horizon_acts_closed_loop_there(agent):
    # The timeline above (d = 4, H = 3) with past_horizon=prior: each plan's 4th step is the policy prior at the
    # real latent, as stale's, not the extension; the plans start and take over as before. The plan started at
    # 4 predicts decision 7 from z(4) through the action 4 executed, the plan's action for 5, then, for 6 (past
    # H), the prior's mean action at the predicted latent: what the prior will do there, closed loop.
    clock = ClockSettings(10.0, 35.0)
    ex = Rolls(agent, SpeculationSettings("async", 1, INF, past_horizon="prior"), clock, planner_seed=3)
    rec = play_toy(ex, 13)
    assert ex.starts == [(0, 3, 0), (4, 7, 4), (8, 11, 4), (12, 15, 4)]
    assert ex.sources == ["prior"] * 3 + ["plan"] * 3 + ["prior"] + ["plan"] * 3 + ["prior"] + ["plan"] * 2
    assert (rec["plans_started"], rec["plans_used"], rec["plans_discarded"]) == (4, 3, 1)
    assert (rec["steps_prior"], rec["steps_plan"], rec["steps_extension"]) == (5, 8, 0)
    assert rec["extensions"] == 0 and rec["speculative_steps"] == 8
    # encoded: the starts 0, 4, 8, 12 and the prior's decisions 0, 1, 2, 6, 10; the policy: those 5 prior steps,
    # the first plan's 2 predicted steps and 1 past H in each later start's prediction
    assert rec["encoder_calls"] == 8 and rec["policy_calls"] == 5 + 2 + 3
    t, z, executed, z_start = ex.rolls[1]
    assert t == 4 and torch.equal(executed, ex.sent[4])
    z6 = agent.model.next(agent.model.next(z, executed), ex.sent[5])
    assert torch.allclose(z_start, agent.model.next(z6, agent.model.pi(z6)[1]["mean"]))
    # with d <= H nothing is past the horizon: the same episode as plain async
    short = ClockSettings(10.0, 25.0)
    plain = play_toy(ClockedExecutor(agent, settings("async"), short, planner_seed=3), 13)
    closed = play_toy(ClockedExecutor(agent, SpeculationSettings("async", 1, INF, past_horizon="prior"), short,
                                      planner_seed=3), 13)
    assert closed["return"] == plain["return"] and closed["steps_plan"] == plain["steps_plan"]


def test_adaptive_async_cancels_the_plan_in_flight_and_counts_it(agent):
    # d = 3 (P = 10, L = 25), threshold 0: every verified step misses. By hand: plans start at 0 (ready 2) and 3
    # (ready 5); at 4 a miss cancels the plan started at 3 (older than this observation) and starts one from the
    # real latent for 6 (warm start shifted 4 from the plan in force since 2); at 5 the restarted plan is in
    # flight (no second cancel) and the chunk runs its 4th action (an extension); 6 takes over; 7 starts one
    # (ready 9) that the miss at 8 cancels (restart ready 10, in flight when the episode ends at 10).
    clock = ClockSettings(10.0, 25.0)
    ex = Timeline(agent, settings("async", threshold=0.0), clock, planner_seed=3)
    rec = play_toy(ex, 10)
    assert ex.starts == [(0, 2, 0), (3, 5, 3), (4, 6, 4), (7, 9, 3), (8, 10, 4)]
    assert ex.sources == ["prior"] * 2 + ["plan"] * 3 + ["extension"] + ["plan"] * 3 + ["extension"]
    assert rec["misses"] == 8  # decisions 2..9: every speculative step
    assert (rec["plans_started"], rec["plans_used"], rec["plans_cancelled"], rec["plans_discarded"]) == (5, 2, 2, 3)
    assert rec["plans_started"] == rec["plans_used"] + rec["plans_discarded"]
    never = Timeline(agent, settings("async", threshold=INF), clock, planner_seed=3)
    rec = play_toy(never, 10)
    assert never.starts == [(0, 2, 0), (3, 5, 3), (6, 8, 3), (9, 11, 3)]
    assert (rec["plans_started"], rec["plans_used"], rec["plans_cancelled"], rec["plans_discarded"]) == (4, 3, 0, 1)
    assert rec["misses"] == 0


# ------------------------------------------------------------------------------------- corrector data under async
def _async_rows(agent, corrector=None, length=13, delay=4, past_horizon="extension"):
    from gym_qwen.platform.speculative.collection import collect_episode_rows, data_schema

    schema = data_schema(16, ACT, 4, {"task": "line", "teacher_sha256": "ab" * 32})
    return collect_episode_rows(agent, LineEnv(length), 5, 0, 6, 4, 0.0, schema, corrector=corrector,
                                async_delay=delay, past_horizon=past_horizon)


def test_async_collection_records_every_speculative_step_with_the_teachers_action(agent):
    """collect async_delay=4 on the hand timeline above (plans take over at 3, 7, 11): a row at each of the 10
    speculative decisions, j counted from the take-over, the teacher's replans neither counted nor changing the
    episode (it plays as the same async run without rows), from the async collection's seed range."""
    from gym_qwen.platform.seeds import reset_seed
    from gym_qwen.platform.speculative.collection import async_clock
    from gym_qwen.platform.speculative.features import latent_distance

    before = agent.planner.calls
    table, rec = _async_rows(agent)
    assert agent.planner.calls - before == 3  # the three plans used: the teacher's calls are restored
    assert table.num_rows == rec["speculative_steps"] == 10 and rec["planner_calls"] == 4
    assert table["t"].to_pylist() == list(range(3, 13))
    assert table["step_in_chunk"].to_pylist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert table["extended"].to_pylist() == [j >= 3 for j in [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]]
    z, z_pred = (torch.tensor(np.stack(table[c].to_pylist())) for c in ("z_real", "z_pred"))
    assert np.allclose(table["distance"].to_pylist(), latent_distance(z, z_pred).numpy(), atol=1e-5)
    assert not np.allclose(np.stack(table["a_teacher"].to_pylist()), np.stack(table["a_plan"].to_pylist()))
    start = reset_seed("async_collection", 5, 0)
    with seeded(start):
        plain = play_episodes(ClockedExecutor(agent, settings("async"), async_clock(4), planner_seed=start),
                              [LineEnv(13)], [start])[0]
    assert plain["return"] == rec["return"] and plain["planner_calls"] == rec["planner_calls"]


def test_async_collection_with_the_prior_past_the_horizon_records_the_plan_steps_only(agent):
    """collect async_delay=4 past_horizon=prior: the same timeline, the 4th step of each plan the prior at the real
    latent (no row there: nothing is speculative or corrected), so rows at the 8 plan steps j = 0..2."""
    table, rec = _async_rows(agent, past_horizon="prior")
    assert table.num_rows == rec["speculative_steps"] == 8 and rec["steps_prior"] == 5
    assert table["t"].to_pylist() == [3, 4, 5, 7, 8, 9, 11, 12]
    assert table["step_in_chunk"].to_pylist() == [0, 1, 2, 0, 1, 2, 0, 1] and not any(table["extended"].to_pylist())


def test_async_dagger_collection_executes_the_corrector_and_records_the_plan(agent, monkeypatch):
    """With a corrector (one that halves every action) the async episode executes its actions while the rows keep
    the plan's action, its input. From the same start (the DAgger range pointed at the open-loop one for this
    test only) the first speculative state is the open-loop one's and the next is not."""
    from gym_qwen.platform.seeds import RESET_SEED_BASE
    from gym_qwen.platform.speculative.correctors import build_corrector

    halve = build_corrector("two_tower", 16, ACT, history_len=4).eval()
    halve.forward = lambda z, z_pred, a, window, mask: 0.5 * a
    open_loop, _ = _async_rows(agent)
    monkeypatch.setitem(RESET_SEED_BASE, "async_dagger", RESET_SEED_BASE["async_collection"])
    dagger, rec = _async_rows(agent, corrector=halve)
    assert rec["corrector_calls"] == rec["steps_corrected"] == dagger.num_rows == 10
    z_open, z_dagger = (np.stack(t["z_real"].to_pylist()) for t in (open_loop, dagger))
    assert np.array_equal(z_open[0], z_dagger[0]) and not np.allclose(z_open[1], z_dagger[1])
    assert np.array_equal(np.stack(open_loop["a_plan"].to_pylist())[0], np.stack(dagger["a_plan"].to_pylist())[0])


# ------------------------------------------------------------------------------------- the planner's thread
def test_the_background_planner_gives_the_synchronous_plan_for_the_same_generator_seed(walker):
    agent, _ = walker
    planner = agent.planner
    with torch.inference_mode():
        z = agent.model.encode(torch.randn(1, agent.model.dims.obs_dim, generator=torch.Generator().manual_seed(0)))
        g = torch.Generator().manual_seed(7)
        first = planner.plan(z, None, generator=g)
        second = planner.plan(z, first.mean, shift=1, generator=g)
    outer = torch.get_rng_state()
    g_thread = torch.Generator().manual_seed(7)
    runner = BackgroundPlanner(lambda job: planner.plan(job.z_start, job.prev_mean, shift=job.shift,
                                                        generator=g_thread, cancelled=job.cancel.is_set), threads=1)
    try:
        a = runner.result(runner.submit(PlanJob(0, 0, z, None, 0)))
        b = runner.result(runner.submit(PlanJob(1, 1, z, a.mean, 1)))
        late = PlanJob(2, 2, z, None, 0)
        late.cancel.set()  # cancelled before the thread takes it: it draws nothing
        runner.submit(late)
        runner.cancel(late)
        with pytest.raises(RuntimeError, match="cancelled"):
            runner.result(late)
    finally:
        runner.close()
    assert torch.equal(a.actions, first.actions) and torch.equal(a.mean, first.mean)
    assert torch.equal(b.actions, second.actions)
    assert torch.equal(torch.get_rng_state(), outer)  # the global stream was never drawn from
    assert torch.equal(g_thread.get_state(), g.get_state())  # the cancelled job drew nothing
    assert late.cancelled and late.done.is_set()


class SleepyPlanner:
    """The planner with its latency emulated: each plan first sleeps `seconds` (an MPPI iteration's cancel check
    then sees a cancel that came meanwhile)."""

    def __init__(self, planner, seconds: float):
        self.inner, self.seconds, self.s = planner, seconds, planner.s

    def plan(self, *args, **kwargs):
        time.sleep(self.seconds)
        return self.inner.plan(*args, **kwargs)

    def extend(self, *args, **kwargs):
        return self.inner.extend(*args, **kwargs)


COMPARED = ("return", "length", "planner_calls", "encoder_calls", "policy_calls", "corrector_calls", "extensions",
            "misses", "speculative_steps", "plans_started", "plans_used", "plans_discarded", "plans_cancelled",
            "steps_plan", "steps_corrected", "steps_extension", "steps_prior")


@pytest.mark.parametrize("case", ["adaptive", "late", "on-time"])
def test_the_wall_clock_takes_the_simulated_clocks_actions_and_counts_its_misses(agent, case):
    # adaptive: d = 3 (P = 25 ms, L = 60 ms), every step misses (threshold 0): two plans cancelled while their
    # emulated 30 ms run, their draws undone. late: the clock says d = 1 (L = 10 <= P = 20) but every plan takes
    # 50 ms: every decision is late. on time: d = 2 (P = 100, L = 150), plans take 20 ms: 180 ms to spare.
    mode, threshold, period, latency, sleep, length = {
        "adaptive": ("async", 0.0, 25.0, 60.0, 0.03, 10), "late": ("baseline", INF, 20.0, 10.0, 0.05, 6),
        "on-time": ("async", INF, 100.0, 150.0, 0.02, 6)}[case]
    sim = play_toy(ClockedExecutor(agent, settings(mode, threshold), ClockSettings(period, latency),
                                   planner_seed=3), length)
    wall_clock = ClockSettings(period, latency, realtime=True, planner_threads=1)
    ex = ClockedExecutor(agent, settings(mode, threshold), wall_clock, planner=SleepyPlanner(agent.planner, sleep),
                         planner_seed=3)
    start = time.perf_counter()
    wall = play_toy(ex, length)
    elapsed = time.perf_counter() - start
    assert {k: wall[k] for k in COMPARED} == {k: sim[k] for k in COMPARED}
    assert ex.runner is None  # the planner's thread stopped with the episode
    if case == "adaptive":
        assert wall["plans_cancelled"] == 2 and wall["plans_discarded"] == 3
    if case == "late":
        assert wall["deadline_misses"] == length  # each decision waited >= 50 ms for its plan, past its 20 ms
        assert wall["wait_seconds"] >= length * sleep
        # decision t acts >= 50 (t + 1) ms after the episode began, its deadline is 20 (t + 1): >= 30 (t + 1) late
        late = wall["late_decisions"]
        assert [t for t, _ in late] == list(range(length))
        assert all(ms >= 30 * (t + 1) for t, ms in late), late
        assert wall["late_seconds"] == pytest.approx(sum(ms for _, ms in late) / 1000, abs=1e-5 * length)
        result = result_from_records("line", mode, [{**wall, "episode": 4}])
        assert result.late_decisions == [[4, t, ms] for t, ms in late] and result.late_seconds == wall["late_seconds"]
    if case == "on-time":
        assert wall["deadline_misses"] == 0 and wall["late_seconds"] == 0 and "late_decisions" not in wall
        assert elapsed >= length * period / 1000  # it slept to every deadline


def test_the_measured_latency_is_the_planners_median_time_and_counts_no_call(walker):
    agent, _ = walker
    slow = SleepyPlanner(agent.planner, 0.02)
    slow.calls = slow.batches = 0
    obs = np.zeros(agent.model.dims.obs_dim, dtype=np.float32)
    assert measure_latency_ms(agent, obs, slow, repeats=3) >= 20.0
    calls = agent.planner.calls
    assert 0 < measure_latency_ms(agent, obs, repeats=3) < 20_000
    assert agent.planner.calls == calls
    # several planners: timed in interleaved rounds, each its own median, none counting a call
    slower = SleepyPlanner(agent.planner, 0.06)
    slower.calls = slower.batches = 0
    both = measure_latencies_ms(agent, obs, {"slow": slow, "slower": slower, "full": None}, repeats=3)
    assert 20.0 <= both["slow"] < both["slower"] and both["slower"] >= 60.0 and both["full"] > 0
    assert slow.calls == slower.calls == 0 and agent.planner.calls == calls


def test_the_latency_beside_the_environments_thread_times_plans_in_the_planner_thread(walker):
    """The planner in its thread while this one steps a calibration episode every 5 ms: each plan's time is the
    planner thread's (an emulated 30 ms plan takes >= 30 ms), the warm-up plan left out, nothing counted."""
    agent, _ = walker
    slow = SleepyPlanner(agent.planner, 0.03)
    slow.calls = slow.batches = 0
    ms = measure_thread_latency_ms(agent, "walker-walk", 1, period_ms=5.0, planner=slow, plans=3, threads=1)
    assert 30.0 <= ms < 20_000 and slow.calls == 0
    calls = agent.planner.calls
    assert 0 < measure_thread_latency_ms(agent, "walker-walk", 1, period_ms=5.0, plans=2, threads=1) < 20_000
    assert agent.planner.calls == calls


# ------------------------------------------------------------------------------------------ the command
@pytest.mark.parametrize("args,words", [
    (["mode=async"], ["mode=async runs under a clock", "control_period_ms="]),
    (["mode=stale"], ["mode=stale runs under a clock"]),
    (["mode=async", "control_period_ms=0"], ["control_period_ms=0 must be > 0"]),
    (["mode=async", "control_period_ms=-5"], ["control_period_ms=-5 must be > 0"]),
    (["mode=async", "control_period_ms=10", "planner_latency_ms=-1"], ["planner_latency_ms='-1'", "measured"]),
    (["mode=async", "control_period_ms=10", "planner_latency_ms=fast"], ["planner_latency_ms='fast'"]),
    (["planner_latency_ms=20"], ["planner_latency_ms=20", "control_period_ms="]),
    (["realtime=true"], ["realtime=true", "control_period_ms="]),
    (["mode=naive", "control_period_ms=10"], ["mode=naive ignores", "async, stale, baseline, prior"]),
    (["mode=all", "control_period_ms=10"], ["mode=all ignores"]),
    (["mode=adaptive", "control_period_ms=10"], ["mode=adaptive ignores"]),
    (["mode=async", "control_period_ms=10", "num_envs=2"], ["one environment", "num_envs=2"]),
    (["mode=async", "control_period_ms=10", "realtime=true", "num_workers=2"], ["realtime=true", "num_workers=0"]),
    (["mode=stale", "control_period_ms=10", "corrector_type=two_tower"], ["mode=stale", "no corrector"]),
    (["mode=async", "control_period_ms=10", "spec_exec_horizon=3"], ["spec_exec_horizon=3", "steps per plan"]),
    (["mode=async", "control_period_ms=10", "planner_threads=2"], ["planner_threads=", "realtime=true"]),
    (["mode=async", "control_period_ms=10", "measure_teacher=true"], ["measure_teacher=true", "clock"]),
    (["mode=stale", "control_period_ms=10", "past_horizon=prior"], ["past_horizon=prior", "mode=stale"]),
    (["mode=async", "control_period_ms=10", "past_horizon=real"], ["past_horizon", "extension, prior"]),
])
def test_bad_clock_inputs_say_one_line(tmp_path, capsys, monkeypatch, args, words):
    _assert_user_error(*_main_in(tmp_path, ["evaluate", "checkpoint=x.pt", *args], capsys, monkeypatch), tmp_path,
                       words)


def test_evaluate_async_records_the_clock_and_its_counts_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out" / "async.json"
    args = ["evaluate", f"checkpoint={WALKER}", "mode=async", "control_period_ms=10", "planner_latency_ms=25",
            "episodes=1", f"output={out}", "torch_threads=1", "progress=false", *TINY_KEYS]
    rc, text, err = _main_in(tmp_path, args, capsys, monkeypatch)
    assert rc == 0, err
    assert "clock: P=10 ms, planner latency L=25.0 ms (given), d=3" in text and "ready for decision s+2" in text
    record = json.loads(out.read_text())
    assert record["clock"] == {"control_period_ms": 10.0, "planner_latency_ms": 25.0, "delay": 3,
                               "latency_source": "given", "realtime": False}
    # 500 decisions: plans start at 0, 3, ..., 498 (167) and take over at 2, 5, ..., 497 (166); decisions 0, 1
    # act with the policy prior; the plan started at 498 is in flight at the end
    assert (record["plans_started"], record["plans_used"], record["plans_discarded"]) == (167, 166, 1)
    assert (record["steps_prior"], record["steps_plan"], record["deadline_misses"]) == (2, 498, 0)
    assert record["settings"][0]["k"] == 3 and record["settings"][0]["clock"]["delay"] == 3
    log = out.with_name("async.episodes.jsonl")
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["clock"]["delay"] == 3
    rc, _, err = _main_in(tmp_path, args + ["resume=true"], capsys, monkeypatch)
    assert rc == 0, err
    assert log.read_text().splitlines() == lines  # the finished episode was read back, not played again
    assert json.loads(out.read_text())["returns"] == record["returns"]


def test_evaluate_measures_the_latency_before_the_episodes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "stale.json"
    args = ["evaluate", f"checkpoint={WALKER}", "mode=stale", "control_period_ms=0.5", "episodes=1",
            f"output={out}", "torch_threads=1", "progress=false", *TINY_KEYS]
    rc, text, err = _main_in(tmp_path, args, capsys, monkeypatch)
    assert rc == 0, err
    assert next(line for line in text.splitlines() if line.startswith("clock:")).count("(measured)") == 1
    clock = json.loads(out.read_text())["clock"]
    assert clock["latency_source"] == "measured" and clock["planner_latency_ms"] > 0
    assert clock["delay"] == delay_steps(0.5, clock["planner_latency_ms"]) >= 2  # no plan takes half a ms here
    # the row names the planner keys it ran with (the tiny planner's) and the clock
    assert f"num_samples={TINY_PLANNER['num_samples']}) [P=0.5ms d={clock['delay']}]" in text


# ------------------------------------------------------------------------------------------- the sweep preset
def test_the_realtime_sweep_preset_is_valid_and_its_trials_log_the_clock():
    from gym_qwen.platform.sweeps.setting import resolve_sweep
    from gym_qwen.platform.sweeps.spec import load_sweep
    from gym_qwen.platform.sweeps.trial import trial_params

    sweep = load_sweep(str(REPO / "configs/sweeps/realtime.yaml"))
    settings_, _ = resolve_sweep(sweep, REPO)
    by_family: dict = {}
    for point, setting in zip(sweep.points, settings_):
        by_family.setdefault(point.family, []).append((point, setting))
    assert {"baseline", "prior", "async", "stale", "planner", "async_closed_loop"} <= set(by_family)
    closed = by_family["async_closed_loop"]
    assert {s.spec.clock.delay for _, s in closed} == {8, 4} and len(closed) == 4
    assert all(s.spec.settings.past_horizon == "prior" and trial_params(p, s, "sha")["past_horizon"] == "prior"
               for p, s in closed)
    delays = {s.spec.clock.delay for _, s in by_family["async"]}
    assert delays == {8, 4, 3, 2, 1}  # P = L/8, L/4, L/3, L/2, L, 2L
    assert {s.spec.corrector_type for _, s in by_family["async"]} == {"none", "two_tower"}
    assert all(s.spec.clock is None for _, s in by_family["baseline"])  # the unconstrained reference
    point, setting = next((p, s) for p, s in by_family["async"] if s.spec.clock.delay == 3)
    assert setting.label.endswith("[P=100ms d=3]")  # trials of different periods are told apart
    params = trial_params(point, setting, "sha")
    assert params["delay"] == params["spec_exec_horizon"] == 3 and params["latency_source"] == "given"
    assert params["control_period_ms"] == setting.spec.clock.control_period_ms


def test_a_clocked_trials_metrics_hold_the_clocks_counts(agent):
    from gym_qwen.platform.sweeps.trial import metrics_of

    ex = ClockedExecutor(agent, settings("baseline"), ClockSettings(10.0, 35.0), planner_seed=3)
    rec = {**play_toy(ex, 13), "episode": 0, "clock": ClockSettings(10.0, 35.0).record()}
    metrics = metrics_of("toy", "baseline", [rec])
    assert metrics["deadline_misses"] == 13 and metrics["deadline_misses_per_step"] == 1.0
    assert metrics["wait_ms_per_step"] == pytest.approx(35.0) and metrics["plans_used"] == 13
    assert math.isclose(metrics["planner_calls_per_step"], 1.0)
