"""Local Minari datasets (Minari 0.5, offline): export ours, read any into the same OfflineData.

Minari stores whole episodes: T+1 observations (the last is the final next observation), T actions, rewards,
terminations, truncations. Export writes the complete episodes only (a final partial episode is dropped, as
every reader here does) with terminals as terminations and timeouts as truncations, the environment's v5 spec
and D4RL's reference scores (so `minari.get_normalized_score` agrees with ours); D4RL's infos (qpos, qvel,
action log-probabilities) are not exported. Reading flattens the episodes back into D4RL's rows; an episode whose
last step has neither flag (a Minari episode cut short) gets a timeout there, so its boundary is kept.
Datasets live under MINARI_DATASETS_PATH (default ~/.minari/datasets); `root=` sets it for one call.
"""
from __future__ import annotations

import contextlib
import json
import os

import numpy as np

from .d4rl import ENV_IDS, REF_MAX_SCORE, REF_MIN_SCORE, DatasetError, OfflineData, check_env, env_from_name

ENV_OF_ID = {v: k for k, v in ENV_IDS.items()}


@contextlib.contextmanager
def minari_root(root: str | os.PathLike | None):
    """Point Minari at `root` for the duration (restoring MINARI_DATASETS_PATH afterwards)."""
    if root is None:
        yield
        return
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = os.fspath(os.path.abspath(root))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _import_minari():
    try:
        # optional: only the Minari format needs it
        import minari
    except ImportError:
        raise DatasetError("the minari package is not installed (pip install -c constraints.txt minari)") from None
    return minari


def datasets_root(root: str | os.PathLike | None = None) -> str:
    """The folder Minari keeps its datasets in (Minari's rule): `root`, else MINARI_DATASETS_PATH, else
    ~/.minari/datasets. Minari makes it on first use."""
    if root is not None:
        return os.path.abspath(root)
    return os.environ.get("MINARI_DATASETS_PATH") or os.path.join(os.path.expanduser("~"), ".minari", "datasets")


def minari_path(dataset_id: str, root: str | os.PathLike | None = None):
    minari = _import_minari()
    with minari_root(root):
        return minari.storage.get_dataset_path(dataset_id)


def export_minari(data: OfflineData, dataset_id: str, root: str | os.PathLike | None = None,
                  description: str = "") -> str:
    """Write the complete episodes of `data` as the local Minari dataset `dataset_id`; returns its directory."""
    minari = _import_minari()
    # optional: only the Minari format needs it
    from minari.data_collector import EpisodeBuffer

    if data.next_observations is None:
        raise DatasetError(f"{data.source} has no next_observations: Minari needs each episode's final observation")
    if data.env not in ENV_IDS:
        raise DatasetError(f"{data.source}: export to Minari needs the dataset's env (one of {', '.join(ENV_IDS)})")
    eps = data.episodes()
    buffers = []
    for i, (s, e) in enumerate(zip(eps.starts, eps.ends)):
        buffers.append(EpisodeBuffer(
            id=i, observations=np.concatenate([data.observations[s:e], data.next_observations[e - 1:e]]),
            actions=data.actions[s:e], rewards=data.rewards[s:e].astype(np.float64),
            terminations=data.terminals[s:e].copy(), truncations=data.timeouts[s:e].copy(), infos={}))
    with minari_root(root):
        path = minari.storage.get_dataset_path(dataset_id)
        if path.exists():
            raise DatasetError(f"the Minari dataset {dataset_id} already exists at {path}; delete it or pick "
                               "another id")
        try:
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id, buffer=buffers, env=ENV_IDS[data.env], eval_env=ENV_IDS[data.env], algorithm_name="gym-qwen make-dataset",
                ref_min_score=REF_MIN_SCORE[data.env], ref_max_score=REF_MAX_SCORE[data.env],
                description=description or json.dumps({k: str(v) for k, v in data.metadata.items()}),
                author="gym-qwen", author_email="none@example.invalid", code_permalink="gym_qwen/platform/datasets")
        except ValueError as e:
            raise DatasetError(f"cannot create Minari dataset {dataset_id}: {' '.join(str(e).split())}") from None
        return str(path)


def read_minari(dataset_id: str, env: str | None = None, root: str | os.PathLike | None = None) -> OfflineData:
    """A local Minari dataset (never downloaded) as OfflineData; `env`, if given, must be its environment."""
    minari = _import_minari()
    with minari_root(root):
        try:
            ds = minari.load_dataset(dataset_id, download=False)
        except FileNotFoundError:
            where = minari.storage.get_dataset_path(dataset_id)
            raise DatasetError(f"no local Minari dataset {dataset_id!r} (looked in {where}; set "
                               "MINARI_DATASETS_PATH to its root; nothing is downloaded)") from None
        except Exception as e:  # noqa: BLE001  corrupt metadata or data files
            raise DatasetError(f"cannot read Minari dataset {dataset_id!r}: {type(e).__name__}: "
                               f"{' '.join(str(e).split())[:160]}") from None
        spec_id = ds.spec.env_spec.id if ds.spec.env_spec is not None else None
        parts = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
        try:
            for episode in ds.iterate_episodes():
                obs = np.asarray(episode.observations, dtype=np.float32)
                if obs.ndim != 2:
                    raise DatasetError(f"Minari dataset {dataset_id!r} has non-vector observations")
                term = np.asarray(episode.terminations, dtype=bool).copy()
                trunc = np.asarray(episode.truncations, dtype=bool).copy()
                if len(term) and not (term[-1] or trunc[-1]):
                    trunc[-1] = True
                parts["observations"].append(obs[:-1])
                parts["next_observations"].append(obs[1:])
                parts["actions"].append(np.asarray(episode.actions, dtype=np.float32).reshape(len(term), -1))
                parts["rewards"].append(np.asarray(episode.rewards, dtype=np.float32))
                parts["terminals"].append(term)
                parts["timeouts"].append(trunc & ~term)
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001
            raise DatasetError(f"cannot read Minari dataset {dataset_id!r}: {type(e).__name__}: "
                               f"{' '.join(str(e).split())[:160]}") from None
    if not parts["rewards"]:
        raise DatasetError(f"Minari dataset {dataset_id!r} has no episodes")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    named = ENV_OF_ID.get(spec_id) if spec_id else None
    if named is None:
        named = env_from_name(dataset_id)
    data = OfflineData(named, arrays["observations"], arrays["actions"], arrays["rewards"], arrays["terminals"],
                       arrays["timeouts"], arrays["next_observations"],
                       metadata={"minari_id": dataset_id, "env_id": spec_id or ""},
                       source=f"minari:{dataset_id}").check()
    if spec_id and named is None:
        raise DatasetError(f"Minari dataset {dataset_id!r} was made on {spec_id}; this code knows "
                           f"{', '.join(ENV_IDS.values())}")
    return check_env(data, env)
