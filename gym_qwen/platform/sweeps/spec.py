"""The sweep file: which command's keys a sweep sets, fixed for every trial or swept in grids, and how the sweep
runs. Read and checked in full before anything starts: every trial's keys are built into the command's own config
(EvaluateConfig), so a sweep refuses exactly what the command refuses, in one line that names the place.

    # configs/sweeps/NAME.yaml
    trial_command: evaluate    # the command each trial runs (evaluate, train or dt-train)
    experiment: NAME           # the MLflow experiment and the sweep's folder under storage (none = the file's stem)
    search: grid               # grid (every point) or optuna (not built yet)
    max_concurrent: 2          # trials at once (0 = as many as the cluster holds)
    max_failures: 2            # retries of a trial that errors
    trial_cpus: 1              # CPUs each trial holds (its evaluator actors hold worker_cpus each on top)
    fixed:                     # keys every trial shares
      checkpoint: models/walker-walk-size1-seed1.pt
      episodes: 4
    families:                  # the trials: the union of these grids (a list is swept, a scalar is fixed)
      speculation: {mode: naive, spec_exec_horizon: [3, 6], seed: [1, 2]}
      cheap_planner: {mode: baseline, num_samples: [64, 128], iterations: [1, 2]}

`grid:` (one mapping) is shorthand for a single family named `grid`. Points equal after defaults are run once.

With `search: optuna` the file gives a `space:` instead of grids, and Optuna (through Tune's searcher) chooses
`num_trials` points of it, tracing the front of the `objectives` (default: most return, fewest planner calls):

    search: optuna
    num_trials: 16
    fixed: {checkpoint: models/walker-walk-size1-seed1.pt, mode: adaptive, episodes: 2}
    space:
      mismatch_threshold: {low: 0.05, high: 1.0, log: true}   # a float range (ints: an int range)
      spec_exec_horizon: [3, 4, 6]                            # a list: one of these values
      corrector_type: [none, two_tower, temporal]

Every corner of the space (each list value with each range's ends) is built and checked before anything starts.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from ..config import _fields, config_from_dict, config_to_dict, read_preset
from ..config_schema import ConfigError, DTTrainConfig, EvaluateConfig, SweepConfig, TrainConfig
from .trial import METRICS

MAPPING_KEYS = ("fixed", "grid", "families", "space")
# Keys a trial cannot take, per trial command: the sweep logs every trial to MLflow itself, gives each trial its own
# folder, and runs trials on its own Ray
_SWEEP_OWNS = {
    "mlflow": "the sweep logs every trial to MLflow itself",
    "mlflow_experiment": "the sweep's experiment= names the MLflow experiment",
    "system_metrics": "the sweep's own system_metrics=true logs them for every trial",
    "progress": "trials show no progress bars; the sweep prints a line per trial",
    "ray_address": "trials run on the sweep's Ray (the sweep's own ray_address=)",
    "scale_wait": "the sweep waits for the autoscaler before its trials start (the sweep's own scale_wait=)",
}
NOT_SWEPT = {
    "evaluate": {
        **_SWEEP_OWNS,
        "output": "the trial's numbers are in MLflow (and its per-episode table)",
        "plot": "gym-qwen compare draws the plot",
        "video": "a trial records no video",
        "video_path": "a trial records no video",
        "spec_exec_horizons": "it belongs to mode=all; sweep spec_exec_horizon instead",
        "cheap_num_samples": "it belongs to mode=all; sweep num_samples with mode=baseline instead",
        "cheap_iterations": "it belongs to mode=all; sweep iterations with mode=baseline instead",
        "num_envs": "a trial plays one episode at a time, so that an interrupted trial continues with the same "
                    "records (num_workers= spreads them over evaluator actors)",
    },
    "train": {
        **_SWEEP_OWNS,
        "output_dir": "each trial trains in its own folder of the sweep (<storage>/<experiment>/trial-NNN/run)",
        "exp_name": "each trial trains in its own folder of the sweep",
        "resume": "a retried or restored trial resumes its own run by itself",
        "num_workers": "a training trial collects in its own process (trials run side by side instead)",
        "sync": "a training trial collects in its own process",
        "num_envs": "a training trial collects in its own process",
    },
    "dt-train": {
        **_SWEEP_OWNS,
        "log_dir": "each trial writes into its own folder of the sweep (<storage>/<experiment>/trial-NNN/dt)",
    },
}
# What a training trial reports after each evaluation, by command: the metric early stopping judges (higher is
# better) and the metric that counts its progress
TRAINING_COMMANDS = {"train": "eval_return", "dt-train": "d4rl_score"}


# Keys a search space cannot vary: the trial's resources (Tune fixes them before a point is chosen), its teacher,
# and its episodes and seed (every point is judged on the same episodes)
NOT_SEARCHED = ("num_workers", "worker_cpus", "torch_threads", "device", "checkpoint", "episodes", "seed")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One key of a search space: `values` to choose from, or a range [low, high] (ints or floats, log-scaled when
    `log`)."""

    key: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def corners(self) -> list:
        return list(self.values) if self.values else [self.low, self.high]

    def describe(self) -> str:
        if self.values:
            return f"{self.key} in {{{', '.join(map(str, self.values))}}}"
        return f"{self.key} in [{self.low}, {self.high}]" + (" (log)" if self.log else "")


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One trial: its family, the keys it sets (fixed + its grid values, as the file gives them) and the
    command's config built from them."""

    family: str
    values: dict
    swept: dict
    cfg: Any

    @property
    def name(self) -> str:
        return f"{self.family}: " + (" ".join(f"{k}={v}" for k, v in self.swept.items()) or "(fixed keys)")

    def place(self, path: str) -> str:
        """Where this trial is, for a one-line error: the sweep file, the family and the trial's keys."""
        return f"sweep file {path!r}, family {self.family!r}, trial {self.name.split(': ', 1)[1]}"


@dataclasses.dataclass
class Sweep:
    """A checked sweep file with its command-line overrides applied."""

    path: str
    settings: Any  # SweepConfig
    fixed: dict
    families: dict
    points: list  # grid: the trials; optuna: the corners of the space (checked, not run as such)
    notes: list
    space: tuple = ()  # optuna: the Dimensions searched
    objectives: tuple = ()  # optuna: (metric, "max" | "min") pairs

    @property
    def experiment(self) -> str:
        return self.settings.experiment or Path(self.path).stem

    @property
    def searched(self) -> bool:
        return self.settings.search == "optuna"

    @property
    def num_trials(self) -> int:
        return self.settings.num_trials if self.searched else len(self.points)

    @property
    def fingerprint(self) -> str:
        """sha256 of the trials (family and keys of each; a search's space, budget and objectives): a resumed
        sweep must run the same trials."""
        what: Any = [[p.family, p.values] for p in self.points]
        if self.searched:
            what = {"fixed": self.fixed, "space": [dataclasses.asdict(d) for d in self.space],
                    "num_trials": self.settings.num_trials, "objectives": self.objectives,
                    "search_seed": self.settings.search_seed}
        canon = json.dumps(what, sort_keys=True, default=str)
        return hashlib.sha256(canon.encode()).hexdigest()


def _where(path: str, family: str | None = None) -> str:
    return f"sweep file {path!r}" + (f", family {family!r}" if family else "")


def _unknown(key: str, valid, where: str, what: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}; valid {what}: {', '.join(valid)}")


def _mapping(value: Any, where: str, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key}: must be a mapping of key: value, not {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _check_keys(keys, schema, where: str) -> None:
    valid, refused = list(_fields(schema)), NOT_SWEPT[schema.command]
    for key in keys:
        if key in refused:
            raise ConfigError(f"{where}: {key} cannot be set in a sweep: {refused[key]}")
        if key not in valid:
            raise _unknown(key, [k for k in valid if k not in refused], where, f"{schema.command} keys")


def expand_family(name: str, grid: dict, where: str) -> list[dict]:
    """The points of one grid: the product of its lists (a scalar is one value), in file order."""
    if not grid:
        raise ConfigError(f"{where}: family {name!r} is empty: give it at least one key")
    axes = []
    for key, value in grid.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise ConfigError(f"{where}, family {name!r}: {key}: [] is an empty grid; give it at least one value")
        if isinstance(value, (list, tuple)) and len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{where}, family {name!r}: {key}: {value} lists a value twice")
        axes.append([(key, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)]


def _short(values: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def load_sweep(path: str, command_line: dict | None = None, fixed_over: dict | None = None) -> Sweep:
    """Read and check the sweep file at `path`; `command_line` holds the SweepConfig keys given on the command
    line (they win over the file's); `fixed_over`, trial keys set over the file's `fixed:` (the demo's teacher).
    ConfigError (one line naming the file, family and key) on any problem."""
    if not path:
        raise ConfigError("config=SWEEP.yaml is required: the sweep file (see configs/sweeps/)")
    data = read_preset(path)
    where = _where(path)

    top = [k for k in _fields(SweepConfig) if k not in ("file", "resume", "dry_run")]
    for key in data:
        if key not in MAPPING_KEYS and key not in top:
            raise _unknown(key, [*top, *MAPPING_KEYS], where, "sweep file keys")
    scalars = {k: v for k, v in data.items() if k not in MAPPING_KEYS}
    try:
        settings = config_from_dict(SweepConfig, {**scalars, **(command_line or {}), "file": path})
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    schema = _command_schema(settings.trial_command)
    if settings.scheduler == "asha" and settings.trial_command not in TRAINING_COMMANDS:
        raise ConfigError(f"{where}: scheduler: asha stops trainings early; it needs trial_command: train or "
                          f"dt-train, not {settings.trial_command}")
    if settings.search == "optuna" and settings.trial_command != "evaluate":
        raise ConfigError(f"{where}: search: optuna searches evaluation settings (trial_command: evaluate); sweep "
                          f"{settings.trial_command} trials with a grid")
    fixed = {**_mapping(data.get("fixed"), where, "fixed"), **(fixed_over or {})}
    _check_keys(fixed, schema, f"{where}, fixed")
    if settings.search == "optuna":
        return _searched_sweep(path, data, settings, schema, fixed)
    if "space" in data:
        raise ConfigError(f"{where}: space: is for search: optuna; a grid search sweeps grid: or families:")
    if "grid" in data and "families" in data:
        raise ConfigError(f"{where}: give grid: (one family) or families: (several), not both")
    if "families" in data:
        families = _mapping(data["families"], where, "families")
        if not families:
            raise ConfigError(f"{where}: families: is empty; give at least one family of grid keys")
    elif "grid" in data:
        families = {"grid": _mapping(data["grid"], where, "grid")}
    else:
        raise ConfigError(f"{where}: no trials: give grid: (key: [values]) or families: (name: grid)")
    points, seen, notes = [], {}, []
    for name, grid in families.items():
        fwhere = _where(path, name)
        grid = _mapping(grid, where, f"families: {name}")
        _check_keys(grid, schema, fwhere)
        clash = sorted(set(grid) & set(fixed))
        if clash:
            raise ConfigError(f"{fwhere}: {clash[0]} is both fixed and swept; keep it in one place")
        for swept in expand_family(name, grid, where):
            values = {**fixed, **swept}
            cfg = _point_config(schema, values, f"{fwhere}, trial {_short(swept) or '(fixed keys)'}")
            if getattr(cfg, "mode", None) == "all":
                raise ConfigError(f"{fwhere}: mode=all compares inside one process; list the modes in the grid")
            canon = json.dumps(config_to_dict(cfg), sort_keys=True, default=str)
            if canon in seen:
                notes.append(f"{name}: {_short(swept)} is the same trial as {seen[canon]}: run once")
                continue
            seen[canon] = f"{name}: {_short(swept)}"
            points.append(SweepPoint(name, values, swept, cfg))
    return Sweep(path, settings, fixed, families, points, notes)


def _point_config(schema, values: dict, where: str):
    try:
        return config_from_dict(schema, values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_objectives(text: list, where: str) -> tuple:
    """(metric, "max" | "min") pairs of `objectives=` entries such as return_mean:max."""
    out = []
    for entry in text:
        metric, _, direction = str(entry).partition(":")
        if metric not in METRICS:
            raise _unknown(metric, METRICS, f"{where}: objectives", "metrics")
        if direction not in ("max", "min"):
            raise ConfigError(f"{where}: objectives: {entry!r} must be METRIC:max or METRIC:min")
        out.append((metric, direction))
    if len({m for m, _ in out}) != len(out):
        raise ConfigError(f"{where}: objectives: {', '.join(map(str, text))} names a metric twice")
    return tuple(out)


def parse_dimension(key: str, value: Any, where: str) -> Dimension:
    """A space entry: a list of values, or {low, high[, log]}."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{where}: {key}: [] is an empty choice; give at least one value")
        if len(set(map(repr, value))) != len(value):
            raise ConfigError(f"{where}: {key}: {list(value)} lists a value twice")
        return Dimension(key, values=tuple(value))
    if not isinstance(value, dict) or set(value) - {"low", "high", "log"} or not {"low", "high"} <= set(value):
        raise ConfigError(f"{where}: {key}: give a list of values or a range {{low: L, high: H[, log: true]}}, "
                          f"not {value!r}")
    low, high, log = value["low"], value["high"], value.get("log", False)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers or low >= high:
        raise ConfigError(f"{where}: {key}: low={low!r} and high={high!r} must be numbers with low < high")
    if not isinstance(log, bool) or (log and low <= 0):
        raise ConfigError(f"{where}: {key}: log: must be true or false, and a log range needs low > 0")
    if isinstance(low, int) and isinstance(high, int):
        return Dimension(key, low=int(low), high=int(high), log=log)
    return Dimension(key, low=float(low), high=float(high), log=log)


def _searched_sweep(path: str, data: dict, settings, schema, fixed: dict) -> Sweep:
    """A search: parse its space and check every corner of it as a trial of the command."""
    where = _where(path)
    for key in ("grid", "families"):
        if key in data:
            raise ConfigError(f"{where}: search: optuna chooses the points of space:; {key}: is for search: grid")
    raw = _mapping(data.get("space"), where, "space")
    if not raw:
        raise ConfigError(f"{where}: search: optuna needs a space: (key: [values] or key: {{low: L, high: H}})")
    _check_keys(raw, schema, f"{where}, space")
    for key in raw:
        if key in NOT_SEARCHED:
            raise ConfigError(f"{where}, space: {key} cannot be searched (every point runs with the same "
                              "resources, teacher, episodes and seed); put it in fixed:")
        if key in fixed:
            raise ConfigError(f"{where}, space: {key} is both fixed and searched; keep it in one place")
    space = tuple(parse_dimension(k, v, f"{where}, space") for k, v in raw.items())
    objectives = parse_objectives(settings.objectives, where)
    points = []
    for combo in itertools.product(*[[(d.key, v) for v in d.corners] for d in space]):
        swept = dict(combo)
        cfg = _point_config(schema, {**fixed, **swept}, f"{where}, space corner {_short(swept)}")
        if getattr(cfg, "mode", None) == "all":
            raise ConfigError(f"{where}: mode=all compares inside one process; search the modes in space:")
        points.append(SweepPoint("optuna", {**fixed, **swept}, swept, cfg))
    return Sweep(path, settings, fixed, {}, points, [], space, objectives)


def _command_schema(command: str):
    return {"evaluate": EvaluateConfig, "train": TrainConfig, "dt-train": DTTrainConfig}[command]
