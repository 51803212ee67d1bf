"""Environments for TD-MPC2: DeepMind Control Suite and Gymnasium MuJoCo tasks.

Every task is exposed through the same Gymnasium interface: flat float32
observations, actions in [-1, 1] (rescaled to the simulator's bounds), an
``"env_steps"`` counter in ``info``, deterministic seeding and RGB rendering.

DMControl tasks are named ``domain-task`` (``"walker-walk"``, ``"cup-catch"``)
and run with action repeat 2 for 500 decisions; Gymnasium tasks keep their
registered names (``"Hopper-v5"``), action repeat 1 and 1000-step time limit.
A task is episodic (TD-MPC2 learns a termination head for it) only if its
episodes really terminate: the Gymnasium tasks except HalfCheetah and Swimmer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

# dm_control and Gymnasium pick their OpenGL backend when first imported. Without
# a display GLFW is chosen and fails, so default to EGL, which works both on
# GPU machines and with Mesa's software EGL on headless CPU machines.
if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ.setdefault("MUJOCO_GL", "egl")

__all__ = [
    "TASKS",
    "TaskSpec",
    "UnknownTaskError",
    "make_env",
    "scale_action",
    "task_spec",
]

DMC_TASKS: tuple[str, ...] = (
    "acrobot-swingup",
    "cartpole-balance",
    "cartpole-balance-sparse",
    "cartpole-swingup",
    "cartpole-swingup-sparse",
    "cheetah-run",
    "cup-catch",
    "dog-run",
    "dog-stand",
    "dog-trot",
    "dog-walk",
    "finger-spin",
    "finger-turn-easy",
    "finger-turn-hard",
    "hopper-hop",
    "hopper-stand",
    "humanoid-run",
    "humanoid-stand",
    "humanoid-walk",
    "pendulum-swingup",
    "quadruped-run",
    "quadruped-walk",
    "reacher-easy",
    "reacher-hard",
    "walker-run",
    "walker-stand",
    "walker-walk",
)
GYM_TASKS: tuple[str, ...] = (
    "HalfCheetah-v5",
    "Hopper-v5",
    "Walker2d-v5",
    "Ant-v5",
    "Humanoid-v5",
    "Swimmer-v5",
)
TASKS: tuple[str, ...] = DMC_TASKS + GYM_TASKS
# Gymnasium tasks without an unhealthy-state termination: their episodes end only at the time limit, so they are
# not episodic (no termination head, no termination loss), like every DMControl task.
GYM_NEVER_TERMINATE: frozenset[str] = frozenset({"HalfCheetah-v5", "Swimmer-v5"})

_DMC_DOMAINS = {"cup": "ball_in_cup"}
_DMC_ACTION_REPEAT = 2
_DMC_EPISODE_LENGTH = 500  # DMC's own 1000-step limit divided by the action repeat
DEFAULT_RENDER_SIZE = 128


class UnknownTaskError(ValueError):
    """Raised for a task name that is not in :data:`TASKS`."""


@dataclass(frozen=True)
class TaskSpec:
    """Static description of a task, as the agent sees it.

    Attributes:
        name: task name, e.g. ``"walker-walk"`` or ``"Hopper-v5"``.
        suite: ``"dmc"`` or ``"gym"``.
        obs_dim: length of the flat observation vector.
        action_dim: length of the action vector (actions live in [-1, 1]).
        episode_length: maximum episode length in agent decisions.
        action_repeat: physics control steps per agent decision.
        episodic: True when episodes can terminate before the time limit.
    """

    name: str
    suite: str
    obs_dim: int
    action_dim: int
    episode_length: int
    action_repeat: int
    episodic: bool


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise UnknownTaskError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    return "dmc" if task in DMC_TASKS else "gym"


def scale_action(action: Any, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map an action from [-1, 1] linearly onto ``[low, high]``, clipping first.

    Returns a float64 array of the same shape as ``low``.
    """
    a = np.clip(np.asarray(action, dtype=np.float64).reshape(np.shape(low)), -1.0, 1.0)
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    return np.clip(low + (a + 1.0) * 0.5 * (high - low), low, high)


def _offscreen(render) -> np.ndarray:
    """Run a render call, turning a missing OpenGL backend into one clear error."""
    try:
        return render()
    except Exception as exc:
        raise RuntimeError(
            f"offscreen rendering failed (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): {exc}") from exc


class _PlatformEnv(gymnasium.Env):
    """Common base: unit action space, flat float32 observation space, seeding."""

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, task: str, seed: int, obs_dim: int, action_dim: int,
                 episode_length: int, action_repeat: int):
        self.task = task
        self.episode_length = episode_length
        self.action_repeat = action_repeat
        self.observation_space = gymnasium.spaces.Box(
            -np.inf, np.inf, (obs_dim,), np.float32, seed=seed)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (action_dim,), np.float32, seed=seed)
        self._seed: int | None = int(seed)  # consumed by the first reset()
        self._decisions = 0
        self._needs_reset = True

    def _take_seed(self, seed: int | None) -> int | None:
        """The seed this reset should use: the given one, else make_env's on the first reset."""
        if seed is None:
            seed, self._seed = self._seed, None
        else:
            self._seed = None
        return seed

    def _count_step(self) -> None:
        if self._needs_reset:
            raise RuntimeError(f"{self.task}: step() called before reset() or after the episode ended")
        self._decisions += 1


class DMCEnv(_PlatformEnv):
    """A dm_control suite task behind the Gymnasium API, with action repeat 2.

    ``terminated`` is always False; ``truncated`` becomes True at decision 500.
    """

    def __init__(self, task: str, seed: int, render_size: int = DEFAULT_RENDER_SIZE):
        from dm_control import suite  # imported late: slow, and must follow the MUJOCO_GL default

        domain, _, name = task.partition("-")
        self._env = suite.load(_DMC_DOMAINS.get(domain, domain), name.replace("-", "_"),
                               task_kwargs={"random": int(seed)})
        spec = self._env.action_spec()
        self._low = np.asarray(spec.minimum, dtype=np.float64) * np.ones(spec.shape)
        self._high = np.asarray(spec.maximum, dtype=np.float64) * np.ones(spec.shape)
        obs_dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
        self.render_size = render_size
        super().__init__(task, seed, obs_dim, int(np.prod(spec.shape)),
                         _DMC_EPISODE_LENGTH, _DMC_ACTION_REPEAT)

    @staticmethod
    def _flatten(observation: dict) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float32).ravel()
                               for v in observation.values()])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; a seed (or make_env's, on the first reset) reseeds the task."""
        seed = self._take_seed(seed)
        super().reset(seed=seed)
        if seed is not None:
            # suite tasks draw initial states from this RandomState (Task.random)
            self._env.task._random = np.random.RandomState(seed)
        time_step = self._env.reset()
        self._decisions = 0
        self._needs_reset = False
        return self._flatten(time_step.observation), {"env_steps": 0}

    def step(self, action):
        """Apply ``action`` twice, summing the rewards."""
        self._count_step()
        physical = scale_action(action, self._low, self._high)
        reward = 0.0
        for _ in range(self.action_repeat):
            time_step = self._env.step(physical)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        truncated = self._decisions >= self.episode_length or time_step.last()
        self._needs_reset = truncated
        info = {"env_steps": self._decisions * self.action_repeat}
        return self._flatten(time_step.observation), reward, False, truncated, info

    def render(self) -> np.ndarray:
        """RGB uint8 image of shape (render_size, render_size, 3) from camera 0."""
        return _offscreen(lambda: self._env.physics.render(self.render_size, self.render_size, camera_id=0))

    def close(self) -> None:
        """Free the MuJoCo data and any rendering contexts."""
        env = getattr(self, "_env", None)
        if env is not None:
            env.physics.free()
            self._env = None


class GymMujocoEnv(_PlatformEnv):
    """A Gymnasium MuJoCo task with actions rescaled from [-1, 1] and float32 observations.

    Real terminations are passed through; the registered TimeLimit truncates.
    """

    def __init__(self, task: str, seed: int, render_size: int = DEFAULT_RENDER_SIZE):
        self._env = gymnasium.make(task, render_mode="rgb_array",
                                   width=render_size, height=render_size)
        space = self._env.action_space
        self._low = np.asarray(space.low, dtype=np.float64)
        self._high = np.asarray(space.high, dtype=np.float64)
        self.render_size = render_size
        super().__init__(task, seed, int(np.prod(self._env.observation_space.shape)),
                         int(np.prod(space.shape)), int(self._env.spec.max_episode_steps), 1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; a seed (or make_env's, on the first reset) reseeds the simulator."""
        seed = self._take_seed(seed)
        super().reset(seed=seed)
        obs, info = self._env.reset(seed=seed, options=options)
        self._decisions = 0
        self._needs_reset = False
        return np.asarray(obs, dtype=np.float32).ravel(), {**info, "env_steps": 0}

    def step(self, action):
        """One simulator step with the rescaled action."""
        self._count_step()
        obs, reward, terminated, truncated, info = self._env.step(
            scale_action(action, self._low, self._high).astype(self._env.action_space.dtype))
        self._needs_reset = bool(terminated or truncated)
        info = {**info, "env_steps": self._decisions}
        return (np.asarray(obs, dtype=np.float32).ravel(), float(reward),
                bool(terminated), bool(truncated), info)

    def render(self) -> np.ndarray:
        """RGB uint8 image of shape (render_size, render_size, 3)."""
        return _offscreen(self._env.render)

    def close(self) -> None:
        """Close the simulator and its renderer."""
        env = getattr(self, "_env", None)
        if env is not None:
            env.close()
            self._env = None


_SPECS: dict[str, TaskSpec] = {}


def _spec_of(env: _PlatformEnv, suite: str) -> TaskSpec:
    return TaskSpec(
        name=env.task,
        suite=suite,
        obs_dim=int(env.observation_space.shape[0]),
        action_dim=int(env.action_space.shape[0]),
        episode_length=env.episode_length,
        action_repeat=env.action_repeat,
        episodic=suite == "gym" and env.task not in GYM_NEVER_TERMINATE,
    )


def quiet_library_logs() -> None:
    """dm_control reports MuJoCo XML deprecation notices through absl at WARNING level (e.g. for cheetah-run);
    a user can do nothing about them, so keep them off stderr (absl errors still show). Commands and actors
    call this once per process."""
    try:
        # absl is imported only to silence dm_control's logging
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


def make_env(task: str, seed: int, *, render_size: int = DEFAULT_RENDER_SIZE) -> gymnasium.Env:
    """Build ``task`` seeded with ``seed``; the first ``reset()`` without a seed uses it.

    Raises:
        UnknownTaskError: if ``task`` is not in :data:`TASKS`.
    """
    suite = _check_task(task)
    cls = DMCEnv if suite == "dmc" else GymMujocoEnv
    env = cls(task, seed, render_size=render_size)
    _SPECS.setdefault(task, _spec_of(env, suite))
    return env


def task_spec(task: str) -> TaskSpec:
    """Static facts about ``task``; cached, so at most one env is ever built per task.

    Raises:
        UnknownTaskError: if ``task`` is not in :data:`TASKS`.
    """
    _check_task(task)
    if task not in _SPECS:
        make_env(task, 0).close()
    return _SPECS[task]
