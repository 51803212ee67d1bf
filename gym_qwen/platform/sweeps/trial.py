"""One sweep trial without Ray: evaluate the teacher under the trial's setting episode by episode, log each
finished episode's running numbers to the trial's own MLflow run (step = episodes done) and hand them to
`report` with the records so far (Tune keeps those as the trial's checkpoint). A trial handed the records of an
earlier attempt runs only the episodes it lacks; episode i gives the same record whoever runs it (its seeds
depend only on the setting, the seed and i), so a continued trial ends with the numbers of an uninterrupted one.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from ..files import sha256_of
from ..speculative.clock import CLOCK_METRICS
from ..speculative.evaluation import evaluation_episode, evaluation_setup, result_from_records, with_clock
from ..tdmpc2.checkpoints import agent_from_checkpoint, load_checkpoint
from .runs import PARENT_TAG, ROLE_TAG, SWEEP_TAG, TRIAL_TAG, open_run
from .setting import absolute, resolve_setting

# What a trial reports to Tune and logs to MLflow: the metrics `gym-qwen evaluate mlflow=true` logs, plus the
# episodes done and the trial's own seconds
METRICS = ("return_mean", "return_std", "planner_calls_per_step", "corrector_calls_per_step",
           "encoder_calls_per_step", "ms_per_decision", "plan_ms_per_step", "encode_ms_per_step",
           "correct_ms_per_step", "extend_ms_per_step", "replan_rate", "misses", "teacher_action_mse")
EPISODE_COLUMNS = ("episode", "return", "length", "seconds", "planner_calls", "encoder_calls", "corrector_calls",
                   "extensions", "misses", "speculative_steps")
# tests: {"crash_at_episode": i, "marker": path} exits a trial's process once; hold_at_episode waits to be killed
FAULTS_KEY = "GYM_QWEN_SWEEP_FAULTS"


def metrics_of(task: str, mode: str, records: list[dict]) -> dict:
    """The reported numbers of the episodes in `records` (any order)."""
    s = result_from_records(task, mode, records).summary()
    out = {k: s[k] for k in METRICS + (CLOCK_METRICS if s["clock"] else ()) if s[k] is not None}
    out["episodes_done"] = len(records)
    return out


def trial_params(point, setting, sha256: str) -> dict:
    """The trial run's params: the keys the trial sets (as the sweep file gives them) and the resolved setting
    under the names `gym-qwen evaluate mlflow=true` uses (compare reads both kinds of run the same way)."""
    spec = setting.spec
    cfg = point.cfg
    clock = spec.clock.record() if spec.clock is not None else {}  # P, L, d: under a clock k is d
    return {**point.values, "checkpoint": point.cfg.checkpoint, "episodes": cfg.episodes, "seed": cfg.seed,
            "mode": spec.settings.mode, "spec_exec_horizon": spec.steps_per_plan,
            "corrector_type": spec.corrector_type, "corrector_checkpoint": spec.corrector_checkpoint,
            "mismatch_threshold": spec.settings.mismatch_threshold, "history_len": spec.settings.history_len,
            "fallback": spec.settings.fallback, "past_horizon": spec.settings.past_horizon,
            "planner_overrides": dict(setting.planner), "family": point.family, "teacher_sha256": sha256, **clock}


def write_episode_table(records: list[dict], path: Path) -> Path:
    """The per-episode table (CSV, in episode order)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EPISODE_COLUMNS)
        for r in sorted(records, key=lambda r: r["episode"]):
            w.writerow([r.get(k, 0) for k in EPISODE_COLUMNS])
    return path


def injected_fault(faults: dict | None, episode: int) -> None:
    """Tests, once per marker file, after logging `episode`: crash_at_episode exits this process at once (a lost
    process); hold_at_episode writes its pid to the marker and waits for the test to kill its node."""
    if not faults or os.path.exists(faults["marker"]):
        return
    if faults.get("crash_at_episode") == episode:
        Path(faults["marker"]).write_text(str(os.getpid()))
        os._exit(1)
    if faults.get("hold_at_episode") == episode:
        Path(f"{faults['marker']}.tmp").write_text(str(os.getpid()))
        os.replace(f"{faults['marker']}.tmp", faults["marker"])  # whole or absent
        while True:
            time.sleep(1)


def in_process_episodes(ckpt: dict, setting, cfg, sha256: str) -> Callable:
    """play(indices, on_record): the episodes in this process, one after another (the setup built once)."""
    state = evaluation_setup(ckpt, setting.overrides, cfg.device, cfg.seed, setting.spec, sha256)

    def play(indices, on_record):
        try:
            for i in indices:
                on_record(evaluation_episode(state, i)[0])
        finally:
            state["env"].close()
    return play


def _measured(setting, ckpt: dict, cfg):
    """The setting with its clock's planner latency measured in this process (where the trial's episodes run),
    before its run is opened: its params say P, L and d."""
    spec = setting.spec
    if spec.clock is None or spec.clock.resolved:
        return setting

    agent, _, _ = agent_from_checkpoint(ckpt, setting.overrides, cfg.device)
    return dataclasses.replace(setting, spec=with_clock(spec, agent, ckpt["task"], cfg.seed))


def run_trial(point, *, workdir: str, uri: str, experiment_id: str, parent_run_id: str, sweep_id: str,
              trial_id: str, records: list[dict], report: Callable[[dict, list], None],
              play_factory: Callable | None = None, faults: dict | None = None, threads: int = 1,
              source_tags: dict | None = None, system_metrics: bool = False) -> dict:
    """Run (or continue, from `records`) one trial (a SweepPoint; relative paths are of `workdir`); returns its
    final metrics. `report(metrics, records)` after every episode (and once at the start of a trial that had all
    its episodes already). play_factory(ckpt, setting, cfg, sha256) -> play(indices, on_record) runs episodes
    (default: in this process). `source_tags`: the sweep driver's (tracking.source_tags), for a new run;
    `system_metrics` logs MLflow's system metrics to the run while the trial runs."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    cfg = point.cfg
    path = absolute(cfg.checkpoint, workdir)
    ckpt = load_checkpoint(path)
    sha = sha256_of(path)
    setting = _measured(resolve_setting(cfg, set(point.values), ckpt, workdir), ckpt, cfg)
    task, mode = ckpt["task"], setting.spec.settings.mode
    run = open_run(uri, experiment_id, {SWEEP_TAG: sweep_id, TRIAL_TAG: trial_id},
                   f"{setting.label} seed={cfg.seed}", trial_params(point, setting, sha),
                   {**(source_tags or {}), PARENT_TAG: parent_run_id, ROLE_TAG: "trial", "task": task,
                    "command": "evaluate", "setting": setting.label, "family": point.family, "teacher_sha256": sha})
    if system_metrics:
        run.log_system_metrics(uri)
    records = sorted(records, key=lambda r: r["episode"])
    done = {r["episode"] for r in records}
    prior = run.latest.get("trial_seconds", 0.0)  # the seconds earlier attempts spent
    todo = [i for i in range(cfg.episodes) if i not in done]
    metrics: dict = {}

    def on_record(rec: dict) -> None:
        nonlocal metrics
        records.append(rec)
        metrics = metrics_of(task, mode, records)
        metrics["trial_seconds"] = prior + time.perf_counter() - started
        run.log_metrics(metrics, step=len(records))
        injected_fault(faults, rec["episode"])
        report(metrics, list(records))

    try:
        if todo:
            play = (play_factory or in_process_episodes)(ckpt, setting, cfg, sha)
            play(todo, on_record)
        else:  # every episode was done by an earlier attempt: report them again
            metrics = metrics_of(task, mode, records)
            report(metrics, list(records))
        with tempfile.TemporaryDirectory() as d:
            run.log_artifact(write_episode_table(records, Path(d) / "episodes.csv"))
            (Path(d) / "metrics.json").write_text(json.dumps(metrics, indent=1))
            run.log_artifact(Path(d) / "metrics.json")
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    return metrics
