"""Autoscaling-aware requests on a real autoscaling cluster on this machine: `ray start --head` with Ray's fake
multi-node provider (`fake_multinode`, RAY_FAKE_CLUSTER=1), whose autoscaler starts each node it adds as a new
raylet here. The cluster's launcher config lies where `ray up` puts it on a head (~/ray_bootstrap_config.yaml,
HOME pointed at a folder of the test's) and declares two node types: cpu_worker (2 CPUs) and gpu_worker (1 CPU,
1 GPU: declared only). The head has 1 CPU and no GPU.

- `device=auto` chooses cuda, saying the autoscaler may add a gpu_worker;
- a request no node type holds (`trial_gpus=2`) is refused in one line naming the largest node and node type;
- a request only a new node would hold waits for it and, with a short `scale_wait=`, is refused when the time
  is up, in one line;
- a training whose learner (2 CPUs) only a cpu_worker holds waits, with its progress lines, while the
  autoscaler adds one, then trains there.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY, TINY_TASK
from test_cli import _assert_user_error, _main_in, untrained_checkpoint
from test_cluster import _free_port, _stop_cluster

pytestmark = [pytest.mark.ray, pytest.mark.multinode]

VENV_BIN = Path(sys.executable).parent
STORE = 200 * 1024 * 1024  # each node's object store (Ray's default, 30% of memory each, crowds a small machine)
NODE_TYPES = {
    "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
    "cpu_worker": {"resources": {"CPU": 2, "object_store_memory": STORE}, "node_config": {}, "min_workers": 0,
                   "max_workers": 1},
    "gpu_worker": {"resources": {"CPU": 1, "GPU": 1, "object_store_memory": STORE}, "node_config": {},
                   "min_workers": 0, "max_workers": 1},
}


def _launcher_config(gcs_address: str) -> dict:
    """A cluster-launcher config for the fake provider (its nodes: raylets on this machine)."""
    return {"cluster_name": "fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": gcs_address},
            "available_node_types": NODE_TYPES, "head_node_type": "ray.head.default", "docker": {},
            "auth": {"ssh_user": "ubuntu"}, "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": []}


def _leave_earlier_ray() -> None:
    """Leave any Ray this process joined before, and collect what is left of it: an actor handle of an earlier
    session that the garbage collector frees later would release the actor of the same id in this one (ids
    restart with each session's first job), killing it."""
    import gc

    import ray

    if ray.is_initialized():
        ray.shutdown()
    gc.collect()


@pytest.fixture(scope="module")
def autoscaling_cluster(tmp_path_factory):
    """The head (1 CPU) with its autoscaler; yields (GCS address, the head's HOME, env). Stopped after: every
    process of its temp dir and their descendants (the nodes the autoscaler added), nothing else."""
    import ray
    from ray._private.services import get_node_ip_address

    _leave_earlier_ray()
    home = tmp_path_factory.mktemp("head_home")
    port = _free_port()
    address = f"{get_node_ip_address()}:{port}"
    config = home / "ray_bootstrap_config.yaml"
    config.write_text(yaml.safe_dump(_launcher_config(address)))
    # Token authentication off: a driver reads RAY_AUTH_MODE when Ray is imported, before a test can set it
    # (tests/test_cluster.py runs its cluster with tokens, through job submission in new processes)
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "disabled", "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = f"/tmp/gqas{secrets.token_hex(4)}"
    start = subprocess.run([str(VENV_BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=1",
                            f"--object-store-memory={STORE}", "--include-dashboard=false", "--disable-usage-stats",
                            f"--temp-dir={temp_dir}", f"--autoscaling-config={config}",
                            *(f"--{name}={_free_port()}" for name in (
                                "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                "runtime-env-agent-port", "metrics-export-port"))],
                           env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        yield address, home, env
    finally:
        ray.shutdown()
        _stop_cluster(temp_dir)


@pytest.fixture
def on_the_head(autoscaling_cluster, monkeypatch):
    """This process as a driver on the head: its HOME (where the launcher config lies), the address."""
    import ray

    address, home, env = autoscaling_cluster
    monkeypatch.setenv("HOME", env["HOME"])
    # A first job, joined and left at once: the test's driver is then job 2, whose actor ids no stale handle of an
    # earlier session in this process (job 1 of another cluster) can share
    ray.init(address=address, logging_level="ERROR")
    ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", address)
    return address


def test_requests_wait_for_the_nodes_the_autoscaler_may_add_or_are_refused(on_the_head, tmp_path, capsys,
                                                                          monkeypatch):
    import ray

    from gym_qwen.actors.cluster import choose_device, connect, live_nodes, node_types

    connect(on_the_head)
    assert sorted(t.name for t in node_types()) == ["cpu_worker", "gpu_worker"]
    assert [n.resources["CPU"] for n in live_nodes()] == [1.0]
    assert choose_device("auto") == ("cuda", "device=auto: cuda for the learner (no node has a GPU yet, and the "
                                             "autoscaler may add a gpu_worker node with 1 GPU)")

    # no node type holds 2 GPUs: one line, nothing started
    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"experiment: gpus\nfixed: {{checkpoint: {ckpt}, episodes: 1, device: cpu}}\n"
                     "grid: {mode: baseline}\n")
    (tmp_path / "a").mkdir()
    _assert_user_error(*_main_in(tmp_path / "a", ["sweep", f"config={sweep}", "trial_gpus=2",
                                                  f"storage={tmp_path / 'sweeps'}"], capsys, monkeypatch),
                       tmp_path / "a", ["no node, and no node type the autoscaler may add, can hold a trial (1 CPU, 2 "
                                        "GPU)", "the largest node type, gpu_worker, has 1 CPU, 1 GPU"])

    # a learner on the GPU of a gpu_worker, which cannot come within 0.2 s (the autoscaler's own loop runs every few
    # seconds, then a node starts): refused when the time is up. With 1 s and a 2 s poll, CI once saw the fake
    # gpu_worker arrive in time, and the learner placed on it found no CUDA
    train = ["train", *[a for a in TINY if not a.startswith(("device=", "seed_steps="))], f"task={TINY_TASK}",
             "mlflow=false", "eval_freq=0", "num_workers=1", "worker_cpus=0.5"]
    (tmp_path / "b").mkdir()
    rc, out, err = _main_in(tmp_path / "b", [*train, "device=cuda", "scale_wait=0.2",
                                             f"output_dir={tmp_path / 'b' / 'runs'}"], capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("gym-qwen train: error: the autoscaler added no node that holds rollout worker 1 x "
                               "(0.5 CPU) + learner 1 x (1 CPU, 1 GPU) within 0.2 s (scale_wait=)")
    assert out.startswith("waiting up to 0.2 s (scale_wait=) for the autoscaler to add 1 x gpu_worker")

    # a learner of 2 CPUs: only a cpu_worker holds it; the autoscaler adds one, and the training runs there
    (tmp_path / "c").mkdir()
    rc, out, err = _main_in(tmp_path / "c", [*train, "device=cpu", "learner_cpus=2", "steps=1000",
                                             "seed_steps=100", f"output_dir={tmp_path / 'c' / 'runs'}"],
                            capsys, monkeypatch)
    assert rc == 0, out[-3000:] + err[-3000:]
    assert "waiting up to 900 s (scale_wait=) for the autoscaler to add 1 x cpu_worker for rollout worker 1 x " \
           "(0.5 CPU) + learner 1 x (2 CPU)" in out
    assert "the cluster holds them after" in out
    assert sorted(n.resources["CPU"] for n in live_nodes()) in ([1.0, 2.0], [1.0, 1.0, 2.0])
    assert (tmp_path / "c" / "runs" / TINY_TASK / "default" / "seed1" / "agent.pt").is_file()
    ray.shutdown()
