"""The episode farm (a pool of actors running a per-episode function into one Arrow dataset) and evaluation
spread over evaluator actors."""
from __future__ import annotations

import json
import sys

import pytest

from test_cli import _assert_user_error, _main_in

pytestmark = pytest.mark.ray


def rows_of_episode(state, index):
    """index + 1 records per episode, so caps cut inside episodes."""
    return [{"value": state["base"] + 10 * index + j, "row": j} for j in range(index + 1)]


def setup_base(base):
    return {"base": base}


@pytest.fixture(scope="module")
def by_value(ray_local):
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on the actors' path


def _sequential(n, cap=None):
    rows = [dict(r, episode=i) for i in range(n) for r in rows_of_episode({"base": 1000}, i)]
    return rows[:cap] if cap is not None else rows


@pytest.mark.parametrize("workers,cap", [(1, None), (3, None), (3, 7)])
def test_farm_merges_episodes_like_one_process(by_value, workers, cap):
    from gym_qwen.actors.episode_farm import EpisodeFarm

    farm = EpisodeFarm(setup_base, rows_of_episode, workers, setup_args=(1000,), cpus=1, max_records=cap)
    try:
        seen = []
        table = farm.run(range(6), on_episode=lambda i, t: seen.append(i))
    finally:
        farm.close()
    assert table.to_pylist() == _sequential(6, cap)
    assert len(seen) == len(set(seen))
    if cap is not None:  # 1+2+3 rows < 7 <= 1+2+3+4: episodes past the 4th are never needed
        assert max(seen) < 5 + workers


def test_farm_worker_crash_is_retried_once_per_episode(by_value, tmp_path, monkeypatch):
    from gym_qwen.actors.episode_farm import EpisodeFarm
    from gym_qwen.actors.rollout_worker import FAULTS_ENV

    marker = tmp_path / "crashed"
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"crash_at_episode": 2, "marker": str(marker)}))
    farm = EpisodeFarm(setup_base, rows_of_episode, 2, setup_args=(1000,), cpus=1)
    try:
        seen = []
        table = farm.run(range(5), on_episode=lambda i, t: seen.append(i))
    finally:
        farm.close()
    assert marker.exists() and farm.restarts == 1
    assert sorted(seen) == list(range(5))  # episode 2 ran twice, counted once
    assert table.to_pylist() == _sequential(5)


def test_evaluator_actors_equal_the_sequential_evaluation(ray_local, tiny_checkpoint):
    from gym_qwen.actors.evaluators import evaluate_with_actors
    from gym_qwen.platform.speculative.evaluation import evaluate_checkpoint

    sequential, _ = evaluate_checkpoint(str(tiny_checkpoint), 3, seed=4, device="cpu")
    spread, ckpt = evaluate_with_actors(str(tiny_checkpoint), 3, seed=4, num_workers=2, cpus=1)
    assert spread.returns == sequential.returns
    assert spread.lengths == sequential.lengths and spread.planner_calls == sequential.planner_calls
    assert ckpt["task"] == spread.task


def test_evaluate_command_with_workers(ray_local, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev.json"
    rc, stdout, err = _main_in(tmp_path, ["evaluate", f"checkpoint={tiny_checkpoint}", "episodes=2", "seed=4",
                                          "num_workers=2", "progress=false", f"output={out}"], capsys, monkeypatch)
    assert rc == 0, err
    from gym_qwen.platform.speculative.evaluation import evaluate_checkpoint
    sequential, _ = evaluate_checkpoint(str(tiny_checkpoint), 2, seed=4, device="cpu")
    assert json.loads(out.read_text())["returns"] == sequential.returns


def test_video_needs_the_local_evaluation(tmp_path, capsys, monkeypatch):
    _assert_user_error(*_main_in(tmp_path, ["evaluate", "checkpoint=x.pt", "video=true", "num_workers=2"], capsys,
                                 monkeypatch), tmp_path, ["video=true", "num_workers=0"])
