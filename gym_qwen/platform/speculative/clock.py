"""The clock of real-time control: plain arithmetic, no torch (the config schema imports it).

The environment advances one decision every control period P ms, whether a plan is ready or not, and a plan takes
L ms. Decision s observes o_s at the start of its period and must send its action by the period's end. A plan
started at decision s (from what is known then) is therefore ready for decision

    s + d - 1,   d = max(1, ceil(L / P)),

so d = 1 means the plan is ready for the very decision that requested it: the synchronous baseline. With d > 1
the d - 1 decisions in between must act without it. The planner works without a break: the plan that takes over
at decision t occupied it until the end of t's period, so the next one starts at decision t + 1 and takes over
at t + d. Each plan is therefore executed for d decisions.

`planner_latency_ms=measured` (the default) is the setting's planner's median time on this machine, timed before
the episodes; a number makes a run reproducible across machines. Every result records P, L, d and where L came
from. With `realtime=true` the same schedule runs on the wall clock (`background_planner.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

MEASURED = "measured"
# The modes a clock drives: speculative planning, the synchronous planner with late plans, the synchronous planner
# ignoring the deadline (every plan waited for: late when d > 1) and the policy prior (always on time)
CLOCK_MODES = ("async", "stale", "baseline", "prior")
# What a clocked run logs besides the usual metrics (EvalResult.summary's keys)
CLOCK_METRICS = ("deadline_misses", "deadline_misses_per_step", "wait_ms_per_step", "plans_started", "plans_used",
                 "plans_discarded", "plans_cancelled", "steps_plan", "steps_corrected", "steps_extension",
                 "steps_prior")


def delay_steps(control_period_ms: float, planner_latency_ms: float) -> int:
    """d = max(1, ceil(L / P)): how many decisions a plan spans. A ratio within 1e-9 of an integer counts as
    that integer (P = L / 3 gives d = 3, whatever the last bit of the division)."""
    if not control_period_ms > 0:
        raise ValueError(f"control_period_ms={control_period_ms} must be > 0")
    if not planner_latency_ms >= 0:
        raise ValueError(f"planner_latency_ms={planner_latency_ms} must be >= 0")
    ratio = planner_latency_ms / control_period_ms
    nearest = round(ratio)
    steps = nearest if abs(ratio - nearest) <= 1e-9 * max(1.0, ratio) else math.ceil(ratio)
    return max(1, int(steps))


def parse_latency(text) -> float | None:
    """`measured` -> None (timed before the episodes); a number of ms >= 0 -> that number. ValueError otherwise."""
    if isinstance(text, str) and text.strip().lower() == MEASURED:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"planner_latency_ms={text!r} must be {MEASURED} or a number of ms >= 0") from None
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"planner_latency_ms={text!r} must be {MEASURED} or a number of ms >= 0")
    return value


@dataclass(frozen=True)
class ClockSettings:
    """A control period P, the planner's latency L (None until measured), where L came from, and whether the
    wall clock runs (`realtime`, with the planner in a thread of its own using `planner_threads` torch threads)."""

    control_period_ms: float
    planner_latency_ms: float | None = None
    latency_source: str = "given"
    realtime: bool = False
    planner_threads: int | None = None

    def __post_init__(self):
        delay_steps(self.control_period_ms, self.planner_latency_ms or 0.0)  # P > 0, L >= 0

    @property
    def resolved(self) -> bool:
        return self.planner_latency_ms is not None

    @property
    def delay(self) -> int:
        if self.planner_latency_ms is None:
            raise ValueError("the planner latency is not measured yet")
        return delay_steps(self.control_period_ms, self.planner_latency_ms)

    def with_latency(self, latency_ms: float, source: str = MEASURED) -> ClockSettings:
        return replace(self, planner_latency_ms=float(latency_ms), latency_source=source)

    def ready_for(self, started: int) -> int:
        """The decision a plan started at decision `started` is ready for."""
        return started + self.delay - 1

    def record(self) -> dict:
        """P, L, d and where L came from: what every result records."""
        return {"control_period_ms": self.control_period_ms, "planner_latency_ms": self.planner_latency_ms,
                "delay": self.delay if self.resolved else None, "latency_source": self.latency_source,
                "realtime": self.realtime}

    @property
    def label(self) -> str:
        text = f"P={self.control_period_ms:g}ms"
        if self.resolved:
            text += f" d={self.delay}"
        return text + (" realtime" if self.realtime else "")
