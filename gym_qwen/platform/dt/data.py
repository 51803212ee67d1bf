"""Training windows for the Decision Transformer, drawn from the complete episodes of an OfflineData.

States are normalised by the mean and standard deviation (+1e-6) of the observations of the complete
episodes; returns-to-go are the undiscounted sums to the episode's end divided by `rtg_scale`. A window starts at
a uniformly drawn row of a complete episode, which samples episodes in proportion to their length (CORL's
rule), and holds the next `context_len` rows of that episode; rows past the episode's end are padding: zeros,
timestep 0 and mask 0 (the loss ignores them; being at the end, causal attention keeps them away from every
real token). One vectorised gather per batch, no per-window Python.
"""
from __future__ import annotations

import numpy as np
import torch

from gym_qwen.platform.datasets.d4rl import DatasetError, OfflineData, returns_to_go


class TrajectoryWindows:
    def __init__(self, data: OfflineData, context_len: int, rtg_scale: float):
        eps = data.episodes()
        if not len(eps):
            raise DatasetError(f"{data.source} has no complete episode (no terminal or timeout is set)")
        self.context_len = int(context_len)
        rows = np.concatenate([np.arange(s, e) for s, e in zip(eps.starts, eps.ends)])
        obs = data.observations[rows].astype(np.float32)
        self.state_mean = obs.mean(axis=0).astype(np.float32)
        self.state_std = (obs.std(axis=0) + 1e-6).astype(np.float32)
        # Complete episodes only, re-packed contiguously (dropped rows never enter a window).
        lengths = eps.lengths
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.ends = self.starts + lengths
        self.episode_of_row = np.repeat(np.arange(len(lengths)), lengths)
        self.states = torch.from_numpy((obs - self.state_mean) / self.state_std)
        self.actions = torch.from_numpy(data.actions[rows].astype(np.float32))
        self.rtg = torch.from_numpy((returns_to_go(data.rewards, eps)[rows] / rtg_scale).astype(np.float32))
        self.n_rows = len(rows)
        self.n_episodes = len(lengths)
        self.state_dim, self.act_dim = obs.shape[1], self.actions.shape[1]

    def sample(self, batch_size: int, rng: np.random.Generator):
        """(timesteps (B,K) long, states (B,K,S), actions (B,K,A), rtg (B,K,1), mask (B,K) float)."""
        start = self.draw_starts(batch_size, rng)
        ep = self.episode_of_row[start]
        return self.window(start, self.ends[ep], self.starts[ep])

    def draw_starts(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Window starts: uniform over the rows of complete episodes (episodes in proportion to length)."""
        return rng.integers(0, self.n_rows, size=batch_size)

    def window(self, start: np.ndarray, end: np.ndarray, ep_start: np.ndarray):
        K = self.context_len
        idx = start[:, None] + np.arange(K)[None, :]
        valid = idx < end[:, None]
        idx = np.where(valid, idx, 0)
        index = torch.from_numpy(idx.reshape(-1))
        mask = torch.from_numpy(valid)
        fmask = mask.to(torch.float32)
        B = len(start)
        states = self.states.index_select(0, index).view(B, K, -1) * fmask[..., None]
        actions = self.actions.index_select(0, index).view(B, K, -1) * fmask[..., None]
        rtg = (self.rtg.index_select(0, index).view(B, K) * fmask)[..., None]
        timesteps = torch.from_numpy(np.where(valid, idx - ep_start[:, None], 0))
        return timesteps, states, actions, rtg, fmask
