"""LearnerActor: the replay buffer and the updates of one training run, as a Ray actor (GPU when asked)."""
from __future__ import annotations

import time

import ray
import torch

from gym_qwen.platform.config import TrainConfig, config_from_dict
from gym_qwen.platform.envs import quiet_library_logs
from gym_qwen.platform.rng import global_rng_state, set_global_rng_state
from gym_qwen.platform.speculative.evaluation import evaluate
from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent
from gym_qwen.platform.tdmpc2.checkpoints import save_checkpoint
from gym_qwen.platform.training.loop import MetricMeans, build_learning


class LearnerActor:
    """Owns the learning agent and its replay buffer; keeps one update per collected decision (after the seed
    phase and its burst, exactly as the in-process Learner counts them), run as soon as a rollout chunk reports
    the decisions, so the weights its worker plays the next chunk with have learned from them. Each weights
    version is `ray.put` once; `weights()` hands out that object's ref (boxed in a list so Ray passes the ref,
    not the value)."""

    def __init__(self, config: dict, threads: int, device: str):
        torch.set_num_threads(threads)
        quiet_library_logs()
        self.cfg = config_from_dict(TrainConfig, config)
        self.spec, self.agent, self.learner = build_learning(self.cfg, device)
        self.decisions = 0
        self.episode_ids: set[int] = set()
        self.running: dict[int, int] = {}  # decisions credited to episodes not finished yet
        self.version = 0
        self._weights_ref = None
        self._eval_agent = None
        self.publishes = True  # a data-parallel learner's ranks but 0 put no weights (ray_train_learner.py)
        self.put_weights = ray.put  # weights -> their ref (a data-parallel learner's hub owns them instead)

    # ------------------------------------------------------------------ weights
    def weights(self) -> tuple[int, list]:
        if not self.publishes:
            return self.version, [None]
        if self._weights_ref is None:
            weights = self.agent.state_dict(with_optim=False)
            if self.agent.device.type != "cpu":
                weights = _to_cpu(weights)
            self._weights_ref = self.put_weights(weights)
        return self.version, [self._weights_ref]

    def _updated(self) -> None:
        self.version += 1
        self._weights_ref = None

    # ------------------------------------------------------------------ data and updates
    def ingest(self, chunk_refs: list) -> dict:
        """Fetch rollout chunks (refs to `play_chunk` results, or to lists of whole Episodes as `run_episodes`
        returns them): add each finished episode id at most once, credit each episode's decisions at most once
        (an episode replayed after a crash is credited only beyond what its lost attempt was), and run the
        updates the new decisions make due. Returns counters, the updates run and their mean metrics, the
        finished episodes' (id, length, return), the running episodes' credited decisions and the current
        weights version with its boxed ref."""
        chunks = ray.get(list(chunk_refs), timeout=600)
        added = dupes = 0
        summaries = []
        means = MetricMeans()
        before = self.learner.num_updates
        for chunk in chunks:
            if isinstance(chunk, list):
                chunk = {"episodes": chunk, "running": {}}
            due = 0
            for episode in chunk["episodes"]:  # into the buffer before the updates of its last decision
                if episode.episode_id in self.episode_ids:
                    dupes += 1
                    continue
                self.episode_ids.add(episode.episode_id)
                self.learner.add(episode)
                summaries.append((episode.episode_id, len(episode), episode.total_reward))
                added += 1
                due += self._credit(episode.episode_id, len(episode), finished=True)
            for episode_id, played in chunk["running"].items():
                if episode_id not in self.episode_ids:
                    due += self._credit(int(episode_id), int(played), finished=False)
            means.add(self.learner.update(due), due)
        ran = self.learner.num_updates - before
        if ran:
            self._updated()
        version, box = self.weights()
        return {"added": added, "duplicates": dupes, "decisions": self.decisions, "updates": self.learner.num_updates,
                "ran": ran, "metrics": means.take(), "episodes": summaries, "running": dict(self.running),
                "version": version, "weights": box}

    def _credit(self, episode_id: int, played: int, finished: bool) -> int:
        """Count an episode's decisions beyond those already credited to it; returns the updates they make due.
        A finished episode shorter than a lost attempt's credit takes the excess back (its updates have run)."""
        new = played - self.running.get(episode_id, 0)
        if finished:
            self.running.pop(episode_id, None)
            if new < 0:
                self.decisions += new
                return 0
        elif new <= 0:
            return 0
        else:
            self.running[episode_id] = played
        due = 0
        for d in range(self.decisions + 1, self.decisions + new + 1):
            due += self.learner.take_due_updates(d)
        self.decisions += new
        return due

    def sync_step(self, episode, decisions: int) -> dict:
        """Lockstep: the in-process loop's learning half of one decision. Returns its mean update metrics, how
        many updates it ran and the total so far."""
        if episode is not None:
            self.episode_ids.add(episode.episode_id)
            self.learner.add(episode)
        self.decisions = decisions
        before = self.learner.num_updates
        metrics = self.learner.update(self.learner.take_due_updates(decisions))
        ran = self.learner.num_updates - before
        if ran:
            self._updated()
        return {"metrics": metrics, "ran": ran, "num_updates": self.learner.num_updates}

    def update(self, n: int) -> dict:
        """n updates on what the buffer holds, outside the update-to-data schedule (benchmarks). Returns the
        mean metrics and the seconds they took."""
        start = time.perf_counter()
        metrics = self.learner.update(n)
        if metrics:
            self._updated()
        return {**metrics, "seconds": time.perf_counter() - start}

    # ------------------------------------------------------------------ evaluation and checkpoints
    def evaluate(self, episodes: int, seed: int, version: int | None = None, weights_box: list | None = None):
        """Evaluate the current weights, or the given earlier version (what the driver last saw: updates queued
        behind it may have run since) on a separate copy of the agent."""
        agent = self.agent
        if version is not None and version != self.version:
            if self._eval_agent is None:
                s = self.spec
                self._eval_agent = TDMPC2Agent(self.cfg, s.obs_dim, s.action_dim, s.episode_length, s.episodic,
                                               self.agent.device)
            self._eval_agent.load_state_dict(ray.get(weights_box[0], timeout=600))
            agent = self._eval_agent
        return evaluate(agent, self.cfg.task, episodes, seed)

    def state(self) -> dict:
        return {"agent": _to_cpu(self.agent.state_dict(with_optim=True)), "buffer": self.learner.buffer.state(),
                "num_updates": self.learner.num_updates, "torch_rng": global_rng_state(),
                "learner": {"decisions": self.decisions, "deferred": self.learner.deferred,
                            "episode_ids": sorted(self.episode_ids),
                            "running": [[i, n] for i, n in sorted(self.running.items())]}}

    def save_train_state(self, location: str, meta: dict) -> str:
        """Write train_state.pt ({**meta, **state()}) to `location` (a URI: platform/storage.py) from this
        process, the learner's node: the checkpoint goes straight to storage, not through the driver."""
        return str(save_checkpoint(location, {**meta, **self.state()}))

    def load_state(self, ckpt: dict) -> None:
        self.agent.load_state_dict(ckpt["agent"])
        self.learner.buffer.load_state(ckpt["buffer"])
        self.learner.num_updates = int(ckpt["num_updates"])
        set_global_rng_state(ckpt["torch_rng"])
        extra = ckpt.get("learner", {})
        self.decisions = int(extra.get("decisions", 0))
        self.learner.deferred = int(extra.get("deferred", 0))
        self.episode_ids = {int(i) for i in extra.get("episode_ids", [])}
        self.running = {int(i): int(n) for i, n in extra.get("running", [])}
        self._updated()

    def agent_weights(self) -> dict:
        return _to_cpu(self.agent.state_dict(with_optim=False))

    def stats(self) -> dict:
        return {"decisions": self.decisions, "updates": self.learner.num_updates, "version": self.version,
                "episode_ids": sorted(self.episode_ids), "running": dict(self.running)}


def _to_cpu(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_cpu(v) for v in x)
    return x
