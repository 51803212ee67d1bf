"""EpisodeRunner: episodes played in chunks are the episodes played whole, and `play` reports progress."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_TASK, tiny_train_config


def _runner(tmp_path, num_envs=2):
    from gym_qwen.platform.envs import task_spec
    from gym_qwen.platform.training.rollouts import EpisodeRunner
    from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent

    import torch
    torch.manual_seed(0)
    cfg = tiny_train_config(tmp_path)
    spec = task_spec(TINY_TASK)
    agent = TDMPC2Agent(cfg, spec.obs_dim, spec.action_dim, spec.episode_length, spec.episodic, "cpu")
    return EpisodeRunner(TINY_TASK, cfg.seed, agent, num_envs, stream=0), spec


@pytest.mark.parametrize("random_actions", [True, False])
def test_chunks_play_the_same_episodes_as_one_call(tmp_path, single_thread, random_actions):
    whole, spec = _runner(tmp_path)
    expected = whole.run([3, 7], random_actions)
    chunked, _ = _runner(tmp_path)
    chunked.start([3, 7], random_actions)
    got, reports = [], []
    while chunked.playing:
        episodes, running = chunked.play(120)
        got += episodes
        reports.append(running)
    assert [e.episode_id for e in expected] == [3, 7] and sorted(e.episode_id for e in got) == [3, 7]
    assert reports[:4] == [{3: 120 * n, 7: 120 * n} for n in range(1, 5)]  # 500-decision episodes
    assert reports[-1] == {} and len(reports) == 5
    got = sorted(got, key=lambda e: e.episode_id)
    for a, b in zip(expected, got):
        assert len(a) == len(b) == spec.episode_length
        for field in ("obs", "action", "reward"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_play_before_start_and_too_many_ids_are_refused(tmp_path, single_thread):
    runner, _ = _runner(tmp_path, num_envs=1)
    with pytest.raises(RuntimeError, match="before start"):
        runner.play(10)
    with pytest.raises(ValueError, match="2 episodes asked of a runner with 1 environments"):
        runner.start([0, 1], True)
