"""Corrector data collection: roll out speculative chunks of a teacher and record the teacher at every step.

Each episode executes the planned actions of chunks of k = exec_horizon steps (past the plan horizon the plan is
extended by the policy prior), so the data covers the states speculation reaches; at every speculative step
j = 1..k-1 the full planner also runs at the real state (on its own random stream) and its first action is the
teacher's. Collection episodes reset from their own seed range (seeds.RESET_SEED_BASE), DAgger episodes from
another: never an evaluation episode's start, and a DAgger collection never replays an open-loop one.

With a corrector (DAgger), the chunks execute the corrector's actions instead of the planned ones, so the data
covers the states the corrected agent reaches, where a corrector trained on open-loop data is off its
distribution; the rows still hold the plan's action (the corrector's input) and the teacher's (its target).

With `async_delay=d` the episodes run under the simulated clock in mode=async instead (clocked.py: each plan
planned from the state predicted d - 1 decisions ahead and executed for d decisions, every step of it
speculative), corrected too with a corrector (DAgger with the async executor in the loop); the rows are recorded
at every speculative step the same way, and the episodes reset from ranges of their own.
"""
from __future__ import annotations

import numpy as np

from ..envs import make_env
from ..rng import derive_seed, seeded
from ..seeds import RESET_SEED_BASE, reset_seed
from ..tdmpc2.checkpoints import agent_from_checkpoint
from .clock import ClockSettings
from .clocked import ClockedExecutor
from .corrector_data import rows_to_table, schema
from .correctors import load_corrector
from .episodes import play_episodes
from .executor import SpeculationSettings, SpeculativeExecutor
from .features import feature_dim

ROW_KEYS = ("t", "step_in_chunk", "extended", "distance", "distance_one_step", "z_real", "z_pred", "a_plan", "a_teacher",
            "a_teacher_mean", "history", "history_valid")


def data_schema(latent_dim: int, action_dim: int, history_len: int, metadata: dict):
    return schema(latent_dim, action_dim, history_len, feature_dim(latent_dim, action_dim), metadata)


def seed_kind(corrected: bool, clocked: bool = False) -> str:
    """The seed range of a collection: DAgger (a corrector executes) or open loop (the plan executes), each under
    the async clock (`clocked`) or in chunks."""
    return ("async_" if clocked else "") + ("dagger" if corrected else "collection")


def episode_reset_seeds(metadata: dict, episodes) -> set[int]:
    """The reset seeds of a data file's episodes, from its metadata (the range's first seed it recorded; files
    written before the DAgger range existed carry none: they reset from the collection range, DAgger ones too)."""
    base = metadata.get("reset_seed_base", RESET_SEED_BASE[metadata.get("seed_kind", "collection")])
    return {int(base) + int(metadata["seed"]) + int(e) for e in episodes}


def collection_mode(exec_horizon: int, plan_horizon: int, corrected: bool) -> str:
    """The execution mode of collection chunks: open loop, or (DAgger) corrected within or past the plan."""
    if not corrected:
        return "naive"
    return "spec_corrector" if exec_horizon <= plan_horizon else "spec_extended"


def async_clock(delay: int) -> ClockSettings:
    """A simulated clock whose plans take `delay` decisions (P = 1 ms, L = delay ms: only d matters to it)."""
    return ClockSettings(control_period_ms=1.0, planner_latency_ms=float(delay), latency_source="given")


def collect_episode_rows(agent, env, seed: int, index: int, exec_horizon: int, history_len: int,
                         min_distance: float, schema_, corrector=None, async_delay: int | None = None,
                         past_horizon: str = "extension"):
    """The rows (an Arrow table of `schema_`) of collection episode `index`, and the episode's return.
    `corrector`: execute its actions instead of the planned ones (DAgger). `async_delay`: run the episode in
    mode=async under a simulated clock with d = async_delay instead of in chunks of exec_horizon, executing
    `past_horizon` past the plan's horizon (SpeculationSettings.past_horizon)."""
    rows = []
    start = reset_seed(seed_kind(corrector is not None, async_delay is not None), seed, index)
    if async_delay is not None:
        settings = SpeculationSettings("async", 1, mismatch_threshold=float("inf"), history_len=history_len,
                                       past_horizon=past_horizon)
        executor = ClockedExecutor(agent, settings, async_clock(async_delay), corrector=corrector,
                                   planner_seed=start, on_step=rows.append, teacher_seed=derive_seed(start, 7))
    else:
        mode = collection_mode(exec_horizon, agent.planner.s.horizon, corrector is not None)
        executor = SpeculativeExecutor(agent, SpeculationSettings(mode, exec_horizon, history_len=history_len),
                                       corrector=corrector, teacher_seed=derive_seed(start, 7),
                                       on_step=rows.append)
    with seeded(start):
        record = play_episodes(executor, [env], [start])[0]
    kept = [r for r in rows if r["distance"] >= min_distance]
    if kept:
        columns = {k: np.stack([r[k] for r in kept]) for k in ROW_KEYS}
        columns["episode"] = np.full(len(kept), index, dtype=np.int64)
    else:
        columns = {f.name: np.zeros((0,)) for f in schema_}
    return rows_to_table(columns, schema_), record


def collection_setup(ckpt: dict, overrides: dict, device: str, seed: int, exec_horizon: int, history_len: int,
                     min_distance: float, metadata: dict, corrector_file: str | None = None,
                     async_delay: int | None = None, past_horizon: str = "extension") -> dict:
    """An episode worker's state: the teacher agent, an environment, the data schema and (DAgger) the corrector
    of `corrector_file`, checked against the teacher (metadata's teacher_sha256)."""
    agent, _, _ = agent_from_checkpoint(ckpt, overrides, device)
    corrector = None
    if corrector_file is not None:
        corrector, _ = load_corrector(corrector_file, teacher_sha256=metadata.get("teacher_sha256"),
                                      latent_dim=agent.model.dims.latent_dim, history_len=history_len,
                                      device=agent.device)
    return {"agent": agent, "env": make_env(ckpt["task"], seed), "seed": seed, "k": exec_horizon,
            "history_len": history_len, "min_distance": min_distance, "corrector": corrector,
            "async_delay": async_delay, "past_horizon": past_horizon,
            "schema": data_schema(agent.model.dims.latent_dim, agent.model.dims.action_dim, history_len, metadata)}


def collection_episode(state: dict, index: int):
    """Per-episode function of the episode farm: the rows of collection episode `index`."""
    table, _ = collect_episode_rows(state["agent"], state["env"], state["seed"], index, state["k"],
                                    state["history_len"], state["min_distance"], state["schema"],
                                    state.get("corrector"), state.get("async_delay"),
                                    state.get("past_horizon", "extension"))
    return table
