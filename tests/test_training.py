"""Tests of a training run end to end: run directory, MLflow, refusing to overwrite, resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gym_qwen.platform.torch_files import CheckpointError
from gym_qwen.platform.tdmpc2.checkpoints import load_checkpoint
from gym_qwen.platform.config import ConfigError, TrainConfig, config_to_dict, load_config
from gym_qwen.platform.training.loop import ExperienceCollector
from gym_qwen.platform.training.run import RunDirectoryError, train

from conftest import TINY, TINY_TASK, tiny_train_config


def _flat_tensors(d, prefix=""):
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        if isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, (dict, list, tuple)):
            out.update(_flat_tensors(v, f"{prefix}{k}."))
    return out


def _assert_same_weights(a: dict, b: dict) -> None:
    ta, tb = _flat_tensors(a), _flat_tensors(b)
    assert ta.keys() == tb.keys() and ta
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} of {len(ta)} tensors differ, e.g. {different[:5]}"


def _snapshot(root: Path) -> dict:
    """{relative path: (bytes, mtime_ns)} of every file under root."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _copy_run(tiny_run, dest: Path) -> Path:
    """Copy the session run's directory tree under dest (same <task>/<exp>/<seed> layout); returns dest."""
    rel = tiny_run.run_dir.relative_to(Path(tiny_run.cfg.output_dir))
    shutil.copytree(tiny_run.run_dir, dest / rel)
    return dest


# ------------------------------------------------------------------------------------------ a short run
def test_run_directory_files(tiny_run):
    out, cfg, summary = tiny_run.run_dir, tiny_run.cfg, tiny_run.summary
    assert out == Path(cfg.output_dir) / TINY_TASK / "default" / "seed1"
    assert {p.name for p in out.iterdir()} == {"config.yaml", "agent.pt", "train_state.pt", "eval.csv",
                                                "summary.json"}
    assert load_config(TrainConfig, out / "config.yaml") == cfg

    agent = load_checkpoint(out / "agent.pt")
    assert agent["kind"] == "agent" and agent["env_steps"] == 2000 and agent["task"] == TINY_TASK
    assert agent["config"] == config_to_dict(cfg)
    assert "optim" not in agent["agent"] and "buffer" not in agent
    state = load_checkpoint(out / "train_state.pt")
    assert state["kind"] == "train_state" and state["env_steps"] == 2000
    assert {"buffer", "collector", "loop", "torch_rng", "num_updates"} <= state.keys()
    _assert_same_weights(agent["agent"]["model"], state["agent"]["model"])

    with open(out / "eval.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["env_steps"]) for r in rows] == [1000, 2000]
    assert all(int(r["episodes"]) == 1 for r in rows)

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["env_steps"] == summary["env_steps"] == 2000
    assert on_disk["checkpoint"] == str(out / "agent.pt")
    assert [e["env_steps"] for e in on_disk["eval_history"]] == [1000, 2000]
    assert [float(r["return_mean"]) for r in rows] == pytest.approx([e["return_mean"] for e in on_disk["eval_history"]])
    assert 0 < on_disk["updates"] <= 1000  # at most one update per decision after the seed phase
    assert on_disk["mlflow_run_id"]
    # nothing landed in the working directory of the run (the session root) but the MLflow store
    assert {p.name for p in tiny_run.root.iterdir()} <= {"runs", "mlflow.db", "mlflow.lock", "mlartifacts"}


def test_run_is_logged_to_mlflow(tiny_run, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tiny_run.uri)
    run = client.get_run(tiny_run.summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["task"] == TINY_TASK and params["model_size"] == "1" and params["steps"] == "2000"
    assert params["latent_dim"] == "16" and params["seed"] == "1"
    assert run.data.tags["task"] == TINY_TASK

    evals = client.get_metric_history(run.info.run_id, "eval/return_mean")
    assert sorted(m.step for m in evals) == [1000, 2000]  # step = env steps, not decisions
    by_step = {m.step: m.value for m in evals}
    for record in tiny_run.summary["eval_history"]:
        assert by_step[record["env_steps"]] == pytest.approx(record["return_mean"])
    episodes = client.get_metric_history(run.info.run_id, "train/episode_return")
    assert sorted(m.step for m in episodes) == [1000, 2000]
    assert max(episodes, key=lambda m: m.step).value == pytest.approx(tiny_run.summary["last_episode_return"])
    assert client.get_metric_history(run.info.run_id, "train/total_loss")  # updates were logged too

    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "eval.csv", "checkpoints"} <= top
    assert "checkpoints/agent.pt" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    local = client.download_artifacts(run.info.run_id, "checkpoints/agent.pt", str(tmp_path))
    _assert_same_weights(load_checkpoint(local)["agent"], load_checkpoint(tiny_run.checkpoint)["agent"])


# ------------------------------------------------------------------------------------------ no overwrite
def test_rerun_without_resume_refuses(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    runs = _copy_run(tiny_run, tmp_path / "runs")
    before = _snapshot(runs)
    cfg = tiny_train_config(runs, "steps=2000", "eval_freq=1000", "eval_episodes=1", "checkpoint_freq=1000")
    with pytest.raises(RunDirectoryError) as e:
        train(cfg)
    msg = str(e.value)
    assert "\n" not in msg and "resume=true" in msg
    assert _snapshot(runs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no MLflow store either


def test_resume_with_different_model_size_fails(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    runs = _copy_run(tiny_run, tmp_path / "runs")
    before = _snapshot(runs)
    with pytest.raises(ConfigError) as e:
        train(tiny_train_config(runs, "steps=3000", "resume=true", "model_size=5"))
    msg = str(e.value)
    assert "\n" not in msg and "model_size=1" in msg and "5" in msg
    assert _snapshot(runs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_resume_with_different_task_fails(tiny_run, tmp_path, monkeypatch):
    # Run directories are per task, so a different task only meets this checkpoint if it is put there.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "runs" / "pendulum-swingup" / "default" / "seed1"
    other.mkdir(parents=True)
    shutil.copy(tiny_run.run_dir / "train_state.pt", other)
    with pytest.raises(ConfigError) as e:  # no config.yaml there: the checkpoint's own config is compared
        train(tiny_train_config(tmp_path / "runs", "task=pendulum-swingup", "steps=3000", "resume=true"))
    msg = str(e.value)
    assert "\n" not in msg and TINY_TASK in msg and "pendulum-swingup" in msg
    assert [p.name for p in other.iterdir()] == ["train_state.pt"]


# ------------------------------------------------------------------------------------------ resume: same run only
def _tiny_args(**changes) -> list[str]:
    """TINY with some keys replaced (a key given twice on the command line is an error)."""
    values = dict(a.split("=", 1) for a in TINY)
    values.update({k: str(v) for k, v in changes.items()})
    return [f"{k}={v}" for k, v in values.items()]


def _saved_run(runs: Path, *overrides: str) -> Path:
    """The run directory that a tiny run killed right after a checkpoint at 0 env steps leaves behind
    (config.yaml and train_state.pt), made in about a second without training. Returns the run directory."""
    from dataclasses import asdict

    from gym_qwen.platform.tdmpc2.checkpoints import save_checkpoint
    from gym_qwen.platform.config import save_config
    from gym_qwen.platform.training.run import STATE_FILE, run_dir
    from gym_qwen.platform.tdmpc2.checkpoints import agent_payload
    from gym_qwen.platform.training.loop import InProcessBackend, LoopState

    cfg = tiny_train_config(runs, "steps=2000", *overrides)
    backend = InProcessBackend(cfg)
    try:
        out = run_dir(cfg)
        save_config(cfg, out / "config.yaml")
        save_checkpoint(out / STATE_FILE, {**agent_payload(cfg, backend.spec, None, 0), "kind": "train_state",
                                           **backend.state(), "loop": asdict(LoopState()), "mlflow_run_id": None})
    finally:
        backend.close()
    return out


def test_resume_with_changed_hyperparameters_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from test_cli import _assert_user_error, _main_in

    runs = tmp_path / "runs"
    _saved_run(runs)
    before = _snapshot(runs)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["train", *_tiny_args(horizon=5, lr=0.001), f"task={TINY_TASK}", f"output_dir={runs}", "resume=true",
            "steps=4", "eval_freq=0"]  # steps and eval_freq may change; horizon and lr may not
    line = _assert_user_error(*_main_in(cwd, args, capsys, monkeypatch), cwd,
                              ["resume=true would change the run", "horizon=1 (asked 5)", "lr=0.0003 (asked 0.001)"])
    assert "steps=" not in line.split(";")[0] and "eval_freq=" not in line.split(";")[0]
    assert _snapshot(runs) == before  # config.yaml untouched, nothing else written


def test_resume_may_change_length_frequencies_logging_threads_and_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _saved_run(tmp_path / "runs")
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "runs", moved)  # output_dir only says where the run directory is
    cfg = tiny_train_config(moved, "resume=true", "steps=4", "eval_freq=0", "eval_episodes=3", "checkpoint_freq=0",
                            "mlflow=false", "mlflow_experiment=other", "compile=false", "progress=false")
    summary = train(cfg)
    assert summary["env_steps"] == 4
    assert load_config(TrainConfig, moved / out.relative_to(tmp_path / "runs") / "config.yaml") == cfg


def test_resume_refuses_a_checkpoint_whose_termination_head_this_code_would_not_build(tmp_path, monkeypatch):
    """A Gymnasium HalfCheetah run trained when every Gymnasium task counted as episodic cannot be continued."""
    from gym_qwen.platform.tdmpc2.checkpoints import save_checkpoint

    monkeypatch.chdir(tmp_path)
    out = _saved_run(tmp_path / "runs")
    ckpt = load_checkpoint(out / "train_state.pt")
    save_checkpoint(out / "train_state.pt", {**ckpt, "task_spec": {**ckpt["task_spec"], "episodic": True}})
    before = _snapshot(tmp_path / "runs")
    with pytest.raises(CheckpointError, match="trained with a termination head"):
        train(tiny_train_config(tmp_path / "runs", "resume=true", "mlflow=false"))
    assert _snapshot(tmp_path / "runs") == before


@pytest.mark.parametrize("saved, asked, refused", [
    ({"num_workers": 2, "num_envs": 1}, {"num_workers": 4, "num_envs": 2}, []),  # asynchronous stays asynchronous
    ({}, {"num_workers": 2}, []),  # the Ray backend continues an in-process checkpoint
    ({"num_workers": 2, "chunk_decisions": 50}, {"num_workers": 2, "chunk_decisions": 10}, []),
    ({"num_workers": 2, "chunk_decisions": None}, {"num_workers": 2}, []),  # a run saved before chunks existed
    ({"num_workers": 2, "chunk_decisions": None}, {},
     ["num_workers=2 (asked 0; asynchronous collection cannot continue as in-process)",
      "chunk_decisions=none (asked 50; asynchronous collection cannot continue as in-process)"]),
    ({"num_workers": 2}, {}, ["num_workers=2 (asked 0; asynchronous collection cannot continue as in-process)"]),
    ({"num_workers": 1, "sync": True}, {"num_workers": 1},
     ["sync=true (asked false; lockstep collection cannot continue as asynchronous)"]),
    ({"worker_cpus": 1.0, "learner_cpus": 1.0, "torch_threads": 2, "device": "cuda"},
     {"worker_cpus": 0.5, "learner_cpus": 2.0, "torch_threads": 1, "device": "cpu"}, []),
    ({"batch_size": 256, "seed_steps": None}, {"batch_size": 128, "seed_steps": 500},
     ["batch_size=256 (asked 128)", "seed_steps=none (asked 500)"]),
])
def test_resume_differences(saved, asked, refused):
    from gym_qwen.platform.training.run import resume_differences

    base = config_to_dict(TrainConfig())
    assert resume_differences({**base, **saved}, {**base, **asked}) == refused


# ------------------------------------------------------------------------------------------ nothing left running
class _RecordingBackend:
    """An in-process backend factory that remembers the backends it made and whether each was closed."""

    def __init__(self):
        self.made = []

    def __call__(self, cfg):
        from gym_qwen.platform.training.loop import InProcessBackend

        backend = InProcessBackend(cfg)
        backend.closed = False
        close = backend.close

        def recording_close():
            close()
            backend.closed = True
        backend.close = recording_close
        self.made.append(backend)
        return backend


def test_backend_is_closed_when_mlflow_fails(tmp_path, monkeypatch):
    from gym_qwen.platform.training import run as trainer

    def unreachable(*args, **kwargs):
        raise ConnectionError("the MLflow store does not answer")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trainer.Tracker, "start", unreachable)
    factory = _RecordingBackend()
    with pytest.raises(ConnectionError):
        train(tiny_train_config(tmp_path / "runs", "steps=4", "mlflow=true"), factory)
    assert len(factory.made) == 1 and factory.made[0].closed


def test_backend_is_closed_when_resuming_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _saved_run(tmp_path / "runs")
    factory = _RecordingBackend()

    def broken(*args, **kwargs):
        def load_state(ckpt):
            raise CheckpointError("the replay buffer in train_state.pt is damaged")
        backend = _RecordingBackend.__call__(factory, *args, **kwargs)
        backend.load_state = load_state
        return backend

    with pytest.raises(CheckpointError):
        train(tiny_train_config(tmp_path / "runs", "resume=true", "steps=4", "mlflow=false"), broken)
    assert len(factory.made) == 1 and factory.made[0].closed
    # a refused resume builds no backend at all
    with pytest.raises(ConfigError):
        train(tiny_train_config(tmp_path / "runs", "resume=true", "steps=4", "mlflow=false", "batch_size=8"), factory)
    assert len(factory.made) == 1


# ------------------------------------------------------------------------------------------ resume equality
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    """Run A: 2 episodes in-process. Run B: the same in a subprocess, SIGKILLed after its first checkpoint
    (end of episode 1), then continued with resume=true. B runs beside A, so the test costs about one run. Before
    the kill the run has planned (the acting stream) and updated (torch's global generator); a resume that did not
    restore either ends elsewhere (checked by deleting each restore). The seed phase's generator: the next test."""
    overrides = [*TINY, f"task={TINY_TASK}", "steps=2000", "checkpoint_freq=1000", "eval_freq=1000",
                 "eval_episodes=1"]
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    run_b = dir_b / TINY_TASK / "default" / "seed1"
    env_b = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'b.db'}"}
    cmd_b = [sys.executable, "-m", "gym_qwen.jobs.train", *overrides, f"output_dir={dir_b}"]
    logs = tmp_path / "logs"
    logs.mkdir()
    info: dict = {}

    def interrupt_then_resume():
        with open(logs / "first.out", "wb") as out:
            proc = subprocess.Popen(cmd_b, cwd=tmp_path, env=env_b, stdout=out, stderr=subprocess.STDOUT)
        info["proc"] = proc
        deadline = time.monotonic() + 300
        while not (run_b / "train_state.pt").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                info["error"] = f"run B ended (rc {proc.poll()}) before its first checkpoint"
                return
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        info["killed_rc"] = proc.returncode
        info["finished_before_kill"] = (run_b / "agent.pt").exists()
        info["killed_at"] = load_checkpoint(run_b / "train_state.pt")["env_steps"]
        with open(logs / "resume.out", "wb") as out:
            info["resume_rc"] = subprocess.run(cmd_b + ["resume=true"], cwd=tmp_path, env=env_b, stdout=out,
                                               stderr=subprocess.STDOUT, timeout=600).returncode

    worker = threading.Thread(target=interrupt_then_resume, daemon=True)
    worker.start()
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a.db'}")
        monkeypatch.chdir(tmp_path)
        summary_a = train(tiny_train_config(dir_a, *overrides[len(TINY):]))
    finally:
        worker.join(timeout=600)
        if "proc" in info and info["proc"].poll() is None:
            info["proc"].kill()
    output = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(logs.iterdir()))
    assert "error" not in info, info.get("error", "") + "\n" + output
    assert info["killed_rc"] == -signal.SIGKILL and not info["finished_before_kill"], output
    assert info["killed_at"] == 1000
    assert info["resume_rc"] == 0, output

    summary_b = json.loads((run_b / "summary.json").read_text())
    assert summary_b["env_steps"] == summary_a["env_steps"] == 2000
    assert summary_b["eval_history"] == summary_a["eval_history"]
    assert [e["env_steps"] for e in summary_a["eval_history"]] == [1000, 2000]
    assert summary_b["updates"] == summary_a["updates"]
    assert summary_b["last_episode_return"] == summary_a["last_episode_return"]
    ckpt_a = load_checkpoint(Path(summary_a["checkpoint"]))
    ckpt_b = load_checkpoint(run_b / "agent.pt")
    _assert_same_weights(ckpt_a["agent"], ckpt_b["agent"])
    state_a, state_b = load_checkpoint(Path(summary_a["run_dir"]) / "train_state.pt"), load_checkpoint(
        run_b / "train_state.pt")
    _assert_same_weights(state_a["agent"], state_b["agent"])  # optimiser states too
    assert state_a["loop"]["episode_returns"] == state_b["loop"]["episode_returns"]
    assert (Path(summary_a["run_dir"]) / "eval.csv").read_bytes() == (run_b / "eval.csv").read_bytes()

    # the resumed process continued B's MLflow run instead of starting another one
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env_b["MLFLOW_TRACKING_URI"])
    run = client.get_run(summary_b["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    evals = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/return_mean")}
    assert evals == {e["env_steps"]: pytest.approx(e["return_mean"]) for e in summary_a["eval_history"]}


def test_a_checkpoint_in_the_seed_phase_resumes_the_same_random_actions():
    """The resume test above checkpoints after the seed phase, where random actions are over; a run stopped inside
    a long seed phase goes on with the collector's numpy generator as it was, not a fresh one."""
    def collector():
        return ExperienceCollector(TINY_TASK, 1, agent=None, seed_steps=600)  # random actions only: no agent

    first = collector()
    while first.step() is None:  # one whole episode (500 decisions): checkpoints fall between episodes
        pass
    state = first.state()
    for _ in range(50):
        first.step()
    resumed = collector()
    resumed.load_state(state)
    for _ in range(50):
        resumed.step()
    assert resumed.decisions == first.decisions == 550
    np.testing.assert_array_equal(np.array(resumed._episode["action"]), np.array(first._episode["action"]))
    np.testing.assert_array_equal(np.array(resumed._episode["obs"]), np.array(first._episode["obs"]))
    first.close()
    resumed.close()


def test_updates_due_while_buffer_is_empty_are_deferred_not_dropped():
    """seed_steps shorter than an episode: the pretraining burst waits for the first complete episode."""
    import numpy as np

    from gym_qwen.platform.tdmpc2.buffer import Episode, EpisodeBuffer
    from gym_qwen.platform.training.loop import Learner

    learner = Learner(agent=None, buffer=EpisodeBuffer(10_000, horizon=3), batch_size=4, seed_steps=300)
    assert [learner.take_due_updates(d) for d in (1, 299)] == [0, 0]  # seed phase: nothing due
    assert [learner.take_due_updates(d) for d in (300, 301, 499)] == [0, 0, 0]  # due, but no episode yet
    T = 500
    learner.add(Episode(np.zeros((T + 1, 3), np.float32), np.zeros((T, 1), np.float32), np.zeros(T, np.float32),
                        np.zeros(T, bool), 0))
    assert learner.take_due_updates(500) == 300 + 2 + 1  # the burst, the two deferred singles, this decision
    assert learner.take_due_updates(501) == 1


def test_metric_means_weigh_every_update_the_same():
    from gym_qwen.platform.training.loop import MetricMeans

    means = MetricMeans()
    means.add({"loss": 1.0}, 1)
    means.add({"loss": 4.0}, 3)  # a burst of 3 updates counts three times
    means.add({}, 5)  # no update ran: nothing to count
    assert means.take() == {"loss": 3.25}
    assert means.take() == {}


# ------------------------------------------------------------------------------------------ SIGTERM
@pytest.mark.slow
def test_sigterm_stops_at_an_episode_boundary_with_a_checkpoint_and_resume_finishes(tmp_path):
    """`ray job stop` or `kill` sends SIGTERM: training checkpoints at the next episode boundary and exits with
    one line (status 143); resume=true finishes the run, and MLflow holds each step once in one run."""
    from mlflow.tracking import MlflowClient

    args = [*TINY, f"task={TINY_TASK}", f"output_dir={tmp_path / 'runs'}", "steps=3000", "eval_freq=0",
            "checkpoint_freq=0"]
    run = tmp_path / "runs" / TINY_TASK / "default" / "seed1"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "gym_qwen.jobs.train", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run / "config.yaml").exists():  # written once the handler is in place
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 143, err[-2000:]
    assert len(lines) == 1 and "stopped by SIGTERM" in lines[0] and "resume=true" in lines[0], err
    stopped_at = load_checkpoint(run / "train_state.pt")["env_steps"]
    assert stopped_at in (1000, 2000) and not (run / "agent.pt").exists()

    done = subprocess.run(cmd + ["resume=true"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 3000
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("gym-qwen").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/episode_return")]
    assert sorted(steps) == [1000, 2000, 3000]
