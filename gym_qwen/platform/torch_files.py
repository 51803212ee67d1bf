"""The project's torch files: tagged with a format name and a version, written atomically, read weights-only.

Every kind of file (a TD-MPC2 checkpoint, a Decision Transformer checkpoint, a corrector, a behaviour policy)
is a dict with a `format` tag and a `version`; `read_tagged_file` reads any of them with the same checks and
one-line errors, and a file that carries code is refused by the weights-only load.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import atomic_write_bytes


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message is one line for the user."""


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


def save_tagged_file(path: str | os.PathLike, fmt: str, version: int, payload: dict) -> Path:
    """Write `payload` (numpy arrays become tensors) under the `fmt` tag and `version`, atomically."""
    payload = {"format": fmt, "version": version, **_numpy_to_torch(payload)}
    return atomic_write_bytes(path, lambda f: torch.save(payload, f))


def tagged_bytes(fmt: str, version: int, payload: dict) -> bytes:
    """The bytes save_tagged_file would write: for a file that goes to storage on a URI (platform/storage.py)."""
    buf = io.BytesIO()
    torch.save({"format": fmt, "version": version, **_numpy_to_torch(payload)}, buf)
    return buf.getvalue()


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


def read_tagged_file(path: str | os.PathLike, fmt: str, version: int, error: type[Exception], what: str, *,
                     kind: str | None = None, missing: str | None = None, hint: str = "",
                     others: dict[str, str] | None = None) -> dict:
    """The dict in the project's torch file `path`, checked: it exists, loads weights-only, carries the `fmt` tag
    and this code's `version`. Every refusal raises `error` with one line. `what` names the file in the messages
    ('checkpoint'), `kind` what a file of `fmt` is ('TD-MPC2 checkpoint'; default `what`); `missing` replaces
    the not-found message, `hint` follows the wrong-format one, and `others` maps another format tag to what a
    file of it is, for a file given in the wrong place."""
    path = Path(path)
    if not path.is_file():
        raise error(missing or f"{what} not found: {path}")
    data = read_torch_file(path, error, what)
    tag = data.get("format") if isinstance(data, dict) else None
    if tag in (others or {}):
        raise error(f"{path} is {others[tag]}")
    if tag != fmt:
        raise error(f"{path} is not a Gym Qwen {kind or what} (no {fmt} format tag)" + (f"; {hint}" if hint else ""))
    if data.get("version") != version:
        raise error(f"{path} has {what} version {data.get('version')}, this code reads {version}")
    return data
