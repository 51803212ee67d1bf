"""Behaviour policies that make datasets: uniform random actions, and SAC's squashed Gaussian actor.

The actor is stable-baselines3's SAC actor (MLP with ReLU over the observation, a mean head and a log-std head
clipped to [-20, 2], tanh squashing), evaluated here in NumPy from its saved weights: rolling out a million
steps needs no SB3, no pickle and no torch overhead per step. Actions are sampled from the stochastic policy,
as D4RL did: a = tanh(mu + std * eps), eps ~ N(0, I) from the rollout's own generator; its log-density is
log N(u; mu, std) - sum log(1 - tanh(u)^2), the squashing term written stably as 2 (log 2 - u - softplus(-2u))
(SB3 adds 1e-6 inside the log instead; the two agree to ~1e-5 away from saturation).

Policy files (models/behaviour/<env>-<level>.pt) are torch files loaded with weights_only=True, with a JSON card
beside them; a medium-replay recipe (<env>-medium-replay.pt) holds the medium run's actor snapshots.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from gym_qwen.platform.torch_files import read_tagged_file, save_tagged_file

from .d4rl import DatasetError

POLICY_FORMAT = "gym-qwen/behaviour-policy"
RECIPE_FORMAT = "gym-qwen/behaviour-replay"
VERSION = 1
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class BehaviourPolicyError(DatasetError):
    """A behaviour policy that is missing or cannot be used (one-line message)."""


class UniformPolicy:
    """Uniform random actions in [low, high] (D4RL's `random` level)."""

    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low, self.high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        self.log_prob = -float(np.sum(np.log(self.high - self.low)))

    def __call__(self, obs: np.ndarray, rng: np.random.Generator, step: int = 0) -> tuple[np.ndarray, float]:
        return rng.uniform(self.low, self.high).astype(np.float32), self.log_prob


def _softplus(x):
    return np.logaddexp(0.0, x)


class GaussianActor:
    """SB3 SAC's actor in NumPy (float32), built from its state_dict (keys latent_pi.{0,2,..}.*, mu.*, log_std.*)."""

    def __init__(self, state: dict):
        try:
            hidden = sorted({int(k.split(".")[1]) for k in state if k.startswith("latent_pi.")})
            self.layers = [(self._np(state[f"latent_pi.{i}.weight"]).T.copy(), self._np(state[f"latent_pi.{i}.bias"]))
                           for i in hidden]
            self.mu = (self._np(state["mu.weight"]).T.copy(), self._np(state["mu.bias"]))
            self.log_std = (self._np(state["log_std.weight"]).T.copy(), self._np(state["log_std.bias"]))
        except (KeyError, ValueError, IndexError) as e:
            raise BehaviourPolicyError(f"the actor weights are not an SB3 SAC actor's ({type(e).__name__}: {e})") \
                from None
        self.obs_dim = self.layers[0][0].shape[0] if self.layers else self.mu[0].shape[0]
        self.action_dim = self.mu[0].shape[1]

    @staticmethod
    def _np(x) -> np.ndarray:
        return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)

    def distribution(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, log_std) before squashing, for a batch (B, obs) or one observation."""
        h = np.asarray(obs, dtype=np.float32)
        for w, b in self.layers:
            h = np.maximum(h @ w + b, 0.0)
        mean = h @ self.mu[0] + self.mu[1]
        log_std = np.clip(h @ self.log_std[0] + self.log_std[1], LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std

    def deterministic(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(self.distribution(obs)[0])

    def __call__(self, obs: np.ndarray, rng: np.random.Generator, step: int = 0) -> tuple[np.ndarray, float]:
        mean, log_std = self.distribution(obs)
        eps = rng.standard_normal(mean.shape)
        u = mean + np.exp(log_std) * eps
        log_prob = np.sum(-0.5 * eps * eps - log_std - _HALF_LOG_2PI, axis=-1)
        log_prob -= np.sum(2.0 * (math.log(2.0) - u - _softplus(-2.0 * u)), axis=-1)
        return np.tanh(u).astype(np.float32), float(log_prob)


class SnapshotSchedule:
    """The medium-replay recipe's policy: uniform actions for the first `learning_starts` steps (SAC's warm-up),
    then at step t the newest snapshot taken at or before t."""

    def __init__(self, uniform: UniformPolicy, snapshots: list[GaussianActor], steps: list[int],
                 learning_starts: int):
        self.uniform, self.snapshots, self.steps, self.learning_starts = uniform, snapshots, list(steps), learning_starts

    def __call__(self, obs, rng, step: int = 0):
        if step < self.learning_starts or not self.snapshots:
            return self.uniform(obs, rng, step)
        i = max(0, int(np.searchsorted(self.steps, step, side="right")) - 1)
        return self.snapshots[i](obs, rng, step)


# ----------------------------------------------------------------------------------------------------- files
def behaviour_paths(models_dir: str | os.PathLike, env: str, level: str) -> tuple[Path, Path]:
    """(weights, card) of a behaviour policy: models/behaviour/<env>-<level>.pt and .json."""
    stem = Path(models_dir) / f"{env}-{level}"
    return stem.with_suffix(".pt"), stem.with_suffix(".json")


def _load(path: Path, fmt: str, what: str, command: str) -> dict:
    return read_tagged_file(path, fmt, VERSION, BehaviourPolicyError, what,
                            missing=f"no {what} at {path}; train it first with: {command}")


def train_command(env: str, level: str) -> str:
    return f"gym-qwen behaviour-policy env={env} level={'medium' if level == 'medium-replay' else level}"


def load_policy(models_dir: str | os.PathLike, env: str, level: str) -> tuple[GaussianActor, dict]:
    """The actor of models/behaviour/<env>-<level>.pt (level medium or expert) and the file's contents."""
    path, _ = behaviour_paths(models_dir, env, level)
    data = _load(path, POLICY_FORMAT, f"{level} behaviour policy for {env}", train_command(env, level))
    if data.get("env") != env or data.get("level") != level:
        raise BehaviourPolicyError(f"{path} is the {data.get('level')} policy of {data.get('env')}, not {level} of "
                                   f"{env}")
    return GaussianActor(data["actor"]), data


def load_recipe(models_dir: str | os.PathLike, env: str, low, high) -> tuple[SnapshotSchedule, dict]:
    """The medium-replay recipe of models/behaviour/<env>-medium-replay.pt as a policy, and its contents."""
    path, _ = behaviour_paths(models_dir, env, "medium-replay")
    data = _load(path, RECIPE_FORMAT, f"medium-replay recipe for {env}", train_command(env, "medium-replay"))
    if data.get("env") != env:
        raise BehaviourPolicyError(f"{path} is the medium-replay recipe of {data.get('env')}, not {env}")
    actors = [GaussianActor(s) for s in data["snapshots"]]
    return SnapshotSchedule(UniformPolicy(low, high), actors, [int(s) for s in data["snapshot_steps"]],
                            int(data["learning_starts"])), data


def save_policy(path: str | os.PathLike, env: str, level: str, actor_state: dict, extra: dict) -> Path:
    payload = {"env": env, "level": level, "actor": {k: v.detach().cpu().clone() for k, v in actor_state.items()},
               **extra}
    return save_tagged_file(path, POLICY_FORMAT, VERSION, payload)


def save_recipe(path: str | os.PathLike, env: str, snapshots: list[dict], snapshot_steps: list[int],
                learning_starts: int, total_steps: int, extra: dict) -> Path:
    payload = {"env": env, "snapshots": snapshots, "snapshot_steps": [int(s) for s in snapshot_steps],
               "learning_starts": int(learning_starts), "total_steps": int(total_steps), **extra}
    return save_tagged_file(path, RECIPE_FORMAT, VERSION, payload)
