"""torch.compile with an eager fallback, taken only when the compiler fails and the eager function does not.

What counts as a compiler failure (torch 2.13): the backend (Inductor) failed to compile the traced graph
(`BackendCompilerFailed`, unless what it wraps is running out of memory), TorchDynamo cannot trace the function
(`Unsupported`), TorchDynamo itself broke (`InternalTorchDynamoError`), or an operation failed on the fake
tensors TorchDynamo traces with (`TorchRuntimeError`). Then the eager function runs: if it succeeds, the
compiler was at fault, a warning names the error, and the eager function is used for good; if it fails too,
the failure is in the maths, not the compiler: its error propagates and compilation stays on. Anything else
(out of memory, a RuntimeError of the compiled code at run time, an interrupt) propagates untouched.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch._inductor.config as inductor_config
from torch._dynamo import exc


def _configure_inductor() -> None:
    # Inductor's pattern matcher raises BackendCompilerFailed on slice patterns in these graphs (seen with
    # torch 2.13 on CPU); the fusions that matter here (elementwise work around the matmuls) do not need it.
    inductor_config.pattern_matcher = False
    # Draw random numbers with ATen's generator, as eager does: same seed, same samples, same actions.
    inductor_config.fallback_random = True


def compiler_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the compiler failed" (see the module docstring)."""
    return exc.BackendCompilerFailed, exc.Unsupported, exc.InternalTorchDynamoError, exc.TorchRuntimeError


def _describe(e: BaseException) -> str:
    """`BackendCompilerFailed (ValueError: first line)`: the compiler error and, when it wraps one, its cause."""
    inner = getattr(e, "inner_exception", None)
    cause = inner if isinstance(inner, BaseException) else e
    first = (str(cause).strip().splitlines() or [""])[0][:160]
    what = type(cause).__name__ + (f": {first}" if first else "")
    return f"{type(e).__name__} ({what})" if cause is not e else what


class CompiledOrEager:
    """Call `fn` through torch.compile when `enabled`, falling back to `fn` itself if the compiler fails."""

    def __init__(self, fn: Callable, enabled: bool, name: str):
        self.eager, self.name = fn, name
        self.compiled = None
        if enabled:
            _configure_inductor()
            self.compiled = torch.compile(fn)

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.eager(*args, **kwargs)

        try:
            return self.compiled(*args, **kwargs)
        except compiler_errors() as e:
            inner = getattr(e, "inner_exception", None)
            if isinstance(inner, torch.OutOfMemoryError):  # out of memory while compiling: not a compiler bug
                raise inner from e
            result = self.eager(*args, **kwargs)  # raises if the maths itself fails: compilation stays on
            warnings.warn(f"torch.compile of {self.name} failed with a compiler error, {_describe(e)}; "
                          f"continuing in eager mode", stacklevel=2)
            self.compiled = None
            return result
