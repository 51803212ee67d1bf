"""Storage on a URI (issue 32, item 3): `storage=` (sweeps) and `output_dir=` (training) on `s3://`, against an
S3-compatible server on 127.0.0.1 that the tests start themselves (moto's server mode, `python -m moto.server`).

The drills: an interrupted sweep on S3 storage resumes without running a finished trial again and without a
second MLflow run; an interrupted training on S3 resumes from its checkpoint there; a Ray learner writes its
checkpoint to S3 itself (not through the driver); bad storage is one line and exit 2; MLflow's artifacts go to the
same store through `mlflow server --artifacts-destination s3://...`."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, TINY_TASK, mlflow_server, tiny_train_config
from test_cli import _assert_user_error, _main_in, untrained_checkpoint
from test_sweeps import TINY_TRAIN, _interrupt_sweep, _runs, _tiny_sweep, _write, interrupt_five_trial_sweep, \
    resume_interrupted_five_trial_sweep, tiny_dt_sweep

PY = sys.executable
BUCKET = "gym-qwen"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1:<free port> with the bucket `gym-qwen`, and this process's environment
    pointing at it (AWS_ENDPOINT_URL and test credentials; child processes inherit them). Yields the endpoint."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (*CREDENTIALS, "AWS_ENDPOINT_URL")}
    os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.3)
        import boto3  # moto brings it; only these tests need it

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _keys(prefix: str) -> list[str]:
    """The object keys under s3://gym-qwen/<prefix>."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(f"s3://{BUCKET}/{prefix}")
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return sorted(i.path[len(BUCKET) + 1:] for i in infos if i.type == pafs.FileType.File)


# ------------------------------------------------------------------------------------------ the storage module
def test_uris_are_joined_with_their_query_at_the_end():
    from gym_qwen.platform.storage import basename, display, is_uri, join, parent

    uri = "s3://b/runs?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join(uri, "t", "seed1") == "s3://b/runs/t/seed1?endpoint_override=127.0.0.1:9000&scheme=http"
    assert parent(join(uri, "x")) == uri and basename(join(uri, "x")) == "x"
    assert display(join(uri, "x")) == "s3://b/runs/x"
    assert is_uri(uri) and is_uri("file:///tmp/x") and not is_uri("runs/sweeps") and not is_uri("/abs/path")
    assert join("runs", "a") == str(Path("runs", "a"))


def test_objects_are_written_read_and_checked_on_s3(s3):
    from gym_qwen.platform.storage import exists, read_bytes, storage_problem, write_bytes

    uri = f"s3://{BUCKET}/unit/a.txt"
    assert not exists(uri)
    write_bytes(uri, b"hello")
    assert exists(uri) and read_bytes(uri) == b"hello"
    assert storage_problem(f"s3://{BUCKET}/unit") is None
    assert "not found" in storage_problem("s3://no-such-bucket/unit")
    # the endpoint in the URI's query instead of the environment (pyarrow's options)
    port = s3.rsplit(":", 1)[1]
    assert storage_problem(f"s3://{BUCKET}/unit?endpoint_override=127.0.0.1:{port}&scheme=http") is None
    assert _keys("unit") == ["unit/a.txt"]  # the probe is gone


# ------------------------------------------------------------------------------------------ bad storage: one line
def test_an_unknown_scheme_is_one_line(tmp_path, capsys, monkeypatch):
    args = ["train", *TINY, f"task={TINY_TASK}", "output_dir=ftp://host/runs"]
    _assert_user_error(*_main_in(tmp_path, args, capsys, monkeypatch), tmp_path,
                       ["output_dir=ftp://host/runs", "unknown storage scheme 'ftp'", "s3://"])
    args = ["sweep", "config=any.yaml", "storage=ftp://host/sweeps"]
    _assert_user_error(*_main_in(tmp_path, args, capsys, monkeypatch), tmp_path,
                       ["storage=ftp://host/sweeps", "unknown storage scheme 'ftp'"])
    args = ["collect", "checkpoint=any.pt", "output=ftp://host/d.parquet"]
    _assert_user_error(*_main_in(tmp_path, args, capsys, monkeypatch), tmp_path,
                       ["output=ftp://host/d.parquet", "unknown storage scheme 'ftp'"])


def test_a_bucket_that_does_not_exist_is_one_line(s3, tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["train", *TINY, f"task={TINY_TASK}", "output_dir=s3://no-such-bucket/runs"]
    _assert_user_error(*_main_in(cwd, args, capsys, monkeypatch), cwd,
                       ["cannot write the run directory s3://no-such-bucket/runs/", "no-such-bucket", "not found"])
    path = _tiny_sweep(tmp_path / "tiny.yaml", untrained_checkpoint(tmp_path / "ckpt" / "agent.pt"), episodes=1)
    args = ["sweep", f"config={path}", "storage=s3://no-such-bucket/sweeps"]
    _assert_user_error(*_main_in(cwd, args, capsys, monkeypatch), cwd,
                       ["storage=s3://no-such-bucket/sweeps: cannot keep the sweep there", "not found"])


def test_a_second_run_into_the_same_uri_is_refused(s3, tmp_path, monkeypatch):
    """A finished run on S3 (every file of its run directory there, nothing local) is not overwritten."""
    from gym_qwen.platform.training.run import RunDirectoryError, train

    monkeypatch.chdir(tmp_path)
    root = f"s3://{BUCKET}/once"
    summary = train(tiny_train_config(root, "steps=600", "eval_freq=0", "mlflow=false"))
    where = f"s3://{BUCKET}/once/{TINY_TASK}/default/seed1"
    assert summary["run_dir"] == where and summary["checkpoint"] == where + "/agent.pt"
    assert _keys("once") == [f"once/{TINY_TASK}/default/seed1/{name}"
                             for name in ("agent.pt", "config.yaml", "summary.json", "train_state.pt")]
    assert os.listdir(tmp_path) == []
    with pytest.raises(RunDirectoryError, match="already holds a run; pass resume=true"):
        train(tiny_train_config(root, "steps=600", "eval_freq=0", "mlflow=false"))


# ------------------------------------------------------------------------------------------ collect and distill
def test_collect_writes_its_parquet_to_s3_and_distill_reads_it_from_there(s3, tmp_path, capsys, monkeypatch):
    """`collect output=s3://...` (the endpoint in the URI's query): the storage is tried before any work (a bad
    bucket: one line, exit 2), the file appears whole on S3 with nothing left locally (its episode shards were
    staged in a temporary folder), a second collect there without force=true is refused, and `distill data=s3://...`
    reads it back."""
    from gym_qwen.actors.corrector_collection import staging_output
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data

    port = s3.rsplit(":", 1)[1]
    uri = f"s3://{BUCKET}/collect/d.parquet?endpoint_override=127.0.0.1:{port}&scheme=http"
    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    common = ["collect", f"checkpoint={ckpt}", "episodes=3", "spec_exec_horizon=3", "progress=false",
              "torch_threads=1"]
    _assert_user_error(*_main_in(cwd, [*common, "output=s3://no-such-bucket/d.parquet"], capsys, monkeypatch), cwd,
                       ["output=s3://no-such-bucket/d.parquet: cannot write there", "not found"])
    rc, out, err = _main_in(cwd, [*common, f"output={uri}"], capsys, monkeypatch)
    assert rc == 0, err
    assert f"rows to s3://{BUCKET}/collect/d.parquet\n" in out and "endpoint_override" not in out
    assert _keys("collect") == ["collect/d.parquet"]
    assert os.listdir(cwd) == [] and not staging_output(uri).parent.exists()
    columns, info = read_corrector_data(uri)
    assert sorted(set(columns["episode"].tolist())) == [0, 1, 2] and info["episodes"] == 3
    _assert_user_error(*_main_in(cwd, [*common, f"output={uri}"], capsys, monkeypatch), cwd,
                       [f"output s3://{BUCKET}/collect/d.parquet exists", "force=true"])
    rc, out, err = _main_in(cwd, ["distill", f"data={uri}", f"tdmpc_ckpt={ckpt}", f"save_path={tmp_path / 'c'}",
                                  "corrector_type=two_tower", "epochs=1", "device=cpu", "torch_threads=1",
                                  "progress=false", "mlflow=false", "val_fraction=0.5"], capsys, monkeypatch)
    assert rc == 0, err
    assert (tmp_path / "c-two_tower.pt").is_file()
    missing = uri.replace("d.parquet", "none.parquet")
    _assert_user_error(*_main_in(cwd, ["distill", f"data={missing}", f"tdmpc_ckpt={ckpt}", f"save_path={tmp_path / 'e'}",
                                       "mlflow=false"], capsys, monkeypatch), cwd,
                       [f"corrector data not found: s3://{BUCKET}/collect/none.parquet"])


def test_a_failed_upload_keeps_the_collected_episodes_and_resume_uploads_them(s3, tmp_path, capsys, monkeypatch):
    """The bucket disappears between the check and the upload (a real S3 error from the server): one line, exit 2,
    the episodes stay staged, and once the bucket is back resume=true uploads them without collecting any again;
    resume=true with more episodes then extends the finished file there (downloaded) by the new ones only."""
    import boto3

    from gym_qwen.actors import corrector_collection
    from gym_qwen.actors.corrector_collection import staging_output
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data

    bucket, port = "gym-qwen-flaky", s3.rsplit(":", 1)[1]
    s3_client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    s3_client.create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/d.parquet?endpoint_override=127.0.0.1:{port}&scheme=http"
    real_upload = corrector_collection.upload

    def bucket_gone_then_upload(local, target):
        s3_client.delete_bucket(Bucket=bucket)
        return real_upload(local, target)

    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    common = ["collect", f"checkpoint={ckpt}", "episodes=3", "spec_exec_horizon=3", "progress=false",
              "torch_threads=1", f"output={uri}"]
    monkeypatch.setattr(corrector_collection, "upload", bucket_gone_then_upload)
    _assert_user_error(*_main_in(cwd, common, capsys, monkeypatch), cwd,
                       [f"output=s3://{bucket}/d.parquet: upload failed", "resume=true"])
    parts = staging_output(uri).with_name("d.parquet.parts")
    assert len(list(parts.glob("episode-*.parquet"))) == 3
    monkeypatch.setattr(corrector_collection, "upload", real_upload)
    s3_client.create_bucket(Bucket=bucket)
    rc, out, err = _main_in(cwd, [*common, "resume=true"], capsys, monkeypatch)
    assert rc == 0, err
    assert "resuming: 3 of 3 episodes already collected" in out
    columns, info = read_corrector_data(uri)
    assert sorted(set(columns["episode"].tolist())) == [0, 1, 2] and info["episodes"] == 3
    assert not staging_output(uri).parent.exists()
    extended = [c for c in common if not c.startswith("episodes=")] + ["episodes=4", "resume=true"]
    rc, out, err = _main_in(cwd, extended, capsys, monkeypatch)  # the finished file there, extended by one episode
    assert rc == 0, err
    assert "resuming: 3 of 4 episodes already collected" in out
    more, info = read_corrector_data(uri)
    assert sorted(set(more["episode"].tolist())) == [0, 1, 2, 3] and info["episodes"] == 4
    first = more["episode"] < 3
    assert np.array_equal(more["z_real"][first], columns["z_real"])  # the three kept as they were


def test_dt_train_writes_its_files_to_s3(s3, tmp_path, capsys, monkeypatch):
    """`dt-train log_dir=s3://...`: the checkpoints, the CSV log and the summary appear there, nothing local; a
    bad bucket is one line, exit 2, before any work."""
    from test_dt import TINY_DT, _learnable_data

    from gym_qwen.platform.datasets.d4rl import write_hdf5
    from gym_qwen.platform.storage import read_bytes

    data = write_hdf5(tmp_path / "hopper-test-v5.hdf5", _learnable_data(n_eps=3, length=30, S=11, A=3))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    common = ["dt-train", "env=hopper", f"data={data}", "mlflow=false", *TINY_DT]
    _assert_user_error(*_main_in(cwd, [*common, "log_dir=s3://no-such-bucket/dt"], capsys, monkeypatch), cwd,
                       ["log_dir=s3://no-such-bucket/dt", "not found"])
    port = s3.rsplit(":", 1)[1]
    rc, out, err = _main_in(cwd, [*common, f"log_dir=s3://{BUCKET}/dt?endpoint_override=127.0.0.1:{port}&scheme=http"],
                            capsys, monkeypatch)
    assert rc == 0, err
    assert os.listdir(cwd) == []
    keys = _keys("dt")
    assert len(keys) == 4 and [sum(w in k for k in keys) for w in ("_model_", "_best.pt", "_log_", "_summary_")] \
        == [2, 1, 1, 1], keys
    summary = json.loads(read_bytes(f"s3://{BUCKET}/" + next(k for k in keys if "_summary_" in k)))
    assert summary["updates"] == 6 and summary["model"] == f"s3://{BUCKET}/" + next(
        k for k in keys if "_model_" in k and not k.endswith("_best.pt"))
    assert len(read_bytes(f"s3://{BUCKET}/" + next(k for k in keys if "_log_" in k)).decode().splitlines()) == 3


# ------------------------------------------------------------------------------------------ drill: training
def test_an_interrupted_training_on_s3_resumes_from_its_checkpoint_there(s3, tmp_path):
    """`gym-qwen train output_dir=s3://...` (the endpoint in the URI's query) SIGKILLed after its first checkpoint
    reached S3, then resume=true: it continues from that checkpoint (not from scratch), finishes with every file on
    S3 and nothing in the working directory, and MLflow holds one run with each evaluation step once."""
    from mlflow.tracking import MlflowClient

    from gym_qwen.platform.storage import exists, read_bytes
    from gym_qwen.platform.tdmpc2.checkpoints import load_checkpoint

    port = s3.rsplit(":", 1)[1]
    root = f"s3://{BUCKET}/drill?endpoint_override=127.0.0.1:{port}&scheme=http"
    run = f"s3://{BUCKET}/drill/{TINY_TASK}/default/seed1"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    env.pop("AWS_ENDPOINT_URL")  # the URI's query says where the server is
    cmd = [PY, "-m", "gym_qwen.jobs.train", *TINY, f"task={TINY_TASK}", "steps=2000", "checkpoint_freq=1000",
           "eval_freq=1000", "eval_episodes=1", f"output_dir={root}"]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not exists(run + "/train_state.pt"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not exists(run + "/agent.pt")
    (tmp_path / "state.pt").write_bytes(read_bytes(run + "/train_state.pt"))
    assert load_checkpoint(tmp_path / "state.pt")["env_steps"] == 1000

    done = subprocess.run(cmd + ["resume=true"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checkpoint: {run}/agent.pt" in done.stdout
    summary = json.loads(read_bytes(run + "/summary.json"))
    assert summary["env_steps"] == 2000 and [e["env_steps"] for e in summary["eval_history"]] == [1000, 2000]
    assert read_bytes(run + "/eval.csv").decode().splitlines()[1:] and os.listdir(cwd) == []
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gym-qwen").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].info.run_id == summary["mlflow_run_id"]
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "eval/return_mean")] == [1000, 2000]


@pytest.mark.ray
def test_the_ray_learner_writes_its_checkpoint_to_s3_itself(s3, ray_local, tmp_path, monkeypatch):
    """Training on Ray with output_dir on S3: train_state.pt (weights, optimisers, replay buffer) is written by the
    learner actor straight to S3; the driver never asks the learner for its state (that path fails here)."""
    from gym_qwen.actors.training_backend import RayTrainingBackend
    from gym_qwen.platform.storage import read_bytes
    from gym_qwen.platform.tdmpc2.checkpoints import load_checkpoint
    from gym_qwen.platform.training.run import train

    def through_the_driver(self):
        raise AssertionError("the learner's state went through the driver")

    monkeypatch.setattr(RayTrainingBackend, "state", through_the_driver)
    monkeypatch.chdir(tmp_path)
    cfg = tiny_train_config(f"s3://{BUCKET}/ray", "steps=1000", "checkpoint_freq=500", "eval_freq=0",
                            "mlflow=false", "num_workers=1", "worker_cpus=1", "learner_cpus=1", "chunk_decisions=50")
    summary = train(cfg, RayTrainingBackend)
    assert summary["env_steps"] == 1000
    run = f"s3://{BUCKET}/ray/{TINY_TASK}/default/seed1"
    (tmp_path / "state.pt").write_bytes(read_bytes(run + "/train_state.pt"))
    state = load_checkpoint(tmp_path / "state.pt")
    assert state["env_steps"] == 1000 and state["kind"] == "train_state" and state["learner"]["decisions"] == 500
    assert state["num_updates"] == summary["updates"] and "buffer" in state


@pytest.mark.ray
@pytest.mark.slow
def test_the_ray_train_learner_checkpoints_to_s3_from_its_ranks_and_resumes_from_there(s3, ray_local, tmp_path,
                                                                                        monkeypatch):
    """learner=ray_train with output_dir on S3: the ranks write the learner state (replay buffer included) into Ray
    Train's checkpoints on S3; train_state.pt there is the driver's small state naming one; a resumed run restores
    the ranks from it and ends with the uninterrupted count of updates."""
    from gym_qwen.actors.ray_train_learner import CHECKPOINT_KEY
    from gym_qwen.actors.training_backend import RayTrainingBackend
    from gym_qwen.platform.storage import read_bytes
    from gym_qwen.platform.tdmpc2.checkpoints import load_checkpoint
    from gym_qwen.platform.training.run import train

    monkeypatch.chdir(tmp_path)
    keys = ("checkpoint_freq=1000", "eval_freq=0", "mlflow=false", "num_workers=1", "worker_cpus=1",
            "learner_cpus=1", "learner=ray_train", "learner_workers=2")
    summaries = {}
    for where, steps in (("once", 2000), ("twice", 1000), ("twice", 2000)):
        cfg = tiny_train_config(f"s3://{BUCKET}/{where}", f"steps={steps}", *keys,
                                f"resume={'true' if steps == 2000 and where == 'twice' else 'false'}")
        summaries[where] = train(cfg, RayTrainingBackend)
        if where == "twice" and steps == 1000:
            run = f"s3://{BUCKET}/twice/{TINY_TASK}/default/seed1"
            (tmp_path / "state.pt").write_bytes(read_bytes(run + "/train_state.pt"))
            state = load_checkpoint(tmp_path / "state.pt")
            assert "buffer" not in state and state[CHECKPOINT_KEY].startswith(run + "/ray_train/checkpoint_")
            assert [k for k in _keys(f"twice/{TINY_TASK}") if k.endswith("/learner_state.pt")]
    assert summaries["twice"]["env_steps"] == summaries["once"]["env_steps"] == 2000
    assert summaries["twice"]["updates"] == summaries["once"]["updates"] > 0


# ------------------------------------------------------------------------------------------ drill: a sweep
@pytest.mark.ray
@pytest.mark.slow  # the local drill (tests/test_sweeps.py) and the S3 training drill above stay in the default suite
def test_an_interrupted_sweep_on_s3_resumes_without_running_finished_trials_again(s3, tmp_path):
    """tests/test_sweeps.py's drill with storage=s3://...: SIGINT after the first trial finished, exit 130; Tune's
    state and the trials' checkpoints are on S3 (nothing under the working directory's runs/); resume=true runs
    the rest; every trial has one MLflow run, each step once, and the first trial's run was not touched again."""
    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    cwd, cmd, env, uri, out, err = interrupt_five_trial_sweep(ckpt, tmp_path, f"storage=s3://{BUCKET}/sweeps")
    assert f"state in s3://{BUCKET}/sweeps/tiny" in out
    keys = _keys("sweeps/tiny")
    assert "sweeps/tiny/gym-qwen-sweep.json" in keys and any(k.endswith("/records.json") for k in keys), keys
    assert not (cwd / "runs").exists()
    parent = resume_interrupted_five_trial_sweep(cmd, cwd, env, uri)
    assert parent.data.tags["experiment_dir"] == f"s3://{BUCKET}/sweeps/tiny"


@pytest.mark.ray
@pytest.mark.slow
def test_an_interrupted_training_sweep_on_s3_resumes_each_trial_from_its_checkpoint_there(s3, tmp_path):
    """trial_command=train with storage=s3://...: each trial's run directory is on S3 under its trial folder; a
    SIGINT once the first trial's checkpoint is there, then resume=true: every trial finishes, the interrupted one
    from its checkpoint on S3 (each evaluation logged once, one MLflow run per trial)."""
    from gym_qwen.platform.storage import exists

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    longer = TINY_TRAIN.replace("steps: 2000", "steps: 4000")  # room for the SIGINT after the first checkpoint
    path = _write(tmp_path / "train.yaml", f"trial_command: train\nexperiment: tres\nmax_concurrent: 1\n"
                                           f"trial_cpus: 1\nfixed: {{{longer}}}\ngrid: {{seed: [1, 2]}}\n")
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}
    cmd = [PY, "-m", "gym_qwen.jobs.cli", "sweep", f"config={path}", f"storage=s3://{BUCKET}/tsweeps"]
    run = f"s3://{BUCKET}/tsweeps/tres/trial-%03d/run/{TINY_TASK}/trial/seed%d"
    rc, out, err = _interrupt_sweep(cmd, cwd, env, lambda: exists(run % (0, 1) + "/train_state.pt"))
    assert rc == 130, err[-3000:]
    assert not exists(run % (0, 1) + "/agent.pt")  # nothing finished before the interrupt
    res = subprocess.run(cmd + ["resume=true"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert exists(run % (0, 1) + "/agent.pt") and exists(run % (1, 2) + "/agent.pt")
    assert not (cwd / "runs").exists()
    c, runs = _runs(uri)
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    for r in trials:  # (a trial that started afresh in its folder would be refused: "already holds a run")
        assert [m.step for m in c.get_metric_history(r.info.run_id, "eval/return_mean")] == [1000, 2000, 3000, 4000]


@pytest.mark.ray
@pytest.mark.slow
def test_a_decision_transformer_sweep_keeps_its_trials_files_on_s3(s3, ray_local, tmp_path, capsys, monkeypatch):
    """trial_command=dt-train with storage=s3://...: each trial's checkpoints, CSV log and summary land under its
    trial folder on S3 (no runs/ in the working folder), each trial logs its nested run."""
    cwd, path = tiny_dt_sweep(tmp_path, "dts3")
    rc, out, err = _main_in(cwd, ["sweep", f"config={path}", f"storage=s3://{BUCKET}/dtsweeps"], capsys, monkeypatch)
    assert rc == 0, err[-3000:]
    assert sum(1 for line in out.splitlines() if line.rstrip().endswith(" done")) == 2
    keys = _keys("dtsweeps/dts3")
    for trial in ("trial-000", "trial-001"):
        mine = [k for k in keys if k.startswith(f"dtsweeps/dts3/{trial}/dt/")]
        assert [sum(w in k for k in mine) for w in ("_model_", "_best.pt", "_log_", "_summary_")] == [2, 1, 1, 1], mine
    assert not (cwd / "runs").exists()  # (MLflow's own local artifact store stays: mlartifacts/)
    c, runs = _runs(f"sqlite:///{cwd / 'mlflow.db'}")
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    for r in trials:
        assert [m.step for m in c.get_metric_history(r.info.run_id, "eval/d4rl_score")] == [3, 6]


# ------------------------------------------------------------------------------------------ MLflow's artifacts
def test_mlflow_artifacts_go_to_the_same_store(s3, tmp_path):
    """`mlflow server --artifacts-destination s3://...` (docs/cluster.md): an artifact a client logs over HTTP lands
    in the bucket, beside the runs' storage; the client needs no S3 credentials of its own."""
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3}
    with mlflow_server(tmp_path, artifacts=f"s3://{BUCKET}/mlflow", env=env) as uri:
        client = MlflowClient(uri)
        run = client.create_run(client.create_experiment("artifacts"))
        (tmp_path / "note.txt").write_text("on S3")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    assert [k for k in _keys("mlflow") if k.endswith("/note.txt")], _keys("mlflow")
