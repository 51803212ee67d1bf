"""One trial's setting: what `gym-qwen evaluate` would run for the same keys (the agent overrides, the
ExecutionSpec, the corrector), resolved against the teacher checkpoint, and checked for every trial before the
sweep starts anything."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import TrainConfig, config_from_dict
from ..config_schema import ConfigError, TDMPC2Config
from ..files import sha256_of
from ..speculative.comparison import resolve_mode, single_spec
from ..speculative.correctors import CorrectorError, load_corrector
from ..speculative.modes import PLANNER_KEYS  # noqa: F401  (re-exported: the sweep code names it from here)
from ..speculative.modes import ExecutionSpec, budget_overrides, parse_budget
from ..tdmpc2.checkpoints import check_compatible, check_overrides, load_checkpoint
from ..torch_files import CheckpointError

AGENT_KEYS = frozenset(f.name for f in dataclasses.fields(TDMPC2Config)) - {"device"}


@dataclasses.dataclass(frozen=True)
class TrialSetting:
    """What one trial runs: agent overrides, the ExecutionSpec, and the names it is logged and compared by."""

    checkpoint: str  # absolute
    overrides: dict
    spec: object  # ExecutionSpec
    planner: dict  # the planner keys the trial sets (the cheap planner's), {} for the teacher's own planner
    note: str | None = None

    @property
    def label(self) -> str:
        s = self.spec
        return ExecutionSpec(s.settings, s.corrector_type, s.corrector_checkpoint, tuple(self.planner.items()),
                             clock=s.clock).label


def absolute(path: str | None, workdir: str | Path) -> str | None:
    """`path` relative to the sweep's working directory (trials run in folders of their own)."""
    if path is None:
        return None
    p = Path(path)
    return str(p if p.is_absolute() else Path(workdir) / p)


def agent_overrides(cfg, given: set, resolved: dict) -> dict:
    """The agent keys the user set (`given`), which override the checkpoint's, with spec_plan_horizon as the
    planner's horizon (`resolved`: resolve_mode's answer). ConfigError when horizon= says otherwise."""
    overrides = {k: getattr(cfg, k) for k in sorted(given & AGENT_KEYS)}
    budget = getattr(cfg, "planner_budget", None)
    if budget is not None:
        scaled = budget_overrides(*parse_budget(budget))
        clash = sorted(set(scaled) & set(overrides))
        if clash:
            raise ConfigError(f"planner_budget={budget} sets {', '.join(clash)}: give one or the other")
        overrides.update(scaled)
    if resolved["plan"] is not None:
        if "horizon" in overrides and overrides["horizon"] != resolved["plan"]:
            raise ConfigError(f"horizon={overrides['horizon']} and spec_plan_horizon={resolved['plan']} disagree")
        overrides["horizon"] = resolved["plan"]
    return overrides


def planning_horizon(ckpt: dict, overrides: dict) -> int:
    """The horizon the teacher of `ckpt` plans with under agent `overrides` (horizon= wins over the checkpoint's)."""
    return int(overrides.get("horizon", ckpt["config"].get("horizon", 3)))


def resolve_setting(cfg, given: set, ckpt: dict, workdir: str | Path) -> TrialSetting:
    """The setting `gym-qwen evaluate` runs for `cfg` (an EvaluateConfig whose explicitly set keys are `given`)
    on the checkpoint `ckpt`: agent overrides, alias resolution, spec_plan_horizon, the mode's default k, and the
    corrector file (beside the teacher unless corrector_checkpoint= names one). ConfigError if it cannot run."""
    checkpoint = absolute(cfg.checkpoint, workdir)
    cfg = dataclasses.replace(cfg, checkpoint=checkpoint,
                              corrector_checkpoint=absolute(cfg.corrector_checkpoint, workdir))
    resolved, note = resolve_mode(cfg)
    overrides = agent_overrides(cfg, given, resolved)
    teacher_horizon = planning_horizon(ckpt, overrides)
    spec = single_spec(cfg, resolved, teacher_horizon, given)
    planner = {k: v for k, v in overrides.items() if k in PLANNER_KEYS}
    return TrialSetting(checkpoint, overrides, spec, planner, note)


def resolve_sweep(sweep, workdir: str | Path) -> tuple[list[TrialSetting], dict]:
    """Every trial's TrialSetting, each checkpoint read once and each corrector loaded once against its teacher:
    a trial that could not run fails here, before the sweep starts. Returns (settings, {checkpoint: sha256})."""
    ckpts, shas, correctors, settings = {}, {}, set(), []
    for point in sweep.points:
        where = point.place(sweep.path)
        try:
            path = absolute(point.cfg.checkpoint, workdir)
            if path not in ckpts:
                ckpts[path] = load_checkpoint(path)
                shas[path] = sha256_of(path)
            ckpt = ckpts[path]
            check_compatible(ckpt, task=point.cfg.task, path=point.cfg.checkpoint)
            setting = resolve_setting(point.cfg, set(point.values), ckpt, workdir)
            check_overrides(ckpt, setting.overrides, point.cfg.checkpoint)
            spec = setting.spec
            if spec.corrector_checkpoint and (spec.corrector_checkpoint, spec.settings.history_len) not in correctors:
                latent = config_from_dict(TrainConfig, ckpt["config"]).arch()["latent_dim"]
                load_corrector(spec.corrector_checkpoint, teacher_sha256=shas[path], latent_dim=latent,
                               history_len=spec.settings.history_len)
                correctors.add((spec.corrector_checkpoint, spec.settings.history_len))
        except (ConfigError, CorrectorError, CheckpointError) as e:
            raise ConfigError(f"{where}: {' '.join(str(e).split())}") from None
        settings.append(setting)
    return settings, shas
