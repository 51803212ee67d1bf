"""Cluster files (they parse, name real entry points, match the installed Ray) and job submission to a real
local cluster started with `ray start --head` on 127.0.0.1, with token authentication set explicitly."""
from __future__ import annotations

import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY, TINY_TASK

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
VENV_BIN = Path(sys.executable).parent


def _ray_version() -> str:
    """The Ray of the lock (constraints.txt), which the installed Ray must be."""
    import ray

    from test_lock import lock

    locked = lock()["ray"]
    assert ray.__version__ == locked, f"installed Ray {ray.__version__}, locked {locked}: reinstall (make test)"
    return locked


def _check_command(command: str) -> None:
    """A `gym-qwen CMD k=v ...` or `python -m gym_qwen.jobs.CMD k=v ...` line names a real command and its
    keys parse under that command's schema."""
    import importlib

    from gym_qwen.jobs.cli import COMMANDS
    from gym_qwen.platform.config import parse_config

    words = shlex.split(command.replace("$PWD", "/abs"))
    if words[0] == "gym-qwen":
        name, args = words[1], words[2:]
        assert name in COMMANDS, command
        module = COMMANDS[name][0]
    else:
        assert words[:2] == ["python", "-m"] and words[2].startswith("gym_qwen.jobs."), command
        module, args = words[2], words[3:]
        name = module.rsplit(".", 1)[1]
        assert (name, module) in {(k, v[0]) for k, v in COMMANDS.items()}, command
    importlib.import_module(module)
    import gym_qwen.platform.config_schema as schemas

    (schema,) = [v for v in vars(schemas).values() if isinstance(v, type) and getattr(v, "command", None) == name]
    if name == "sweep":  # config= names the sweep file, not a preset of the sweep's keys
        args = [("file=" + a.split("=", 1)[1]) if a.startswith("config=") else a for a in args]
    parse_config(schema, [a for a in args if "=" in a])


def test_cluster_files_parse_and_match_the_locked_ray():
    version = _ray_version()
    launcher = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    assert launcher["docker"]["image"] == f"rayproject/ray:{version}-py311-gpu"
    assert launcher["docker"]["head_image"] == f"rayproject/ray:{version}-py311-cpu"
    assert set(launcher["available_node_types"]) == {"head_cpu", "cpu_worker", "gpu_worker"}
    assert launcher["head_node_type"] == "head_cpu"
    assert any("pip install" in c and "gym-qwen" in c for c in launcher["setup_commands"])
    assert all("RAY_AUTH_MODE=token" in c for c in launcher["head_start_ray_commands"] + launcher[
        "worker_start_ray_commands"] if "ray start" in c)
    cluster = yaml.safe_load((CLUSTER / "kuberay-raycluster.yaml").read_text())
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert (cluster["kind"], job["kind"]) == ("RayCluster", "RayJob")
    assert cluster["spec"]["rayVersion"] == job["spec"]["rayClusterSpec"]["rayVersion"] == version
    gpu_groups = [g for g in cluster["spec"]["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu_groups
    _check_command(job["spec"]["entrypoint"])
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        for c in [spec["headGroupSpec"]["template"]["spec"]["containers"][0],
                  *[g["template"]["spec"]["containers"][0] for g in spec["workerGroupSpecs"]]]:
            assert {"name": "RAY_AUTH_MODE", "value": "token"} in c["env"]
    assert f"FROM rayproject/ray:{version}-py311-gpu" in (CLUSTER / "Dockerfile").read_text()
    runtime_env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert ".venv/" in runtime_env["excludes"] and "runs/" in runtime_env["excludes"]


def test_documented_commands_are_real():
    lines = []
    for doc in (CLUSTER / "README.md", ROOT / "README.md", ROOT / "docs" / "cluster.md"):
        text = doc.read_text().replace("\\\n", " ")
        lines += re.findall(r"-- ((?:gym-qwen|python -m gym_qwen\.jobs\.)[^\n`]*)", text)
    assert len(lines) >= 3
    for line in lines:
        _check_command(line.strip())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_cluster(tmp_path):
    """`ray start --head` on 127.0.0.1 with token auth; yields (dashboard address, env); `ray stop` after."""
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("RAY_ADDRESS", None)
    dash = _free_port()
    temp_dir = f"/tmp/gq{secrets.token_hex(4)}"  # short: Ray's socket paths live under it
    start = subprocess.run([str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
                            f"--port={_free_port()}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                            "--num-cpus=4", "--include-dashboard=true", "--disable-usage-stats",
                            f"--temp-dir={temp_dir}",
                            # free ports, not Ray's fixed defaults (10001, 52365): another Ray on this machine,
                            # or one left over from a killed job, must not stop this one's job agent
                            *(f"--{name}={_free_port()}" for name in (
                                "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                "runtime-env-agent-port", "metrics-export-port"))],
                           env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        yield f"http://127.0.0.1:{dash}", env, token
    finally:
        _stop_cluster(temp_dir)


def _stop_cluster(temp_dir: str) -> None:
    """Stop this cluster only (`ray stop` would stop every Ray on the machine): the processes whose command
    line names its temp dir (GCS, raylet, dashboard) and all their descendants (agents, workers)."""
    import signal

    cmdline, children = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    todo = [pid for pid, cmd in cmdline.items() if temp_dir in cmd]
    doomed = set()
    while todo:
        pid = todo.pop()
        if pid not in doomed:
            doomed.add(pid)
            todo += children.get(pid, [])
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(1)
    subprocess.run(["rm", "-rf", temp_dir], capture_output=True, timeout=60)


def _submit(client, **kwargs) -> str:
    """submit_job, retried while the fresh head's job agent is still starting ("No available agent")."""
    deadline = time.time() + 180
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)


def _runtime_env(env: dict) -> dict:
    spec = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    return {"working_dir": str(ROOT), "excludes": spec["excludes"],
            "env_vars": {**spec["env_vars"], "MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]}}


@pytest.mark.ray
def test_jobs_submitted_to_a_local_cluster(local_cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    address, env, token = local_cluster
    runs = tmp_path / "runs"
    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    train = " ".join(["gym-qwen", "train", *TINY, f"task={TINY_TASK}", "steps=2000", "eval_freq=0",
                      "num_workers=1", f"output_dir={runs}"])
    job_id = _submit(client, entrypoint=train, runtime_env=_runtime_env(env))
    deadline = time.time() + 900
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                              JobStatus.STOPPED} and time.time() < deadline:
        time.sleep(2)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "trained cartpole-balance for 2,000 env steps" in logs
    agent = runs / TINY_TASK / "default" / "seed1" / "agent.pt"
    assert agent.is_file() and (agent.parent / "summary.json").is_file()

    # The same through the `ray job submit` command line, with the python -m form of a command.
    out = subprocess.run([str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--runtime-env",
                          str(CLUSTER / "runtime_env.yaml"), "--working-dir", str(ROOT), "--",
                          "python", "-m", "gym_qwen.jobs.evaluate", f"checkpoint={agent}", "episodes=2",
                          "num_workers=2", "progress=false", f"output={tmp_path / 'ev.json'}"],
                         env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "baseline" in out.stdout and (tmp_path / "ev.json").is_file()
    # Without the token the job server refuses.
    no_token = {k: v for k, v in env.items() if k != "RAY_AUTH_TOKEN"}
    refused = subprocess.run([str(VENV_BIN / "ray"), "job", "list", "--address", address], env={
        **no_token, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_submitted_to_a_local_cluster(local_cluster, tmp_path):
    """`ray job submit -- gym-qwen sweep ...` on the real head: the trials run as Tune trials on the cluster and
    log to the MLflow store the job was given; the sweep's state lands where `storage=` says."""
    from test_cli import untrained_checkpoint
    from test_sweeps import _runs, _tiny_sweep

    address, env, _ = local_cluster
    agent = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    sweep = _tiny_sweep(tmp_path / "tiny.yaml", agent, episodes=1, head=f"storage: {tmp_path / 'sweeps'}\n")
    out = subprocess.run([str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--runtime-env",
                          str(CLUSTER / "runtime_env.yaml"), "--working-dir", str(ROOT), "--",
                          "gym-qwen", "sweep", f"config={sweep}"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "2 of 2 trials done" in out.stdout
    assert (tmp_path / "sweeps" / "tiny" / "gym-qwen-sweep.json").is_file()
    _, runs = _runs(env["MLFLOW_TRACKING_URI"])
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert sorted(r.data.params["mode"] for r in trials) == ["baseline", "naive"]
    assert all(r.info.status == "FINISHED" for r in trials)


@pytest.mark.ray
@pytest.mark.slow
def test_a_training_job_stopped_with_ray_job_stop_resumes_when_resubmitted(local_cluster, tmp_path):
    """`ray job stop` during training: the driver gets SIGTERM, writes a final checkpoint and stops; the same job
    submitted again with resume=true finishes the run from it, every episode exactly once."""
    import torch
    from ray.job_submission import JobStatus, JobSubmissionClient

    address, env, token = local_cluster
    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    runs = tmp_path / "runs"
    train = ["gym-qwen", "train", *TINY, f"task={TINY_TASK}", "steps=8000", "eval_freq=0", "checkpoint_freq=2000",
             "num_workers=1", "mlflow=false", f"output_dir={runs}"]
    state = runs / TINY_TASK / "default" / "seed1" / "train_state.pt"
    job_id = _submit(client, entrypoint=" ".join(train), runtime_env=_runtime_env(env))
    deadline = time.time() + 600
    while not state.exists() and time.time() < deadline:
        assert client.get_job_status(job_id) in {JobStatus.PENDING, JobStatus.RUNNING}, client.get_job_logs(job_id)
        time.sleep(1)
    assert state.exists()
    stop = subprocess.run([str(VENV_BIN / "ray"), "job", "stop", "--address", address, job_id], env=env,
                          capture_output=True, text=True, timeout=300)
    assert stop.returncode == 0, stop.stderr[-2000:]
    while client.get_job_status(job_id) not in {JobStatus.STOPPED, JobStatus.FAILED, JobStatus.SUCCEEDED}:
        time.sleep(1)
    assert client.get_job_status(job_id) == JobStatus.STOPPED
    logs = client.get_job_logs(job_id)
    assert "stopped by SIGTERM" in logs and "continue with resume=true" in logs, logs[-2000:]
    stopped_at = torch.load(state, weights_only=True)["learner"]["decisions"]
    assert 0 < stopped_at < 4000

    again = _submit(client, entrypoint=" ".join([*train, "resume=true"]), runtime_env=_runtime_env(env))
    deadline = time.time() + 900
    while (status := client.get_job_status(again)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                            JobStatus.STOPPED} and time.time() < deadline:
        time.sleep(2)
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(again)[-3000:]
    final = torch.load(state, weights_only=True)
    assert final["learner"]["decisions"] == 4000
    assert sorted(int(e["episode_id"]) for e in final["buffer"]["episodes"]) == list(range(8))
