"""The MPPI planner with each plan replayed from a CUDA graph (`cuda_graph=true`, CUDA devices only).

On a GPU one eager plan is bound by kernel launches: about 18 ms for the full planner at model size 1 on an H200,
whatever the batch up to ~16 environments; the same plan captured whole as one CUDA graph replays in about 3 ms
(BENCHMARKS.md, "The frontier's cheap competitors on a GPU"). `GraphedPlanner` captures `MPPIPlanner.plan` once per
(batch size, generator) from static input buffers (latents, warm-start means with NaN rows for "no warm start",
shifts) and replays it, copying the inputs in and the outputs out.

What differs from the eager planner:
- Random numbers: capturing runs the plan a few times first (warm-up on a side stream, then the capture itself),
  and those draws advance the generator, so a graphed run does not take the eager run's actions. The draws of each
  replay are fresh (CUDA graphs advance the generator's offset at every replay; a generator given to `plan` is
  registered with its graph).
- A plan cannot be cancelled between MPPI iterations (the whole plan is one replay): `cancelled()` is asked
  before the replay only.
The counters (`calls`, `batches`, `extensions`) count replays exactly as the eager planner counts plans; the
capture's own runs are not counted.
"""
from __future__ import annotations

import torch

from .planner import MPPIPlanner, Plan, PlanCancelled

WARMUP_RUNS = 2  # eager runs on a side stream before a capture, as CUDA graph capture requires


class _Captured:
    """One captured plan: its static inputs, the graph and the Plan its replays overwrite."""

    def __init__(self, planner: MPPIPlanner, B: int, generator: torch.Generator | None):
        self.generator = generator  # held, so that the id in the cache key is not reused by another generator
        dev = next(planner.model.parameters()).device
        H, A = planner.s.horizon, planner.model.action_dim
        self.z = torch.zeros(B, planner.model.dims.latent_dim, device=dev)
        self.prev = torch.full((B, H, A), float("nan"), device=dev)
        self.shift = torch.ones(B, dtype=torch.long, device=dev)
        kw = {} if generator is None else {"generator": generator}
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                planner.plan(self.z, self.prev, self.shift, **kw)
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        if generator is not None:
            self.graph.register_generator_state(generator)
        # thread_local: a background planner captures while the main thread goes on using the GPU
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = planner.plan(self.z, self.prev, self.shift, **kw)

    def replay(self, z: torch.Tensor, prev_mean: torch.Tensor | None, shift) -> Plan:
        self.z.copy_(z)
        if prev_mean is None:
            self.prev.fill_(float("nan"))
        else:
            self.prev.copy_(prev_mean)
        self.shift.copy_(torch.as_tensor(shift, device=self.shift.device).long().expand_as(self.shift))
        self.graph.replay()
        o = self.out
        return Plan(actions=o.actions.clone(), latents=o.latents.clone(), rewards=o.rewards.clone(),
                    value=o.value.clone(), mean=o.mean.clone(), std=o.std.clone(),
                    stats={k: v.clone() for k, v in o.stats.items()})


class GraphedPlanner:
    """An MPPIPlanner whose plans are CUDA graph replays (see the module docstring); everything else (rollouts,
    extensions, imagination, settings) is the wrapped planner's."""

    def __init__(self, planner: MPPIPlanner):
        if next(planner.model.parameters()).device.type != "cuda":
            raise ValueError("cuda_graph=true captures CUDA graphs: the planner's model must be on a CUDA device")
        self.inner = planner
        self._captured: dict[tuple, _Captured] = {}

    def __getattr__(self, name):  # s, model, compiled, extend, imagine, rollout_value, ...
        if name == "inner":  # not set yet (an object being unpickled): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    # the counters live in the wrapped planner: reading and setting them here is reading and setting them there
    calls = property(lambda self: self.inner.calls, lambda self, v: setattr(self.inner, "calls", v))
    batches = property(lambda self: self.inner.batches, lambda self, v: setattr(self.inner, "batches", v))
    extensions = property(lambda self: self.inner.extensions, lambda self, v: setattr(self.inner, "extensions", v))

    def with_settings(self, settings) -> "GraphedPlanner":
        return GraphedPlanner(self.inner.with_settings(settings))

    def plan(self, z: torch.Tensor, prev_mean: torch.Tensor | None = None, shift=1,
             generator: torch.Generator | None = None, cancelled=None) -> Plan:
        """MPPIPlanner.plan, replayed from the graph captured for this batch size and generator."""
        if cancelled is not None and cancelled():
            raise PlanCancelled
        key = (z.shape[0], None if generator is None else id(generator))
        if key not in self._captured:
            counts = (self.inner.calls, self.inner.batches, self.inner.extensions)
            self._captured[key] = _Captured(self.inner, z.shape[0], generator)
            self.inner.calls, self.inner.batches, self.inner.extensions = counts  # the capture's runs count nothing
        plan = self._captured[key].replay(z, prev_mean, shift)
        self.inner.calls += z.shape[0]
        self.inner.batches += 1
        return plan
