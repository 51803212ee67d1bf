"""MLflow tracking against a real SQLite store."""
from __future__ import annotations

import os
import subprocess
import sys

START_ONE_RUN = """
import sys
from gym_qwen.platform.tracking import Tracker
t = Tracker(True, "race")
t.start(f"run-{sys.argv[1]}", {"i": sys.argv[1]})
t.end()
"""


def test_runs_starting_at_once_on_a_fresh_store_all_succeed(tmp_path):
    # Several trainings (or Tune trials) started together on a new mlflow.db used to race through the schema
    # migration and the experiment creation; one of them died with "duplicate column name".
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-c", START_ONE_RUN, str(i)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0] * 4, [err[-500:] for rc, err in results if rc]

    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("race")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.params["i"] for r in runs) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_continued_run_does_not_log_a_step_twice(tmp_path, monkeypatch):
    """A run killed after its checkpoint at 1000 env steps had logged up to 3000; resumed, it replays 2000 and 3000:
    the MLflow run keeps each step once."""
    from mlflow.tracking import MlflowClient

    from gym_qwen.platform.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    first = Tracker(True, "resume")
    run_id = first.start("run", {"seed": 1})
    for step in (1000, 2000, 3000):
        first.log_metrics({"train/episode_return": step / 10}, step)
    first.log_metrics({"eval/return_mean": 5.0}, 2000)
    first.end("KILLED")

    second = Tracker(True, "resume")
    assert second.start("run", {"seed": 1}, run_id=run_id) == run_id
    for step in (2000, 3000, 4000):
        second.log_metrics({"train/episode_return": step / 10, "eval/return_mean": step / 100}, step)
    second.end()

    client = MlflowClient(uri)
    steps = lambda key: sorted(m.step for m in client.get_metric_history(run_id, key))  # noqa: E731
    assert steps("train/episode_return") == [1000, 2000, 3000, 4000]
    assert steps("eval/return_mean") == [2000, 3000, 4000]  # 3000 was never logged before: it is now
    assert client.get_run(run_id).info.status == "FINISHED"


def test_an_mlflow_server_that_does_not_answer_is_refused_at_once(tmp_path):
    import socket
    import time

    import pytest

    from gym_qwen.platform.tracking import Tracker, TrackingError, check_tracking_uri

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port} does not answer"):
        check_tracking_uri(f"http://127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - started < 10
    check_tracking_uri(f"sqlite:///{tmp_path / 'x.db'}")  # local stores are not checked
    Tracker(False).preflight()  # mlflow=false checks nothing
