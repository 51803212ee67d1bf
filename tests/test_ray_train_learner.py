"""learner=ray_train: the data-parallel learner under Ray Train's TorchTrainer (2 CPU workers, gloo), real Ray on
this machine. Its updates equal the single learner's on the same buffer; its checkpoints go through Ray Train into
the run folder; a training run with it collects, learns and checkpoints like the single learner's."""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch

from test_data_parallel import ATOL, _assert_close, _filled_learner

pytestmark = [pytest.mark.ray, pytest.mark.slow]

UPDATES = 3


def _start_state(learner) -> dict:
    """What LearnerActor.load_state takes: the learner before its first update, learner stream included."""
    from gym_qwen.platform.rng import global_rng_state

    # a copy: state_dict's tensors are the live parameters, which the single learner's updates change in place
    return {"agent": copy.deepcopy(learner.agent.state_dict(with_optim=True)), "buffer": learner.buffer.state(),
            "num_updates": 0, "torch_rng": global_rng_state()}


def test_two_ray_train_workers_update_as_the_single_learner(ray_local, tmp_path):
    from gym_qwen.actors.ray_train_learner import RayTrainLearner
    from gym_qwen.platform.config import config_to_dict

    overrides = ("batch_size=16", "learner=ray_train", "learner_workers=2", "num_workers=1", "learner_cpus=1")
    single = _filled_learner(tmp_path, *overrides)
    start = _start_state(single)
    single_metrics = single.update(UPDATES)
    cfg = single.agent.cfg
    learner = RayTrainLearner(cfg, config_to_dict(cfg), "cpu", tmp_path / "run")
    try:
        ray_local.get(learner.load_state.remote(start), timeout=600)
        metrics = ray_local.get(learner.update.remote(UPDATES), timeout=600)
        weights = ray_local.get(learner.agent_weights.remote(), timeout=600)
        state = ray_local.get(learner.checkpoint.remote(123), timeout=600)
    finally:
        learner.close()
    assert learner.error is None
    _assert_close(weights["model"], single.agent.state_dict()["model"])
    _assert_close(weights["scale"], single.agent.state_dict()["scale"])
    metrics.pop("seconds")
    _assert_close(metrics, single_metrics)
    assert state["num_updates"] == UPDATES
    # the checkpoint Ray Train kept in the run folder holds the same learner
    saved = learner.latest_checkpoint_file()
    assert saved is not None and saved.is_relative_to((tmp_path / "run").resolve()) and saved.is_file()
    on_disk = torch.load(saved, weights_only=True)
    assert on_disk["state"]["num_updates"] == UPDATES
    _assert_close(on_disk["state"]["agent"]["model"], single.agent.state_dict()["model"], ATOL)


def test_one_ray_train_worker_trains_as_the_single_learner(ray_local, tmp_path, monkeypatch):
    """learner=ray_train learner_workers=1 (TorchTrainer, one gloo rank) and the single learner actor, on the same
    seeds: the same updates, evaluations and weights (to float tolerance)."""
    from gym_qwen.actors.training_backend import RayTrainingBackend
    from test_ray_training import _train, _weights

    common = ("eval_freq=1000", "eval_episodes=1", "num_workers=1", "worker_cpus=1", "steps=2000")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    _, single = _train(tmp_path / "a", monkeypatch, *common, backend=RayTrainingBackend)
    _, one = _train(tmp_path / "b", monkeypatch, *common, "learner=ray_train", "learner_workers=1",
                    backend=RayTrainingBackend)
    assert one["updates"] == single["updates"] > 0 and one["env_steps"] == single["env_steps"]
    assert [r["env_steps"] for r in one["eval_history"]] == [r["env_steps"] for r in single["eval_history"]]
    assert [r["return_mean"] for r in one["eval_history"]] == pytest.approx(
        [r["return_mean"] for r in single["eval_history"]], rel=1e-4)
    _assert_close(_weights(one["checkpoint"]), _weights(single["checkpoint"]))


def test_training_with_the_ray_train_learner(ray_local, tmp_path, monkeypatch):
    """Stopped after its first checkpoint and resumed: the ranks restore the learner from the Ray Train checkpoint
    that train_state.pt names (which holds no replay buffer), and the run ends with the uninterrupted run's counts;
    resumed with learner=single instead, the single learner loads that checkpoint and ends with the same counts."""
    from gym_qwen.actors.ray_train_learner import CHECKPOINT_KEY
    from gym_qwen.actors.training_backend import RayTrainingBackend
    from test_ray_training import _train

    common = ("eval_freq=0", "num_workers=1", "worker_cpus=1", "checkpoint_freq=1000")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    _, single = _train(tmp_path / "a", monkeypatch, *common, "steps=2000", backend=RayTrainingBackend)
    dp_keys = ("learner=ray_train", "learner_workers=2")
    # stopped half way and resumed: every rank restores from the Ray Train checkpoint train_state.pt names
    _train(tmp_path / "b", monkeypatch, *common, *dp_keys, "steps=1000", backend=RayTrainingBackend)
    [state_file] = (tmp_path / "b").rglob("train_state.pt")
    small = torch.load(state_file, weights_only=True)
    assert "buffer" not in small and "optim" not in small["agent"]
    named = small[CHECKPOINT_KEY]
    assert (tmp_path / "b").resolve() in Path(named).parents
    assert torch.load(f"{named}/learner_state.pt", weights_only=True)["state"]["num_updates"] == small["num_updates"]
    # the same run resumed with learner=single: its one learner actor loads that checkpoint (through the driver)
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    _, back = _train(tmp_path / "c", monkeypatch, *common, "steps=2000", "resume=true", backend=RayTrainingBackend)
    _, dp = _train(tmp_path / "b", monkeypatch, *common, *dp_keys, "steps=2000", "resume=true",
                   backend=RayTrainingBackend)
    assert dp["updates"] == back["updates"] == single["updates"] > 0
    assert dp["env_steps"] == single["env_steps"]
    checkpoints = sorted(p for p in (tmp_path / "b").rglob("ray_train/checkpoint_*") if p.is_dir())
    assert checkpoints, "no Ray Train checkpoint in the run folder"
    state = torch.load(checkpoints[-1] / "learner_state.pt", weights_only=True)["state"]
    assert state["num_updates"] == dp["updates"]


def test_a_killed_learner_worker_restarts_from_the_last_checkpoint_with_nothing_lost(ray_local, tmp_path):
    """Rank 1 is killed after a checkpoint, two more updates and enough small calls that the hub's bounded log
    (learner_log_limit=4) made the learner checkpoint itself: Ray Train restarts the group from the newest
    checkpoint, the calls since it run again, and the learner goes on as if nothing happened (the single learner's
    weights)."""
    import os
    import signal

    from gym_qwen.actors.ray_train_learner import RayTrainLearner
    from gym_qwen.actors.training_backend import _get
    from gym_qwen.platform.config import config_to_dict

    single = _filled_learner(tmp_path, "learner=ray_train", "learner_workers=2", "num_workers=1",
                             "learner_log_limit=4")
    start = _start_state(single)
    single.update(6)
    cfg = single.agent.cfg
    learner = RayTrainLearner(cfg, config_to_dict(cfg), "cpu", tmp_path / "run")
    try:
        _get(learner.load_state.remote(start), "the learner")
        _get(learner.update.remote(2), "the learner")
        _get(learner.checkpoint.remote(0), "the learner")
        _get(learner.update.remote(2), "the learner")
        for _ in range(10):  # small calls: the hub's log reaches its limit (4) and the learner checkpoints itself
            _get(learner.stats.remote(), "the learner")
        kept = ray_local.get(learner.hub.kept.remote(), timeout=60)
        version_before, _ = _get(learner.weights.remote(), "the learner")
        pids = ray_local.get(learner.hub.worker_pids.remote(), timeout=60)
        os.kill(pids[1], signal.SIGKILL)
        _get(learner.update.remote(2), "the learner")  # answered by the restarted group
        new_pids = ray_local.get(learner.hub.worker_pids.remote(), timeout=60)
        weights = _get(learner.agent_weights.remote(), "the learner")
        version_after, _ = _get(learner.weights.remote(), "the learner")
        stats = _get(learner.stats.remote(), "the learner")
    finally:
        learner.close()
    assert kept["calls"] <= kept["limit"] == 4 and kept["auto_checkpoints"] >= 2
    assert new_pids[1] != pids[1], "the learner group was not restarted"
    assert stats["updates"] == 6 and version_after == version_before + 1
    _assert_close(weights["model"], single.agent.state_dict()["model"])
