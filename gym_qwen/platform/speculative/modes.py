"""What users name: execution modes and their settings, the original project's aliases, and one evaluated setting
(ExecutionSpec). Plain data, no torch: the config schema imports it."""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("baseline", "naive", "spec_corrector", "spec_extended", "adaptive")

CORRECTOR_TYPES = ("none", "two_tower", "temporal")
DEFAULT_EXEC_HORIZON = {"baseline": 1, "naive": 3, "spec_corrector": 3, "spec_extended": 6, "adaptive": 3}
# The original project's mode names: alias -> (mode, spec_exec_horizon, spec_plan_horizon, corrector_type)
ALIASES = {
    "spec6_corrector": ("spec_extended", 6, 3, None),
    "naive3": ("naive", 3, None, "none"),
    "3_step_naive": ("naive", 3, None, "none"),
    "3_step_corrector": ("spec_corrector", 3, None, "two_tower"),
    "3_step_corrector_temporal": ("spec_corrector", 3, None, "temporal"),
}
MODE_CHOICES = MODES + ("all",) + tuple(ALIASES)


@dataclass(frozen=True)
class SpeculationSettings:
    """How plans are executed. exec_horizon k: the most steps run from one plan (1 for baseline)."""

    mode: str = "baseline"
    exec_horizon: int = 1
    mismatch_threshold: float = 0.5
    history_len: int = 4

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if self.exec_horizon < 1:
            raise ValueError(f"spec_exec_horizon={self.exec_horizon} must be >= 1")
        if self.mode == "baseline" and self.exec_horizon != 1:
            raise ValueError("mode=baseline replans every step: spec_exec_horizon must be 1")

    @property
    def encodes_every_step(self) -> bool:
        return self.mode in ("spec_corrector", "spec_extended", "adaptive")


def alias_note(alias: str) -> str:
    mode, k, plan, corrector = ALIASES[alias]
    parts = [f"mode={mode}", f"spec_exec_horizon={k}"]
    if plan is not None:
        parts.append(f"spec_plan_horizon={plan}")
    if corrector is not None:
        parts.append(f"corrector_type={corrector}")
    return f"mode={alias} is the original project's name for {' '.join(parts)}"


def needs_corrector(mode: str) -> bool:
    return mode in ("spec_corrector", "spec_extended")


@dataclass(frozen=True)
class ExecutionSpec:
    """One evaluated setting: how plans are executed, which corrector (a checkpoint file), which planner
    overrides (the cheap planner changes num_samples / iterations), and whether to shadow the teacher."""

    settings: SpeculationSettings = field(default_factory=SpeculationSettings)
    corrector_type: str = "none"
    corrector_checkpoint: str | None = None
    planner_overrides: tuple = ()  # ((key, value), ...) applied to the agent's planner settings
    measure_teacher: bool = False

    @property
    def label(self) -> str:
        s = self.settings
        name = s.mode if s.mode == "baseline" else f"{s.mode} k={s.exec_horizon}"
        if s.mode == "adaptive":
            name += f" thr={s.mismatch_threshold:g}"
        if self.corrector_type != "none":
            name += f" +{self.corrector_type}"
        if self.planner_overrides:
            name += " (" + " ".join(f"{k}={v}" for k, v in self.planner_overrides) + ")"
        return name
