"""Offline datasets in D4RL's HDF5 layout: the in-memory structure, the writer, the reader, episode splitting and
D4RL's normalised score.

Layout (one row per transition, N rows; what D4RL's gym-mujoco files hold and what `d4rl.qlearning_dataset`
reads): observations (N, obs) float32, actions (N, act) float32, rewards (N,) float32, terminals (N,) bool,
timeouts (N,) bool, next_observations (N, obs) float32, infos/qpos (N, nq) and infos/qvel (N, nv) float64 (the
simulator state at the observation), infos/action_log_probs (N,) float32 (log-density of the action under the
policy that took it), and metadata/* (how the file was made: scalars and strings).

Episodes end at a row whose terminal (the environment ended it) or timeout (the time limit cut it) is set.
Rows after the last such row are a final partial episode (D4RL cuts its files at exactly 1M samples, mid
episode): it is dropped, as CORL and the Decision Transformer code do, and counted (`Episodes.dropped`).

Files that cannot be used (missing, not HDF5, truncated, another layout, another environment) raise
DatasetError with a one-line reason. HDF5 only: nothing here unpickles anything.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gym_qwen.platform.files import sha256_of  # noqa: F401  (re-exported: datasets name their source)
from gym_qwen.platform.files import atomic_write_bytes

FORMAT = "gym-qwen/d4rl"
# env -> Gymnasium task the datasets are made and evaluated on.
ENV_IDS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
ENVS = tuple(ENV_IDS)
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")
# D4RL's normalisation (d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE): a random policy's and an expert's return.
REF_MIN_SCORE = {"halfcheetah": -280.178953, "hopper": -20.272305, "walker2d": 1.629008}
REF_MAX_SCORE = {"halfcheetah": 12135.0, "hopper": 3234.3, "walker2d": 4592.3}
# (observation, action) sizes; halfcheetah and walker2d share them, so a file is told apart by its metadata or
# its name when it has them.
DIMS = {"halfcheetah": (17, 6), "hopper": (11, 3), "walker2d": (17, 6)}
REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")
MAX_EPISODE_STEPS = 1000  # the gym-mujoco time limit, for D4RL files without timeouts (v0, some v1)


class DatasetError(ValueError):
    """A dataset that cannot be used here; the message is one line for the user."""


def normalized_score(env: str, returns):
    """D4RL's normalised score, 100 * (R - random) / (expert - random), of a return or an array of returns."""
    if env not in REF_MIN_SCORE:
        raise DatasetError(f"no D4RL reference scores for env {env!r}; known: {', '.join(REF_MIN_SCORE)}")
    lo, hi = REF_MIN_SCORE[env], REF_MAX_SCORE[env]
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


def default_name(env: str, level: str) -> str:
    """`halfcheetah-medium-v5`: our datasets are named after the environment version they were made on (D4RL's
    own are `-v2`)."""
    return f"{env}-{level}-v5"


@dataclasses.dataclass
class Episodes:
    """Complete episodes of a dataset: row ranges [starts[i], ends[i]) and what was left out."""

    starts: np.ndarray
    ends: np.ndarray
    dropped: int  # rows of the final partial episode, not used

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts


def split_episodes(terminals: np.ndarray, timeouts: np.ndarray) -> Episodes:
    """Episodes end at every row whose terminal or timeout is set; rows after the last end are dropped."""
    done = np.asarray(terminals, dtype=bool) | np.asarray(timeouts, dtype=bool)
    ends = np.flatnonzero(done) + 1
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64) if len(ends) else np.zeros(0, np.int64)
    last = int(ends[-1]) if len(ends) else 0
    return Episodes(starts=starts, ends=ends.astype(np.int64), dropped=len(done) - last)


def infer_timeouts(terminals: np.ndarray, max_steps: int = MAX_EPISODE_STEPS) -> np.ndarray:
    """Timeouts of a file that has none (D4RL's v0 files): every max_steps-th row of an episode without a terminal,
    as d4rl's own qlearning_dataset falls back to."""
    timeouts = np.zeros(len(terminals), dtype=bool)
    step = 0
    for i, terminal in enumerate(np.asarray(terminals, dtype=bool)):
        step += 1
        if terminal:
            step = 0
        elif step == max_steps:
            timeouts[i] = True
            step = 0
    return timeouts


def unflagged_cuts(observations: np.ndarray, next_observations: np.ndarray | None, done: np.ndarray) -> np.ndarray:
    """Rows where the trajectory jumps without a flag: neither terminal nor timeout is set, yet the row's
    next_observations is not the next row's observation. Real D4RL medium-expert files have one such row, where
    the medium part was joined to the expert part; a reader that split only on the flags would glue two unrelated
    episodes there."""
    jumps = np.zeros(len(observations), dtype=bool)
    if len(observations) < 2 or next_observations is None or next_observations.shape != observations.shape:
        return jumps
    following = observations[1:]
    differs = np.abs(next_observations[:-1] - following) > 1e-6 * (1.0 + np.abs(following))
    jumps[:-1] = differs.reshape(len(following), -1).any(axis=1)
    return jumps & ~np.asarray(done, dtype=bool)


def returns_to_go(rewards: np.ndarray, episodes: Episodes) -> np.ndarray:
    """Per row, the undiscounted sum of the rewards from that row to the end of its episode (0 for dropped rows)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.zeros(len(rewards), dtype=np.float64)
    for s, e in zip(episodes.starts, episodes.ends):
        out[s:e] = np.cumsum(rewards[s:e][::-1])[::-1]
    return out


def episode_returns(rewards: np.ndarray, episodes: Episodes) -> np.ndarray:
    if not len(episodes):
        return np.zeros(0)
    cums = np.concatenate([[0.0], np.cumsum(np.asarray(rewards, dtype=np.float64))])
    return cums[episodes.ends] - cums[episodes.starts]


@dataclasses.dataclass
class OfflineData:
    """A dataset in memory, the same whatever it was read from (our HDF5, D4RL's HDF5, a Minari dataset)."""

    env: str | None  # halfcheetah, hopper, walker2d; None when the source does not say
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    next_observations: np.ndarray | None = None
    infos: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def episodes(self) -> Episodes:
        return split_episodes(self.terminals, self.timeouts)

    def content_sha256(self) -> str:
        """sha256 of what a learner reads: observations, actions, rewards (float32), terminals, timeouts (bool), with
        their shapes. Unlike the file's hash it ignores metadata (a regenerated file records other `seconds`) and
        the format (HDF5 or Minari), so the same data hash equal wherever they came from."""
        digest = hashlib.sha256()
        for name, dtype in (("observations", np.float32), ("actions", np.float32), ("rewards", np.float32),
                            ("terminals", np.bool_), ("timeouts", np.bool_)):
            array = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            digest.update(f"{name}{array.shape}".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()

    def check(self) -> "OfflineData":
        """Shapes agree; raises DatasetError."""
        n = len(self.rewards)
        where = self.source or "dataset"
        for name in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
            array = getattr(self, name)
            if array is None:
                continue
            if len(array) != n:
                raise DatasetError(f"{where}: {name} has {len(array)} rows but rewards has {n}")
        if self.observations.ndim != 2 or self.actions.ndim != 2 or self.rewards.ndim != 1:
            raise DatasetError(f"{where}: observations and actions must be 2-D and rewards 1-D (got shapes "
                               f"{self.observations.shape}, {self.actions.shape}, {self.rewards.shape})")
        for key, array in self.infos.items():
            if len(array) != n:
                raise DatasetError(f"{where}: infos/{key} has {len(array)} rows but rewards has {n}")
        return self

    def concatenate(self, other: "OfflineData", source: str = "") -> "OfflineData":
        """This dataset's rows then `other`'s (D4RL's medium-expert = medium + expert). Where this dataset ends
        mid-episode (neither terminal nor timeout on its last row), that row becomes a timeout: the episode was
        truncated there, and without the flag an episode reader would join it to `other`'s first episode (data
        without a timeouts array, D4RL's v0 layout, have no flag to set and are joined as they are)."""
        if (self.obs_dim, self.action_dim) != (other.obs_dim, other.action_dim) or self.env != other.env:
            raise DatasetError(f"cannot concatenate a {self.env} dataset with a {other.env} dataset")
        cat = lambda a, b: None if a is None or b is None else np.concatenate([a, b])  # noqa: E731
        infos = {k: np.concatenate([v, other.infos[k]]) for k, v in self.infos.items() if k in other.infos}
        out = OfflineData(self.env, *(cat(getattr(self, f), getattr(other, f)) for f in
                                      ("observations", "actions", "rewards", "terminals", "timeouts",
                                       "next_observations")), infos=infos, metadata={}, source=source)
        cut = len(self) - 1
        if cut >= 0 and out.timeouts is not None and not (out.terminals[cut] or out.timeouts[cut]):
            out.timeouts[cut] = True
        return out


def summarize(data: OfflineData) -> dict:
    """Episodes, transitions, returns (mean, std, min, max) and their D4RL normalised scores."""
    eps = data.episodes()
    rets = episode_returns(data.rewards, eps)
    out = {"env": data.env, "source": data.source, "transitions": len(data), "episodes": len(eps),
           "transitions_in_episodes": int(eps.lengths.sum()) if len(eps) else 0, "dropped_partial": eps.dropped,
           "terminals": int(np.count_nonzero(data.terminals)), "timeouts": int(np.count_nonzero(data.timeouts)),
           "obs_dim": data.obs_dim, "action_dim": data.action_dim}
    if len(eps):
        out.update(length_mean=float(eps.lengths.mean()), length_min=int(eps.lengths.min()),
                   length_max=int(eps.lengths.max()), return_mean=float(rets.mean()), return_std=float(rets.std()),
                   return_min=float(rets.min()), return_max=float(rets.max()))
        if data.env in REF_MIN_SCORE:
            out.update({f"normalized_{k}": float(normalized_score(data.env, out[f"return_{k}"]))
                        for k in ("mean", "min", "max")})
            out["normalized_std"] = float(100.0 * rets.std() / (REF_MAX_SCORE[data.env] - REF_MIN_SCORE[data.env]))
    return out


# ----------------------------------------------------------------------------------------------------- writing
def _metadata_value(value):
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, np.integer)):
        return np.int64(value)
    if isinstance(value, (float, np.floating)):
        return np.float64(value)
    return np.bytes_(str(value).encode("utf-8"))


def write_hdf5(path: str | os.PathLike, data: OfflineData, compress: bool = True) -> Path:
    """Write `data` in D4RL's layout (atomically: a temp file beside `path`, synced, renamed over it)."""
    # h5py is imported only where HDF5 files are read or written
    import h5py


    data.check()
    opts = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if compress else {}
    columns = {"observations": (data.observations, np.float32), "actions": (data.actions, np.float32),
               "rewards": (data.rewards, np.float32), "terminals": (data.terminals, np.bool_),
               "timeouts": (data.timeouts, np.bool_)}
    if data.next_observations is not None:
        columns["next_observations"] = (data.next_observations, np.float32)

    def write(f):
        with h5py.File(f, "w") as h5:
            for name, (array, dtype) in columns.items():
                array = np.ascontiguousarray(array, dtype=dtype)
                h5.create_dataset(name, data=array, **(opts if array.size else {}))
            for name, array in data.infos.items():
                array = np.ascontiguousarray(array)
                h5.create_dataset(f"infos/{name}", data=array, **(opts if array.size else {}))
            meta = h5.require_group("metadata")
            for key, value in {"format": FORMAT, "env": data.env or "", **data.metadata}.items():
                meta.create_dataset(key, data=_metadata_value(value))

    return atomic_write_bytes(path, write)


# ----------------------------------------------------------------------------------------------------- reading
def _decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def env_from_name(name: str) -> str | None:
    """The one env named in a file or dataset name (`halfcheetah_medium-v2.hdf5` -> halfcheetah), else None."""
    found = {env for env in ENVS if re.search(rf"(^|[^a-z]){env}([^a-z]|$)", name.lower())}
    return found.pop() if len(found) == 1 else None


def check_env(data: OfflineData, env: str | None) -> OfflineData:
    """Refuse, in one line, a dataset of another environment than `env` (by its metadata or name, and its sizes)."""
    if env is None:
        return data
    if env not in ENV_IDS:
        raise DatasetError(f"unknown env {env!r}; valid: {', '.join(ENVS)}")
    if data.env is not None and data.env != env:
        raise DatasetError(f"{data.source} is a {data.env} dataset, not {env}: a dataset of another environment")
    want = DIMS[env]
    if (data.obs_dim, data.action_dim) != want:
        raise DatasetError(f"{data.source} has observations of {data.obs_dim} and actions of {data.action_dim} "
                           f"dimensions; {env} ({ENV_IDS[env]}) has {want[0]} and {want[1]}: a dataset of another "
                           "environment")
    data.env = env
    return data


def read_hdf5(path: str | os.PathLike, env: str | None = None, load_infos: bool = True) -> OfflineData:
    """Read a D4RL-layout HDF5 file: ours or D4RL's own. `env` (if given) must be the dataset's environment."""
    # h5py is imported only where HDF5 files are read or written
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset not found: {path}" + (" (a directory)" if path.is_dir() else ""))
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        reason = " ".join(str(e).split())
        kind = "not an HDF5 file" if "signature" in reason else "corrupt or truncated HDF5 file"
        raise DatasetError(f"cannot read dataset {path}: {kind} ({reason[:160]})") from None
    try:
        with h5:
            missing = [k for k in REQUIRED if not isinstance(h5.get(k), h5py.Dataset)]
            if missing and missing != ["timeouts"]:
                keys = ", ".join(sorted(h5.keys())[:8]) or "none"
                raise DatasetError(f"{path} is not a D4RL-layout dataset: it has no {', '.join(missing)} "
                                   f"(top-level keys: {keys})")
            arrays = {k: h5[k][()] for k in REQUIRED if k not in missing}
            nxt = h5["next_observations"][()] if isinstance(h5.get("next_observations"), h5py.Dataset) else None
            infos: dict[str, np.ndarray] = {}
            if load_infos and isinstance(h5.get("infos"), h5py.Group):
                for key, item in h5["infos"].items():
                    if isinstance(item, h5py.Dataset) and item.shape and item.shape[0] == len(arrays["rewards"]):
                        infos[key] = item[()]
            metadata: dict[str, Any] = {}
            if isinstance(h5.get("metadata"), h5py.Group):
                def visit(name, item):
                    if isinstance(item, h5py.Dataset) and item.size <= 1:
                        metadata[name] = _decode(item[()] if item.shape == () else item[()].reshape(-1)[0])
                h5["metadata"].visititems(visit)
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
        raise DatasetError(f"cannot read dataset {path}: corrupt or truncated HDF5 file "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    try:
        obs = np.asarray(arrays["observations"], dtype=np.float32)
        actions = np.asarray(arrays["actions"], dtype=np.float32)
        rewards = np.asarray(arrays["rewards"], dtype=np.float32).reshape(-1)
        terminals = np.asarray(arrays["terminals"]).reshape(-1).astype(bool)
        timeouts = (np.asarray(arrays["timeouts"]).reshape(-1).astype(bool) if "timeouts" in arrays
                    else infer_timeouts(terminals))
        nxt = None if nxt is None else np.asarray(nxt, dtype=np.float32)
    except (ValueError, TypeError) as e:
        raise DatasetError(f"{path} is not a D4RL-layout dataset: {e}") from None
    if obs.ndim == 1:
        obs = obs[:, None]
    if actions.ndim == 1:
        actions = actions[:, None]
    if "timeouts" not in arrays:
        metadata["timeouts_inferred"] = f"every {MAX_EPISODE_STEPS}th step of an episode (the file has no timeouts)"
    cuts = unflagged_cuts(obs, nxt, terminals | timeouts)
    if cuts.any():
        timeouts = timeouts | cuts
        metadata["timeouts_from_cuts"] = (f"{int(cuts.sum())} unflagged row(s) whose next_observations is not the "
                                          "next row's observation marked as timeouts (an episode cut without a flag)")
    named = metadata.get("env") or None
    if named is not None and named not in ENV_IDS:
        raise DatasetError(f"{path} is a dataset of env {named!r}; this code knows {', '.join(ENVS)}")
    data = OfflineData(named or env_from_name(path.name), obs, actions, rewards, terminals, timeouts, nxt, infos,
                       metadata, source=str(path)).check()
    if data.env is not None and (data.obs_dim, data.action_dim) != DIMS[data.env]:
        raise DatasetError(f"{path} says it is a {data.env} dataset but has observations of {data.obs_dim} and "
                           f"actions of {data.action_dim} dimensions (expected {DIMS[data.env]})")
    return check_env(data, env)


