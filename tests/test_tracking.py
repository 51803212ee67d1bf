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
