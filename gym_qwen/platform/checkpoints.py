"""Checkpoints: atomic writes, `weights_only=True` loads, and the compatibility check against a config.

Two kinds share one format: an *agent* checkpoint (weights, config, task dimensions; what evaluation and later
stages load) and a *training* checkpoint (the agent checkpoint plus optimisers, replay buffer, RNG states and
counters; what `resume=true` continues from).
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "gym-qwen/tdmpc2"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message is one line for the user."""


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the renames and new names in directory `path` durable: an atomic rename survives a crash only once
    its directory is synced. A no-op where a directory cannot be opened or synced (some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def directory_problem(path: str | os.PathLike) -> str | None:
    """Why directory `path` cannot be created or written into (a file in the way, no permission), or None.
    Creates nothing: commands ask this before they write anything."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def atomic_write_bytes(path: str | os.PathLike, write) -> Path:
    """Call write(file_object) on a temp file beside `path`, fsync it, rename it over `path`, fsync the folder."""
    path = Path(path)
    made = missing_folders(path.parent)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the result is an ordinary shareable file
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        remove_empty_folders(made)  # a failed write leaves no trace, not even the folders it made
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # a full disk: say which file
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    fsync_dir(path.parent)
    return path


def missing_folders(folder: Path) -> list[Path]:
    """The folders of `folder`'s path that do not exist yet, deepest first."""
    out = []
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove `folders` (deepest first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def publish_together(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each staged file over its target (same folder), all or none: if a rename fails, every target
    replaced so far gets its previous content back (kept as a hard link, or a copy, until all are in place) and
    targets that did not exist are removed again. Targets never go missing in between. The folders are synced.
    Between two renames a crash can still leave the first published alone; a reader that must know checks a
    digest (a teacher's card holds its file's sha256)."""
    import shutil

    done: list[tuple[Path, Path | None]] = []  # (target, backup of its previous content, or None if new)
    try:
        for staged, target in pairs:
            backup = None
            if target.exists():
                backup = target.with_name(f".{target.name}.previous")
                if backup.exists():
                    backup.unlink()
                try:
                    os.link(target, backup)
                except OSError:  # a filesystem without hard links
                    shutil.copy2(target, backup)
            try:
                os.replace(staged, target)
            except BaseException:
                if backup is not None:
                    backup.unlink()  # the target still holds its previous content
                raise
            done.append((target, backup))
    except BaseException:
        for target, backup in reversed(done):
            if backup is not None:
                os.replace(backup, target)
            elif target.exists():
                target.unlink()
        raise
    finally:
        for folder in {target.parent for _, target in pairs}:
            fsync_dir(folder)
    for _, backup in done:
        if backup is not None:
            backup.unlink()


def _numpy_to_torch(x: Any) -> Any:
    """weights_only loading accepts tensors and plain containers, not numpy arrays: convert on save."""
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        return torch.from_numpy(x if x.flags.writeable else x.copy())  # Ray's object store hands out read-only
    if isinstance(x, dict):
        return {k: _numpy_to_torch(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_numpy_to_torch(v) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    return x


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    payload = {"format": FORMAT, "version": VERSION, **_numpy_to_torch(payload)}
    return atomic_write_bytes(path, lambda f: torch.save(payload, f))


def _load_error_reason(e: Exception) -> str:
    """One line for why torch.load failed (its weights-only refusal is a multi-line text with ANSI codes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return f"it holds a pickled Python object ({refused.group(1)}), which a weights-only load refuses"
    first = (text.strip().splitlines() or [""])[0][:200]  # some errors (an empty file's EOFError) say nothing
    return type(e).__name__ + (f": {first}" if first else "")


def read_torch_file(path: str | os.PathLike, error: type[Exception], what: str = ""):
    """torch.load(weights_only=True) onto the CPU. Any failure (truncated, corrupt, not a torch file, pickled code)
    raises `error` with one line: 'cannot read <what> <path>: <reason>'."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch raises, the user gets one line
        raise error(f"cannot read {what + ' ' if what else ''}{path}: {_load_error_reason(e)}") from None


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load safely (weights_only=True, onto the CPU). Raises CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    data = read_torch_file(path, CheckpointError, "checkpoint")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a Gym Qwen TD-MPC2 checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {data.get('version')}, this code reads {VERSION}")
    return data


MODEL_KEYS = ("model_size", "latent_dim", "enc_dim", "mlp_dim", "num_enc_layers", "num_q", "num_bins", "simnorm_dim")


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


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the code (with '+dirty' for uncommitted changes), or 'unknown'. Read once per process:
    it names the code this process loaded, even if the checkout changes while a long run goes on."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_agent(checkpoint: str, overrides: dict, device: str, task: str | None = None):
    """Build the agent a checkpoint file describes. `overrides`: agent keys the user set explicitly (planner
    settings may change; architecture keys must match the checkpoint). Returns (agent, config, checkpoint)."""
    return agent_from_checkpoint(load_checkpoint(checkpoint), overrides, device, task, path=str(checkpoint))


def agent_from_checkpoint(ckpt: dict, overrides: dict, device: str, task: str | None = None, path: str = ""):
    """load_agent for a checkpoint already in memory (e.g. handed to a Ray actor)."""
    import dataclasses

    from .config import TrainConfig, config_from_dict, validate_config
    from .config_schema import ARCH_KEYS
    from .envs import TaskSpec
    from .tdmpc2.agent import TDMPC2Agent
    from .trainer import model_signature

    cfg = config_from_dict(TrainConfig, ckpt["config"])
    asked = {k: v for k, v in overrides.items() if k in ("model_size", *ARCH_KEYS, "num_bins", "simnorm_dim")}
    if asked:
        mine = config_from_dict(TrainConfig, {**ckpt["config"], **asked})
        check_compatible(ckpt, arch=model_signature(mine), path=path)
    check_compatible(ckpt, task=task, path=path)
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if k not in asked}, device=device)
    validate_config(cfg)  # the overrides together with the checkpoint's own settings (e.g. num_elites <= num_samples)
    spec = TaskSpec(**ckpt["task_spec"])
    agent = TDMPC2Agent(cfg, spec.obs_dim, spec.action_dim, spec.episode_length, spec.episodic, cfg.device)
    agent.load_state_dict(ckpt["agent"])
    torch.manual_seed(0)
    return agent, cfg, ckpt
