"""Which torch device a command runs on: `auto` is cuda when there is one, else cpu; cuda asked for on a machine
without one is a user error (one line, exit 2), never a silent fallback or a crash."""
from __future__ import annotations

import torch

from .config_schema import ConfigError


class DeviceUnavailableError(ConfigError):
    """The device asked for does not exist on this machine: a user error (one line, exit 2), not a crash."""


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without a CUDA device raises DeviceUnavailableError.
    Commands call this before they write anything."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device={device} was asked for but this machine has no CUDA device "
                                     "(use device=auto or device=cpu)")
    return torch.device(device)
