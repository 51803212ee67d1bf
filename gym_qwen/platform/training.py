"""Online TD-MPC2 training on one machine, split into an acting part (Collector) and a learning part (Learner).

The in-process loop below drives both; the Ray actors of a later stage own one part each.
Counting: `decisions` are agent steps; env steps = decisions * action_repeat (what `steps=` and MLflow use).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .envs import make_env, task_spec
from .tdmpc2.agent import TDMPC2Agent
from .tdmpc2.buffer import Episode, EpisodeBuffer

TRAIN_SEED_STRIDE = 100_003  # training episode i of seed s resets with seed s * stride + i


class Collector:
    """Acting part: one environment plus an acting agent. Random actions during the seed phase."""

    def __init__(self, task: str, seed: int, agent: TDMPC2Agent, seed_steps: int):
        self.task, self.seed, self.agent, self.seed_steps = task, seed, agent, seed_steps
        self.env = make_env(task, seed)
        self.action_dim = self.env.action_space.shape[0]
        self.rng = np.random.default_rng(seed)
        self.episode_index = 0
        self.decisions = 0
        self._episode: dict | None = None

    def _begin(self) -> None:
        obs, _ = self.env.reset(seed=self.seed * TRAIN_SEED_STRIDE + self.episode_index)
        self._episode = {"obs": [obs], "action": [], "reward": [], "terminated": []}

    def step(self) -> Episode | None:
        """Take one decision; returns the Episode when this decision finished it."""
        if self._episode is None:
            self._begin()
        ep = self._episode
        if self.decisions < self.seed_steps:
            action = self.rng.uniform(-1, 1, self.action_dim).astype(np.float32)
        else:
            action = self.agent.act(ep["obs"][-1], t0=not ep["action"], eval_mode=False)
        obs, reward, terminated, truncated, _ = self.env.step(action)
        ep["obs"].append(obs)
        ep["action"].append(action)
        ep["reward"].append(reward)
        ep["terminated"].append(terminated)
        self.decisions += 1
        if not (terminated or truncated):
            return None
        episode = Episode(np.stack(ep["obs"]).astype(np.float32), np.stack(ep["action"]).astype(np.float32),
                          np.asarray(ep["reward"], np.float32), np.asarray(ep["terminated"], bool),
                          episode_id=self.episode_index)
        self.episode_index += 1
        self._episode = None
        return episode

    def state(self) -> dict:
        assert self._episode is None, "collector state is only saved between episodes"
        return {"rng": self.rng.bit_generator.state, "episode_index": self.episode_index,
                "decisions": self.decisions}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.episode_index, self.decisions = int(state["episode_index"]), int(state["decisions"])

    def close(self) -> None:
        self.env.close()


class Learner:
    """Learning part: the replay buffer and the updates (one per decision after `seed_steps` decisions of
    random data, preceded by `seed_steps` updates at that point, as TD-MPC2 does).

    Updates that fall due while the buffer holds no complete episode yet (seed_steps shorter than an episode)
    are deferred until the first episode arrives, not dropped. Episodes enter the buffer before the updates of
    their last decision, so nothing is ever deferred across an episode boundary (where checkpoints happen).
    """

    def __init__(self, agent: TDMPC2Agent, buffer: EpisodeBuffer, batch_size: int, seed_steps: int):
        self.agent, self.buffer, self.batch_size, self.seed_steps = agent, buffer, batch_size, seed_steps
        self.num_updates = 0
        self.deferred = 0

    def add(self, episode: Episode) -> None:
        self.buffer.add(episode)

    def take_due_updates(self, decisions: int) -> int:
        """How many updates to run now that `decisions` decisions were taken. Call once per decision: the
        count is handed out (or kept deferred) by this call."""
        if decisions < self.seed_steps:
            return 0
        self.deferred += self.seed_steps if decisions == self.seed_steps else 1
        if self.buffer.num_samples_available == 0:
            return 0
        due, self.deferred = self.deferred, 0
        return due

    def update(self, n: int) -> dict:
        """Run n updates (none while the buffer holds no full-length sample); returns mean metrics."""
        if n <= 0 or self.buffer.num_samples_available == 0:
            return {}
        totals: dict[str, float] = {}
        for _ in range(n):
            for k, v in self.agent.update(self.buffer.sample(self.batch_size)).items():
                totals[k] = totals.get(k, 0.0) + v
        self.num_updates += n
        return {k: v / n for k, v in totals.items()}


@dataclass
class LoopState:
    """Counters and history that a resumed run needs besides weights, buffer and RNGs."""

    eval_history: list = field(default_factory=list)
    last_eval_env_step: int = 0
    last_ckpt_env_step: int = 0
    episode_returns: list = field(default_factory=list)
    train_seconds: float = 0.0


def resolve_seed_steps(cfg, episode_length: int) -> int:
    return cfg.seed_steps if cfg.seed_steps is not None else max(1000, 5 * episode_length)


def build(cfg, device=None):
    """Agent, collector and learner for a TrainConfig (fresh weights; seeds torch)."""
    spec = task_spec(cfg.task)
    torch.manual_seed(cfg.seed)
    agent = TDMPC2Agent(cfg, spec.obs_dim, spec.action_dim, spec.episode_length, spec.episodic,
                        device if device is not None else cfg.device)
    seed_steps = resolve_seed_steps(cfg, spec.episode_length)
    capacity = cfg.buffer_size if cfg.buffer_size is not None else math.ceil(cfg.steps / spec.action_repeat)
    learner = Learner(agent, EpisodeBuffer(capacity, cfg.horizon, seed=cfg.seed), cfg.batch_size, seed_steps)
    collector = Collector(cfg.task, cfg.seed, agent, seed_steps)
    return spec, agent, collector, learner


def run_training(cfg, spec, agent, collector: Collector, learner: Learner, state: LoopState, *,
                 on_episode=None, on_eval=None, on_checkpoint=None, bar=None) -> LoopState:
    """The in-process loop until `cfg.steps` env steps. Callbacks: on_episode(episode, metrics, env_steps),
    on_eval(env_steps) -> record, on_checkpoint(env_steps) at episode boundaries when due."""
    total_decisions = math.ceil(cfg.steps / spec.action_repeat)
    update_sums: dict[str, float] = {}
    update_count = 0
    started = time.perf_counter()
    while collector.decisions < total_decisions:
        episode = collector.step()
        if episode is not None:  # into the buffer before this decision's updates, as TD-MPC2 does
            learner.add(episode)
            state.episode_returns.append(episode.total_reward)
        metrics = learner.update(learner.take_due_updates(collector.decisions))
        if metrics:
            update_count += 1
            for k, v in metrics.items():
                update_sums[k] = update_sums.get(k, 0.0) + v
        if bar is not None:
            bar.update(spec.action_repeat)
        if episode is None and collector.decisions < total_decisions:
            continue
        env_steps = collector.decisions * spec.action_repeat
        state.train_seconds += time.perf_counter() - started
        started = time.perf_counter()
        if on_episode is not None and episode is not None:
            means = {k: v / update_count for k, v in update_sums.items()} if update_count else {}
            on_episode(episode, means, env_steps)
        update_sums, update_count = {}, 0
        finished = collector.decisions >= total_decisions
        if collector._episode is not None:  # stopped mid-episode at the step budget
            collector._episode = None
        if cfg.eval_freq and (env_steps - state.last_eval_env_step >= cfg.eval_freq or finished):
            state.last_eval_env_step = env_steps
            if on_eval is not None:
                state.eval_history.append(on_eval(env_steps))
        if on_checkpoint is not None and (finished or (cfg.checkpoint_freq and
                                                       env_steps - state.last_ckpt_env_step >= cfg.checkpoint_freq)):
            state.last_ckpt_env_step = env_steps
            on_checkpoint(env_steps)
        started = time.perf_counter()
    return state
