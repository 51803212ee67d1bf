"""Offline RL datasets: D4RL's HDF5 layout (ours and D4RL's own files), local Minari datasets, episode splitting,
D4RL's normalised score, and making the datasets with behaviour policies on Gymnasium's MuJoCo v5 tasks."""
from .d4rl import (  # noqa: F401
    ENV_IDS, ENVS, LEVELS, REF_MAX_SCORE, REF_MIN_SCORE, DatasetError, Episodes, OfflineData, check_env, default_name,
    episode_returns, normalized_score, read_hdf5, returns_to_go, sha256_of, split_episodes, summarize, write_hdf5)
from .minari_io import read_minari
from .policies import BehaviourPolicyError  # noqa: F401


def load_offline_data(*, data: str | None = None, minari: str | None = None, env: str | None = None,
                      minari_root: str | None = None):
    """The dataset named by a file (`data=`) or a local Minari id (`minari=`), checked against `env`."""
    if minari:
        return read_minari(minari, env=env, root=minari_root)
    return read_hdf5(data, env=env)
