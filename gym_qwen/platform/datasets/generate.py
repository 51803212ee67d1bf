"""Making datasets the way D4RL made its gym-mujoco data, on Gymnasium's MuJoCo v5 tasks.

A policy (uniform random actions, a SAC behaviour policy, the medium-replay recipe's snapshots) acts in the
environment for exactly `transitions` steps in 1000-step episodes; the file is cut there, mid episode if need
be, as D4RL's are (readers drop that partial episode). Per row: the observation, the action and its
log-density, the reward, terminal (the environment ended the episode: Hopper or Walker2d fell), timeout (the
1000-step limit), the next observation, and qpos/qvel read from `env.unwrapped.data` at the observation.

Deterministic: episode i resets with seed * 1_000_003 + i and every random number (actions, policy noise)
comes from one NumPy generator seeded with `seed`, so a (policy, seed, transitions) triple gives the same file
on every machine with the same MuJoCo.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from gym_qwen.platform.envs import quiet_library_logs
from gym_qwen.platform.progress import progress_bar

from .d4rl import ENV_IDS, DatasetError, OfflineData

SEED_STRIDE = 1_000_003


def reset_seed(seed: int, episode: int) -> int:
    return int(seed) * SEED_STRIDE + int(episode)


def make_gym_env(env: str):
    """The Gymnasium task of `env` (halfcheetah -> HalfCheetah-v5), with its registered 1000-step limit."""
    # gymnasium is imported only where an environment is built (import cost)
    import gymnasium


    if env not in ENV_IDS:
        raise DatasetError(f"unknown env {env!r}; valid: {', '.join(ENV_IDS)}")
    quiet_library_logs()
    return gymnasium.make(ENV_IDS[env])


def rollout(env: str, policy: Callable, transitions: int, seed: int, *, progress: bool = False,
            desc: str = "", metadata: dict | None = None) -> OfflineData:
    """`transitions` steps of `policy(obs, rng, step) -> (action, log_prob)` on the env, in D4RL's layout."""
    e = make_gym_env(env)
    try:
        data = e.unwrapped.data
        obs_dim, act_dim = e.observation_space.shape[0], e.action_space.shape[0]
        n = int(transitions)
        out = OfflineData(
            env, np.zeros((n, obs_dim), np.float32), np.zeros((n, act_dim), np.float32), np.zeros(n, np.float32),
            np.zeros(n, bool), np.zeros(n, bool), np.zeros((n, obs_dim), np.float32),
            infos={"qpos": np.zeros((n, data.qpos.shape[0])), "qvel": np.zeros((n, data.qvel.shape[0])),
                   "action_log_probs": np.zeros(n, np.float32)},
            metadata=dict(metadata or {}))
        rng = np.random.default_rng(seed)
        low, high = e.action_space.low, e.action_space.high
        episode, started = 0, time.perf_counter()
        obs, _ = e.reset(seed=reset_seed(seed, episode))
        with progress_bar(total=n, desc=desc or f"{env} dataset", unit="step", enabled=progress) as bar:
            for t in range(n):
                out.observations[t] = obs
                out.infos["qpos"][t] = data.qpos
                out.infos["qvel"][t] = data.qvel
                action, log_prob = policy(obs, rng, t)
                action = np.clip(action, low, high)
                nxt, reward, terminated, truncated, _ = e.step(action)
                out.actions[t], out.rewards[t] = action, reward
                out.infos["action_log_probs"][t] = log_prob
                out.next_observations[t] = nxt
                out.terminals[t] = terminated
                out.timeouts[t] = truncated and not terminated
                if terminated or truncated:
                    episode += 1
                    obs, _ = e.reset(seed=reset_seed(seed, episode))
                else:
                    obs = nxt
                if (t + 1) % 1000 == 0:
                    bar.update(1000)
            bar.update(n % 1000)
        out.metadata.update(seed=int(seed), transitions=n, env_id=ENV_IDS[env],
                            seconds=round(time.perf_counter() - started, 1))
        return out
    finally:
        e.close()


def evaluate_policy(env: str, policy: Callable, episodes: int, seed: int) -> np.ndarray:
    """Returns of `episodes` whole episodes of `policy` (reset seeds seed * 1_000_003 + i, its own generator)."""
    e = make_gym_env(env)
    rng = np.random.default_rng(seed)
    returns = []
    try:
        for i in range(episodes):
            obs, _ = e.reset(seed=reset_seed(seed, i))
            total, done, t = 0.0, False, 0
            while not done:
                action, _ = policy(obs, rng, t)
                obs, reward, terminated, truncated, _ = e.step(np.clip(action, e.action_space.low,
                                                                       e.action_space.high))
                total += float(reward)
                done, t = terminated or truncated, t + 1
            returns.append(total)
    finally:
        e.close()
    return np.asarray(returns)
