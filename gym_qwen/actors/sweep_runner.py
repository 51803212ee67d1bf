"""The sweep driver behind `gym-qwen sweep` (and the demo): a Ray Tune sweep of a sweep file's trials, every trial
in MLflow, then the sweep's table and totals.

Before anything starts, the sweep file and every trial are checked (each trial's keys built into the evaluate
command's config and resolved against the teacher: corrector files, planner overrides), the MLflow server (if
remote) must answer and the sweep's folder must not hold another sweep. Then the driver makes the MLflow store,
the experiment and the sweep's parent run (tags: sweep id, teacher sha256) and starts Tune; each trial logs to a
nested run of its own. `resume=true` restores an interrupted sweep (finished trials are not run again).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from gym_qwen.platform.config import ConfigError, SweepConfig
from gym_qwen.platform.files import atomic_write_bytes, output_folder_problem
from gym_qwen.platform.progress import table
from gym_qwen.platform.storage import display, is_uri, join, read_bytes, storage_problem, write_bytes
from gym_qwen.platform.sweeps.runs import ROLE_TAG, SWEEP_TAG, TRIAL_TAG, find_run, open_run
from gym_qwen.platform.sweeps.setting import resolve_sweep
from gym_qwen.platform.sweeps.spec import TRAINING_COMMANDS, load_sweep
from gym_qwen.platform.sweeps.training_trial import planned_evaluations, resolve_training_sweep
from gym_qwen.platform.sweeps.trial import FAULTS_KEY
from gym_qwen.platform.tracking import (
    browse_hint, check_tracking_uri, client, default_tracking_uri, prepare_experiment, source_tags)

from .cluster import check_resources, ray_session
from .tune_trials import can_restore, early_stopping, run_sweep, trial_label

MANIFEST = "gym-qwen-sweep.json"


def _trial_rows(sweep, settings) -> list[tuple]:
    return [(i, p.family, s.label, p.cfg.seed, getattr(p.cfg, "episodes", "-"), Path(s.checkpoint).name)
            for i, (p, s) in enumerate(zip(sweep.points, settings))]


def _objectives(sweep) -> str:
    return ", ".join(f"{'most' if d == 'max' else 'least'} {m}" for m, d in sweep.objectives)


def _read_manifest(exp_dir: Path | str) -> dict | None:
    try:
        if is_uri(exp_dir):
            return json.loads(read_bytes(join(exp_dir, MANIFEST)))
        return json.loads((exp_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _write_manifest(exp_dir: Path | str, manifest: dict) -> None:
    data = json.dumps(manifest, indent=1).encode()
    if is_uri(exp_dir):  # an object store: the whole object appears at once
        write_bytes(join(exp_dir, MANIFEST), data)
        return
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(exp_dir / MANIFEST, lambda f: f.write(data))


def _shown(exp_dir: Path | str) -> str:
    return display(exp_dir) if is_uri(exp_dir) else str(exp_dir)


def _experiment_dir(sweep) -> Path | str:
    """<storage>/<experiment>: a local folder (made absolute), or a URI (s3://..., platform/storage.py), tried for
    real before anything starts."""
    if is_uri(sweep.settings.storage):
        exp_dir = join(sweep.settings.storage, sweep.experiment)
        problem = storage_problem(exp_dir)
        if problem:
            raise ConfigError(f"storage={display(sweep.settings.storage)}: cannot keep the sweep there ({problem})")
        return exp_dir
    storage = Path(sweep.settings.storage).absolute()
    problem = output_folder_problem(storage)
    if problem:
        raise ConfigError(f"storage={sweep.settings.storage}: cannot keep the sweep there ({problem})")
    return storage / sweep.experiment


def check_sweep_file(cfg: SweepConfig, command_line: dict, fixed: dict | None = None, resolve: bool = True):
    """The sweep of `cfg.file` (`command_line`: its SweepConfig keys given on the command line; `fixed`: trial keys
    set over the file's `fixed:`), checked: (sweep, its trials' settings, {checkpoint: sha256}). With
    resolve=False only the file and its keys are checked (settings and shas are None)."""
    sweep = load_sweep(cfg.file, command_line, fixed)
    if not resolve:
        return sweep, None, None
    if sweep.settings.trial_command != "evaluate":
        return (sweep, *resolve_training_sweep(sweep))
    return (sweep, *resolve_sweep(sweep, os.getcwd()))


def run_sweep_file(cfg: SweepConfig, command_line: dict, fixed: dict | None = None,
                   checked: tuple | None = None) -> tuple[int, str | None]:
    """Check (unless `checked` is what check_sweep_file returned for the same arguments) and run the sweep of
    `cfg.file`. Returns the exit status and the sweep id (None when nothing ran)."""
    sweep, settings, shas = checked or check_sweep_file(cfg, command_line, fixed)
    s = sweep.settings
    workdir = os.getcwd()
    for line in sweep.notes:
        print(f"note: {line}")
    if s.dry_run:
        if sweep.searched:
            print("\n".join(f"search: {d.describe()}" for d in sweep.space))
            print(f"{s.num_trials} trials chosen by Optuna for {_objectives(sweep)}; the {len(sweep.points)} corners "
                  f"of the space were checked; experiment {sweep.experiment}; nothing started (dry_run=true)")
            return 0, None
        print(table(_trial_rows(sweep, settings), ("trial", "family", "setting", "seed", "episodes", "teacher")))
        print(f"{len(sweep.points)} trials; experiment {sweep.experiment}; nothing started (dry_run=true)")
        return 0, None

    uri = default_tracking_uri()
    check_tracking_uri(uri)
    exp_dir = _experiment_dir(sweep)


    manifest = _read_manifest(exp_dir)
    if s.resume:
        if not can_restore(exp_dir) or manifest is None:
            raise ConfigError(f"resume=true: there is no sweep to resume in {_shown(exp_dir)}; run it without "
                              "resume=true")
        if manifest.get("fingerprint") != sweep.fingerprint:
            raise ConfigError(f"resume=true: the trials of {cfg.file} differ from those the sweep in "
                              f"{_shown(exp_dir)} started with; restore the file, or start a new sweep with "
                              "experiment=ANOTHER_NAME")
        sweep_id = manifest["sweep_id"]
    else:
        if can_restore(exp_dir):
            raise ConfigError(f"{_shown(exp_dir)} already holds the sweep {(manifest or {}).get('sweep_id', '?')}: "
                              "pass resume=true to continue it, or experiment=ANOTHER_NAME for a new one")
        sweep_id = f"{sweep.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
    return _run(sweep, settings, shas, sweep_id, uri, exp_dir, workdir), sweep_id


def _run(sweep, settings, shas: dict, sweep_id: str, uri: str, exp_dir: Path | str, workdir: str) -> int:
    s = sweep.settings
    with ray_session(s.ray_address):
        parent, status = None, "KILLED"
        try:
            # The trial with the most evaluator CPUs: its bundles (the trial, each evaluator) each on one node
            farm = max(((getattr(p.cfg, "num_workers", 0), getattr(p.cfg, "worker_cpus", 0.0)) for p in sweep.points),
                       key=lambda nc: nc[0] * nc[1])
            check_resources([("trial", 1, s.trial_cpus, s.trial_gpus), ("evaluator", *farm, 0)],
                            hint="lower trial_cpus=, trial_gpus= or the trials' num_workers= and worker_cpus=",
                            wait_s=s.scale_wait)
            # The store, the experiment and the parent run exist before any trial starts
            exp_id = prepare_experiment(uri, sweep.experiment)
            teachers = sorted(set(shas.values()))
            parent = open_run(
                uri, exp_id, {SWEEP_TAG: sweep_id, ROLE_TAG: "sweep"}, sweep_id,
                {"sweep_file": sweep.path, "trials": sweep.num_trials, "search": s.search,
                 **({"space": {d.key: d.describe() for d in sweep.space}, "objectives": _objectives(sweep),
                     "search_seed": s.search_seed} if sweep.searched else {}),
                 "max_concurrent": s.max_concurrent, "max_failures": s.max_failures, "trial_cpus": s.trial_cpus,
                 "fixed": sweep.fixed, "families": {k: json.dumps(v, default=str) for k, v in sweep.families.items()}},
                {"command": "sweep", "teacher_sha256": teachers[0] if len(teachers) == 1 else ",".join(teachers),
                 "experiment_dir": _shown(exp_dir)})
            _write_manifest(exp_dir, {"sweep_id": sweep_id, "experiment": sweep.experiment, "file": sweep.path,
                                      "workdir": workdir, "fingerprint": sweep.fingerprint, "tracking_uri": uri,
                                      "parent_run_id": parent.run_id})
            if sweep.searched:  # one template: the fixed keys; the searcher adds each trial's point
                first = sweep.points[0].cfg
                trials = [{"index": None, "family": "optuna", "values": sweep.fixed, "swept": {}, "label": "optuna",
                           "seed": first.seed, "episodes": first.episodes}]
            else:
                trials = [{"index": i, "family": p.family, "values": p.values, "swept": p.swept, "label": st.label,
                           "seed": p.cfg.seed, "episodes": getattr(p.cfg, "episodes", None)}
                          for i, (p, st) in enumerate(zip(sweep.points, settings))]
            run = {"uri": uri, "experiment_id": exp_id, "parent_run_id": parent.run_id, "sweep_id": sweep_id,
                   "workdir": workdir, "trial_cpus": s.trial_cpus, "trial_gpus": s.trial_gpus,
                   "command": s.trial_command, "experiment": sweep.experiment, "experiment_dir": str(exp_dir),
                   "faults": json.loads(os.environ[FAULTS_KEY]) if os.environ.get(FAULTS_KEY) else None,
                   "source_tags": source_tags(), "system_metrics": s.system_metrics}
            verb = "resuming" if s.resume else "starting"
            held = f"{s.trial_cpus:g} CPU" + (f" + {s.trial_gpus:g} GPU" if s.trial_gpus else "")
            how = f" chosen by Optuna for {_objectives(sweep)}" if sweep.searched else ""
            print(f"sweep {sweep_id}: {verb} {sweep.num_trials} trials{how} ({s.max_concurrent or 'as many as fit'} at "
                  f"once, {held} each); state in {_shown(exp_dir)}; MLflow {uri}, experiment {sweep.experiment}",
                  flush=True)
            started, status = time.perf_counter(), "FAILED"
            try:
                results = run_sweep(exp_dir, trials, run, max_concurrent=s.max_concurrent, max_failures=s.max_failures,
                                    resume=s.resume, space=sweep.space, num_trials=sweep.num_trials,
                                    objectives=sweep.objectives, search_seed=s.search_seed, scheduler=_scheduler(sweep))
            except KeyboardInterrupt:  # a second Ctrl-C (Tune stops gracefully on the first)
                status = "KILLED"
                raise
            wall = time.perf_counter() - started
            if s.trial_command != "evaluate":
                status, rc = _report_trainings(results, trials, sweep, parent, wall, sweep_id, uri, exp_id)
            else:
                status, rc = _report(results, trials if not sweep.searched else None, sweep.num_trials, parent, wall,
                                     sweep_id, uri)
            return rc
        finally:
            if parent is not None:
                parent.finish(status)


def _scheduler(sweep):
    """Early stopping of a training sweep (scheduler=asha), None otherwise."""
    s = sweep.settings
    if s.scheduler != "asha":
        return None


    longest = max(planned_evaluations(s.trial_command, p.cfg) for p in sweep.points)
    return early_stopping(TRAINING_COMMANDS[s.trial_command], longest, s.asha_grace, s.asha_reduction)


def _finish(status: str, rc: int, rows: list, parent, wall: float, seconds: float, sweep_id: str, uri: str,
            stopped: int = 0, compare: bool = True) -> tuple[str, int]:
    """Log a sweep's totals to its parent run, say how it ended; (run status, exit status)."""
    errored = sum(1 for r in rows if r[-1] == "error")
    unfinished = sum(1 for r in rows if r[-1] == "unfinished")
    step = parent.last.get("wall_seconds", -1) + 1  # one step per driver session (a resume is the next)
    parent.log_metrics({"trials_done": len(rows) - errored - unfinished - stopped, "trials_errored": errored,
                        "trials_unfinished": unfinished, "trials_stopped_early": stopped, "wall_seconds": wall,
                        "trial_seconds_sum": seconds}, step)
    early = f", {stopped} stopped early" if stopped else ""
    print(f"sweep {sweep_id}: {len(rows) - errored - unfinished - stopped} of {len(rows)} trials done{early} in "
          f"{wall:.0f} s (trials' own time {seconds:.0f} s)")
    experiment_id = parent.client.get_run(parent.run_id).info.experiment_id
    print((f"compare: gym-qwen compare sweep={sweep_id}\n" if compare else "")
          + f"browse: {browse_hint(uri, experiment_id)}")
    if unfinished:
        print(f"sweep {sweep_id}: interrupted; resume=true continues it", file=sys.stderr)
        return "KILLED", 130
    if errored:
        print(f"sweep {sweep_id}: {errored} trials failed (their error.txt is in the sweep's folder); resume=true "
              "runs them again", file=sys.stderr)
        return "FAILED", 1
    return status, rc


def _report_trainings(results, trials: list[dict], sweep, parent, wall: float, sweep_id: str, uri: str,
                      experiment_id: str) -> tuple[str, int]:
    """A training sweep's table (the last evaluation of each trial; `stopped early` for the trials ASHA ended),
    its totals, and the MLflow runs of stopped trials closed as KILLED with the reason in a tag."""
    by_index = {res.config["trial"]["index"]: res for res in results if res.config}
    interrupted = results.num_terminated + results.num_errors < len(trials)
    rows, seconds, stopped = [], 0.0, 0
    c = client(uri)
    for t, point in zip(trials, sweep.points):
        res = by_index.get(t["index"])
        m = (res.metrics or {}) if res is not None else {}
        planned = planned_evaluations(sweep.settings.trial_command, point.cfg)
        done = int(m.get("evaluations", 0))
        if res is not None and res.error is not None:
            state = "error"
        elif done >= planned:
            state = "done"
        elif interrupted or sweep.settings.scheduler != "asha":
            state = "unfinished"
        else:
            state, stopped = f"stopped early ({done}/{planned})", stopped + 1
            run = find_run(c, experiment_id, {SWEEP_TAG: sweep_id, TRIAL_TAG: m.get("trial_id", "?")})
            if run is not None and run.info.status in ("RUNNING", "FAILED"):  # ended between two evaluations
                c.set_tag(run.info.run_id, "gym_qwen.stopped_early", f"ASHA after {done} of {planned} evaluations")
                c.set_terminated(run.info.run_id, status="KILLED")
        seconds += float(m.get("trial_seconds", 0.0))
        num = lambda k, f: "-" if m.get(k) is None else format(m[k], f)  # noqa: E731
        where = num("env_steps", ",d") if "env_steps" in m else num("updates", ",d")
        rows.append((t["index"], t["label"], t["seed"], f"{done}/{planned}", where, num("eval_return", ".1f"),
                     num("eval_return_std", ".1f") if "eval_return_std" in m else num("d4rl_score", ".1f"), state))
    extra = "± std" if sweep.settings.trial_command == "train" else "D4RL score"
    progress = "env steps" if sweep.settings.trial_command == "train" else "updates"
    print(table(rows, ("trial", "setting", "seed", "evaluations", progress, "eval return", extra, "state")))
    return _finish("FINISHED", 0, rows, parent, wall, seconds, sweep_id, uri, stopped, compare=False)


def _report(results, trials: list[dict] | None, total: int, parent, wall: float, sweep_id: str,
            uri: str) -> tuple[str, int]:
    """The sweep's table, its parent run's totals and its exit status. `trials`: the grid's (None for a search,
    whose trials are the results in the order they were made; trials it never started count as unfinished)."""
    rows, seconds = [], 0.0
    if trials is None:
        def started(res) -> float:  # Tune's trial ids are random: number the trials in the order they started
            m = res.metrics or {}
            return float(m.get("timestamp", 0)) - float(m.get("time_total_s", 0))

        found = sorted((res for res in results if res.config), key=started)
        pairs = [(i, res, *trial_label(res.config), res.config["trial"]["episodes"]) for i, res in enumerate(found)]
        pairs += [(i, None, "(not started)", "-", None) for i in range(len(pairs), total)]
    else:
        by_index = {res.config["trial"]["index"]: res for res in results if res.config}
        pairs = [(t["index"], by_index.get(t["index"]), t["label"], t["seed"], t["episodes"]) for t in trials]
    for index, res, label, seed, episodes in pairs:
        m = (res.metrics or {}) if res is not None else {}
        state = "error" if res is not None and res.error is not None else (
            "done" if m.get("episodes_done") == episodes else "unfinished")
        seconds += float(m.get("trial_seconds", 0.0))
        num = lambda k, f: "-" if m.get(k) is None else format(m[k], f)  # noqa: E731
        rows.append((index, label, seed, num("return_mean", ".1f"),
                     num("return_std", ".1f"), num("planner_calls_per_step", ".3f"), num("ms_per_decision", ".1f"),
                     state))
    print(table(rows, ("trial", "setting", "seed", "return", "± std", "planner calls/step", "ms/step", "state")))
    return _finish("FINISHED", 0, rows, parent, wall, seconds, sweep_id, uri)
