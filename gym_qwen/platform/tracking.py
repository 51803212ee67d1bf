"""MLflow tracking: a local SQLite store unless MLFLOW_TRACKING_URI says otherwise."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .config_schema import ConfigError


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
    import urllib.error
    import urllib.request

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


class Tracker:
    """One MLflow run: params, metrics (step = env steps), artifacts. `enabled=False` makes every call a no-op.
    `tags` are added to the run start() makes, and `continue_run` (a run id) is continued when start() is given
    none: a sweep's training trial logs into its nested run, found again after a retry."""

    def __init__(self, enabled: bool, experiment: str = "gym-qwen", tags: dict | None = None,
                 continue_run: str | None = None):
        self.enabled, self.experiment, self.run_id = enabled, experiment, None
        self.tags, self.continue_run = dict(tags or {}), continue_run
        self._client = None
        self._logged: dict[str, int] = {}  # a continued run's last logged step of each metric

    def preflight(self) -> None:
        """Refuse, before anything is written, a tracking server that does not answer (see check_tracking_uri)."""
        if self.enabled:
            check_tracking_uri()

    def start(self, run_name: str, params: dict, tags: dict | None = None, run_id: str | None = None) -> str | None:
        if not self.enabled:
            return None
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # store creation chatter is not news for the user
            logging.getLogger(name).setLevel(logging.WARNING)

        uri = default_tracking_uri()
        mlflow.set_tracking_uri(uri)
        with store_lock(uri):  # creating the store (first client use) and the experiment race between processes
            self._client = MlflowClient(uri)
            exp = self._client.get_experiment_by_name(self.experiment)
            if exp is None:
                artifacts = None
                if uri.startswith("sqlite:///"):  # keep artifacts beside a local store, not in the working dir
                    artifacts = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").absolute().as_uri()
                exp_id = self._client.create_experiment(self.experiment, artifact_location=artifacts)
            else:
                exp_id = exp.experiment_id
        run_id = run_id or self.continue_run
        if run_id is not None:  # resuming: continue the same run
            self._client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            self._logged = self._last_steps(run_id)
            return run_id
        run = self._client.create_run(exp_id, run_name=run_name, tags={**(tags or {}), **self.tags})
        self.run_id = run.info.run_id
        flat = {k: ("None" if v is None else v) for k, v in _flatten(params).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):
            from mlflow.entities import Param
            self._client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in items[i:i + 100]])
        return self.run_id

    def _last_steps(self, run_id: str) -> dict[str, int]:
        """{metric: the last step logged} of a run: a resumed training replays the steps between its checkpoint
        and the kill, and must not log them twice."""
        keys = self._client.get_run(run_id).data.metrics
        return {k: max((m.step for m in self._client.get_metric_history(run_id, k)), default=-1) for k in keys}

    def log_metrics(self, metrics: dict, step: int) -> None:
        """Log at `step` (env steps); a metric the continued run already holds at this step or later is skipped."""
        if not self.enabled or self.run_id is None:
            return
        import time

        from mlflow.entities import Metric
        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()
              if v is not None and int(step) > self._logged.get(k, -1)]
        if ms:
            self._client.log_batch(self.run_id, metrics=ms)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if self.enabled and self.run_id is not None:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id is not None:
            self._client.set_terminated(self.run_id, status=status)
