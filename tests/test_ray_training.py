"""Training with Ray actors: lockstep equals the in-process loop, asynchronous workers survive being killed,
a killed job resumes, impossible resource requests fail fast. Real Ray on this machine (127.0.0.1)."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch

from conftest import TINY, TINY_TASK, tiny_train_config
from test_cli import GYM_QWEN, _assert_user_error, _main_in

pytestmark = pytest.mark.ray


def _train(tmp_path, monkeypatch, *overrides, backend=None):
    from gym_qwen.platform.training.run import train
    from gym_qwen.platform.training.loop import InProcessBackend

    monkeypatch.chdir(tmp_path)
    cfg = tiny_train_config(tmp_path / "runs", "mlflow=false", *overrides)
    return cfg, train(cfg, backend or InProcessBackend)


def _weights(path):
    return torch.load(path, weights_only=True)["agent"]


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for part in a:
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_one_worker_in_lockstep_equals_the_in_process_loop(ray_local, tmp_path, monkeypatch):
    from gym_qwen.actors.training_backend import RayTrainingBackend

    common = ("steps=2000", "eval_freq=1000", "eval_episodes=1")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    _, local = _train(tmp_path / "a", monkeypatch, *common)
    _, remote = _train(tmp_path / "b", monkeypatch, *common, "num_workers=1", "sync=true", "worker_cpus=1",
                       backend=RayTrainingBackend)
    assert remote["updates"] == local["updates"] > 0
    assert remote["eval_history"] == local["eval_history"]
    assert remote["last_episode_return"] == local["last_episode_return"]
    _assert_same_weights(_weights(remote["checkpoint"]), _weights(local["checkpoint"]))


def _episode_ids(train_state_path) -> list[int]:
    state = torch.load(train_state_path, weights_only=True)
    return sorted(int(e["episode_id"]) for e in state["buffer"]["episodes"])


def _run_async(cfg):
    import ray

    from gym_qwen.actors.training_backend import RayTrainingBackend
    from gym_qwen.platform.training.loop import LoopState, run_training

    backend = RayTrainingBackend(cfg)
    try:
        state = run_training(cfg, backend.spec, backend, LoopState())
        stats = ray.get(backend.learner.stats.remote(), timeout=60)
        buffer = ray.get(backend.learner.state.remote(), timeout=60)["buffer"]
    finally:
        backend.close()
    return backend, state, stats, sorted(int(e["episode_id"]) for e in buffer["episodes"])


def test_crashed_rollout_worker_is_restarted_and_no_episode_is_lost_or_doubled(ray_local, tmp_path, monkeypatch):
    import json

    from gym_qwen.actors.rollout_worker import FAULTS_ENV

    marker = tmp_path / "crashed"
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"crash_at_decision": 250, "marker": str(marker)}))
    monkeypatch.chdir(tmp_path)
    cfg = tiny_train_config(tmp_path / "runs", "mlflow=false", "steps=4000", "eval_freq=0", "num_workers=2",
                            "worker_cpus=1")
    backend, state, stats, buffer_ids = _run_async(cfg)
    n = 4000 // 2 // 500  # episodes of 500 decisions
    assert marker.exists(), "no worker crashed"
    assert backend.restarts == 1
    assert stats["episode_ids"] == list(range(n)) == buffer_ids  # each finished episode exactly once
    assert stats["decisions"] == 2000 and len(state.episode_returns) == n


def test_two_workers_with_two_envs_each(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_train_config(tmp_path / "runs", "mlflow=false", "steps=5000", "eval_freq=0", "num_workers=2",
                            "num_envs=2", "worker_cpus=1")
    backend, state, stats, buffer_ids = _run_async(cfg)
    assert backend.restarts == 0
    assert stats["episode_ids"] == list(range(5)) == buffer_ids
    # one update per decision after the 300 seed decisions, plus the 300-update burst
    assert stats["updates"] == 2500 and len(state.episode_returns) == 5
    # fresh weights after every chunk (50 decisions of 2 environments) once the random episode 0 is in; whole-
    # episode ingests made one version per batch (3 here)
    assert stats["version"] >= (2500 - 500) // (50 * 2) and stats["running"] == {}


def test_decisions_of_a_replayed_episode_are_credited_once(tmp_path):
    """The learner's credit: a chunk of an episode that a crash made start again counts only the decisions
    beyond its lost attempt's; a finished episode shorter than that credit takes the excess back."""
    from gym_qwen.actors.learner import LearnerActor
    from gym_qwen.platform.config import config_to_dict

    cfg = tiny_train_config(tmp_path / "runs", "seed_steps=100000")  # no updates fall due here
    learner = LearnerActor(config_to_dict(cfg), 1, "cpu")
    credit = learner._credit
    for played in (50, 100, 150):  # first attempt of episode 4: three chunks
        credit(4, played, finished=False)
    credit(9, 60, finished=False)
    assert learner.decisions == 210 and learner.running == {4: 150, 9: 60}
    for played in (50, 100, 150):  # the worker died; the replay starts from decision 0
        credit(4, played, finished=False)
    assert learner.decisions == 210
    credit(4, 200, finished=False)
    credit(4, 500, finished=True)
    assert learner.decisions == 560 and learner.running == {9: 60}
    credit(9, 40, finished=True)  # the replay of 9 ended (terminated) before its lost attempt's 60th decision
    assert learner.decisions == 540 and learner.running == {}


def test_killed_job_resumes_from_its_last_checkpoint(tmp_path):
    """kill -9 to the whole job (driver, Ray and its actors) after its first checkpoint (two episodes, one per
    worker): resume=true finishes the run from it, every episode exactly once."""
    args = [*TINY, f"task={TINY_TASK}", f"output_dir={tmp_path / 'runs'}", "mlflow=false", "steps=4000",
            "eval_freq=0", "checkpoint_freq=2000", "num_workers=2", "worker_cpus=0.5", "learner_cpus=0.5"]
    state = tmp_path / "runs" / TINY_TASK / "default" / "seed1" / "train_state.pt"
    env = {**os.environ, "RAY_ADDRESS": ""}
    first = subprocess.Popen([GYM_QWEN, "train", *args], cwd=tmp_path, env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.5)
    assert state.exists(), first.communicate(timeout=30)[1].decode()[-2000:]
    os.killpg(first.pid, signal.SIGKILL)  # the whole job: driver, Ray and its actors
    first.wait(timeout=60)
    saved = torch.load(state, weights_only=True)
    before = saved["learner"]["decisions"]
    assert 0 < before < 2000
    done = subprocess.run([GYM_QWEN, "train", *args, "resume=true"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4,000 env steps" in done.stdout
    final = torch.load(state, weights_only=True)
    assert final["learner"]["decisions"] == 2000
    assert _episode_ids(state) == list(range(4))
    assert final["num_updates"] > saved["num_updates"]


def test_impossible_resource_request_fails_fast(ray_local, tmp_path, capsys, monkeypatch):
    args = ["train", *TINY, f"task={TINY_TASK}", f"output_dir={tmp_path / 'runs'}", "num_workers=9",
            "worker_cpus=1", "mlflow=false"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    line = _assert_user_error(*_main_in(cwd, args, capsys, monkeypatch), cwd,
                              ["asked for 10 CPUs", "rollout worker 9 x (1 CPU)", "has 4 CPUs"])
    assert "lower num_workers=" in line


def test_sync_needs_one_worker(tmp_path, capsys, monkeypatch):
    _assert_user_error(*_main_in(tmp_path, ["train", "num_workers=2", "sync=true"], capsys, monkeypatch), tmp_path,
                       ["sync=true needs num_workers=1"])



@pytest.mark.slow  # starting Ray and two actors: ~40 s on a busy 2-core machine
def test_failure_after_the_actors_started_leaves_no_ray_behind(tmp_path, monkeypatch):
    """An MLflow store that does not answer, after the Ray backend started its actors: the run fails, and the Ray
    it started (with the actors) is gone."""
    import ray

    from gym_qwen.actors.training_backend import RayTrainingBackend
    from gym_qwen.platform.training import run as trainer

    def unreachable(*args, **kwargs):
        raise ConnectionError("the MLflow store does not answer")

    if ray.is_initialized():  # not this test's Ray: the backend must start (and stop) its own
        ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trainer.Tracker, "start", unreachable)
    started = []
    real_start = RayTrainingBackend._start_actors

    def start_actors(self, cfg):
        real_start(self, cfg)
        started.append(ray.is_initialized() and self.learner is not None)

    monkeypatch.setattr(RayTrainingBackend, "_start_actors", start_actors)
    cfg = tiny_train_config(tmp_path / "runs", "steps=4", "mlflow=true", "num_workers=1", "worker_cpus=0.5",
                            "learner_cpus=0.5")
    with pytest.raises(ConnectionError):
        trainer.train(cfg, RayTrainingBackend)
    assert started == [True]
    assert not ray.is_initialized()


def _session_processes(sid: int, name: str) -> list[int]:
    """Processes of the session `sid` whose command line holds `name` (Ray's actors of a job started in its own
    session run in it)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.getsid(int(d)) == sid and name in open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace"):
                found.append(int(d))
        except (OSError, ProcessLookupError):
            continue
    return found


def test_a_killed_learner_fails_the_run_in_one_line_and_resume_continues(tmp_path):
    """SIGKILL to the learner actor mid-run: the job ends with one line naming the learner (no traceback, exit
    1), the last checkpoint loads, and resume=true finishes the run with every episode exactly once."""
    args = [*TINY, f"task={TINY_TASK}", f"output_dir={tmp_path / 'runs'}", "mlflow=false", "steps=2000",
            "eval_freq=0", "checkpoint_freq=1000", "num_workers=1", "worker_cpus=0.5", "learner_cpus=0.5"]
    state = tmp_path / "runs" / TINY_TASK / "default" / "seed1" / "train_state.pt"
    env = {**os.environ, "RAY_ADDRESS": ""}
    job = subprocess.Popen([GYM_QWEN, "train", *args], cwd=tmp_path, env=env, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not state.exists() and time.time() < deadline and job.poll() is None:
            time.sleep(0.5)
        assert state.exists(), job.communicate(timeout=30)[1][-2000:]
        learners = _session_processes(job.pid, "LearnerActor")
        assert len(learners) == 1, learners
        os.kill(learners[0], signal.SIGKILL)
        out, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    lines = [line for line in err.splitlines() if line.startswith("gym-qwen")]
    assert job.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("gym-qwen train: error: the learner") and "died" in lines[0]
    saved = torch.load(state, weights_only=True)  # the last checkpoint is whole
    assert 0 < saved["learner"]["decisions"] < 1000
    done = subprocess.run([GYM_QWEN, "train", *args, "resume=true"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    final = torch.load(state, weights_only=True)
    assert final["learner"]["decisions"] == 1000 and _episode_ids(state) == list(range(2))
