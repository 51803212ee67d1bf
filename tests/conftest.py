"""Shared fixtures: a tiny TD-MPC2 configuration and one tiny agent trained once per test session."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

# A tiny agent: trains and plans in milliseconds on a CPU. One thread: on a busy 2-core machine a second
# thread makes these small ops several times slower, and it keeps results independent of the core count.
# horizon=1 makes planning and updates about a third cheaper than the default 3.
TINY = ["latent_dim=16", "enc_dim=32", "mlp_dim=32", "num_samples=32", "num_elites=4", "num_pi_trajs=2",
        "iterations=1", "horizon=1", "batch_size=16", "seed_steps=300", "device=cpu", "torch_threads=1",
        "progress=false"]
TINY_TASK = "cartpole-balance"  # dense reward, so returns depend on the actions (pendulum's are mostly 0)


def tiny_train_config(output_dir, *overrides: str):
    """A validated TrainConfig of the tiny agent writing under `output_dir`; later overrides win."""
    from gym_qwen.platform.config import TrainConfig, parse_config

    values = dict(a.split("=", 1) for a in [*TINY, f"task={TINY_TASK}", f"output_dir={output_dir}", *overrides])
    return parse_config(TrainConfig, [f"{k}={v}" for k, v in values.items()])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Two DMC episodes (2000 env steps) of the tiny agent, evaluated and checkpointed every 1000 env steps,
    logged to a SQLite MLflow store of its own. Tests must not modify its files (copy them first)."""
    from gym_qwen.platform.training.run import train

    root = tmp_path_factory.mktemp("tiny_run")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)  # anything written relative to the working directory lands here, not in the repo
        cfg = tiny_train_config(root / "runs", "steps=2000", "eval_freq=1000", "eval_episodes=1",
                                "checkpoint_freq=1000")
        summary = train(cfg)
    return SimpleNamespace(cfg=cfg, summary=summary, uri=uri, root=root, run_dir=Path(summary["run_dir"]),
                           checkpoint=Path(summary["checkpoint"]))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_run) -> Path:
    """The agent.pt of the session's tiny run."""
    return tiny_run.checkpoint


@contextlib.contextmanager
def mlflow_server(root: Path, artifacts: str | None = None, env: dict | None = None):
    """An `mlflow server` on 127.0.0.1 (a SQLite backend and the artifacts it proxies, both under `root`, or the
    artifacts at `artifacts`, e.g. an s3:// URI, with the server's environment `env`) while inside; yields its
    URI."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination",
         artifacts or str(root / "artifacts"), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2).close()
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "mlflow server did not start"
                time.sleep(1)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def single_thread():
    """Small tensors: one thread avoids synchronisation overhead on a busy 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for one test module, on 127.0.0.1 with 4 logical CPUs (2 workers and a learner fit on any
    machine). Shut down after the module, so that the cluster test's `ray stop` finds nothing of it."""
    import ray

    if ray.is_initialized():  # whatever an earlier test left behind is not the 4-CPU Ray these tests count on
        ray.shutdown()
    ray.init(address="local", num_cpus=4, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="ERROR")
    yield ray
    ray.shutdown()
