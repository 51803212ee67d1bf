"""`gym-qwen make-dataset`: one D4RL level of one environment, from the shipped behaviour policies.

random: uniform actions. medium / expert: the SAC policy models/behaviour/<env>-<level>.pt, sampled
stochastically. medium-replay: the medium run's replay-buffer recipe (uniform warm-up, then the actor snapshots
in the order training made them, as many steps as training took). medium-expert: the medium dataset then the
expert one, as D4RL concatenated them. Every level is `transitions` rows (D4RL: 1M) except medium-replay
(its recipe's step count) and medium-expert (twice the rows).
"""
from __future__ import annotations

from pathlib import Path

from gym_qwen.platform.files import code_version

from ..config import command_line
from .d4rl import ENV_IDS, LEVELS, DatasetError, OfflineData, default_name, sha256_of
from .generate import make_gym_env, rollout
from .policies import UniformPolicy, behaviour_paths, load_policy, load_recipe

DEFAULT_TRANSITIONS = 1_000_000
# Where the behaviour policies are read from, whether a file is replaced and how verbosely: not what is made.
BOOKKEEPING = ("models_dir", "force", "progress")


def _policy_for(env: str, level: str, models_dir: str, low, high):
    """(policy, transitions override or None, provenance metadata) of one single level."""
    if level == "random":
        return UniformPolicy(low, high), None, {"policy": "uniform random actions"}
    if level in ("medium", "expert"):
        actor, data = load_policy(models_dir, env, level)
        path = behaviour_paths(models_dir, env, level)[0]
        return actor, None, {"policy": str(path), "policy_sha256": sha256_of(path),
                             "policy_steps": int(data.get("steps", 0)),
                             "policy_return": float(data.get("eval_return_mean", float("nan")))}
    if level == "medium-replay":
        schedule, data = load_recipe(models_dir, env, low, high)
        path = behaviour_paths(models_dir, env, level)[0]
        return schedule, int(data["total_steps"]), {"policy": str(path), "policy_sha256": sha256_of(path),
                                                    "snapshots": len(data["snapshots"]),
                                                    "learning_starts": int(data["learning_starts"])}
    raise DatasetError(f"unknown dataset level {level!r}; valid: {', '.join(LEVELS)}")


def check_inputs(env: str, level: str, models_dir: str) -> None:
    """Refuse, before anything runs, a level whose behaviour policy is missing (naming the command that trains
    it)."""
    if env not in ENV_IDS:
        raise DatasetError(f"unknown env {env!r}; valid: {', '.join(ENV_IDS)}")
    if level not in LEVELS:
        raise DatasetError(f"unknown dataset level {level!r}; valid: {', '.join(LEVELS)}")
    parts = ("medium", "expert") if level == "medium-expert" else (level,)
    for part in parts:
        if part != "random":
            _policy_for(env, part, models_dir, -1.0, 1.0)


def make_dataset(env: str, level: str, seed: int, *, transitions: int | None = None,
                 models_dir: str = "models/behaviour", progress: bool = False, command: str = "") -> OfflineData:
    check_inputs(env, level, models_dir)
    e = make_gym_env(env)
    low, high = e.action_space.low, e.action_space.high
    e.close()
    base = {"level": level, "name": default_name(env, level), "code_version": code_version(), "command": command,
            "generator": "gym-qwen make-dataset"}
    if level == "medium-expert":
        parts = []
        for part in ("medium", "expert"):
            policy, _, meta = _policy_for(env, part, models_dir, low, high)
            parts.append(rollout(env, policy, transitions or DEFAULT_TRANSITIONS, seed, progress=progress,
                                 desc=f"{env}-{part} (of medium-expert)", metadata=meta))
        out = parts[0].concatenate(parts[1])
        out.metadata = {**base, "seed": int(seed), "medium_rows": len(parts[0]), "expert_rows": len(parts[1]),
                        **{f"medium_{k}": v for k, v in parts[0].metadata.items()},
                        **{f"expert_{k}": v for k, v in parts[1].metadata.items()}}
        return out
    policy, fixed, meta = _policy_for(env, level, models_dir, low, high)
    out = rollout(env, policy, fixed or transitions or DEFAULT_TRANSITIONS, seed, progress=progress,
                  desc=default_name(env, level), metadata={**base, **meta})
    return out


def make_dataset_command(cfg) -> str:
    """The `gym-qwen make-dataset` command that makes the dataset of `cfg` again (keys that differ from defaults)."""
    return command_line("make-dataset", cfg, ("env", "dataset", "seed"), BOOKKEEPING)


def default_output(env: str, level: str, fmt: str, data_dir: str = "data") -> str:
    if fmt == "minari":
        return f"gym-qwen/{env}/{level}-v0"
    return str(Path(data_dir) / f"{default_name(env, level)}.hdf5")
