"""MLflow tracking: a local SQLite store unless MLFLOW_TRACKING_URI says otherwise.

`MlflowRun` is the one wrapper around an MLflow run, new or continued; `Tracker` is what a command's run logs
through (it may be off), and a sweep's parent and trial runs (sweeps/runs.py) are MlflowRuns found by their tags.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from .config_schema import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# The MLflow UI's address when `mlflow ui` serves a local store (its default host and port)
LOCAL_UI = "http://127.0.0.1:5000"


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').absolute()}"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


@contextlib.contextmanager
def store_lock(uri: str):
    """Serialise first use of a local SQLite store across processes: two runs starting at once on a fresh
    `mlflow.db` otherwise race through MLflow's schema migration ("duplicate column name")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri[len("sqlite:///"):]).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class TrackingError(ConfigError):
    """The MLflow store cannot be used (one-line message; a user error, exit 2)."""


def check_tracking_uri(uri: str | None = None, timeout: float = 5.0) -> None:
    """Raise TrackingError when an MLflow server named by an http(s) URI does not answer within `timeout` seconds
    (MLflow's own client retries for minutes before it gives up). Local stores are not checked here."""
    uri = uri or default_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered, if not with OK: MLflow's own calls will say more
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingError(f"the MLflow tracking server {uri} does not answer ({reason}); start it, point "
                            "MLFLOW_TRACKING_URI elsewhere, or pass mlflow=false") from None


def client(uri: str, lock: bool = True):
    """An MlflowClient of `uri`, MLflow's and alembic's chatter quieted. Made under the store's file lock: opening
    a SQLite store migrates it when its tables are missing or old, and a second process opening it in the middle
    of another's migration fails ("duplicate column name")."""
    # MLflow takes seconds to import; only runs that log need it
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # store creation chatter is not news for the user
        logging.getLogger(name).setLevel(logging.WARNING)
    if not lock:
        return MlflowClient(uri)
    with store_lock(uri):
        return MlflowClient(uri)


def prepare_experiment(uri: str, name: str) -> str:
    """Create the store (first use migrates a SQLite file) and the experiment if they do not exist, under the
    store's file lock; return the experiment id. Artifacts of a local store go beside it (mlartifacts/)."""
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


def source_tags() -> dict[str, str]:
    """The tags mlflow.start_run sets on a run (mlflow.user, mlflow.source.name and .type, and mlflow.source.git.*
    for the commit, branch and repository), from MLflow's own context providers, resolved once per process. The git
    tags are those of the checkout that holds the gym_qwen package, not of the main file (a venv's gym-qwen
    script, a Ray worker's entry point): the code that ran is the package's."""
    return dict(_resolved_source_tags())


@functools.lru_cache(maxsize=1)
def _resolved_source_tags() -> dict[str, str]:
    # MLflow is imported here, not at the top: `gym-qwen --help` and the commands with mlflow=false never load it
    from mlflow.tracking.context.git_context import GitRunContext
    # MLflow takes seconds to import; only runs that log need it
    from mlflow.tracking.context.registry import resolve_tags
    # MLflow takes seconds to import; only runs that log need it
    from mlflow.utils import git_utils
    # MLflow takes seconds to import; only runs that log need it
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_BRANCH, MLFLOW_GIT_COMMIT, MLFLOW_GIT_REPO_URL

    tags = resolve_tags(ignore=[GitRunContext])
    git = {MLFLOW_GIT_COMMIT: git_utils.get_git_commit(PACKAGE_DIR),
           MLFLOW_GIT_BRANCH: git_utils.get_git_branch(PACKAGE_DIR),
           MLFLOW_GIT_REPO_URL: git_utils.get_git_repo_url(PACKAGE_DIR)}
    tags.update({k: v for k, v in git.items() if v})
    return tags


def experiment_link(uri: str, experiment_id: str) -> str:
    """The address of an experiment's run table in the MLflow UI: the server's own for an http(s) store, else
    where `mlflow ui` serves a local store by default. (The UI opens an experiment on its GenAI overview, where
    runs are a click away under "Model training"; this goes straight to them.)"""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}/runs"


def browse_hint(uri: str, experiment_id: str) -> str:
    """How to see an experiment's runs: its link, after `mlflow ui --backend-store-uri <uri>` for a local store."""
    if uri.startswith(("http://", "https://")):
        return experiment_link(uri, experiment_id)
    return f"mlflow ui --backend-store-uri {uri}, then open {experiment_link(uri, experiment_id)}"


class MlflowRun:
    """One MLflow run, new (`create`, with the tags mlflow.start_run would set: source_tags) or continued
    (`resume`): params logged once each (MLflow refuses to change one), metrics in one call per step, tags,
    artifacts, MLflow's system metrics while it runs (`log_system_metrics`) and its end. A metric the run already
    holds at a step or a later one is not logged again, so a resumed training or a retried trial that replays steps
    never logs a step twice. With `once_per_step` a step logged by this object counts as held too; without it
    several values may be logged at one step (a training's episodes that end at the same env step)."""

    def __init__(self, mlflow_client, run_id: str, *, once_per_step: bool = True, fresh: bool = False):
        self.client, self.run_id, self.once_per_step = mlflow_client, run_id, once_per_step
        self.latest: dict[str, float] = {}  # {metric: its value at the latest step}, as the run was found
        self.last: dict[str, int] = {}  # {metric: the last step it holds}
        self.params: dict[str, str] = {}
        self._monitor = None  # MLflow's system metrics monitor, while one runs
        if not fresh:
            data = mlflow_client.get_run(run_id).data
            self.latest, self.params = dict(data.metrics), dict(data.params)
            self.last = {k: max((m.step for m in mlflow_client.get_metric_history(run_id, k)), default=-1)
                         for k in data.metrics}

    @classmethod
    def create(cls, mlflow_client, experiment_id: str, run_name: str, tags: dict, params: dict | None = None,
               once_per_step: bool = True) -> "MlflowRun":
        """A new run of the experiment with the source tags (source_tags; a key of `tags` wins: a sweep's trial
        in a Ray worker carries its driver's), `tags` (mlflow.parentRunId among them nests it) and `params`
        (flattened: {"a": {"b": 1}} -> a.b)."""
        run = mlflow_client.create_run(experiment_id, run_name=run_name, tags={**source_tags(), **tags})
        made = cls(mlflow_client, run.info.run_id, once_per_step=once_per_step, fresh=True)
        made.log_params(params or {})
        return made

    @classmethod
    def resume(cls, mlflow_client, run_id: str, params: dict | None = None,
               once_per_step: bool = True) -> "MlflowRun":
        """The run `run_id` continued (status RUNNING again); of `params`, the ones it lacks are logged."""
        mlflow_client.update_run(run_id, status="RUNNING")
        run = cls(mlflow_client, run_id, once_per_step=once_per_step)
        run.log_params(params or {})
        return run

    def log_params(self, params: dict) -> None:
        # MLflow takes seconds to import; only runs that log need it
        from mlflow.entities import Param

        flat = {k: ("None" if v is None else str(v)[:6000]) for k, v in _flatten(params).items()}
        new = [Param(k, v) for k, v in flat.items() if k not in self.params]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])
        self.params.update({p.key: p.value for p in new})

    def log_metrics(self, metrics: dict, step: int) -> int:
        """Log the metrics at `step` in one call (None and NaN are left out); returns how many were logged."""
        # MLflow takes seconds to import; only runs that log need it
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()
              if v is not None and v == v and int(step) > self.last.get(k, -1)]
        if ms:
            self.client.log_batch(self.run_id, metrics=ms)
            if self.once_per_step:
                self.last.update({m.key: int(step) for m in ms})
        return len(ms)

    def set_tags(self, tags: dict) -> None:
        # MLflow takes seconds to import; only runs that log need it
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_system_metrics(self, uri: str) -> None:
        """Log MLflow's system metrics (system/cpu_utilization_percentage, system/system_memory_usage_megabytes,
        disk, network; GPU where nvidia-ml-py is installed) to this run from a background thread until finish(),
        every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10 by default); a continued run goes on from its
        last step. `uri`: the run's tracking store."""
        # MLflow takes seconds to import; only runs that log need it
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        if self._monitor is None:
            self._monitor = SystemMetricsMonitor(self.run_id, resume_logging=True, tracking_uri=uri)
            self._monitor.start()

    def finish(self, status: str = "FINISHED") -> None:
        if self._monitor is not None:  # its last samples go in before the run ends
            self._monitor.finish()
            self._monitor = None
        self.client.set_terminated(self.run_id, status=status)


class Tracker:
    """A command's MLflow run: params, metrics (step = env steps), artifacts. `enabled=False` makes every call a
    no-op. `tags` are added to the run start() makes, and `continue_run` (a run id) is continued when start() is
    given none: a sweep's training trial logs into its nested run, found again after a retry. `system_metrics`
    logs MLflow's system metrics to the run while it runs."""

    def __init__(self, enabled: bool, experiment: str = "gym-qwen", tags: dict | None = None,
                 continue_run: str | None = None, system_metrics: bool = False):
        self.enabled, self.experiment, self.run_id = enabled, experiment, None
        self.tags, self.continue_run, self.system_metrics = dict(tags or {}), continue_run, system_metrics
        self.experiment_id: str | None = None
        self._run: MlflowRun | None = None

    @property
    def run(self) -> MlflowRun | None:
        """The open run (None before start(), after end(), or when off)."""
        return self._run

    def preflight(self) -> None:
        """Refuse, before anything is written, a tracking server that does not answer (see check_tracking_uri)."""
        if self.enabled:
            check_tracking_uri()

    def start(self, run_name: str, params: dict, tags: dict | None = None, run_id: str | None = None) -> str | None:
        """Make the run (or continue `run_id`, when resuming: its params stay as they were); returns its id."""
        if not self.enabled:
            return None
        # MLflow takes seconds to import; only runs that log need it
        import mlflow

        uri = default_tracking_uri()
        mlflow.set_tracking_uri(uri)
        experiment_id = prepare_experiment(uri, self.experiment)  # the store and experiment race between processes
        c = client(uri)
        run_id = run_id or self.continue_run
        if run_id is not None:
            self._run = MlflowRun.resume(c, run_id, once_per_step=False)
        else:
            self._run = MlflowRun.create(c, experiment_id, run_name, {**(tags or {}), **self.tags}, params,
                                         once_per_step=False)
        if self.system_metrics:
            self._run.log_system_metrics(uri)
        self.run_id, self.experiment_id = self._run.run_id, experiment_id
        return self.run_id

    def log_metrics(self, metrics: dict, step: int) -> None:
        """Log at `step` (env steps); a metric the continued run already holds at this step or later is skipped."""
        if self._run is not None:
            self._run.log_metrics(metrics, step)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if self._run is not None:
            self._run.log_artifact(path, artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """End the run with `status` (once: a second call does nothing)."""
        if self._run is not None:
            self._run.finish(status)
            self._run = None
