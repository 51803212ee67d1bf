"""torch.compile with an eager fallback: a backend failure warns once and the eager function is used for good."""
from __future__ import annotations

import warnings
from typing import Callable


def _configure_inductor() -> None:
    import torch._inductor.config as inductor_config

    # Inductor's pattern matcher raises BackendCompilerFailed on slice patterns in these graphs (seen with
    # torch 2.13 on CPU); the fusions that matter here (elementwise work around the matmuls) do not need it.
    inductor_config.pattern_matcher = False
    # Draw random numbers with ATen's generator, as eager does: same seed, same samples, same actions.
    inductor_config.fallback_random = True


class CompiledOrEager:
    """Call `fn` through torch.compile when `enabled`, falling back to `fn` itself if compilation fails."""

    def __init__(self, fn: Callable, enabled: bool, name: str):
        self.eager, self.name = fn, name
        self.compiled = None
        if enabled:
            import torch

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
        except Exception as e:  # noqa: BLE001 - any backend failure: same maths, eager speed
            warnings.warn(f"torch.compile of {self.name} failed ({type(e).__name__}: {str(e)[:120]}); "
                          f"continuing in eager mode")
            self.compiled = None
            return self.eager(*args, **kwargs)
