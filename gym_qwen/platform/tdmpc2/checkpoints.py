"""TD-MPC2 checkpoints: the format, `weights_only=True` loads, the compatibility check against a config, and
building the agent a checkpoint describes.

Two kinds share one format: an *agent* checkpoint (weights, config, task dimensions; what evaluation and later
stages load) and a *training* checkpoint (the agent checkpoint plus optimisers, replay buffer, RNG states and
counters; what `resume=true` continues from).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict
from pathlib import Path

import torch

from ..config import TrainConfig, config_from_dict, config_to_dict, validate_config
from ..config_schema import ARCH_KEYS
from ..envs import TaskSpec
from ..files import code_version
from ..storage import is_uri, write_bytes
from ..torch_files import CheckpointError, read_tagged_file, save_tagged_file, tagged_bytes
from .agent import TDMPC2Agent

FORMAT = "gym-qwen/tdmpc2"
VERSION = 1
# The keys that fix the model's shape: a checkpoint's weights fit only a model built with the same values.
MODEL_KEYS = ("model_size", *ARCH_KEYS, "num_bins", "simnorm_dim")


def model_signature(cfg) -> dict:
    """The MODEL_KEYS of a config, the architecture resolved from its model size (what a checkpoint's `arch` holds)."""
    arch = cfg.arch()
    return {k: arch[k] if k in arch else getattr(cfg, k) for k in MODEL_KEYS}


def agent_payload(cfg, spec, weights: dict | None, env_steps: int) -> dict:
    """What an agent checkpoint carries: weights (agent.state_dict(with_optim=False)), config, task dimensions,
    code version."""
    return {"kind": "agent", "task": cfg.task, "task_spec": asdict(spec), "arch": model_signature(cfg),
            "config": config_to_dict(cfg), "env_steps": env_steps, "code_version": code_version(),
            "agent": weights}


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path | str:
    """Write a checkpoint to a local path (atomically), or to a URI (s3://...: the whole object at once, straight
    from the process that calls this; platform/storage.py)."""
    if is_uri(path):
        return write_bytes(str(path), tagged_bytes(FORMAT, VERSION, payload))
    return save_tagged_file(path, FORMAT, VERSION, payload)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load safely (weights_only=True, onto the CPU). Raises CheckpointError with a one-line reason."""
    return read_tagged_file(path, FORMAT, VERSION, CheckpointError, "checkpoint", kind="TD-MPC2 checkpoint")


def check_compatible(ckpt: dict, *, task: str | None = None, arch: dict | None = None, path: str = "") -> None:
    """Raise CheckpointError (one line) when the checkpoint's task or architecture differs from what is asked."""
    where = f" {path}" if path else ""
    if task is not None and ckpt["task"] != task:
        raise CheckpointError(f"checkpoint{where} is for task {ckpt['task']}, not {task}")
    if arch is not None:
        theirs = ckpt["arch"]
        diff = [f"{k}={theirs.get(k)} (asked {arch[k]})" for k in MODEL_KEYS if k in arch and theirs.get(k) != arch[k]]
        if diff:
            raise CheckpointError(f"checkpoint{where} has a different model: " + ", ".join(diff))


def check_overrides(ckpt: dict, overrides: dict, path: str = "") -> TrainConfig:
    """Agent keys set over a checkpoint's config, checked without building the agent: model keys must match the
    checkpoint's (CheckpointError), and the other keys must hold together with its settings (num_elites <=
    num_samples, ...; ConfigError). Returns the checkpoint's config with those other keys applied."""
    asked = {k: v for k, v in overrides.items() if k in MODEL_KEYS}
    if asked:
        check_compatible(ckpt, arch=model_signature(config_from_dict(TrainConfig, {**ckpt["config"], **asked})),
                         path=path)
    return config_from_dict(TrainConfig, {**ckpt["config"], **{k: v for k, v in overrides.items() if k not in asked}})


def load_agent(checkpoint: str, overrides: dict, device: str, task: str | None = None):
    """Build the agent a checkpoint file describes. `overrides`: agent keys the user set explicitly (planner
    settings may change; architecture keys must match the checkpoint). Returns (agent, config, checkpoint)."""
    return agent_from_checkpoint(load_checkpoint(checkpoint), overrides, device, task, path=str(checkpoint))


def agent_from_checkpoint(ckpt: dict, overrides: dict, device: str, task: str | None = None, path: str = ""):
    """load_agent for a checkpoint already in memory (e.g. handed to a Ray actor)."""
    cfg = check_overrides(ckpt, overrides, path)
    check_compatible(ckpt, task=task, path=path)
    # how the loading process runs the planner is its own choice, never the saved run's (it may have had a GPU)
    cfg = validate_config(dataclasses.replace(cfg, device=device, cuda_graph=bool(overrides.get("cuda_graph", False))))
    spec = TaskSpec(**ckpt["task_spec"])
    agent = TDMPC2Agent(cfg, spec.obs_dim, spec.action_dim, spec.episode_length, spec.episodic, cfg.device)
    agent.load_state_dict(ckpt["agent"])
    torch.manual_seed(0)
    return agent, cfg, ckpt
