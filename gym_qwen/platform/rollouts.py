"""Whole training episodes on several environments at once, one acting agent planning for all of them.

What a Ray rollout worker runs (gym_qwen.actors.rollout_worker): episodes are named by a global id that fixes
their reset seed, so a lost episode can be run again anywhere with the same id and the same start.
"""
from __future__ import annotations

import numpy as np

from .envs import make_env
from .rng import TorchRngStream, derive_seed
from .tdmpc2.buffer import Episode
from .training import ACTING_STREAM, TRAIN_SEED_STRIDE

RANDOM_ACTION_STREAM = 2


class EpisodeRunner:
    """`num_envs` environments of one task and an acting agent; `run(ids)` plays one episode per id in
    lockstep (batched planning), with random actions or the agent's exploratory ones."""

    def __init__(self, task: str, seed: int, agent, num_envs: int, stream: int):
        self.task, self.seed, self.agent = task, seed, agent
        self.envs = [make_env(task, seed) for _ in range(num_envs)]
        self.action_dim = self.envs[0].action_space.shape[0]
        self.torch_rng = TorchRngStream(derive_seed(seed, ACTING_STREAM, stream))
        self.rng = np.random.default_rng(derive_seed(seed, RANDOM_ACTION_STREAM, stream))

    def run(self, episode_ids: list[int], random_actions: bool, on_decision=None) -> list[Episode]:
        """One episode per id. `on_decision(t)` is called before decision t of the batch (fault injection)."""
        if not 0 < len(episode_ids) <= len(self.envs):
            raise ValueError(f"{len(episode_ids)} episodes asked of a runner with {len(self.envs)} environments")
        envs = self.envs[:len(episode_ids)]
        obs = [env.reset(seed=self.seed * TRAIN_SEED_STRIDE + int(i))[0] for env, i in zip(envs, episode_ids)]
        traj = [{"obs": [o], "action": [], "reward": [], "terminated": []} for o in obs]
        done = [False] * len(envs)
        t = 0
        while not all(done):
            if on_decision is not None:
                on_decision(t)
            if random_actions:
                actions = self.rng.uniform(-1, 1, (len(envs), self.action_dim)).astype(np.float32)
            else:
                with self.torch_rng:  # finished environments keep planning on their last observation (discarded)
                    actions = self.agent.act(np.stack([tr["obs"][-1] for tr in traj]), t0=t == 0, eval_mode=False)
            for j, env in enumerate(envs):
                if done[j]:
                    continue
                o, r, terminated, truncated, _ = env.step(actions[j])
                tr = traj[j]
                tr["obs"].append(o)
                tr["action"].append(actions[j])
                tr["reward"].append(r)
                tr["terminated"].append(terminated)
                done[j] = terminated or truncated
            t += 1
        return [Episode(np.stack(tr["obs"]).astype(np.float32), np.stack(tr["action"]).astype(np.float32),
                        np.asarray(tr["reward"], np.float32), np.asarray(tr["terminated"], bool),
                        episode_id=int(i)) for tr, i in zip(traj, episode_ids)]

    def close(self) -> None:
        for env in self.envs:
            env.close()
