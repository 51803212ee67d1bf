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


# ------------------------------------------------------------------------ what mlflow.start_run would have set
def _head() -> str | None:
    """The commit of this checkout (None outside a git checkout: then no commit tag is expected)."""
    from pathlib import Path

    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True)
    return done.stdout.strip() or None


def _assert_source_tags(tags: dict, name: str | None = None) -> None:
    """The tags mlflow.start_run sets (MLflow's own context providers), on a run made with create_run."""
    import getpass

    assert tags.get("mlflow.source.git.commit") == _head()
    assert tags["mlflow.user"] == getpass.getuser()
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] == (name or sys.argv[0])


def test_a_training_run_carries_the_tags_mlflow_start_run_sets(tiny_run):
    from mlflow.tracking import MlflowClient

    _assert_source_tags(MlflowClient(tiny_run.uri).get_run(tiny_run.summary["mlflow_run_id"]).data.tags)


def test_an_evaluation_run_carries_them_and_its_system_metrics(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient
    from test_cli import _main_in

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    # mode=prior: the policy prior alone, an episode without the planner's cost
    rc, out, err = _main_in(tmp_path, ["evaluate", f"checkpoint={tiny_checkpoint}", "mode=prior", "episodes=1",
                                       "progress=false", "mlflow=true", "system_metrics=true",
                                       "mlflow_experiment=ev"], capsys, monkeypatch)
    assert rc == 0, err
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("ev").experiment_id])
    _assert_source_tags(run.data.tags)
    assert run.data.tags["command"] == "evaluate" and run.data.metrics["return_mean"] != 0
    assert run.info.status == "FINISHED"
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert cpu and "system/system_memory_usage_megabytes" in run.data.metrics


def test_a_sweep_trial_carries_its_drivers_tags_and_its_system_metrics(tmp_path, monkeypatch):
    """A trial runs in a Ray worker, whose main file is Ray's: it carries the tags of the sweep's driver (handed
    down with the sweep's run settings), and logs MLflow's system metrics when the sweep asks for them."""
    from gym_qwen.platform.config import EvaluateConfig, config_from_dict
    from gym_qwen.platform.sweeps.runs import find_run
    from gym_qwen.platform.sweeps.spec import SweepPoint
    from gym_qwen.platform.sweeps.trial import run_trial
    from gym_qwen.platform.tracking import client, prepare_experiment, source_tags
    from test_cli import untrained_checkpoint

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = prepare_experiment(uri, "sweep")
    driver = {**source_tags(), "mlflow.source.name": "/somewhere/bin/gym-qwen"}  # what the driver hands down
    values = {"checkpoint": str(ckpt), "episodes": 1, "mode": "naive", "spec_exec_horizon": 3, "device": "cpu"}
    point = SweepPoint("naive", values, {"mode": "naive"}, config_from_dict(EvaluateConfig, values))
    run_trial(point, workdir=str(tmp_path), uri=uri, experiment_id=exp, parent_run_id="p", sweep_id="s",
              trial_id="t1", records=[], report=lambda metrics, records: None, source_tags=driver,
              system_metrics=True)
    c = client(uri)
    run = c.get_run(find_run(c, exp, {"sweep_id": "s", "trial_id": "t1"}).info.run_id)
    _assert_source_tags(run.data.tags, "/somewhere/bin/gym-qwen")
    assert run.data.tags["gym_qwen.role"] == "trial" and run.data.tags["mlflow.parentRunId"] == "p"
    assert c.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
