"""Episode replay buffer sampling length H+1 subsequences, as TD-MPC2 trains on."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Episode:
    """One finished episode: obs (T+1, obs_dim), action (T, A), reward (T,), terminated (T,)."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    episode_id: int = -1

    def __len__(self) -> int:
        return len(self.action)

    @classmethod
    def from_steps(cls, steps: dict, episode_id: int) -> "Episode":
        """From the lists a collector appends to: {"obs": T+1, "action", "reward", "terminated": T each}."""
        return cls(np.stack(steps["obs"]).astype(np.float32), np.stack(steps["action"]).astype(np.float32),
                   np.asarray(steps["reward"], np.float32), np.asarray(steps["terminated"], bool),
                   episode_id=int(episode_id))

    @property
    def total_reward(self) -> float:
        return float(self.reward.sum())

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"obs": self.obs, "action": self.action, "reward": self.reward, "terminated": self.terminated,
                "episode_id": np.asarray(self.episode_id)}

    @classmethod
    def from_arrays(cls, d: dict) -> "Episode":
        return cls(np.asarray(d["obs"], np.float32), np.asarray(d["action"], np.float32),
                   np.asarray(d["reward"], np.float32), np.asarray(d["terminated"], bool), int(d["episode_id"]))


class EpisodeBuffer:
    """FIFO buffer of whole episodes holding at most `capacity` transitions.

    Samples are uniform over all valid (episode, start) pairs: obs (H+1, B, obs_dim), action/reward/terminated
    (H, B, ...). The flat arrays are rebuilt once per added episode, which is cheap next to training.
    """

    def __init__(self, capacity: int, horizon: int, seed: int = 0):
        self.capacity, self.horizon = int(capacity), int(horizon)
        self.rng = np.random.default_rng(seed)
        self.episodes: list[Episode] = []
        self._flat: dict[str, np.ndarray] | None = None
        self._starts = np.zeros(0, np.int64)

    @property
    def num_transitions(self) -> int:
        return sum(len(e) for e in self.episodes)

    @property
    def num_samples_available(self) -> int:
        return len(self._starts)

    def add(self, episode: Episode) -> None:
        self.episodes.append(episode)
        while self.num_transitions > self.capacity and len(self.episodes) > 1:
            self.episodes.pop(0)
        self._rebuild()

    def _rebuild(self) -> None:
        eps = self.episodes
        # Rows: each episode contributes T+1 rows; action/reward rows are padded with one unused row.
        obs = np.concatenate([e.obs for e in eps])
        pad = lambda x: np.concatenate([x, np.zeros((1, *x.shape[1:]), x.dtype)])  # noqa: E731
        self._flat = {"obs": obs,
                      "action": np.concatenate([pad(e.action) for e in eps]),
                      "reward": np.concatenate([pad(e.reward) for e in eps]),
                      "terminated": np.concatenate([pad(e.terminated) for e in eps])}
        starts, row = [], 0
        for e in eps:
            n_valid = len(e) - self.horizon + 1
            if n_valid > 0:
                starts.append(row + np.arange(n_valid))
            row += len(e) + 1
        self._starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)

    def sample(self, batch_size: int, rows: slice | None = None) -> dict[str, np.ndarray]:
        """A batch of `batch_size` sub-trajectories; `rows`: only these rows of it (a data-parallel learner's
        share: the draws are those of the whole batch, so the shards of a group are disjoint and together equal
        the single learner's batch)."""
        if len(self._starts) == 0:
            raise RuntimeError("the replay buffer has no episode of at least horizon steps yet")
        start = self._starts[self.rng.integers(0, len(self._starts), size=batch_size)]
        if rows is not None:
            start = start[rows]
        rows = start[None, :] + np.arange(self.horizon + 1)[:, None]  # (H+1, B)
        f = self._flat
        return {"obs": f["obs"][rows],
                "action": f["action"][rows[:-1]],
                "reward": f["reward"][rows[:-1]][..., None],
                "terminated": f["terminated"][rows[:-1]][..., None].astype(np.float32)}

    # ------------------------------------------------------------- checkpointing
    def state(self) -> dict:
        return {"capacity": self.capacity, "horizon": self.horizon, "rng": self.rng.bit_generator.state,
                "episodes": [e.to_arrays() for e in self.episodes]}

    def load_state(self, state: dict) -> None:
        self.capacity, self.horizon = int(state["capacity"]), int(state["horizon"])
        self.rng.bit_generator.state = state["rng"]
        self.episodes = [Episode.from_arrays(d) for d in state["episodes"]]
        if self.episodes:
            self._rebuild()
        else:
            self._flat, self._starts = None, np.zeros(0, np.int64)
