"""Tests for gym_qwen.platform.envs: the DMControl and Gymnasium MuJoCo task wrappers."""

import numpy as np
import pytest

from gym_qwen.platform.envs import (
    TASKS,
    UnknownTaskError,
    make_env,
    scale_action,
    task_spec,
)


def _rollout(task, seed, n_steps, action_seed=0):
    """Reset with make_env's seed and step with fixed random actions; return (obs, rewards)."""
    env = make_env(task, seed)
    try:
        rng = np.random.default_rng(action_seed)
        obs, _ = env.reset()
        observations, rewards = [obs], []
        for _ in range(n_steps):
            obs, reward, terminated, truncated, _ = env.step(
                rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            observations.append(obs)
            rewards.append(reward)
            if terminated or truncated:
                break
        return np.stack(observations), np.array(rewards)
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_reset_step_shapes(task):
    env = make_env(task, seed=1)
    try:
        spec = task_spec(task)
        assert spec.name == task
        assert env.observation_space.shape == (spec.obs_dim,)
        assert env.observation_space.dtype == np.float32
        assert env.action_space.shape == (spec.action_dim,)
        assert env.action_space.dtype == np.float32
        np.testing.assert_array_equal(env.action_space.low, -1.0)
        np.testing.assert_array_equal(env.action_space.high, 1.0)

        obs, info = env.reset()
        assert obs.dtype == np.float32 and obs.shape == (spec.obs_dim,)
        assert info["env_steps"] == 0
        for i in range(1, 4):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            assert obs.dtype == np.float32 and obs.shape == (spec.obs_dim,)
            assert type(reward) is float
            assert isinstance(terminated, bool) and isinstance(truncated, bool)
            assert info["env_steps"] == i * spec.action_repeat
            if terminated or truncated:
                break
    finally:
        env.close()


def test_task_spec_values():
    cheetah = task_spec("cheetah-run")
    assert (cheetah.suite, cheetah.obs_dim, cheetah.action_dim) == ("dmc", 17, 6)
    assert (cheetah.episode_length, cheetah.action_repeat, cheetah.episodic) == (500, 2, False)
    hopper = task_spec("Hopper-v5")
    assert (hopper.suite, hopper.obs_dim, hopper.action_dim) == ("gym", 11, 3)
    assert (hopper.episode_length, hopper.action_repeat, hopper.episodic) == (1000, 1, True)
    assert task_spec("cheetah-run") is cheetah  # cached


@pytest.mark.parametrize("task, episodic", [("HalfCheetah-v5", False), ("Swimmer-v5", False), ("Hopper-v5", True),
                                           ("Walker2d-v5", True), ("Ant-v5", True), ("Humanoid-v5", True)])
def test_only_tasks_that_terminate_are_episodic(task, episodic):
    from gym_qwen.platform.config import TrainConfig
    from gym_qwen.platform.tdmpc2.agent import model_dims
    from gym_qwen.platform.tdmpc2.world_model import WorldModel

    spec = task_spec(task)
    assert (spec.suite, spec.action_repeat, spec.episode_length, spec.episodic) == ("gym", 1, 1000, episodic)
    small = TrainConfig(task=task, latent_dim=16, enc_dim=16, mlp_dim=16)
    model = WorldModel(model_dims(small, spec.obs_dim, spec.action_dim, spec.episodic))
    assert (model.termination_head is not None) == episodic


@pytest.mark.parametrize("task", ["HalfCheetah-v5", "Swimmer-v5"])
def test_never_terminating_tasks_run_to_the_time_limit(task):
    """What makes them non-episodic: a whole episode of random actions ends by truncation only."""
    env = make_env(task, seed=0)
    try:
        env.reset()
        for i in range(1, 1001):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            assert not terminated
            assert truncated == (i == 1000)
    finally:
        env.close()


def test_swimmer_spec():
    swimmer = task_spec("Swimmer-v5")
    assert (swimmer.obs_dim, swimmer.action_dim) == (8, 2)


def test_dmc_episode_truncates_at_500_decisions():
    env = make_env("pendulum-swingup", seed=0)
    try:
        env.reset()
        action = np.zeros(env.action_space.shape, np.float32)
        for i in range(1, 501):
            _, reward, terminated, truncated, info = env.step(action)
            assert not terminated
            assert truncated == (i == 500)
        assert info["env_steps"] == 1000
        with pytest.raises(RuntimeError):
            env.step(action)
        _, info = env.reset()
        assert info["env_steps"] == 0
        env.step(action)
    finally:
        env.close()


@pytest.mark.parametrize("task", ["walker-walk", "Hopper-v5"])
def test_same_seed_same_trajectory(task):
    obs_a, rew_a = _rollout(task, seed=3, n_steps=30)
    obs_b, rew_b = _rollout(task, seed=3, n_steps=30)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    obs_c, _ = _rollout(task, seed=4, n_steps=30)
    assert not np.array_equal(obs_a[0], obs_c[0])


@pytest.mark.parametrize("task", ["walker-walk", "Hopper-v5"])
def test_reset_with_seed_reseeds(task):
    env = make_env(task, seed=5)
    try:
        first, _ = env.reset()
        second, _ = env.reset()  # continues the random stream
        assert not np.array_equal(first, second)
        again, _ = env.reset(seed=5)
        np.testing.assert_array_equal(first, again)
        other, _ = env.reset(seed=6)
        assert not np.array_equal(first, other)
    finally:
        env.close()


def test_scale_action_helper():
    low, high = np.array([-0.4, 0.0, -2.0]), np.array([0.4, 1.0, 1.0])
    np.testing.assert_allclose(scale_action([-1, -1, -1], low, high), low)
    np.testing.assert_allclose(scale_action([1, 1, 1], low, high), high)
    np.testing.assert_allclose(scale_action([0, 0, 0], low, high), [0.0, 0.5, -0.5])
    np.testing.assert_allclose(scale_action([5, -5, 0.5], low, high), [0.4, 0.0, 0.25])


def test_action_scaling_reaches_true_bounds():
    env = make_env("Humanoid-v5", seed=0)
    try:
        env.reset()
        inner = env.unwrapped._env.unwrapped
        low, high = inner.model.actuator_ctrlrange.T
        assert np.allclose(low, -0.4) and np.allclose(high, 0.4)
        for sign, bound in ((1.0, high), (-1.0, low)):
            env.step(np.full(env.action_space.shape, sign, np.float32))
            np.testing.assert_allclose(inner.data.ctrl, bound, rtol=1e-6)
    finally:
        env.close()


def test_dmc_action_scaling_reaches_true_bounds():
    env = make_env("quadruped-walk", seed=0)  # hip bounds are [-1, 1.1], knees +-0.8
    try:
        env.reset()
        ctrl = env.unwrapped._env.physics.data.ctrl
        low, high = env.unwrapped._env.physics.model.actuator_ctrlrange.T
        assert not np.allclose(high, 1.0)
        for sign, bound in ((1.0, high), (-1.0, low)):
            env.step(np.full(env.action_space.shape, sign, np.float32))
            np.testing.assert_allclose(ctrl, bound)
    finally:
        env.close()


def test_gym_terminations_pass_through():
    env = make_env("Hopper-v5", seed=0)
    try:
        env.reset()
        rng = np.random.default_rng(0)
        for i in range(1, 1001):
            _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, 3))
            if terminated or truncated:
                break
        assert terminated and not truncated and i < 1000
        assert info["env_steps"] == i
        with pytest.raises(RuntimeError):
            env.step(np.zeros(3))
    finally:
        env.close()


def test_unknown_task():
    with pytest.raises(UnknownTaskError) as excinfo:
        make_env("walker-fly", seed=0)
    message = str(excinfo.value)
    assert "walker-fly" in message and "walker-walk" in message and "Hopper-v5" in message
    assert "\n" not in message
    with pytest.raises(ValueError):
        task_spec("nope")


@pytest.mark.parametrize("task", ["cartpole-balance", "Hopper-v5"])
def test_render_rgb(task):
    env = make_env(task, seed=0, render_size=64)
    try:
        env.reset()
        try:
            frame = env.render()
        except RuntimeError as exc:
            pytest.skip(f"no offscreen OpenGL backend here: {exc}")
        assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
        assert frame.max() > frame.min()  # not a blank image
    finally:
        env.close()
