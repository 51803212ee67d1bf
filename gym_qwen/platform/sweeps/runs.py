"""MLflow bookkeeping of a sweep: one parent run per sweep and one nested run per trial (tracking.MlflowRun),
each found again by its tags, so a retried or restored trial continues its own run and never logs a step twice.
The driver makes the store and the experiment once, before any trial (tracking.prepare_experiment): several
processes migrating a fresh SQLite store at once fail."""
from __future__ import annotations

from ..tracking import MlflowRun, client

ROLE_TAG, SWEEP_TAG, TRIAL_TAG, PARENT_TAG = "gym_qwen.role", "sweep_id", "trial_id", "mlflow.parentRunId"


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


def find_run(c, experiment_id: str, tags: dict):
    """The oldest run of the experiment carrying all `tags` (None if there is none)."""
    query = " and ".join(f"tags.`{k}` = {_quote(v)}" for k, v in tags.items())
    runs = c.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"], max_results=5)
    return runs[0] if runs else None


def open_run(uri: str, experiment_id: str, tags: dict, run_name: str, params: dict | None = None,
             extra_tags: dict | None = None) -> MlflowRun:
    """The run of `experiment_id` tagged with `tags`, continued (status RUNNING again, the params it lacks logged),
    else a new one with `tags`, `extra_tags` (mlflow.parentRunId nests it) and `params`."""
    c = client(uri)
    run = find_run(c, experiment_id, tags)
    if run is None:
        return MlflowRun.create(c, experiment_id, run_name, {**tags, **(extra_tags or {})}, params)
    return MlflowRun.resume(c, run.info.run_id, params)
