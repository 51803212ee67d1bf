"""RolloutWorker: a Ray actor holding environments and an acting copy of the agent."""
from __future__ import annotations

import json
import os
import time

import ray
import torch

from gym_qwen.platform.config import TrainConfig, config_from_dict
from gym_qwen.platform.envs import quiet_library_logs, task_spec
from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent
from gym_qwen.platform.training.loop import ExperienceCollector, resolve_seed_steps
from gym_qwen.platform.training.rollouts import EpisodeRunner

# fault injection for tests: {"crash_at_decision": n, "marker": path}, or hold_at_decision (rollout workers);
# crash_at_episode or hold_at_episode (episode-farm actors)
FAULTS_ENV = "GYM_QWEN_FAULTS"


def injected_fault(plan: dict, key: str, value: int) -> None:
    """A test's fault plan, once per marker file (so the restarted actor carries on): at `crash_at_<key>` ==
    value the process exits at once (an actor lost alone); at `hold_at_<key>` == value it writes its pid to the
    marker and waits there, its task unfinished, for the test to kill its node (a machine lost)."""
    marker = plan.get("marker")
    if not marker or os.path.exists(marker):
        return
    if plan.get(f"crash_at_{key}") == value:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)
    if plan.get(f"hold_at_{key}") == value:
        with open(f"{marker}.tmp", "w") as f:  # whole or absent: the test reads it as soon as it exists
            f.write(str(os.getpid()))
        os.replace(f"{marker}.tmp", marker)
        while True:
            time.sleep(1)


def injected_crash():
    """The fault plan of GYM_QWEN_FAULTS as an on_decision hook (decision n of an episode batch; see
    injected_fault). None if unset."""
    spec = os.environ.get(FAULTS_ENV)
    if not spec:
        return None
    plan = json.loads(spec)

    def on_decision(t: int) -> None:
        injected_fault(plan, "decision", t)
    return on_decision


def fault_runtime_env() -> dict:
    """Actor options that carry the driver's fault plan to its actors (empty when none is set)."""
    spec = os.environ.get(FAULTS_ENV)
    return {"runtime_env": {"env_vars": {FAULTS_ENV: spec}}} if spec else {}


class RolloutWorker:
    """Plays training episodes with the newest weights it has been handed.

    Async mode: `play_chunk(version, [weights_ref], ids, random_actions, n)` starts one episode per id on its
    `num_envs` environments (batched planning) when ids are given, else carries on with the batch it holds, and
    plays up to n decisions with the weights it was handed; it returns the episodes that finished and how far
    the others are. `run_episodes` plays whole episodes in one call. Weights travel as one `ray.put` object per
    version; the worker only fetches a version it does not hold yet.
    Sync mode (`sync_step`): one decision of a platform ExperienceCollector at a time, for lockstep training."""

    def __init__(self, config: dict, worker_index: int, threads: int):
        torch.set_num_threads(threads)
        quiet_library_logs()
        self.cfg = cfg = config_from_dict(TrainConfig, config)
        spec = task_spec(cfg.task)
        self.agent = TDMPC2Agent(cfg, spec.obs_dim, spec.action_dim, spec.episode_length, spec.episodic, "cpu")
        self.worker_index = worker_index
        self.version = -1
        self.on_decision = injected_crash()
        if cfg.sync:
            self.collector = ExperienceCollector(cfg.task, cfg.seed, self.agent,
                                                 resolve_seed_steps(cfg, spec.episode_length))
        else:
            self.runner = EpisodeRunner(cfg.task, cfg.seed, self.agent, cfg.num_envs, stream=worker_index)

    def _take(self, version: int, weights_box: list) -> None:
        if version != self.version:
            self.agent.load_state_dict(ray.get(weights_box[0], timeout=600))
            self.version = version

    def run_episodes(self, version: int, weights_box: list, episode_ids: list[int], random_actions: bool):
        if not random_actions:
            self._take(version, weights_box)
        return self.runner.run(episode_ids, random_actions, self.on_decision)

    def play_chunk(self, version: int, weights_box: list, episode_ids: list[int] | None, random_actions: bool,
                   max_decisions: int) -> dict:
        """{"episodes": finished Episodes, "running": {id: decisions played so far}} after up to max_decisions
        decisions; `episode_ids` starts a new batch (None continues the current one)."""
        if episode_ids:
            self.runner.start(episode_ids, random_actions)
        if not random_actions:
            self._take(version, weights_box)
        episodes, running = self.runner.play(max_decisions, self.on_decision)
        return {"episodes": episodes, "running": running}

    def sync_step(self, version: int, weights_box: list):
        """One decision. Returns (finished Episode or None, decisions so far)."""
        if self.collector.decisions >= self.collector.seed_steps:
            self._take(version, weights_box)
        return self.collector.step(), self.collector.decisions

    def drop_partial_episode(self) -> None:
        self.collector.drop_partial_episode()

    def collector_state(self) -> dict:
        return self.collector.state()

    def load_collector_state(self, state: dict) -> None:
        self.collector.load_state(state)

    def pid(self) -> int:
        return os.getpid()
