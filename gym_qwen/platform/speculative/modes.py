"""What users name: execution modes and their settings, the original project's aliases, and one evaluated setting
(ExecutionSpec). Plain data, no torch: the config schema imports it."""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("baseline", "prior", "naive", "spec_corrector", "spec_extended", "adaptive", "async", "stale")
# Modes that only run under a clock (control_period_ms=): the plan executes for d = ceil(L / P) decisions (clock.py)
CLOCKED_ONLY = ("async", "stale")
# How adaptive measures the mismatch of a speculative step: against the plan's open-loop latent z^_j, or against the
# world model's one-step prediction from the previous real latent and the action actually executed there.
MISMATCH_KINDS = ("open_loop", "one_step")
# What adaptive does on a miss: replan at once (one planner call), or act with the policy prior for the rest of the
# chunk's k steps (no planner call until the chunk's k steps are spent)
FALLBACKS = ("plan", "prior")
# What async executes past its plan's horizon H (d > H): the policy prior's extension of the plan on the world
# model's predicted latents (open loop, as spec_extended does), or the policy prior at the real latent (closed loop,
# as stale does there; the prediction of the next plan's start then rolls the prior through the dynamics)
PAST_HORIZON = ("extension", "prior")

# Agent keys that change only the planner: a setting that sets them plans with another planner (a budget)
PLANNER_KEYS = ("horizon", "iterations", "num_samples", "num_elites", "num_pi_trajs", "min_std", "max_std",
                "temperature")
CORRECTOR_TYPES = ("none", "two_tower", "temporal")
DEFAULT_EXEC_HORIZON = {"baseline": 1, "prior": 1, "naive": 3, "spec_corrector": 3, "spec_extended": 6, "adaptive": 3,
                        "async": 1, "stale": 1}
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
    """How plans are executed. exec_horizon k: the most steps run from one plan (1 for baseline; prior never
    plans: the policy prior's mean action at the encoded observation, every step). `mismatch` (adaptive): what
    the real latent is compared with (MISMATCH_KINDS). async and stale run under a clock, whose d sets how many
    steps a plan runs (k stays 1); async with a finite mismatch_threshold cancels the plan in flight on a miss, and
    `past_horizon` (PAST_HORIZON) says what it executes once d outlasts the plan's horizon."""

    mode: str = "baseline"
    exec_horizon: int = 1
    mismatch_threshold: float = 0.5
    history_len: int = 4
    mismatch: str = "open_loop"
    fallback: str = "plan"
    past_horizon: str = "extension"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        if self.exec_horizon < 1:
            raise ValueError(f"spec_exec_horizon={self.exec_horizon} must be >= 1")
        if self.mode in ("baseline", "prior") and self.exec_horizon != 1:
            raise ValueError(f"mode={self.mode} decides every step afresh: spec_exec_horizon must be 1")
        if self.mode in CLOCKED_ONLY and self.exec_horizon != 1:
            raise ValueError(f"mode={self.mode}: the clock's d sets the steps per plan, not spec_exec_horizon")
        if self.mismatch not in MISMATCH_KINDS:
            raise ValueError(f"unknown mismatch {self.mismatch!r}; valid: {', '.join(MISMATCH_KINDS)}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"unknown fallback {self.fallback!r}; valid: {', '.join(FALLBACKS)}")
        if self.past_horizon not in PAST_HORIZON:
            raise ValueError(f"unknown past_horizon {self.past_horizon!r}; valid: {', '.join(PAST_HORIZON)}")
        if self.past_horizon != "extension" and self.mode != "async":
            raise ValueError(f"past_horizon={self.past_horizon} is what async executes past the plan's horizon: "
                             f"not used by mode={self.mode}")

    @property
    def encodes_every_step(self) -> bool:
        return self.mode in ("prior", "spec_corrector", "spec_extended", "adaptive")


# A planner budget scales elites and policy-prior trajectories with the samples in the proportion of the paper's
# defaults (64 and 24 of 512), with floors, so that a small budget still selects and still seeds from the prior.
BUDGET_RULE = "elites = max(4, round(samples/8)), policy trajectories = max(2, round(samples*24/512))"


def budget_overrides(num_samples: int, iterations: int) -> dict:
    """The planner settings of the budget `num_samples` x `iterations` (see BUDGET_RULE)."""
    if num_samples < 8:
        raise ValueError(f"planner budget {num_samples}x{iterations}: at least 8 samples (4 elites must be fewer)")
    if iterations < 1:
        raise ValueError(f"planner budget {num_samples}x{iterations}: at least 1 MPPI iteration")
    return {"num_samples": num_samples, "iterations": iterations,
            "num_elites": max(4, round(num_samples * 64 / 512)), "num_pi_trajs": max(2, round(num_samples * 24 / 512))}


def parse_budget(text: str) -> tuple[int, int]:
    """'64x2' -> (64, 2): samples x MPPI iterations. ValueError naming the text otherwise."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"planner budget {text!r} must be <samples>x<iterations>, e.g. 64x2")
    samples, iterations = (int(p) for p in parts)
    budget_overrides(samples, iterations)
    return samples, iterations


def budget_name(planner_overrides) -> str | None:
    """'64x2' when planner overrides are exactly a planner budget's (see BUDGET_RULE), else None."""
    over = dict(planner_overrides)
    if {"num_samples", "iterations"} - set(over):
        return None
    try:
        scaled = budget_overrides(int(over["num_samples"]), int(over["iterations"]))
    except ValueError:
        return None
    return f"{over['num_samples']}x{over['iterations']}" if scaled == over else None


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
    overrides (the cheap planner changes num_samples / iterations), whether to shadow the teacher, and the clock
    it runs under (a ClockSettings; None: no clock, the environment waits for every plan)."""

    settings: SpeculationSettings = field(default_factory=SpeculationSettings)
    corrector_type: str = "none"
    corrector_checkpoint: str | None = None
    planner_overrides: tuple = ()  # ((key, value), ...) applied to the agent's planner settings
    measure_teacher: bool = False
    clock: object = None  # clock.ClockSettings
    # planner keys the agent itself was built with (one setting's planner_budget= or num_samples=): named in the
    # label, not applied again
    agent_planner: tuple = ()

    @property
    def steps_per_plan(self) -> int:
        """The most steps one plan runs: k, or under a clock the d of async and stale (what MLflow logs as k)."""
        if self.settings.mode in CLOCKED_ONLY and self.clock is not None and self.clock.resolved:
            return self.clock.delay
        return self.settings.exec_horizon

    @property
    def label(self) -> str:
        s = self.settings
        name = s.mode if s.mode in ("baseline", "prior") + CLOCKED_ONLY else f"{s.mode} k={s.exec_horizon}"
        if s.mode == "async" and s.mismatch_threshold != float("inf"):
            name += f" thr={s.mismatch_threshold:g}"
        if s.past_horizon != "extension":
            name += f" past H: {s.past_horizon}"
        if s.mode == "adaptive":
            name += f" thr={s.mismatch_threshold:g}"
            if s.mismatch != "open_loop":
                name += f" {s.mismatch}"
            if s.fallback != "plan":
                name += f" fallback={s.fallback}"
        if self.corrector_type != "none":
            name += f" +{self.corrector_type}"
        planner = self.planner_overrides or self.agent_planner
        if planner:
            budget = budget_name(planner)
            name += f" (planner {budget})" if budget else " (" + " ".join(f"{k}={v}" for k, v in planner) + ")"
        if self.clock is not None:
            name += f" [{self.clock.label}]"
        return name
