"""Sweeps on Ray Tune: the trainable (one trial = one evaluation setting, gym_qwen.platform.sweeps.trial), its
resources (a placement group holding the trial and its evaluator actors), the tuner, and restoring an
interrupted sweep (Tuner.restore when Tuner.can_restore: finished trials are not run again, unfinished and
errored ones continue from their last finished episode).

A trial reports after every episode with its records so far as its Tune checkpoint; a retried or restored trial
starts from that checkpoint and continues its own MLflow run (found by the trial-id tag), so no episode is lost
and no step is logged twice.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from ray import tune

from gym_qwen.platform.config import EvaluateConfig, config_from_dict
from gym_qwen.platform.envs import quiet_library_logs
from gym_qwen.platform.speculative.evaluation import evaluation_episode, evaluation_setup
from gym_qwen.platform.storage import basename, is_uri, join, parent, resolve
from gym_qwen.platform.sweeps.spec import SweepPoint
from gym_qwen.platform.sweeps.training_trial import run_training_trial
from gym_qwen.platform.sweeps.trial import run_trial

from .cluster import threads_for
from .episode_farm import EpisodeFarm

RECORDS = "records.json"


def _records_of(checkpoint) -> list[dict]:
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as d:
        path = Path(d) / RECORDS
        return json.loads(path.read_text()) if path.is_file() else []


def actor_episodes(cpus: float):
    """play_factory of a trial whose episodes run on `num_workers` evaluator actors (in the trial's placement
    group: Tune captures the actors a trial starts into the trial's group)."""

    def factory(ckpt, setting, cfg, sha256):
        # Ray takes seconds to import; only the Ray paths need it
        import ray



        farm = EpisodeFarm(evaluation_setup, evaluation_episode, min(cfg.num_workers, cfg.episodes), cpus=cpus,
                           setup_args=(ray.put(ckpt), setting.overrides, "cpu", cfg.seed, setting.spec, sha256),
                           what="evaluator")

        def play(indices, on_record):
            try:
                farm.run(indices, on_episode=lambda i, table: on_record(table.to_pylist()[0]), keep=False)
            finally:
                farm.close()
        return play
    return factory


def _quiet_trial_logs() -> None:
    """A trial's process says only what matters: no library chatter, no Tune line after every report
    ("Checkpoint successfully created at ...")."""
    quiet_library_logs()
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def sweep_trial(config: dict) -> None:
    """The Tune trainable: config = {"trial": {family, values, swept, label, index}, "run": {uri, experiment_id,
    parent_run_id, sweep_id, workdir, trial_cpus, faults, source_tags, system_metrics}}."""
    _quiet_trial_logs()
    t, r = config["trial"], config["run"]
    suggested = config.get("suggested") or {}  # search=optuna: the point the searcher chose
    values, swept = {**t["values"], **suggested}, (suggested or t["swept"])
    cfg = config_from_dict(EvaluateConfig, values)
    point = SweepPoint(t["family"], values, swept, cfg)

    def report(metrics: dict, records: list) -> None:
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / RECORDS).write_text(json.dumps(records))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    threads = cfg.torch_threads if "torch_threads" in t["values"] else threads_for(r["trial_cpus"])
    run_trial(point, workdir=r["workdir"], uri=r["uri"], experiment_id=r["experiment_id"],
              parent_run_id=r["parent_run_id"], sweep_id=r["sweep_id"], trial_id=tune.get_context().get_trial_id(),
              records=_records_of(tune.get_checkpoint()), report=report,
              play_factory=actor_episodes(cfg.worker_cpus) if cfg.num_workers > 0 else None,
              faults=r.get("faults"), threads=threads, source_tags=r.get("source_tags"),
              system_metrics=r.get("system_metrics", False))


def training_trial(config: dict) -> None:
    """The Tune trainable of a training sweep (trial_command train or dt-train): config = {"trial": {family,
    values, ...}, "run": {command, uri, experiment, experiment_id, parent_run_id, sweep_id, experiment_dir, ...}}.
    Reports after every evaluation; early stopping (ASHA) ends the trial's process between two."""
    _quiet_trial_logs()
    t, r = config["trial"], config["run"]
    values = dict(t["values"])
    values.setdefault("torch_threads", threads_for(r["trial_cpus"]))
    context = tune.get_context()
    if is_uri(r["experiment_dir"]):  # the run goes to <storage URI>/<experiment>/<trial>/, its log stays on the node
        trial_dir, output_root = Path(os.getcwd()), join(r["experiment_dir"], context.get_trial_name())
    else:
        trial_dir = output_root = Path(r["experiment_dir"]) / context.get_trial_name()
    run_training_trial(r["command"], values, trial_dir=trial_dir, output_root=output_root,
                       workdir=r["workdir"], uri=r["uri"], experiment=r["experiment"], experiment_id=r["experiment_id"],
                       parent_run_id=r["parent_run_id"], sweep_id=r["sweep_id"], trial_id=context.get_trial_id(),
                       family=t["family"], report=lambda metrics: tune.report(metrics),
                       source_tags=r.get("source_tags"), system_metrics=r.get("system_metrics", False))


def trial_resources(config: dict) -> tune.PlacementGroupFactory:
    """Bundle 0 holds the trial (trial_cpus, and trial_gpus if any: a fraction lets trials share a GPU); one bundle
    per evaluator actor (worker_cpus) when num_workers > 0."""
    values, cpus, gpus = config["trial"]["values"], config["run"]["trial_cpus"], config["run"].get("trial_gpus", 0)
    workers = int(values.get("num_workers", 0) or 0)
    head = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return tune.PlacementGroupFactory([head] + [{"CPU": float(values.get("worker_cpus", 1.0))}] * workers)


def trainable(command: str = "evaluate"):
    return tune.with_resources(sweep_trial if command == "evaluate" else training_trial, trial_resources)


def early_stopping(metric: str, max_evaluations: int, grace: int, reduction: int):
    """Tune's ASHA on `metric` (higher is better), its clock the evaluations a trial has made: every trial gets
    `grace` evaluations, then at each rung only the best 1/`reduction` go on, up to `max_evaluations`."""
    # Ray takes seconds to import; only the Ray paths need it
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="evaluations", metric=metric, mode="max", max_t=max(max_evaluations, grace),
                         grace_period=grace, reduction_factor=reduction)


def param_space(trials: list[dict], run: dict, space=()) -> dict:
    """Grid: one Tune trial per entry of `trials`. Search (`space`: the sweep's Dimensions): trials[0] holds the
    fixed keys and "suggested" the domains the searcher draws each trial's point from."""
    if not space:
        return {"trial": tune.grid_search(trials), "run": run}
    return {"trial": trials[0], "suggested": {d.key: _domain(d) for d in space}, "run": run}


def _domain(d):
    if d.values:
        return tune.choice(list(d.values))
    if isinstance(d.low, int):
        return tune.lograndint(d.low, d.high + 1) if d.log else tune.randint(d.low, d.high + 1)
    return tune.loguniform(d.low, d.high) if d.log else tune.uniform(d.low, d.high)


def quiet_optuna() -> None:
    """Optuna's INFO lines ("A new study created in memory ...") are not news for the user."""
    # optional: only the Optuna search needs it
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def searcher(objectives, seed: int, num_trials: int = 16):
    """Optuna's multi-objective TPE behind Tune's searcher interface, tracing the front of `objectives`
    ((metric, "max" | "min") pairs); a seeded sampler chooses the same points from the same results. A quarter of
    the budget (at least 3 trials) is drawn at random before TPE's model guides the rest: Optuna's default of 10
    random trials would leave a sweep of 12 almost unguided."""
    # optional: only the Optuna search needs it
    import optuna
    # Ray takes seconds to import; only the Ray paths need it
    from ray.tune.search.optuna import OptunaSearch

    quiet_optuna()
    metrics, modes = [m for m, _ in objectives], [d for _, d in objectives]
    return OptunaSearch(metric=metrics if len(metrics) > 1 else metrics[0], mode=modes if len(modes) > 1 else modes[0],
                        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, num_trials // 4)))


def trial_label(config: dict) -> tuple[str, int]:
    """(what the trial runs, its seed), for the sweep's lines and table."""
    t, suggested = config["trial"], config.get("suggested")
    if not suggested:
        return t["label"], t["seed"]
    return "optuna: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in suggested.items()), t["seed"]


def _trial_name(trial) -> str:
    index = trial.config["trial"].get("index")
    return f"trial-{index:03d}" if index is not None else f"trial-{trial.trial_id.rsplit('_', 1)[-1]}"


class Progress(tune.Callback):
    """One line per finished, errored or retried trial: what it got and how far the sweep is. (Tune pickles it
    with the sweep's state and brings it back on restore: it holds no file and restarts its clock in setup.)"""

    def __init__(self, total: int):
        self.total, self.started = total, time.time()

    def setup(self, **info):
        self.started = time.time()

    def _say(self, text: str) -> None:
        print(text, file=sys.stdout, flush=True)

    def _head(self, trials, trial) -> str:
        done = 1 + sum(1 for t in trials if t is not trial and t.status in ("TERMINATED", "ERROR"))
        label, seed = trial_label(trial.config)
        return f"[{done}/{self.total}] {label} seed={seed}"

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._say(f"{self._head(trials, trial)}: {describe_result(trial.last_result or {})} "
                  f"({time.time() - self.started:.0f} s)")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"{self._head(trials, trial)}: failed ({_error_line(trial)})")

    def on_trial_recover(self, iteration, trials, trial, **info):
        label, seed = trial_label(trial.config)
        where = {"evaluate": "its last finished episode", "train": "its last checkpoint"}.get(
            trial.config["run"].get("command", "evaluate"), "the start")
        self._say(f"  {label} seed={seed}: failed ({_error_line(trial)}); retrying from {where}")


def describe_result(m: dict) -> str:
    """A trial's last report in words: an evaluation setting's numbers, or where a training got to."""
    if m.get("return_mean") is not None:
        return (f"return {m['return_mean']:.1f} ± {m.get('return_std', 0):.1f}, "
                f"{m.get('planner_calls_per_step', 0):.3f} planner calls/step, {m.get('ms_per_decision', 0):.1f} ms/step")
    if m.get("evaluations") is None:
        return "no result"
    where = f"{m['env_steps']:,} env steps" if "env_steps" in m else f"{m.get('updates', 0):,} updates"
    score = f", D4RL score {m['d4rl_score']:.1f}" if "d4rl_score" in m else ""
    return f"eval return {m.get('eval_return', float('nan')):.1f}{score} after {m['evaluations']} evaluations ({where})"


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    text = ""
    try:
        text = Path(path).read_text() if path and os.path.isfile(path) else ""
    except OSError:
        pass
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if ("Error" in line or "Exception" in line) and ":" in line]
    return (causes[-1] if causes else (lines[-1] if lines else "see the trial's error.txt"))[:200]


def _tune_storage(experiment_dir: Path | str) -> dict:
    """Where Tune keeps the sweep: storage_path and name, and for a URI the pyarrow filesystem it names (resolved
    once, here, so the URI's query options, e.g. endpoint_override, hold for the driver and every trial: Tune
    pickles the filesystem into each trial, which writes its checkpoints straight to it)."""
    if not is_uri(experiment_dir):
        return {"storage_path": str(experiment_dir.parent), "name": experiment_dir.name}
    fs, path = resolve(parent(str(experiment_dir)))
    return {"storage_path": path, "name": basename(str(experiment_dir)), "storage_filesystem": fs}


def _restore_path(experiment_dir: Path | str) -> tuple[str, dict]:
    if not is_uri(experiment_dir):
        return str(experiment_dir), {}
    fs, path = resolve(str(experiment_dir))
    return path, {"storage_filesystem": fs}


def run_sweep(experiment_dir: Path | str, trials: list[dict], run: dict, *, max_concurrent: int, max_failures: int,
              resume: bool, space=(), num_trials: int | None = None, objectives=(), search_seed: int = 0,
              scheduler=None):
    """Fit a new sweep in experiment_dir (storage/name: a local folder or a URI), or restore the interrupted one
    there (a search restores its searcher's state too). Grid: one trial per entry of `trials`; search (`space` given): `num_trials` points
    chosen by Optuna for `objectives`; `scheduler`: early stopping (training trials). Returns Tune's ResultGrid.

    Evaluation trials reuse their worker processes (`reuse_actors`): a trial of one or two episodes otherwise spends
    seconds of its own on a fresh process (imports of torch, MuJoCo, MLflow) before its first step."""
    params = param_space(trials, run, space)
    total = num_trials if space else len(trials)
    command = run.get("command", "evaluate")
    if space:
        quiet_optuna()
    if resume:
        path, fs = _restore_path(experiment_dir)
        tuner = tune.Tuner.restore(path, trainable(command), resume_unfinished=True, resume_errored=True,
                                   param_space=params, **fs)
    else:
        search = dict(search_alg=searcher(objectives, search_seed, num_trials), num_samples=num_trials) if space \
            else {}
        if scheduler is not None:
            search["scheduler"] = scheduler
        tuner = tune.Tuner(
            trainable(command), param_space=params,
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None, trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_name, reuse_actors=command == "evaluate",
                                        **search),
            run_config=tune.RunConfig(**_tune_storage(experiment_dir),
                                      failure_config=tune.FailureConfig(max_failures=max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      verbose=0, callbacks=[Progress(total)]))
    quiet = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's own tables stay out of the sweep's output (verbose=0)
    try:
        return tuner.fit()
    finally:
        if quiet is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = quiet


def can_restore(experiment_dir: Path | str) -> bool:
    path, fs = _restore_path(experiment_dir)
    return tune.Tuner.can_restore(path, **fs)
