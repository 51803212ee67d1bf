"""Training episodes on several environments at once, one acting agent planning for all of them, played in
chunks of decisions so the agent can take fresh weights between chunks.

What a Ray rollout worker runs (gym_qwen.actors.rollout_worker): episodes are named by a global id that fixes
their reset seed, so a lost episode can be run again anywhere with the same id and the same start.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..envs import make_env
from ..rng import TorchRngStream, derive_seed
from ..tdmpc2.buffer import Episode
from .loop import ACTING_STREAM, TRAIN_SEED_STRIDE

RANDOM_ACTION_STREAM = 2


class EpisodeRunner:
    """`num_envs` environments of one task and an acting agent. `start(ids)` begins one episode per id, played
    in lockstep (batched planning) with random actions or the agent's exploratory ones; `play(n)` plays up to n
    decisions of that batch and hands back the episodes it finished and how far each one is, so a caller can
    hand the agent fresh weights between chunks. `run(ids)` plays whole episodes in one call."""

    def __init__(self, task: str, seed: int, agent, num_envs: int, stream: int):
        self.task, self.seed, self.agent = task, seed, agent
        self.envs = [make_env(task, seed) for _ in range(num_envs)]
        self.action_dim = self.envs[0].action_space.shape[0]
        self.torch_rng = TorchRngStream(derive_seed(seed, ACTING_STREAM, stream))
        self.rng = np.random.default_rng(derive_seed(seed, RANDOM_ACTION_STREAM, stream))
        self._batch: _Batch | None = None

    @property
    def playing(self) -> list[int]:
        """Ids of the batch's episodes not finished yet (empty between batches)."""
        b = self._batch
        return [] if b is None else [i for i, d in zip(b.ids, b.done) if not d]

    def start(self, episode_ids: list[int], random_actions: bool) -> None:
        """Reset one environment per id (its start fixed by the id); drops any batch still in progress."""
        if not 0 < len(episode_ids) <= len(self.envs):
            raise ValueError(f"{len(episode_ids)} episodes asked of a runner with {len(self.envs)} environments")
        envs = self.envs[:len(episode_ids)]
        obs = [env.reset(seed=self.seed * TRAIN_SEED_STRIDE + int(i))[0] for env, i in zip(envs, episode_ids)]
        self._batch = _Batch([int(i) for i in episode_ids], random_actions, envs,
                             [{"obs": [o], "action": [], "reward": [], "terminated": []} for o in obs])

    def play(self, max_decisions: int, on_decision=None) -> tuple[list[Episode], dict[int, int]]:
        """Up to `max_decisions` decisions of the batch (fewer when it ends). Returns the episodes finished in
        this call and {id: decisions played so far} of those still running. `on_decision(t)` is called before
        decision t of the batch (fault injection)."""
        b = self._batch
        if b is None:
            raise RuntimeError("play() before start()")
        finished = []
        for _ in range(max_decisions):
            if all(b.done):
                break
            if on_decision is not None:
                on_decision(b.t)
            if b.random_actions:
                actions = self.rng.uniform(-1, 1, (len(b.envs), self.action_dim)).astype(np.float32)
            else:
                with self.torch_rng:  # finished environments keep planning on their last observation (discarded)
                    actions = self.agent.act(np.stack([tr["obs"][-1] for tr in b.traj]), t0=b.t == 0,
                                             eval_mode=False)
            for j, env in enumerate(b.envs):
                if b.done[j]:
                    continue
                o, r, terminated, truncated, _ = env.step(actions[j])
                tr = b.traj[j]
                tr["obs"].append(o)
                tr["action"].append(actions[j])
                tr["reward"].append(r)
                tr["terminated"].append(terminated)
                if terminated or truncated:
                    b.done[j] = True
                    finished.append(Episode.from_steps(tr, b.ids[j]))
            b.t += 1
        running = {i: len(tr["action"]) for i, tr, d in zip(b.ids, b.traj, b.done) if not d}
        if not running:
            self._batch = None
        return finished, running

    def run(self, episode_ids: list[int], random_actions: bool, on_decision=None) -> list[Episode]:
        """One whole episode per id, in the order of the ids."""
        self.start(episode_ids, random_actions)
        episodes = []
        while self._batch is not None:
            episodes += self.play(1_000_000, on_decision)[0]
        order = {i: n for n, i in enumerate(episode_ids)}
        return sorted(episodes, key=lambda e: order[e.episode_id])

    def close(self) -> None:
        for env in self.envs:
            env.close()


@dataclass
class _Batch:
    ids: list[int]
    random_actions: bool
    envs: list
    traj: list[dict]
    done: list[bool] = field(init=False)
    t: int = 0

    def __post_init__(self):
        self.done = [False] * len(self.ids)
