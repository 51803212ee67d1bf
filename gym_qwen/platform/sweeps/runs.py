"""MLflow bookkeeping of a sweep: the store and the experiment made once by the driver (several processes
migrating a fresh SQLite store at once fail), one parent run per sweep, one nested run per trial found again by
its tags (a retried or restored trial continues its own run), and metrics logged in one call per step, never
twice at a step (a continued run skips the steps it already holds)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

ROLE_TAG, SWEEP_TAG, TRIAL_TAG, PARENT_TAG = "gym_qwen.role", "sweep_id", "trial_id", "mlflow.parentRunId"


def client(uri: str, lock: bool = True):
    """An MlflowClient of `uri`, MLflow's and alembic's chatter quieted. Made under the store's file lock: opening
    a SQLite store migrates it when its tables are missing or old, and a second process opening it in the middle
    of the driver's migration fails ("duplicate column name")."""
    from mlflow.tracking import MlflowClient

    from ..tracking import store_lock

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not lock:
        return MlflowClient(uri)
    with store_lock(uri):
        return MlflowClient(uri)


def prepare_experiment(uri: str, name: str) -> str:
    """Create the store (first use migrates a SQLite file) and the experiment if they do not exist, under the
    store's file lock; return the experiment id. Artifacts of a local store go beside it (mlartifacts/)."""
    from ..tracking import store_lock

    with store_lock(uri):
        c = client(uri, lock=False)  # (a second flock of the same file would wait for this one)
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                c.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        artifacts = None
        if uri.startswith("sqlite:///"):
            artifacts = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").absolute().as_uri()
        return c.create_experiment(name, artifact_location=artifacts)


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def find_run(c, experiment_id: str, tags: dict):
    """The oldest run of the experiment carrying all `tags` (None if there is none)."""
    query = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    runs = c.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"], max_results=5)
    return runs[0] if runs else None


class RunLog:
    """One MLflow run, new or continued. log_metrics(step) skips a metric the run already holds at that step or a
    later one, so a trial that runs an episode again after a retry never logs its step twice."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id, self.client = uri, run_id, client(uri)
        data = self.client.get_run(run_id).data
        self.latest = dict(data.metrics)  # {metric: its value at the latest step}
        self.last = {k: max((m.step for m in self.client.get_metric_history(run_id, k)), default=-1)
                     for k in data.metrics}
        self.params = dict(data.params)

    @classmethod
    def open(cls, uri: str, experiment_id: str, tags: dict, run_name: str, params: dict | None = None,
             extra_tags: dict | None = None) -> "RunLog":
        """The run of `experiment_id` tagged with `tags` (continued, status RUNNING again), else a new one with
        `tags`, `extra_tags` and `params` (flattened: {"a": {"b": 1}} -> a.b)."""
        c = client(uri)
        run = find_run(c, experiment_id, tags)
        if run is None:
            run = c.create_run(experiment_id, run_name=run_name, tags={**tags, **(extra_tags or {})})
            log = cls(uri, run.info.run_id)
            log.log_params(params or {})
            return log
        c.update_run(run.info.run_id, status="RUNNING")
        log = cls(uri, run.info.run_id)
        log.log_params(params or {})  # only the ones it lacks: MLflow refuses to change a logged param
        return log

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        from ..tracking import _flatten

        flat = {k: ("None" if v is None else str(v)[:6000]) for k, v in _flatten(params).items()}
        new = [Param(k, v) for k, v in flat.items() if k not in self.params]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])
        self.params.update({p.key: p.value for p in new})

    def log_metrics(self, metrics: dict, step: int) -> int:
        """Log the metrics at `step` in one call; returns how many were logged (0 if the run held them)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()
              if v is not None and v == v and int(step) > self.last.get(k, -1)]
        if ms:
            self.client.log_batch(self.run_id, metrics=ms)
            self.last.update({m.key: int(step) for m in ms})
        return len(ms)

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
