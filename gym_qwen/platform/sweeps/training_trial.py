"""One training trial of a sweep without Ray: a TD-MPC2 training (`trial_command: train`) or a Decision Transformer
(`trial_command: dt-train`) in the trial's own folder, logging to the trial's nested MLflow run and handing the
numbers of every evaluation to `report` (Tune's early stopping judges them).

A retried or restored trial continues: a TD-MPC2 run resumes from the last checkpoint in its folder (resume=true),
a Decision Transformer (minutes, not hours) starts again in a fresh folder; either way it logs into the run its
trial id finds, never a step twice.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Callable

from ..config import config_from_dict
from ..config_schema import ConfigError, DTTrainConfig, TrainConfig
from ..dt.train import dataset_path, train_dt
from ..storage import exists, is_uri, join, read_bytes
from ..tracking import Tracker, client
from ..training.run import STATE_FILE, run_location, train
from .runs import PARENT_TAG, ROLE_TAG, SWEEP_TAG, TRIAL_TAG, find_run
from .setting import absolute
from .spec import TRAINING_COMMANDS

RUN_FOLDER = {"train": "run", "dt-train": "dt"}


DATA_PATH_KEYS = ("data", "dataset_dir", "minari_root")  # dt-train's paths, relative to the sweep's folder


def training_trial_config(command: str, values: dict, trial_dir: Path, experiment: str, workdir: str | Path = ".",
                          output_root: Path | str | None = None):
    """The command's config for a trial's keys: its folder inside the trial's (`output_root`, default `trial_dir`:
    a local folder, or a URI for a sweep on URI storage), MLflow on (the sweep's experiment), no progress bar,
    data paths taken from `workdir` (where the sweep was started; Tune runs a trial elsewhere); a TD-MPC2 trial
    resumes the run its folder already holds."""
    root = trial_dir if output_root is None else output_root
    folder = join(root, RUN_FOLDER[command])
    common = {"mlflow": True, "mlflow_experiment": experiment, "progress": False}
    if command == "train":
        cfg = config_from_dict(TrainConfig, {**values, **common, "output_dir": folder, "exp_name": "trial"})
        state = join(run_location(cfg), STATE_FILE)
        return dataclasses.replace(cfg, resume=exists(state) if is_uri(state) else Path(state).exists())
    cfg = config_from_dict(DTTrainConfig, {**values, **common, "log_dir": join(folder, time.strftime("%Y%m%d-%H%M%S"))})
    return dataclasses.replace(cfg, **{k: absolute(getattr(cfg, k), workdir) for k in DATA_PATH_KEYS
                                       if getattr(cfg, k)})


def planned_evaluations(command: str, cfg) -> int:
    """How many evaluations a whole trial makes: early stopping's last rung."""
    if command == "train":
        return max(1, cfg.steps // cfg.eval_freq) if cfg.eval_freq > 0 else 1
    return cfg.max_train_iters


def run_training_trial(command: str, values: dict, *, trial_dir: Path, workdir: str, uri: str, experiment: str,
                       experiment_id: str, parent_run_id: str, sweep_id: str, trial_id: str, family: str,
                       report: Callable[[dict], None], source_tags: dict | None = None,
                       system_metrics: bool = False, output_root: Path | str | None = None) -> dict:
    """Run (or continue) one training trial; `report(metrics)` after each evaluation, with `evaluations` (how many
    so far: early stopping's clock) and the command's judged metric (TRAINING_COMMANDS). Returns the summary.
    `trial_dir` holds the trial's log; the run goes under `output_root` (default `trial_dir`; a URI on URI storage).
    `source_tags`: the sweep driver's (tracking.source_tags), for a new run; `system_metrics` logs MLflow's
    system metrics to the run while the trial trains."""
    os.environ["MLFLOW_TRACKING_URI"] = uri  # the trainers' Tracker reads it (this is the trial's own process)
    started = time.perf_counter()
    cfg = training_trial_config(command, values, trial_dir, experiment, workdir, output_root)
    tags = {**(source_tags or {}), SWEEP_TAG: sweep_id, TRIAL_TAG: trial_id, PARENT_TAG: parent_run_id,
            ROLE_TAG: "trial", "family": family}
    earlier = find_run(client(uri), experiment_id, {SWEEP_TAG: sweep_id, TRIAL_TAG: trial_id})
    tracker = Tracker(True, experiment, tags=tags, continue_run=earlier.info.run_id if earlier else None,
                      system_metrics=system_metrics)
    evaluations = [_evaluations_made(command, cfg)]  # a resumed training's count on early stopping's clock
    planned, last = planned_evaluations(command, cfg), []

    def send(metrics: dict) -> None:
        evaluations[0] += 1
        numbers = {**{k: v for k, v in metrics.items() if v is not None}, "evaluations": evaluations[0],
                   "trial_seconds": time.perf_counter() - started}
        if evaluations[0] >= planned:  # held back until the run is written: Tune ends a trial at its last rung
            last.append(numbers)
        else:
            report(numbers)

    # the trainers' own lines (evaluations, progress) go to the trial's log, not to the sweep's output
    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / "trial.log", "a") as log, contextlib.redirect_stdout(log):
        summary = _train(command, cfg, tracker, send)
    if last:
        report({**last[-1], "trial_seconds": time.perf_counter() - started})
    return summary


def _evaluations_made(command: str, cfg) -> int:
    """The evaluations a resumed TD-MPC2 run made before (the rows of its eval.csv); 0 for anything else."""
    if command != "train" or not cfg.resume:
        return 0

    done = join(run_location(cfg), "eval.csv")
    if is_uri(done):
        text = read_bytes(done).decode() if exists(done) else ""
    else:
        text = Path(done).read_text() if Path(done).exists() else ""
    return max(0, len(text.splitlines()) - 1)


def _train(command: str, cfg, tracker, send: Callable[[dict], None]) -> dict:
    if command == "train":
        def on_evaluation(record: dict) -> None:
            send({"eval_return": record["return_mean"], "eval_return_std": record["return_std"],
                  "env_steps": record["env_steps"]})

        return train(cfg, tracker=tracker, on_evaluation=on_evaluation)


    def on_dt_evaluation(row: dict, evaluation: dict | None) -> None:
        metric = {TRAINING_COMMANDS["dt-train"]: evaluation["normalized_mean"]} if evaluation else {}
        send({**metric, "eval_return": evaluation["return_mean"] if evaluation else None,
              "action_loss": row["action_loss"], "updates": row["num_updates"]})

    return train_dt(cfg, show_progress=False, tracker=tracker, on_evaluation=on_dt_evaluation)


class TrainingSetting:
    """What a training trial runs, for the sweep's dry-run table and lines: its family and swept keys."""

    checkpoint = "-"

    def __init__(self, point):
        self.label = " ".join(f"{k}={v}" for k, v in point.swept.items() if k != "seed") or point.family


def resolve_training_sweep(sweep) -> tuple[list, dict]:
    """Every training trial checked before the sweep starts (its config was built by load_sweep): a dataset the
    Decision Transformer reads must exist, and early stopping needs evaluations to judge. Returns (settings, {})."""
    command = sweep.settings.trial_command
    for point in sweep.points:
        where = point.place(sweep.path)
        cfg = point.cfg
        if command == "dt-train":
            if cfg.minari is None and not Path(dataset_path(cfg)).is_file():
                raise ConfigError(f"{where}: dataset {dataset_path(cfg)} not found: make it with gym-qwen "
                                  f"make-dataset env={cfg.env} dataset={cfg.dataset}, or give data=")
            if sweep.settings.scheduler == "asha" and cfg.num_eval_ep == 0:
                raise ConfigError(f"{where}: scheduler: asha judges evaluations; num_eval_ep=0 makes none")
        elif sweep.settings.scheduler == "asha" and cfg.eval_freq <= 0:
            raise ConfigError(f"{where}: scheduler: asha judges evaluations; eval_freq={cfg.eval_freq} makes none")
    return [TrainingSetting(p) for p in sweep.points], {}
