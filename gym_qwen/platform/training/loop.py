"""Online TD-MPC2 training on one machine, split into an acting part (ExperienceCollector) and a learning part
(Learner).

The in-process loop below drives both; the Ray actors of a later stage own one part each.
Counting: `decisions` are agent steps; env steps = decisions * action_repeat (what `steps=` and MLflow use).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..devices import resolve_device
from ..envs import make_env, task_spec
from ..rng import TorchRngStream, derive_seed, global_rng_state, set_global_rng_state
from ..speculative.evaluation import evaluate
from ..tdmpc2.agent import TDMPC2Agent
from ..tdmpc2.buffer import Episode, EpisodeBuffer

TRAIN_SEED_STRIDE = 100_003  # training episode i of seed s resets with seed s * stride + i
ACTING_STREAM = 1  # torch stream id of acting (planner samples, exploration noise); learning uses the global one


class ExperienceCollector:
    """Acting part: one environment plus an acting agent. Random actions during the seed phase.

    Acting draws from its own torch stream, so a Ray rollout worker holding a copy of the agent draws the same
    numbers as the in-process loop, and the learner's stream does not depend on acting."""

    def __init__(self, task: str, seed: int, agent: TDMPC2Agent, seed_steps: int):
        self.task, self.seed, self.agent, self.seed_steps = task, seed, agent, seed_steps
        self.env = make_env(task, seed)
        self.action_dim = self.env.action_space.shape[0]
        self.rng = np.random.default_rng(seed)
        self.torch_rng = TorchRngStream(derive_seed(seed, ACTING_STREAM))
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
            with self.torch_rng:
                action = self.agent.act(ep["obs"][-1], t0=not ep["action"], eval_mode=False)
        obs, reward, terminated, truncated, _ = self.env.step(action)
        ep["obs"].append(obs)
        ep["action"].append(action)
        ep["reward"].append(reward)
        ep["terminated"].append(terminated)
        self.decisions += 1
        if not (terminated or truncated):
            return None
        episode = Episode.from_steps(ep, self.episode_index)
        self.episode_index += 1
        self._episode = None
        return episode

    def drop_partial_episode(self) -> None:
        """Forget the episode under way (training stopped at its step budget mid-episode)."""
        self._episode = None

    def state(self) -> dict:
        assert self._episode is None, "collector state is only saved between episodes"
        return {"rng": self.rng.bit_generator.state, "episode_index": self.episode_index,
                "decisions": self.decisions, "torch_rng": self.torch_rng.state()}

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.episode_index, self.decisions = int(state["episode_index"]), int(state["decisions"])
        if "torch_rng" in state:  # checkpoints from before acting had its own stream continue on a fresh one
            self.torch_rng.load_state(state["torch_rng"])

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
        self.data_parallel = None

    def set_data_parallel(self, group) -> None:
        """Learn as one process of a data-parallel group (platform.training.data_parallel; None: alone): each
        update takes this process's share of the global batch of `batch_size`."""
        if group is not None:
            group.local_size(self.batch_size)  # refuses a batch that does not split evenly
        self.data_parallel = group if group is not None and group.world > 1 else None
        self.agent.set_data_parallel(self.data_parallel)

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
        means = MetricMeans()
        for _ in range(n):
            rows = None if self.data_parallel is None else self.data_parallel.rows(self.batch_size)
            means.add(self.agent.update(self.buffer.sample(self.batch_size, rows)), 1)
        self.num_updates += n
        return means.take()


class MetricMeans:
    """Means of update metrics over every update since the last `take`, each update weighing the same (a call
    that ran the seed-phase burst of updates counts for all of them)."""

    def __init__(self):
        self._sums: dict[str, float] = {}
        self._updates = 0

    def add(self, metrics: dict, updates: int) -> None:
        if not metrics or updates <= 0:
            return
        for k, v in metrics.items():
            self._sums[k] = self._sums.get(k, 0.0) + v * updates
        self._updates += updates

    def take(self) -> dict:
        means = {k: v / self._updates for k, v in self._sums.items()} if self._updates else {}
        self._sums, self._updates = {}, 0
        return means


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


def build_learning(cfg, device=None):
    """Agent and learner (replay buffer) for a TrainConfig: fresh weights, torch seeded with cfg.seed."""
    spec = task_spec(cfg.task)
    torch.manual_seed(cfg.seed)
    agent = TDMPC2Agent(cfg, spec.obs_dim, spec.action_dim, spec.episode_length, spec.episodic,
                        device if device is not None else cfg.device)
    seed_steps = resolve_seed_steps(cfg, spec.episode_length)
    capacity = cfg.buffer_size if cfg.buffer_size is not None else math.ceil(cfg.steps / spec.action_repeat)
    learner = Learner(agent, EpisodeBuffer(capacity, cfg.horizon, seed=cfg.seed), cfg.batch_size, seed_steps)
    return spec, agent, learner


def build(cfg, device=None):
    """Agent, collector and learner for a TrainConfig (fresh weights; seeds torch)."""
    spec, agent, learner = build_learning(cfg, device)
    collector = ExperienceCollector(cfg.task, cfg.seed, agent, learner.seed_steps)
    return spec, agent, collector, learner


class TrainingBackendError(RuntimeError):
    """A training backend failed in a way the run cannot recover from (one-line message)."""


class InProcessBackend:
    """Training without Ray: one ExperienceCollector and one Learner sharing one agent, a decision at a time.

    A training backend is what `run_training` drives: `advance()` moves training on and returns the episodes
    it finished (with mean update metrics since the previous one); `evaluate`, `state`/`load_state` (for
    checkpoints), `agent_weights` and `close` complete it. The Ray backend in gym_qwen.actors has the same shape.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec, self.agent, self.collector, self.learner = build(cfg)
        self._means = MetricMeans()

    @staticmethod
    def preflight(cfg) -> None:
        """What can be refused before anything is built or written: the device must exist on this machine."""
        resolve_device(cfg.device)

    @property
    def decisions(self) -> int:
        return self.collector.decisions

    @property
    def num_updates(self) -> int:
        return self.learner.num_updates

    def advance(self, total_decisions: int) -> list:
        """One decision and its due updates. Returns [(episode, metrics)] when it finished an episode."""
        episode = self.collector.step()
        if episode is not None:  # into the buffer before this decision's updates, as TD-MPC2 does
            self.learner.add(episode)
        due = self.learner.take_due_updates(self.collector.decisions)
        self._means.add(self.learner.update(due), due)
        if episode is None and self.collector.decisions < total_decisions:
            return []
        if episode is None:  # stopped mid-episode at the step budget
            self.collector.drop_partial_episode()
            return []
        return [(episode, self._means.take())]

    def evaluate(self, episodes: int, seed: int):
        return evaluate(self.agent, self.cfg.task, episodes, seed)

    def state(self) -> dict:
        return {"agent": self.agent.state_dict(with_optim=True), "buffer": self.learner.buffer.state(),
                "num_updates": self.learner.num_updates, "collector": self.collector.state(),
                "torch_rng": global_rng_state()}

    def load_state(self, ckpt: dict) -> None:
        self.agent.load_state_dict(ckpt["agent"])
        self.learner.buffer.load_state(ckpt["buffer"])
        self.learner.num_updates = int(ckpt["num_updates"])
        self.collector.load_state(ckpt["collector"])
        set_global_rng_state(ckpt["torch_rng"])

    def agent_weights(self) -> dict:
        return self.agent.state_dict(with_optim=False)

    def close(self) -> None:
        self.collector.close()


def run_training(cfg, spec, backend, state: LoopState, *, on_episode=None, on_eval=None, on_checkpoint=None,
                 bar=None, should_stop=None) -> LoopState:
    """Drive a training backend until `cfg.steps` env steps. Callbacks: on_episode(episode, metrics, env_steps),
    on_eval(env_steps) -> record, on_checkpoint(env_steps), both at episode boundaries when due. When
    `should_stop()` turns true (e.g. SIGTERM), training stops at the next episode boundary after a checkpoint."""
    total_decisions = math.ceil(cfg.steps / spec.action_repeat)
    started = time.perf_counter()
    while backend.decisions < total_decisions:
        events = backend.advance(total_decisions)
        if bar is not None:
            bar.update(backend.decisions * spec.action_repeat - bar.n)
        if not events and backend.decisions < total_decisions:
            continue
        env_steps = backend.decisions * spec.action_repeat
        state.train_seconds += time.perf_counter() - started
        for episode, metrics in events:
            state.episode_returns.append(episode.total_reward)
            if on_episode is not None:
                on_episode(episode, metrics, env_steps)
        finished = backend.decisions >= total_decisions
        if cfg.eval_freq and (env_steps - state.last_eval_env_step >= cfg.eval_freq or finished):
            state.last_eval_env_step = env_steps
            if on_eval is not None:
                state.eval_history.append(on_eval(env_steps))
        if on_checkpoint is not None and (finished or (cfg.checkpoint_freq and
                                                       env_steps - state.last_ckpt_env_step >= cfg.checkpoint_freq)):
            state.last_ckpt_env_step = env_steps
            on_checkpoint(env_steps)
        if should_stop is not None and not finished and should_stop():
            if on_checkpoint is not None and state.last_ckpt_env_step != env_steps:
                state.last_ckpt_env_step = env_steps
                on_checkpoint(env_steps)
            return state
        started = time.perf_counter()
    return state
