"""Learned correctors: map what the agent sees at a speculative step to a corrected action.

Every corrector has one signature, ``forward(z_real (B,L), z_pred (B,L), a_plan (B,A), history (B,K,F),
history_mask (B,K)) -> (B,A)``, and returns ``clamp(a_plan + delta, -1, 1)`` with ``delta = max_delta *
tanh(...)``. ``history`` is the window of the last K mismatch features (features.py: the current step LAST,
padding at the front with mask False). Both correctors start as the identity: the last layer of the delta head
is zero, so delta is exactly 0 until training moves it.

On disk a corrector is a torch file {format, version, type, hyperparameters, state_dict, meta}, loaded with
``weights_only=True``; ``meta`` names the teacher (sha256 of its checkpoint file) it was distilled from.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from gym_qwen.platform.files import atomic_write_bytes
from gym_qwen.platform.tdmpc2.checkpoints import FORMAT as AGENT_FORMAT
from gym_qwen.platform.torch_files import read_tagged_file

from .features import feature_dim

FORMAT = "gym-qwen/corrector"
VERSION = 1
KINDS = ("two_tower", "temporal")


class CorrectorError(ValueError):
    """A corrector that cannot be built, loaded or used as asked (one-line message)."""


def _tower(inp: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.SiLU(), nn.Linear(hidden, hidden))


class _GatedDeltaHead(nn.Module):
    """g = sigmoid(W [u, h_a]); delta = max_delta * tanh(Linear(g*u + (1-g)*h_a)), zero at initialisation."""

    def __init__(self, hidden: int, action_dim: int, max_delta: float):
        super().__init__()
        self.max_delta = float(max_delta)
        self.gate = nn.Linear(2 * hidden, hidden)
        self.delta = nn.Linear(hidden, action_dim)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, u: torch.Tensor, h_a: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(torch.cat([u, h_a], dim=-1)))
        return self.max_delta * torch.tanh(self.delta(g * u + (1 - g) * h_a))


class Corrector(nn.Module):
    """Base of the correctors: ``correction`` gives the unclamped delta, ``forward`` the clamped action."""

    kind: str = ""

    def correction(self, z_real, z_pred, a_plan, history, history_mask) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z_real: torch.Tensor, z_pred: torch.Tensor, a_plan: torch.Tensor, history: torch.Tensor,
                history_mask: torch.Tensor) -> torch.Tensor:
        delta = self.correction(z_real, z_pred, a_plan, history, history_mask)
        return (a_plan + delta).clamp(-1.0, 1.0)

    def hyperparameters(self) -> dict:
        return dict(self._hp)


class TwoTowerCorrector(Corrector):
    """Towers over z_real, z_pred, z_real - z_pred and a_plan; the latent towers fuse into u, a sigmoid gate
    mixes u with the action tower, and a tanh head gives the delta. Ignores the history."""

    kind = "two_tower"

    def __init__(self, latent_dim: int, action_dim: int, hidden: int = 256, max_delta: float = 1.0,
                 history_len: int = 1):
        super().__init__()
        self._hp = dict(latent_dim=latent_dim, action_dim=action_dim, hidden=hidden, max_delta=max_delta,
                        history_len=history_len)
        self.real, self.pred, self.diff = (_tower(latent_dim, hidden) for _ in range(3))
        self.action = _tower(action_dim, hidden)
        self.fuse = nn.Sequential(nn.SiLU(), nn.Linear(3 * hidden, hidden), nn.SiLU())
        self.head = _GatedDeltaHead(hidden, action_dim, max_delta)

    def correction(self, z_real, z_pred, a_plan, history=None, history_mask=None) -> torch.Tensor:
        u = self.fuse(torch.cat([self.real(z_real), self.pred(z_pred), self.diff(z_real - z_pred)], dim=-1))
        return self.head(u, self.action(a_plan))


class TemporalCorrector(Corrector):
    """A small post-norm Transformer over the last K mismatch features (padding masked out); the most recent
    (last) position's output is fused with an action tower through the same gated delta head."""

    kind = "temporal"

    def __init__(self, latent_dim: int, action_dim: int, history_len: int = 4, d_model: int = 128, heads: int = 4,
                 layers: int = 2, ff: int = 256, dropout: float = 0.1, max_delta: float = 1.0):
        super().__init__()
        self._hp = dict(latent_dim=latent_dim, action_dim=action_dim, history_len=history_len, d_model=d_model,
                        heads=heads, layers=layers, ff=ff, dropout=dropout, max_delta=max_delta)
        self.history_len = history_len
        self.project = nn.Linear(feature_dim(latent_dim, action_dim), d_model)
        self.positions = nn.Parameter(torch.randn(history_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, activation="gelu", batch_first=True)
        # No nested tensors: they drop padded positions only in some eval paths; one code path everywhere.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.action = _tower(action_dim, d_model)
        self.head = _GatedDeltaHead(d_model, action_dim, max_delta)

    def correction(self, z_real, z_pred, a_plan, history, history_mask) -> torch.Tensor:
        if history.shape[1] != self.history_len:
            raise CorrectorError(f"temporal corrector takes a history of {self.history_len} steps, "
                                 f"got {history.shape[1]}")
        x = self.project(history) + self.positions
        # key_padding_mask: True = ignore. The last position is always real, so no row is fully masked.
        out = self.encoder(x, src_key_padding_mask=~history_mask.bool())
        return self.head(out[:, -1], self.action(a_plan))


def build_corrector(kind: str, latent_dim: int, action_dim: int, history_len: int = 4, **hp) -> Corrector:
    """A fresh corrector of `kind` ("two_tower" or "temporal"); `hp` are the class's other hyperparameters."""
    if kind == "two_tower":
        return TwoTowerCorrector(latent_dim, action_dim, history_len=history_len, **hp)
    if kind == "temporal":
        return TemporalCorrector(latent_dim, action_dim, history_len=history_len, **hp)
    raise CorrectorError(f"unknown corrector type {kind!r}; valid types: {', '.join(KINDS)}")


def save_corrector(path: str | os.PathLike, corrector: Corrector, meta: dict) -> Path:
    """Write the corrector atomically. `meta`: teacher_sha256, latent_dim, action_dim, history_len, task,
    validation metrics, code version, data path and rows (plain values only: the file loads weights-only)."""
    hp = corrector.hyperparameters()
    payload = {"format": FORMAT, "version": VERSION, "type": corrector.kind, "hyperparameters": hp,
               "state_dict": {k: v.detach().cpu() for k, v in corrector.state_dict().items()},
               "meta": {"latent_dim": hp["latent_dim"], "action_dim": hp["action_dim"],
                        "history_len": hp["history_len"], **meta}}
    return atomic_write_bytes(path, lambda f: torch.save(payload, f))


def _read(path: Path) -> dict:
    return read_tagged_file(path, FORMAT, VERSION, CorrectorError, "corrector", hint="make one with gym-qwen distill",
                            others={AGENT_FORMAT: "a TD-MPC2 agent checkpoint, not a corrector: give it as the teacher"})


def _short(sha: str | None) -> str:
    return (sha or "unknown")[:12] + "..."


def load_corrector(path: str | os.PathLike, *, teacher_sha256: str | None = None, latent_dim: int | None = None,
                   history_len: int | None = None, device: str | torch.device = "cpu") -> tuple[Corrector, dict]:
    """(corrector in eval mode on `device`, meta). Checks, when given, that it was distilled from the teacher
    whose checkpoint file has `teacher_sha256`, that it takes latents of `latent_dim` and (temporal) that it reads
    the `history_len` mismatch features the executor will give it; CorrectorError if not."""
    path = Path(path)
    data = _read(path)
    meta, hp = dict(data.get("meta") or {}), dict(data.get("hyperparameters") or {})
    theirs = hp.get("latent_dim")
    if latent_dim is not None and theirs != int(latent_dim):
        raise CorrectorError(f"corrector {path} takes latents of size {theirs} but the teacher's latent size is "
                             f"{latent_dim}: distill one for this teacher")
    if teacher_sha256 is not None and meta.get("teacher_sha256") != teacher_sha256:
        raise CorrectorError(f"corrector {path} was distilled from teacher sha256 {_short(meta.get('teacher_sha256'))}"
                             f" but the checkpoint is {_short(teacher_sha256)}: distill one for this teacher")
    kind = data.get("type")
    try:
        corrector = build_corrector(kind, **hp)
    except TypeError as e:
        raise CorrectorError(f"corrector {path} has hyperparameters this code cannot build: {e}") from None
    try:
        corrector.load_state_dict(data["state_dict"])
    except (KeyError, RuntimeError) as e:
        reason = re.sub(r"\s+", " ", str(e))[:200]
        raise CorrectorError(f"corrector {path} has weights that do not fit a {kind} corrector: {reason}") from None
    reads = hp.get("history_len")
    if history_len is not None and kind == "temporal" and reads != int(history_len):
        raise CorrectorError(f"corrector {path} reads {reads} mismatch features; use history_len={reads}")
    return corrector.to(device).eval(), meta
