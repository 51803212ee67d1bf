"""Typed configuration schemas, one per command (train, evaluate, info, demo).

Each schema is a dataclass whose fields carry their constraints and a one-line doc in
``dataclasses.field(metadata=...)`` (see :func:`option`). Parsing, serialisation and help
text live in :mod:`gym_qwen.platform.config`, which re-exports everything defined here.
Defaults follow TD-MPC2 (Hansen et al., 2024). This module never imports Ray.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from typing import Any, ClassVar, Optional

import torch

from gym_qwen.platform.envs import TASKS
from gym_qwen.platform.seeds import RESET_SEED_SPAN
from gym_qwen.platform.speculative.clock import CLOCK_MODES, MEASURED, parse_latency
from gym_qwen.platform.speculative.modes import (
    ALIASES, BUDGET_RULE, CLOCKED_ONLY, CORRECTOR_TYPES, FALLBACKS, MISMATCH_KINDS, MODE_CHOICES, PAST_HORIZON,
    parse_budget)

__all__ = [
    "ConfigError", "option", "check_task", "MODEL_SIZES", "ARCH_KEYS",
    "TDMPC2Config", "TrainConfig", "EvaluateConfig", "CollectConfig", "InfoConfig", "DemoConfig", "TeacherConfig", "CurvesConfig",
    "DistillConfig",
]


class ConfigError(ValueError):
    """One-line, user-facing configuration error (newlines in the message are flattened)."""

    def __init__(self, message: object) -> None:
        super().__init__(" ".join(str(message).split("\n")))


def option(default: Any, doc: str, *, choices: tuple | None = None,
           min: float | None = None, max: float | None = None) -> Any:  # noqa: A002
    """A dataclass field with its one-line ``doc`` and optional ``choices`` / inclusive ``min``, ``max``."""
    meta = {"doc": doc, "choices": tuple(choices) if choices is not None else None,
            "min": min, "max": max}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_task(task: str, key: str = "task") -> None:
    """Raise :class:`ConfigError` unless ``task`` is a task known to :mod:`gym_qwen.platform.envs`."""
    # Lazy import (envs pulls in gymnasium). Membership in TASKS, not task_spec(): the latter
    # builds an environment the first time, far too slow for argument checking.

    if task not in TASKS:
        close = difflib.get_close_matches(task, TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown {key} {task!r}{hint}; valid tasks: {', '.join(TASKS)}")


ARCH_KEYS = ("latent_dim", "enc_dim", "mlp_dim", "num_enc_layers", "num_q")
MODEL_SIZES: dict[int, dict[str, int]] = {
    size: dict(zip(ARCH_KEYS, dims)) for size, dims in {
        1: (128, 256, 384, 2, 2),
        5: (512, 256, 512, 2, 5),
        19: (768, 1024, 1024, 3, 5),
        48: (768, 1792, 1792, 4, 5),
        317: (1376, 4096, 4096, 5, 8),
    }.items()
}
SIZE_CHOICES = tuple(MODEL_SIZES)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# The URI schemes pyarrow.fs.FileSystem.from_uri reads (platform/storage.py): storage= and train's output_dir=
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file")


def _check_location(key: str, value: str) -> None:
    """A local path, or a URI of a scheme pyarrow reads; the rest (bucket, credentials, server) is tried for real
    before anything starts (storage.storage_problem)."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", value)
    _require(m is None or m.group(1).lower() in STORAGE_SCHEMES,
             f"{key}={value.split('?')[0]}: unknown storage scheme '{(m.group(1) if m else '')}' (a local path, or a "
             f"URI of one of {', '.join(s + '://' for s in STORAGE_SCHEMES)})")


def _check_system_metrics(cfg) -> None:
    """system_metrics=true logs into the command's MLflow run: it needs mlflow=true."""
    _require(cfg.mlflow or not cfg.system_metrics, "system_metrics=true logs into the MLflow run: give mlflow=true too")


@dataclasses.dataclass
class TDMPC2Config:
    """TD-MPC2 agent settings (world model, planner, optimisation), shared by train/evaluate/info."""

    command: ClassVar[str] = "agent"

    # --- architecture -------------------------------------------------------------------
    model_size: int = option(1, "Model size in millions of parameters; picks the architecture defaults",
                             choices=SIZE_CHOICES)
    latent_dim: Optional[int] = option(None, "Latent state size (none = from model_size)", min=1)
    enc_dim: Optional[int] = option(None, "Encoder hidden width (none = from model_size)", min=1)
    mlp_dim: Optional[int] = option(None, "Hidden width of the model's MLPs (none = from model_size)", min=1)
    num_enc_layers: Optional[int] = option(None, "Encoder layers (none = from model_size)", min=1)
    num_q: Optional[int] = option(None, "Q-functions in the ensemble (none = from model_size)", min=1)
    simnorm_dim: int = option(8, "Group size of the SimNorm latent normalisation", min=1)
    num_bins: int = option(101, "Bins of the two-hot discrete regression for reward and value", min=2)
    vmin: float = option(-10.0, "Lower end of the two-hot support (symlog space)")
    vmax: float = option(10.0, "Upper end of the two-hot support (symlog space)")
    dropout: float = option(0.01, "Dropout probability in the Q-functions' first layer", min=0.0, max=1.0)
    log_std_min: float = option(-10.0, "Minimum log standard deviation of the policy")
    log_std_max: float = option(2.0, "Maximum log standard deviation of the policy")
    # --- planning (MPPI) ----------------------------------------------------------------
    horizon: int = option(3, "Planning horizon in decisions", min=1)
    iterations: Optional[int] = option(None, "MPPI iterations (none = 6, or 8 if action_dim >= 20)", min=1)
    num_samples: int = option(512, "Sampled action sequences per MPPI iteration", min=1)
    num_elites: int = option(64, "Elite sequences used to refit the sampling distribution", min=1)
    num_pi_trajs: int = option(24, "Policy-prior trajectories mixed into the samples", min=0)
    min_std: float = option(0.05, "Minimum std of the planner's action distribution", min=0.0)
    max_std: float = option(2.0, "Initial (maximum) std of the planner's action distribution", min=0.0)
    temperature: float = option(0.5, "MPPI softmax temperature over elite values", min=0.0)
    # --- optimisation -------------------------------------------------------------------
    batch_size: int = option(256, "Sub-trajectories per gradient step", min=1)
    lr: float = option(3e-4, "Adam learning rate", min=0.0)
    enc_lr_scale: float = option(0.3, "Encoder learning-rate multiplier", min=0.0)
    grad_clip_norm: float = option(20.0, "Gradient-norm clipping threshold", min=0.0)
    rho: float = option(0.5, "Temporal discount of the per-step losses over the horizon", min=0.0, max=1.0)
    tau: float = option(0.01, "Polyak coefficient of the target Q-networks", min=0.0, max=1.0)
    entropy_coef: float = option(1e-4, "Policy entropy bonus coefficient", min=0.0)
    consistency_coef: float = option(20.0, "Latent consistency loss weight", min=0.0)
    reward_coef: float = option(0.1, "Reward loss weight", min=0.0)
    value_coef: float = option(0.1, "Value (Q) loss weight", min=0.0)
    termination_coef: float = option(1.0, "Termination loss weight (episodic tasks)", min=0.0)
    discount_denom: float = option(5.0, "Discount heuristic: 1 - 1/(episode_length/discount_denom)", min=0.0)
    discount_min: float = option(0.95, "Lower clip of the heuristic discount", min=0.0, max=1.0)
    discount_max: float = option(0.995, "Upper clip of the heuristic discount", min=0.0, max=1.0)
    # --- runtime ------------------------------------------------------------------------
    device: str = option("auto", "Torch device (auto = cuda if available, else cpu)",
                         choices=("auto", "cpu", "cuda"))
    compile: bool = option(False, "Compile the planner/losses with torch.compile (falls back to eager on failure)")
    cuda_graph: bool = option(False, "Replay each plan from a CUDA graph captured once per batch size (device=cuda "
                                     "only; several times faster on a GPU; other random numbers than eager)")

    def arch(self) -> dict[str, int]:
        """The five architecture sizes: the ``model_size`` table with explicit overrides applied."""
        resolved = dict(MODEL_SIZES[self.model_size])
        for key in ARCH_KEYS:
            if getattr(self, key) is not None:
                resolved[key] = getattr(self, key)
        return resolved

    def validate(self) -> None:
        """Cross-field rules of the agent settings; raises :class:`ConfigError`."""
        latent = self.arch()["latent_dim"]
        _require(latent % self.simnorm_dim == 0,
                 f"latent_dim={latent} must be a multiple of simnorm_dim={self.simnorm_dim}")
        _require(self.vmin < self.vmax, f"vmin={self.vmin} must be < vmax={self.vmax}")
        _require(self.log_std_min < self.log_std_max,
                 f"log_std_min={self.log_std_min} must be < log_std_max={self.log_std_max}")
        _require(self.num_elites < self.num_samples,
                 f"num_elites={self.num_elites} must be < num_samples={self.num_samples} (with every sample an "
                 "elite, MPPI selects nothing)")
        _require(self.num_pi_trajs < self.num_samples,
                 f"num_pi_trajs={self.num_pi_trajs} must be < num_samples={self.num_samples}")
        _require(self.min_std <= self.max_std, f"min_std={self.min_std} must be <= max_std={self.max_std}")
        _require(self.discount_min <= self.discount_max,
                 f"discount_min={self.discount_min} must be <= discount_max={self.discount_max}")
        _require(self.lr > 0, f"lr={self.lr} must be > 0")
        _require(self.discount_denom > 0, f"discount_denom={self.discount_denom} must be > 0")


@dataclasses.dataclass
class RayOptions:
    """Settings of the commands that can spread their work over Ray actors."""

    num_workers: int = option(0, "Ray actors doing the work (0 = run in this process, without Ray)", min=0)
    worker_cpus: float = option(1.0, "CPUs reserved per actor (fractions allowed; sets its torch threads)",
                                min=0.01)
    ray_address: Optional[str] = option(None, "Ray cluster to join, e.g. ray://host:10001 or auto (none = "
                                              "RAY_ADDRESS if set, else start Ray on this machine)")
    scale_wait: float = option(900.0, "Seconds to wait for the autoscaler when only nodes it may add (the "
                                      "cluster's node types) hold the actors, then refuse (0 = refuse at once)",
                               min=0.0)


@dataclasses.dataclass
class TrainConfig(TDMPC2Config, RayOptions):
    """Settings of ``gym-qwen train``: online TD-MPC2 training of one task."""

    command: ClassVar[str] = "train"

    task: str = option("walker-walk", "Task to train on (see `gym-qwen info`)")
    steps: int = option(100_000, "Total environment steps, including action repeat", min=1)
    seed: int = option(1, "Random seed", min=0)
    seed_steps: Optional[int] = option(None, "Random-action decisions before learning "
                                       "(none = max(1000, 5*episode_length))", min=1)
    buffer_size: Optional[int] = option(None, "Replay buffer capacity in transitions (none = steps)", min=1)
    eval_freq: int = option(10_000, "Evaluate every this many environment steps (0 disables)", min=0)
    eval_episodes: int = option(10, "Episodes per evaluation", min=1)
    checkpoint_freq: int = option(10_000, "Checkpoint every this many environment steps (0 = only the final one)",
                                  min=0)
    resume: bool = option(False, "Resume from the run directory's latest checkpoint")
    output_dir: str = option("runs", "Root directory of run directories: a path, or a URI (s3://bucket/prefix, "
                                     "gs://..., any pyarrow filesystem; README, 'Storage on a URI')")
    exp_name: str = option("default", "Experiment name, part of the run directory")
    mlflow: bool = option(True, "Log parameters, metrics and artifacts to MLflow")
    mlflow_experiment: str = option("gym-qwen", "MLflow experiment name")
    system_metrics: bool = option(False, "Also log MLflow's system metrics (CPU, memory, disk, network; GPU with "
                                         "nvidia-ml-py installed) to the run while it runs, every "
                                         "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10 by default)")
    torch_threads: int = option(2, "torch.set_num_threads for this process", min=1)
    progress: bool = option(True, "Show a progress bar")
    num_envs: int = option(1, "Environments per rollout worker (planned as one batch)", min=1)
    chunk_decisions: int = option(50, "Asynchronous workers: decisions played between weight refreshes (the "
                                      "learner runs a chunk's updates before its worker plays on)", min=1)
    sync: bool = option(False, "Lockstep with one worker: weights after every update, equal to num_workers=0 "
                               "step for step (for checking; slow)")
    learner_cpus: float = option(1.0, "CPUs reserved for the learner actor (sets its torch threads)", min=0.01)
    learner: str = option("single", "single: one learner actor; ray_train: a data-parallel learner of "
                                    "learner_workers processes under Ray Train's TorchTrainer (DDP: gloo on the CPU, "
                                    "NCCL on GPUs), each learning from its share of every batch; one update equals "
                                    "the single learner's to float tolerance", choices=("single", "ray_train"))
    learner_workers: int = option(1, "learner=ray_train: processes of the data-parallel learner (one GPU each with "
                                     "device=cuda); batch_size must split evenly over them", min=1)
    learner_log_limit: int = option(256, "learner=ray_train: calls kept for replay after the learner's last "
                                         "checkpoint (a restarted rank replays them; ingest calls pin their "
                                         "episodes). At the limit the learner takes a Ray Train checkpoint of its "
                                         "own and the driver's next call waits for it", min=4)

    def validate(self) -> None:
        """Agent rules plus: ``task`` must be known; ``sync`` needs exactly one worker with one environment;
        ``learner=ray_train`` needs rollout workers and a batch that splits over ``learner_workers``."""
        super().validate()
        if self.learner == "ray_train":
            _require(self.num_workers > 0, "learner=ray_train learns in Ray Train workers fed by Ray rollout workers: "
                                           "give num_workers= (1 or more)")
            _require(not self.sync, "sync=true runs the single learner actor in lockstep: use learner=single")
            _require(self.batch_size % self.learner_workers == 0,
                     f"batch_size={self.batch_size} must split evenly over learner_workers={self.learner_workers}")
        else:
            _require(self.learner_workers == 1, f"learner_workers={self.learner_workers} sets the processes of "
                                                "learner=ray_train: give learner=ray_train too")
        _require(not self.sync or (self.num_workers == 1 and self.num_envs == 1),
                 f"sync=true needs num_workers=1 and num_envs=1 (got num_workers={self.num_workers}, "
                 f"num_envs={self.num_envs})")
        _require(bool(self.output_dir), "output_dir= must not be empty")
        _check_location("output_dir", self.output_dir)
        _require(bool(self.exp_name), "exp_name= must not be empty")
        _check_system_metrics(self)
        check_task(self.task)


@dataclasses.dataclass
class EvaluateConfig(TDMPC2Config, RayOptions):
    """Settings of ``gym-qwen evaluate``: roll out a trained checkpoint."""

    command: ClassVar[str] = "evaluate"

    task: Optional[str] = option(None, "Task to evaluate on (none = the checkpoint's task)")
    checkpoint: str = option("", "Checkpoint file to evaluate, or a registered teacher models:/<name>@<alias> (e.g. "
                                 "models:/walker-walk-teacher@champion) (required)")
    episodes: int = option(10, "Evaluation episodes", min=1)
    mode: str = option("baseline", "Execution mode: baseline (plan every step), prior (the policy prior's mean action, "
                                   "no planner), naive (k planned actions open loop), "
                                   "spec_corrector (k <= H, corrected), spec_extended (k > H, plan extended by the "
                                   "policy prior, corrected), adaptive (replan when ||z - z^|| > mismatch_threshold), "
                                   "async (under control_period_ms=: plan the next chunk from the predicted state "
                                   "while this one runs), stale (under control_period_ms=: the synchronous planner "
                                   "with late plans), all (every mode but the clock's, one comparison table and "
                                   "plot), or one of the original project's names", choices=MODE_CHOICES)
    spec_exec_horizon: Optional[int] = option(None, "k: steps executed per plan at most (none = the mode's default: "
                                              "baseline and prior 1, naive 3, spec_corrector 3, spec_extended 6, adaptive 3)",
                                              min=1)
    spec_plan_horizon: Optional[int] = option(None, "Planning horizon H (none = the teacher's)", min=1)
    spec_exec_horizons: list[int] = option([1, 3, 6], "The k values mode=all compares", min=1)
    corrector_type: str = option("none", "Corrector for spec_corrector, spec_extended, adaptive and async",
                                 choices=CORRECTOR_TYPES)
    corrector_checkpoint: Optional[str] = option(None, "Corrector file, or a registered corrector models:/<name>@"
                                                       "<alias> (none = correctors/<checkpoint stem>-"
                                                       "<corrector_type>.pt in the teacher's folder)")
    mismatch_threshold: float = option(0.5, "adaptive: accept a speculative step while ||z - z^|| <= this (async, "
                                            "when given: a miss cancels the plan in flight)", min=0.0)
    threshold_data: Optional[str] = option(None, "adaptive: choose mismatch_threshold on these collection "
                                                 "episodes (a gym-qwen collect file, never evaluation episodes) as "
                                                 "the smallest whose estimated planner calls per step at the "
                                                 "adaptive k is <= threshold_budget; recorded in output=")
    threshold_budget: float = option(0.33, "With threshold_data=: the planner calls per step the chosen threshold "
                                           "may cost", min=0.0, max=1.0)
    mismatch: str = option("open_loop", "adaptive: compare the real latent with the plan's open-loop latent "
                                        "(open_loop) or with the world model's one-step prediction from the previous "
                                        "real latent and the executed action (one_step)", choices=MISMATCH_KINDS)
    fallback: str = option("plan", "adaptive: on a miss, replan at once (plan) or act with the policy prior for the "
                                    "rest of the chunk's k steps (prior: no planner call until they are spent)",
                           choices=FALLBACKS)
    past_horizon: str = option("extension", "async, when d outlasts the plan's horizon H: past H execute the policy "
                                            "prior's extension of the plan on the predicted latents (extension, "
                                            "open loop, as spec_extended does) or the policy prior at the real "
                                            "latent (prior, closed loop, as stale does)", choices=PAST_HORIZON)
    planner_budget: Optional[str] = option(None, "Plan with this budget, <samples>x<iterations> (e.g. 64x2), instead "
                                                 f"of the teacher's planner; {BUDGET_RULE}")
    history_len: int = option(4, "Mismatch features a corrector sees (must equal the corrector's)", min=1)
    control_period_ms: Optional[float] = option(None, "Run under a clock: the environment takes a decision every this "
                                                      "many ms, planned or not (modes async, stale, baseline, prior; "
                                                      "none = no clock, the environment waits for every plan)")
    planner_latency_ms: str = option(MEASURED, "With control_period_ms=: how long a plan takes, in ms (measured = "
                                               "the planner's median time here, timed before the episodes); a "
                                               "plan started at decision s is ready for decision s + d - 1, d = "
                                               "max(1, ceil(latency / period))")
    realtime: bool = option(False, "With control_period_ms=: run on the wall clock (the planner in a thread of its "
                                   "own, the environment stepped every period, deadline misses counted) instead of "
                                   "the simulated clock")
    planner_threads: Optional[int] = option(None, "realtime=true: torch threads of the planner's thread (none = "
                                                  "torch_threads)", min=1)
    measure_teacher: bool = option(False, "Also run the full planner at every speculative step (a shadow, left out "
                                          "of every count and timing) and report the action error to it")
    num_envs: int = option(1, "Episodes played at once as one batch (B executor rows; >1 changes the random "
                              "numbers, so returns differ from num_envs=1)", min=1)
    planner_budgets: list[str] = option(["64x2", "128x3", "256x4"],
                                        "mode=all: the planner family, one row per budget <samples>x<iterations>, "
                                        f"each replanning every step ({BUDGET_RULE})")
    spec_budgets: int = option(2, "mode=all: speculation (corrected k=H, adaptive) also runs on this many of the "
                                  "cheapest planner budgets", min=0)
    resume: bool = option(False, "With output=: continue from the episodes already in <output stem>.episodes.jsonl "
                                 "(a finished episode never runs again; more episodes= extends the comparison)")
    plot: Optional[str] = option(None, "mode=all: PNG to write (none = docs/speculation-<task>.png; a JSON with the "
                                       "numbers goes beside it)")
    seed: int = option(1, "Random seed", min=0)
    video: bool = option(False, "Record a video of the first episode")
    video_path: Optional[str] = option(None, "Video file (none = next to the checkpoint)")
    output: Optional[str] = option(None, "Write the results to this JSON file, and every episode as it finishes to "
                                         "<output stem>.episodes.jsonl (none = don't)")
    torch_threads: int = option(2, "torch.set_num_threads for this process", min=1)
    mlflow: bool = option(False, "Log the results to MLflow (one run per setting, open while it plays)")
    mlflow_experiment: str = option("gym-qwen", "MLflow experiment name")
    system_metrics: bool = option(False, "Also log MLflow's system metrics (CPU, memory, disk, network; GPU with "
                                         "nvidia-ml-py installed) to the run while it runs, every "
                                         "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10 by default)")
    progress: bool = option(True, "Show a progress bar")

    def validate(self) -> None:
        """``checkpoint`` is required; ``task`` must be known if given; the speculation keys must fit the mode.
        The agent's cross-field rules (num_elites < num_samples, ...) are not checked here: the keys given
        override the checkpoint's settings, so they are checked merged with those (evaluate does that before
        anything runs), never against this schema's defaults."""
        _require(bool(self.checkpoint), "checkpoint= is required")
        _check_system_metrics(self)
        _require(not (self.video and self.num_workers > 0),
                 "video=true records on this machine: use it with num_workers=0")
        _require(not (self.video and self.mode == "all"), "video=true records one setting: not with mode=all")
        if self.task is not None:
            check_task(self.task)
        mode = ALIASES[self.mode][0] if self.mode in ALIASES else self.mode
        _require(not (mode in ("baseline", "prior") and self.spec_exec_horizon not in (None, 1)),
                 f"mode={mode} decides every step afresh: spec_exec_horizon={self.spec_exec_horizon} must be 1 or none")
        _require(not (mode == "prior" and self.corrector_type != "none"),
                 f"mode=prior runs no corrector (corrector_type={self.corrector_type})")
        _require(not (mode == "prior" and self.planner_budget is not None),
                 f"mode=prior never plans: planner_budget={self.planner_budget} does nothing there")
        _require(not (mode == "all" and self.planner_budget is not None),
                 "mode=all runs the planner family of planner_budgets=; planner_budget= is for one setting")
        _require(self.fallback == "plan" or mode == "adaptive",
                 f"fallback={self.fallback} is what adaptive does on a miss: not used by mode={mode} (mode=all runs "
                 "the prior fallback as one of its rows)")
        _require(self.past_horizon == "extension" or mode == "async",
                 f"past_horizon={self.past_horizon} is what async executes past the plan's horizon: not used by "
                 f"mode={mode}")
        _require(self.mismatch == "open_loop" or mode in ("adaptive", "all"),
                 f"mismatch={self.mismatch} is how adaptive verifies a step: not used by mode={mode}")
        _require(not (self.resume and not self.output), "resume=true continues the episodes of output=: give output=")
        _require(self.threshold_data is None or mode in ("adaptive", "all"),
                 f"threshold_data= chooses the adaptive threshold: not used by mode={mode}")
        _require(self.seed + self.episodes <= RESET_SEED_SPAN,
                 f"seed={self.seed} + episodes={self.episodes} must be <= {RESET_SEED_SPAN}: evaluation episodes "
                 "would leave their seed range (gym_qwen/platform/seeds.py)")
        for budget in ([self.planner_budget] if self.planner_budget else []) + list(self.planner_budgets):
            try:
                parse_budget(budget)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        _require(not (mode in ("spec_corrector", "spec_extended") and self.corrector_type == "none"
                      and self.mode not in ALIASES),
                 f"mode={mode} needs a corrector: set corrector_type=two_tower or temporal")
        _require(not (mode in ("baseline", "naive") and self.corrector_type != "none"),
                 f"mode={mode} runs no corrector (corrector_type={self.corrector_type}); use spec_corrector, "
                 "spec_extended or adaptive")
        _require(self.plot is None or self.plot.lower().endswith(".png"), f"plot={self.plot!r} must end in .png")
        self._validate_clock(mode)

    def _validate_clock(self, mode: str) -> None:
        """The clock's keys (control_period_ms, planner_latency_ms, realtime, planner_threads) fit the mode."""
        try:
            latency = parse_latency(self.planner_latency_ms)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        period = self.control_period_ms
        if period is None:
            _require(mode not in CLOCKED_ONLY, f"mode={mode} runs under a clock: give control_period_ms= (the "
                                               "control period in ms)")
            _require(latency is None, f"planner_latency_ms={self.planner_latency_ms} is the clock's: give "
                                      "control_period_ms= too")
            _require(not self.realtime, "realtime=true runs the clock on the wall clock: give control_period_ms=")
        else:
            _require(period > 0, f"control_period_ms={period:g} must be > 0 (the control period in ms)")
            _require(mode in CLOCK_MODES, f"control_period_ms= sets a clock that mode={mode} ignores; the clock's "
                                          f"modes: {', '.join(CLOCK_MODES)}")
            _require(self.num_envs == 1, f"a clock runs one environment at a time: num_envs={self.num_envs} must be 1")
            _require(not self.measure_teacher, f"measure_teacher=true is not measured under a clock (mode={mode})")
        _require(not (mode == "stale" and self.corrector_type != "none"),
                 f"mode=stale is the plain late planner: it runs no corrector (corrector_type={self.corrector_type}); "
                 "use mode=async")
        _require(not (mode in CLOCKED_ONLY and self.spec_exec_horizon not in (None, 1)),
                 f"mode={mode}: the clock's d = ceil(planner_latency_ms / control_period_ms) sets the steps per plan; "
                 f"spec_exec_horizon={self.spec_exec_horizon} does nothing")
        if self.realtime:
            _require(self.num_workers == 0, "realtime=true runs the wall clock in this process: num_workers=0")
            _require(not self.video, "realtime=true: video=true would slow the decisions it times")
        _require(self.planner_threads is None or self.realtime,
                 "planner_threads= is the torch threads of realtime=true's planner thread: give realtime=true")


@dataclasses.dataclass
class InfoConfig(TDMPC2Config):
    """Settings of ``gym-qwen info``: describe a task and the agent built for it."""

    command: ClassVar[str] = "info"

    task: str = option("cheetah-run", "Task to describe")

    def validate(self) -> None:
        """Agent rules plus: ``task`` must be known."""
        super().validate()
        check_task(self.task)


@dataclasses.dataclass
class DemoConfig:
    """Settings of ``gym-qwen demo``: the main job end to end on this machine (local Ray, local MLflow): a sweep
    of speculation settings on a shipped teacher with its shipped correctors, then their comparison."""

    command: ClassVar[str] = "demo"

    teacher: str = option("auto", "The teacher the sweep runs: auto = the shipped walker-walk teacher, a teacher file "
                                  "(its correctors in <its folder>/correctors/, or full=true makes them), or none "
                                  "(train=true only)")
    sweep: str = option("configs/sweeps/demo.yaml", "The sweep file (its checkpoint is replaced by the teacher)")
    trial_episodes: int = option(1, "Episodes of each sweep trial (same seeds in every trial)", min=1)
    max_concurrent: int = option(2, "Sweep trials at once (one CPU and one torch thread each)", min=1)
    full: bool = option(False, "First collect corrector data with the teacher and distill both correctors from "
                               "it (instead of the shipped ones)")
    collect_episodes: int = option(4, "With full=true: collection episodes (at least 3: train, validation and test "
                                      "episodes)", min=3)
    distill_epochs: int = option(50, "With full=true: passes of each corrector over its training rows", min=1)
    num_workers: int = option(2, "With full=true: collection actors (0 = in this process)", min=0)
    train: bool = option(False, "First train a small TD-MPC2 on `task` and evaluate it against random actions "
                                "(the first demo; about 3.5 minutes more)")
    task: str = option("cartpole-balance", "With train=true: the task to train on")
    steps: int = option(12000, "With train=true: environment steps, including action repeat", min=1)
    small: bool = option(True, "With train=true: a small network (latent 64, MLP 128, 128 MPPI samples, 3 "
                               "iterations); small=false trains the model_size network")
    model_size: int = option(1, "With train=true and small=false: model size in millions of parameters",
                             choices=SIZE_CHOICES)
    seed: int = option(1, "Random seed", min=0)
    episodes: int = option(3, "With train=true: evaluation episodes after training", min=1)
    seed_steps: int = option(1000, "With train=true: decisions of random actions before learning starts", min=1)
    output_dir: str = option("runs", "Root directory: the demo writes under <output_dir>/demo/<time>/")
    mlflow: bool = option(True, "Log the training to MLflow (train=true; the sweep always logs)")
    torch_threads: int = option(2, "torch.set_num_threads for this process", min=1)

    def validate(self) -> None:
        """``task`` must be known; the teacher and the sweep file must exist; something must run."""
        _require(bool(self.output_dir), "output_dir= must not be empty")
        check_task(self.task)
        _require(self.teacher in ("auto", "none") or os.path.isfile(self.teacher),
                 f"teacher={self.teacher!r} is not a file; use auto, none or a teacher file such as "
                 "models/walker-walk-size1-seed1.pt")
        _require(self.teacher != "none" or self.train, "teacher=none with train=false runs nothing; give "
                                                        "train=true, or a teacher")
        _require(self.teacher == "none" or os.path.isfile(self.sweep),
                 f"sweep={self.sweep!r} is not a file; the demo's sweep is configs/sweeps/demo.yaml (run the demo "
                 "from the project's folder)")


@dataclasses.dataclass
class TeacherConfig:
    """Settings of ``gym-qwen teacher``: evaluate a finished training run and ship it as a teacher with a card."""

    command: ClassVar[str] = "teacher"

    run: str = option("", "Run directory of a finished training (holds agent.pt), e.g. runs/walker-walk/teacher/seed1")
    name: Optional[str] = option(None, "Teacher name (none = <task>-size<model_size>-seed<seed>)")
    output_dir: str = option("models", "Where teachers and their cards are written")
    episodes: int = option(10, "Evaluation episodes for the card", min=1)
    seed: int = option(1, "Evaluation seed (the card records it)", min=0)
    force: bool = option(False, "Replace a teacher of the same name")
    note: str = option("", "A remark kept on the card (e.g. how the run directory was recovered)")
    mlflow: bool = option(True, "Log the teacher and its card to an MLflow run and register them in its Model "
                                "Registry as <task>-teacher (a new version, alias champion)")
    mlflow_experiment: str = option("gym-qwen", "MLflow experiment name")
    torch_threads: int = option(2, "torch.set_num_threads for this process", min=1)
    progress: bool = option(True, "Show a progress bar")

    def validate(self) -> None:
        """``run`` is required; ``name`` is a plain file stem."""
        _require(bool(self.run), "run= is required (a training run directory holding agent.pt)")
        _require(bool(self.output_dir), "output_dir= must not be empty")
        if self.name is not None:
            _require(bool(self.name) and all(c.isalnum() or c in "-_." for c in self.name)
                     and not self.name.startswith("."),
                     f"name={self.name!r} must be letters, digits, '-', '_' or '.' (a file name stem)")


@dataclasses.dataclass
class CurvesConfig:
    """Settings of ``gym-qwen curves``: our evaluation returns against env steps over the published curves."""

    command: ClassVar[str] = "curves"

    runs: list[str] = option([], "Comma-separated run directories (each with eval.csv and config.yaml)")
    output: str = option("docs/learning-curves.png", "PNG to write (a JSON with the numbers goes beside it)")
    published: str = option("tdmpc2", "Published algorithm to draw (tdmpc2, tdmpc, sac, dreamerv3)",
                            choices=("tdmpc2", "tdmpc", "sac", "dreamerv3"))
    mlflow: bool = option(True, "Log the plot and the numbers to MLflow")
    mlflow_experiment: str = option("gym-qwen", "MLflow experiment name")

    def validate(self) -> None:
        """At least one run; the output is a PNG."""
        _require(len(self.runs) > 0, "runs= is required: comma-separated training run directories")
        _require(self.output.lower().endswith(".png"), f"output={self.output!r} must end in .png")


@dataclasses.dataclass
class DistillConfig:
    """Settings of ``gym-qwen distill``: train learned correctors on corrector data collected with a teacher."""

    command: ClassVar[str] = "distill"

    data: str = option("", "Corrector data file (Parquet, from gym-qwen collect) (required); several, comma-separated, "
                           "train as one (e.g. open-loop and DAgger collections)")
    tdmpc_ckpt: str = option("", "The teacher checkpoint the data was collected with, a file or a registered "
                                 "teacher models:/<name>@<alias> (required; its sha256 must match the data's)")
    save_path: str = option("", "Output stem (required): writes <save_path>-<type>.pt and <save_path>-<type>.json "
                                "per corrector type (a trailing .pt is dropped), e.g. models/walker-walk-size1-seed1 "
                                "-> models/walker-walk-size1-seed1-two_tower.pt")
    corrector_type: str = option("both", "Corrector(s) to train", choices=("two_tower", "temporal", "both"))
    history_len: int = option(4, "Mismatch history length of the temporal corrector (must equal the data's)", min=1)
    epochs: int = option(50, "Passes over the training rows", min=1)
    batch_size: int = option(256, "Rows per gradient step", min=1)
    lr: float = option(3e-4, "AdamW learning rate", min=0.0)
    weight_decay: float = option(1e-4, "AdamW weight decay", min=0.0)
    delta_penalty: float = option(1e-3, "Weight of the mean squared delta added to the MSE loss", min=0.0)
    max_delta: float = option(1.0, "Bound of the correction: delta = max_delta * tanh(...)", min=0.0)
    val_fraction: float = option(0.1, "Fraction of the episodes held out for validation (0 < f < 1)",
                                 min=0.0, max=1.0)
    test_fraction: float = option(0.15, "Fraction of the episodes held out as the test split: never used to choose "
                                        "anything, its error is the one reported (0 < f < 1)", min=0.0, max=1.0)
    label: str = option("mean", "Target action: mean (the final MPPI mean, a_teacher_mean; the default: lower test "
                                "error than sample against both targets on both tasks, BENCHMARKS.md) or sample (the "
                                "elite MPPI picked, Gumbel-sampled: what the planner would execute)",
                        choices=("sample", "mean"))
    seed: int = option(0, "Random seed (split, initialisation, batches)", min=0)
    hidden: int = option(256, "Hidden width of the two-tower corrector", min=1)
    d_model: int = option(128, "Model width of the temporal corrector", min=1)
    max_step_in_chunk: Optional[int] = option(None, "Train only on rows with step_in_chunk <= this (none = all)",
                                              min=1)
    force: bool = option(False, "Replace existing corrector files")
    device: str = option("auto", "Torch device (auto = cuda if available, else cpu)", choices=("auto", "cpu", "cuda"))
    torch_threads: int = option(2, "torch.set_num_threads for this process", min=1)
    progress: bool = option(True, "Show a progress bar")
    mlflow: bool = option(True, "Log parameters and train/val curves to MLflow, and register each corrector in "
                                "its Model Registry as <task>-corrector-<type> (a new version, alias champion)")
    mlflow_experiment: str = option("gym-qwen", "MLflow experiment name")
    system_metrics: bool = option(False, "Also log MLflow's system metrics (CPU, memory, disk, network; GPU with "
                                         "nvidia-ml-py installed) to the run while it runs, every "
                                         "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10 by default)")

    @property
    def data_files(self) -> list[str]:
        """The corrector data files of `data=` (comma-separated: open-loop and DAgger collections together)."""
        return [p.strip() for p in self.data.split(",") if p.strip()]

    def validate(self) -> None:
        """``data``, ``tdmpc_ckpt`` and ``save_path`` are required; 0 < val_fraction < 1; cuda must exist."""
        _require(bool(self.data_files), f"data={self.data!r} names no file: give a corrector data file from "
                                        "gym-qwen collect (several, comma-separated)")
        _require(bool(self.tdmpc_ckpt), "tdmpc_ckpt= is required: the teacher checkpoint the data was collected with")
        _require(bool(self.save_path), "save_path= is required: the output stem, e.g. models/walker-walk-size1-seed1")
        _require(0.0 < self.val_fraction < 1.0, f"val_fraction={self.val_fraction} must be > 0 and < 1")
        _require(0.0 < self.test_fraction < 1.0, f"test_fraction={self.test_fraction} must be > 0 and < 1")
        _require(self.val_fraction + self.test_fraction < 1.0,
                 f"val_fraction={self.val_fraction} + test_fraction={self.test_fraction} leave no training episodes")
        _require(self.lr > 0, f"lr={self.lr} must be > 0")
        _require(self.max_delta > 0, f"max_delta={self.max_delta} must be > 0")
        _check_system_metrics(self)
        if self.device == "cuda":
            _require(torch.cuda.is_available(), "device=cuda was asked for but no CUDA device is available "
                                                "(use device=auto or cpu)")


@dataclasses.dataclass
class CollectConfig(RayOptions):
    """Settings of ``gym-qwen collect``: corrector data from a teacher's speculative chunks (Parquet)."""

    command: ClassVar[str] = "collect"

    checkpoint: str = option("", "Teacher checkpoint (required), e.g. models/walker-walk-size1-seed1.pt")
    task: Optional[str] = option(None, "Task (none = the checkpoint's; another task is refused)")
    episodes: int = option(50, "Collection episodes", min=1)
    output: str = option("", "Parquet file to write (required), e.g. data/walker-walk-corrector.parquet, or a URI "
                             "(s3://bucket/x.parquet; written whole at the end)")
    spec_exec_horizon: int = option(6, "Steps executed per chunk (k); rows at j = 1..k-1, past the plan horizon "
                                       "by plan extension", min=2)
    spec_plan_horizon: Optional[int] = option(None, "Planning horizon (none = the teacher's)", min=1)
    planner_budget: Optional[str] = option(None, "Plan the chunks, and be the teacher, with this budget "
                                                 "<samples>x<iterations> instead of the teacher's planner: data for a "
                                                 f"corrector of that cheap planner ({BUDGET_RULE})")
    history_len: int = option(4, "Mismatch features kept per row (the temporal corrector's window)", min=1)
    min_distance: float = option(0.0, "Drop rows whose latent mismatch is below this", min=0.0)
    max_samples: int = option(-1, "Keep at most this many rows, in episode order (-1 = all)", min=-1)
    async_delay: Optional[int] = option(None, "Collect under the simulated clock in mode=async instead of in chunks: "
                                              "plans take this many decisions (d; spec_exec_horizon is then unused); "
                                              "rows at every speculative step", min=2)
    past_horizon: str = option("extension", "With async_delay=: what async executes past the plan's horizon (as "
                                            "evaluate's past_horizon=; prior: no rows there, the prior acts at the "
                                            "real latent)", choices=PAST_HORIZON)
    seed: int = option(1, "Random seed (episode i resets with seed + i from its kind's range: open loop 20000, DAgger "
                          "30000, async 50000, async DAgger 60000)", min=0)
    force: bool = option(False, "Replace an existing output file")
    resume: bool = option(False, "Continue an interrupted collection from the episode shards beside the output "
                                 "(<output>.parts/), or a finished one from its output (to more episodes=); "
                                 "episodes already there are not run again")
    corrector_type: str = option("none", "DAgger: execute this corrector's actions instead of the planned ones "
                                         "(none = open loop)", choices=CORRECTOR_TYPES)
    corrector_checkpoint: Optional[str] = option(None, "The corrector file (none = correctors/<teacher stem>-<type>.pt "
                                                       "beside the teacher)")
    device: str = option("cpu", "Torch device of the in-process collector", choices=("auto", "cpu", "cuda"))
    torch_threads: int = option(2, "torch.set_num_threads for this process", min=1)
    progress: bool = option(True, "Show a progress bar")

    def validate(self) -> None:
        """``checkpoint`` and ``output`` are required; max_samples is -1 or positive; a corrector file needs a
        corrector type."""
        _require(bool(self.checkpoint), "checkpoint= is required: a teacher checkpoint such as "
                                        "models/walker-walk-size1-seed1.pt")
        _require(bool(self.output), "output= is required: the Parquet file to write")
        _require(self.output.split("?")[0].endswith(".parquet"), f"output={self.output!r} must end in .parquet")
        _check_location("output", self.output)
        if self.planner_budget is not None:
            try:
                parse_budget(self.planner_budget)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        _require(self.past_horizon == "extension" or self.async_delay is not None,
                 f"past_horizon={self.past_horizon} is what async executes past the plan's horizon: give async_delay=")
        _require(self.max_samples != 0, "max_samples=0 would collect nothing; use -1 for all rows")
        _require(self.seed + self.episodes <= RESET_SEED_SPAN,
                 f"seed={self.seed} + episodes={self.episodes} must be <= {RESET_SEED_SPAN}: collection episodes "
                 "would leave their seed range (gym_qwen/platform/seeds.py)")
        _require(self.corrector_checkpoint is None or self.corrector_type != "none",
                 "corrector_checkpoint= needs corrector_type=two_tower or temporal")
        if self.task is not None:
            check_task(self.task)


# --- offline RL: D4RL-format datasets, SAC behaviour policies, Decision Transformer (issue 13) ---------------------
DT_ENVS = ("halfcheetah", "hopper", "walker2d")
DT_LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")


def _check_cuda(device: str) -> None:
    if device == "cuda":
        _require(torch.cuda.is_available(), "device=cuda was asked for but no CUDA device is available "
                                            "(use device=auto or cpu)")


@dataclasses.dataclass
class MakeDatasetConfig:
    """Settings of ``gym-qwen make-dataset``: a D4RL-style dataset made on a Gymnasium MuJoCo v5 task."""

    command: ClassVar[str] = "make-dataset"

    env: str = option("halfcheetah", "Environment (HalfCheetah-v5, Hopper-v5, Walker2d-v5)", choices=DT_ENVS)
    dataset: str = option("random", "D4RL level: random (uniform actions), medium / expert (the SAC behaviour "
                                    "policy, sampled), medium-replay (the medium run's replay recipe), "
                                    "medium-expert (medium then expert)", choices=DT_LEVELS)
    seed: int = option(0, "Seed: episode i resets with seed*1000003+i; one generator draws every action", min=0)
    transitions: int = option(1_000_000, "Rows to write (D4RL: 1M; medium-replay takes its recipe's count, "
                                         "medium-expert writes twice this)", min=1)
    format: str = option("hdf5", "hdf5 (D4RL's layout) or minari (a local Minari dataset)",
                         choices=("hdf5", "minari"))
    output: Optional[str] = option(None, "hdf5: the file (none = data/<env>-<dataset>-v5.hdf5); minari: the dataset "
                                         "id (none = gym-qwen/<env>/<dataset>-v0)")
    minari_root: Optional[str] = option(None, "minari: the datasets root (none = MINARI_DATASETS_PATH or "
                                              "~/.minari/datasets)")
    models_dir: str = option("models/behaviour", "Where the behaviour policies are (<env>-<level>.pt + .json)")
    force: bool = option(False, "Replace an existing output file")
    progress: bool = option(True, "Show a progress bar")

    def validate(self) -> None:
        """The output of hdf5 ends in .hdf5/.h5."""
        if self.format == "hdf5" and self.output is not None:
            _require(self.output.endswith((".hdf5", ".h5")), f"output={self.output!r} must end in .hdf5 or .h5")


@dataclasses.dataclass
class DatasetInfoConfig:
    """Settings of ``gym-qwen dataset-info``: episodes, transitions, returns and normalised score of a dataset."""

    command: ClassVar[str] = "dataset-info"

    path: Optional[str] = option(None, "A D4RL-layout HDF5 file (ours or D4RL's)")
    minari: Optional[str] = option(None, "Or a local Minari dataset id")
    minari_root: Optional[str] = option(None, "Minari datasets root (none = MINARI_DATASETS_PATH or "
                                              "~/.minari/datasets)")
    env: Optional[str] = option(None, "Check that the dataset is of this env (none = as it says or is named)",
                                choices=DT_ENVS)
    json: bool = option(False, "Print the summary as JSON")

    def validate(self) -> None:
        """Exactly one of path= and minari=."""
        _require((self.path is None) != (self.minari is None), "give exactly one of path=FILE.hdf5 or minari=ID")


@dataclasses.dataclass
class BehaviourPolicyConfig:
    """Settings of ``gym-qwen behaviour-policy``: train the SAC policy a D4RL level is sampled from."""

    command: ClassVar[str] = "behaviour-policy"

    env: str = option("halfcheetah", "Environment", choices=DT_ENVS)
    level: str = option("medium", "medium (stops at target_fraction of expert_return; also writes the "
                                  "medium-replay recipe) or expert (trained for all steps)",
                        choices=("medium", "expert"))
    steps: int = option(1_000_000, "Environment steps at most (medium stops earlier at its target)", min=1)
    seed: int = option(0, "Random seed", min=0)
    expert_return: Optional[float] = option(
        None, "The expert return a medium policy is a fraction of (none = D4RL's normalisation maximum, the "
              "return of D4RL's own expert SAC policies on v2: halfcheetah 12135, hopper 3234.3, walker2d 4592.3; "
              "chosen over the v0 reference policies and over our own expert so that a medium dataset means the "
              "same normalised level as D4RL's, whatever our expert reaches)")
    target_fraction: float = option(1 / 3, "medium: stop at the first evaluation whose mean return reaches this "
                                           "fraction of expert_return (D4RL: about one third)", min=0.0, max=1.0)
    learning_starts: int = option(10_000, "Uniform-random steps before learning (rl-zoo's MuJoCo setting)", min=1)
    batch_size: int = option(256, "SAC minibatch", min=1)
    learning_rate: float = option(3e-4, "SAC learning rate (actor, critic, entropy)", min=0.0)
    buffer_size: int = option(1_000_000, "Replay buffer capacity", min=1)
    eval_freq: int = option(10_000, "Evaluate the stochastic policy every this many steps", min=1)
    eval_episodes: int = option(10, "Episodes per evaluation (and for the card)", min=1)
    snapshot_freq: int = option(10_000, "medium: keep the actor every this many steps for the medium-replay recipe",
                                min=1)
    checkpoint_freq: int = option(50_000, "Write the resumable training state every this many steps", min=1)
    resume: bool = option(False, "Continue the run in output_dir from its last checkpoint")
    output_dir: str = option("runs/behaviour", "Root of the run directories (<env>-<level>/seed<seed>/)")
    models_dir: str = option("models/behaviour", "Where the finished policy and its card are written")
    force: bool = option(False, "Replace an existing behaviour policy in models_dir")
    torch_threads: int = option(1, "torch.set_num_threads for this process", min=1)
    progress: bool = option(True, "Show a progress bar")
    mlflow: bool = option(True, "Log parameters and evaluations to MLflow")
    mlflow_experiment: str = option("gym-qwen-behaviour", "MLflow experiment name")
    system_metrics: bool = option(False, "Also log MLflow's system metrics (CPU, memory, disk, network; GPU with "
                                         "nvidia-ml-py installed) to the run while it runs, every "
                                         "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10 by default)")

    def validate(self) -> None:
        """learning_starts < steps; expert_return > 0."""
        _require(self.learning_starts < self.steps, f"learning_starts={self.learning_starts} must be < "
                                                    f"steps={self.steps}")
        _require(self.expert_return is None or self.expert_return > 0,
                 f"expert_return={self.expert_return} must be > 0")
        _check_system_metrics(self)


@dataclasses.dataclass
class DTTrainConfig:
    """Settings of ``gym-qwen dt-train``: a Decision Transformer on one offline dataset (min-decision-transformer's
    options)."""

    command: ClassVar[str] = "dt-train"

    env: str = option("halfcheetah", "Environment (evaluation on its v5 task)", choices=DT_ENVS)
    dataset: str = option("medium", "Level: reads <dataset_dir>/<env>-<dataset>-v5.hdf5 unless data= or minari=",
                          choices=DT_LEVELS)
    data: Optional[str] = option(None, "A D4RL-layout HDF5 file instead (ours or D4RL's own)")
    minari: Optional[str] = option(None, "A local Minari dataset id instead")
    minari_root: Optional[str] = option(None, "Minari datasets root (none = MINARI_DATASETS_PATH)")
    dataset_dir: str = option("data", "Where <env>-<dataset>-v5.hdf5 is looked for")
    rtg_scale: float = option(1000.0, "Returns-to-go are divided by this", min=1e-9)
    rtg_target: Optional[float] = option(None, "Evaluation return-to-go target (none = the DT paper's: halfcheetah "
                                               "6000, hopper 3600, walker2d 5000)")
    max_eval_ep_len: int = option(1000, "Steps per evaluation episode at most", min=1)
    num_eval_ep: int = option(10, "Evaluation episodes after each iteration", min=0)
    log_dir: str = option("dt_runs", "Where checkpoints, the CSV log and the summary go: a path, or a URI "
                                     "(s3://bucket/dt; each file uploaded whole as it changes)")
    context_len: int = option(20, "K: timesteps in the context", min=1)
    n_blocks: int = option(3, "Transformer blocks", min=1)
    embed_dim: int = option(128, "Embedding width", min=1)
    n_heads: int = option(1, "Attention heads", min=1)
    dropout_p: float = option(0.1, "Dropout probability", min=0.0, max=1.0)
    batch_size: int = option(64, "Windows per update", min=1)
    lr: float = option(1e-4, "AdamW learning rate", min=0.0)
    wt_decay: float = option(1e-4, "AdamW weight decay", min=0.0)
    warmup_steps: int = option(10_000, "Linear learning-rate warm-up, in updates", min=1)
    max_train_iters: int = option(100, "Iterations (an evaluation and a checkpoint after each)", min=1)
    num_updates_per_iter: int = option(1000, "Updates per iteration (default: 100 x 1000 = the DT paper's 100k)",
                                       min=1)
    grad_clip: float = option(0.25, "Gradient-norm clip", min=0.0)
    seed: int = option(0, "Random seed (initialisation, batches, dropout; evaluation episode i resets with "
                          "seed + 10000 + i)", min=0)
    device: str = option("auto", "Torch device (auto = cuda if available, else cpu)", choices=("auto", "cpu", "cuda"))
    torch_threads: int = option(2, "torch.set_num_threads for this process", min=1)
    progress: bool = option(True, "Show a progress bar")
    mlflow: bool = option(True, "Log parameters, the loss curve, the evaluation score by update and the "
                                "checkpoints to MLflow")
    mlflow_experiment: str = option("gym-qwen-dt", "MLflow experiment name")
    system_metrics: bool = option(False, "Also log MLflow's system metrics (CPU, memory, disk, network; GPU with "
                                         "nvidia-ml-py installed) to the run while it runs, every "
                                         "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10 by default)")

    def validate(self) -> None:
        """At most one of data= and minari=; heads divide the embedding; cuda must exist."""
        _require(self.data is None or self.minari is None, "give data= or minari=, not both")
        _require(self.embed_dim % self.n_heads == 0,
                 f"embed_dim={self.embed_dim} must be a multiple of n_heads={self.n_heads}")
        _require(self.lr > 0, f"lr={self.lr} must be > 0")
        _check_location("log_dir", self.log_dir)
        _check_system_metrics(self)
        _check_cuda(self.device)


@dataclasses.dataclass
class DTTestConfig(RayOptions):
    """Settings of ``gym-qwen dt-test``: evaluate a Decision Transformer checkpoint on the v5 task."""

    command: ClassVar[str] = "dt-test"

    env: Optional[str] = option(None, "Environment (none = the checkpoint's; another is refused)", choices=DT_ENVS)
    dataset: Optional[str] = option(None, "Level the checkpoint was trained on (none = the checkpoint's; only checked)",
                                    choices=DT_LEVELS)
    chk_pt_dir: str = option("dt_runs", "Directory of the checkpoint")
    chk_pt_name: str = option("", "Checkpoint file in chk_pt_dir, or a path (required)")
    num_eval_ep: int = option(10, "Evaluation episodes", min=1)
    max_eval_ep_len: int = option(1000, "Steps per episode at most", min=1)
    rtg_target: Optional[float] = option(None, "Return-to-go target (none = the checkpoint's)")
    seed: int = option(0, "Episode i resets with seed + 10000 + i", min=0)
    eval_batch: Optional[int] = option(None, "Episodes played at once in one batched forward pass (none = all; 1 = "
                                             "one at a time, which num_workers>0 equals exactly when torch_threads matches the "
                                             "actors' worker_cpus)", min=1)
    output: Optional[str] = option(None, "Write the results to this JSON file")
    device: str = option("cpu", "Torch device", choices=("auto", "cpu", "cuda"))
    torch_threads: int = option(2, "torch.set_num_threads for this process", min=1)
    progress: bool = option(True, "Show a progress bar")

    def validate(self) -> None:
        """chk_pt_name is required; cuda must exist; actors evaluate on CPUs one episode at a time."""
        _require(bool(self.chk_pt_name), "chk_pt_name= is required: a checkpoint written by gym-qwen dt-train")
        _require(not (self.num_workers > 0 and self.eval_batch not in (None, 1)),
                 f"num_workers={self.num_workers} plays one episode at a time per actor: eval_batch must be 1 or none")
        _check_cuda(self.device)


@dataclasses.dataclass
class DTPlotConfig:
    """Settings of ``gym-qwen dt-plot``: training curves of Decision Transformer runs (min-decision-transformer's
    options)."""

    command: ClassVar[str] = "dt-plot"

    env_d4rl_name: str = option("halfcheetah-medium-v5", "Dataset name the runs trained on (their CSV logs are "
                                                         "<log_dir>/dt_<env_d4rl_name>_log_*.csv)")
    log_dir: str = option("dt_runs", "Where dt-train wrote its logs")
    x_key: str = option("num_updates", "Column for the x axis")
    y_key: str = option("eval_d4rl_score", "Column for the score panel (the loss panel is action_loss)")
    smoothing_window: int = option(1, "Rolling mean over this many evaluations", min=1)
    plot_avg: bool = option(False, "Draw the mean over runs (seeds) with its spread instead of each run")
    save_fig: bool = option(False, "Write the PNG (<log_dir>/<env_d4rl_name>[_avg].png unless output=)")
    output: Optional[str] = option(None, "PNG to write (implies save_fig=true)")
    mlflow: bool = option(False, "Log the PNG to MLflow")
    mlflow_experiment: str = option("gym-qwen-dt", "MLflow experiment name")

    def validate(self) -> None:
        """The output is a PNG."""
        _require(self.output is None or self.output.lower().endswith(".png"), f"output={self.output!r} must end "
                                                                            "in .png")


__all__ += ["MakeDatasetConfig", "DatasetInfoConfig", "BehaviourPolicyConfig", "DTTrainConfig", "DTTestConfig",
            "DTPlotConfig"]


# --- sweeps over evaluation settings and their comparison (issue 14) -----------------------------------------------
@dataclasses.dataclass
class SweepConfig:
    """Settings of ``gym-qwen sweep``: a Ray Tune sweep of one command's trials, each logged to MLflow. The sweep
    file (``config=FILE``) gives these keys and the trials (``fixed:``, ``grid:`` or ``families:``); keys given
    on the command line win over the file's."""

    command: ClassVar[str] = "sweep"

    file: str = option("", "The sweep file (YAML; `config=FILE` says the same): see configs/sweeps/")
    experiment: Optional[str] = option(None, "MLflow experiment and the sweep's folder under storage (none = the "
                                             "sweep file's name)")
    trial_command: str = option("evaluate", "The command each trial runs: evaluate (a speculation setting), train "
                                            "(a TD-MPC2 training), dt-train (a Decision Transformer)",
                                choices=("evaluate", "train", "dt-train"))
    scheduler: str = option("none", "Early stopping of training trials: asha (Tune's ASHA on each evaluation: "
                                    "train's eval return, dt-train's D4RL score) or none", choices=("none", "asha"))
    asha_grace: int = option(1, "scheduler=asha: evaluations every trial gets before it can be stopped", min=1)
    asha_reduction: int = option(2, "scheduler=asha: keep the best 1/N of trials at each rung", min=2)
    search: str = option("grid", "grid: every point of the grids; optuna: a multi-objective Optuna search of the "
                                 "file's space: (Tune's OptunaSearch)", choices=("grid", "optuna"))
    num_trials: int = option(16, "search=optuna: trials the search runs", min=1)
    objectives: list[str] = option(["return_mean:max", "planner_calls_per_step:min"],
                                   "search=optuna: the metrics whose front it traces, METRIC:max|min (comma-separated)")
    search_seed: int = option(0, "search=optuna: seed of Optuna's sampler (the same seed chooses the same points "
                                 "from the same results)", min=0)
    max_concurrent: int = option(0, "Trials running at once (0 = as many as the cluster holds)", min=0)
    max_failures: int = option(2, "Retries of a trial that errors (it continues from its last finished episode)",
                               min=0)
    trial_cpus: float = option(1.0, "CPUs each trial holds (evaluator actors of num_workers= hold worker_cpus "
                                    "each on top)", min=0.01)
    trial_gpus: float = option(0.0, "GPUs each trial holds (fractions share one GPU between trials; its "
                                    "evaluation runs there with device=auto)", min=0.0)
    storage: str = option("runs/sweeps", "Where Tune keeps the sweep's state: <storage>/<experiment>/; a path, or "
                                         "a URI (s3://bucket/prefix, gs://..., any pyarrow filesystem)")
    resume: bool = option(False, "Continue the interrupted sweep in <storage>/<experiment>/ (finished trials are "
                                 "not run again; errored ones are retried)")
    dry_run: bool = option(False, "Check the sweep file, list its trials and stop")
    system_metrics: bool = option(False, "Also log MLflow's system metrics (CPU, memory, disk, network; GPU with "
                                         "nvidia-ml-py installed) to every trial's run while it runs, every "
                                         "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10 by default)")
    ray_address: Optional[str] = option(None, "Ray cluster to join (none = RAY_ADDRESS if set, else start Ray on "
                                              "this machine)")
    scale_wait: float = option(900.0, "Seconds to wait for the autoscaler when only nodes it may add (the "
                                      "cluster's node types) hold a trial, then refuse (0 = refuse at once)",
                               min=0.0)

    def validate(self) -> None:
        """The sweep file is required; names are not empty."""
        _require(bool(self.file), "config=SWEEP.yaml is required: the sweep file (see configs/sweeps/)")
        _require(self.experiment is None or bool(self.experiment.strip()), "experiment= must not be empty")
        _require(bool(self.storage), "storage= must not be empty")
        _check_location("storage", self.storage)
        _require(bool(self.objectives), "objectives= must name at least one METRIC:max|min")


@dataclasses.dataclass
class CompareConfig:
    """Settings of ``gym-qwen compare``: the table, Pareto front and plot of evaluation runs in MLflow (a sweep's
    trials or `gym-qwen evaluate ... mlflow=true` runs)."""

    command: ClassVar[str] = "compare"

    experiment: list[str] = option([], "MLflow experiments to compare (comma-separated)")
    sweep: list[str] = option([], "Or sweep ids (printed by gym-qwen sweep; comma-separated)")
    task: Optional[str] = option(None, "Only this task (none = one table per task)")
    output: Optional[str] = option(None, "The plot (PNG; a CSV of the table goes beside it; none = "
                                         "compare-<first experiment or sweep>.png)")
    unfinished: bool = option(False, "Also show runs that have not finished (their numbers cover fewer episodes)")
    log: bool = option(True, "Log the PNG and CSV to the sweep's parent MLflow run")

    def validate(self) -> None:
        """An experiment or a sweep; a PNG."""
        _require(bool(self.experiment or self.sweep), "give experiment=NAME or sweep=ID (comma-separated for "
                                                      "several)")
        _require(self.output is None or self.output.lower().endswith(".png"),
                 f"output={self.output!r} must end in .png")


__all__ += ["SweepConfig", "CompareConfig"]
