"""RayTrainingBackend: rollout-worker actors feeding one learner actor, driven by the platform's training loop.

Data flow (docs/architecture.md, "Data flow"): each worker plays its episodes in chunks of `chunk_decisions`
decisions and returns each chunk as an object ref; the driver passes the ref to the learner, which adds the
episodes that finished to its buffer and runs the updates the chunk's decisions make due; the worker plays its
next chunk with the weights that came out of that (each version `ray.put` once), so it is never more than the
other workers' chunks behind. Episodes are named by global ids that fix their reset seeds. A worker that dies
is restarted by Ray and its unfinished episodes are dispatched again under the same ids; the learner takes each
id at most once and credits each episode's decisions at most once, so the buffer holds every finished episode
exactly once and the update schedule counts each decision once.
"""
from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, ObjectLostError, RayActorError

from gym_qwen.platform.config import config_to_dict
from gym_qwen.platform.envs import task_spec
from gym_qwen.platform.training.loop import MetricMeans, TrainingBackendError, resolve_seed_steps
from gym_qwen.platform.tdmpc2.checkpoints import save_checkpoint
from gym_qwen.platform.training.run import run_location

from .cluster import check_resources, choose_device, connect, disconnect, threads_for
from .learner import LearnerActor
from .ray_train_learner import CHECKPOINT_KEY, LearnerStopped, RayTrainLearner, read_learner_state
from .rollout_worker import RolloutWorker, fault_runtime_env
from .unreachable import UnreachableActors

WAIT_SECONDS = 3600  # one worker task (an episode batch) or learner call; far above any real one
WORKER_RESTARTS = 8


class TrainingActorError(TrainingBackendError):
    """A training actor failed in a way the run cannot recover from (one-line message)."""


@dataclass
class EpisodeSummary:
    """What the training loop needs of an episode the learner ingested."""

    episode_id: int
    length: int
    total_reward: float

    def __len__(self) -> int:
        return self.length


def _get(ref, what: str):
    try:
        return ray.get(ref, timeout=WAIT_SECONDS)
    except GetTimeoutError:
        raise TrainingActorError(f"{what} did not answer within {WAIT_SECONDS} s") from None
    except RayActorError as e:
        raise TrainingActorError(f"{what} died: {str(e).splitlines()[0]}") from None
    except LearnerStopped as e:  # the Ray Train learner's trainer stopped (a worker failed)
        raise TrainingActorError(str(getattr(e, "cause", e)).splitlines()[0]) from None


class RayTrainingBackend:
    """The training backend of `gym-qwen train num_workers=N` (see platform.training.loop.InProcessBackend)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec = task_spec(cfg.task)
        self.seed_steps = resolve_seed_steps(cfg, self.spec.episode_length)
        self.learner, self.workers = None, []
        self._connected = connect(cfg.ray_address)
        try:
            self._start_actors(cfg)
        except BaseException:
            self.close()  # the actors started so far, then Ray if this call started it
            raise
        self.decisions = 0
        self.num_updates = 0
        self.restarts = 0  # workers lost (a crash or a node death, each once): their batches were played again
        self.deaths = 0  # of those, the workers Ray saw die (the budget: WORKER_RESTARTS a worker)
        # async bookkeeping
        self.next_id = 0
        self.retry_ids: collections.deque[int] = collections.deque()
        self.batches: dict[int, tuple[list[int], bool]] = {}  # worker -> (its unfinished episode ids, random)
        self.in_flight: dict = {}  # play_chunk ref -> worker index
        self.ingesting: dict = {}  # learner ingest ref -> worker index (the worker waits for these weights)
        self.idle = list(range(cfg.num_workers))
        self.unreachable = UnreachableActors()  # workers on a node that died, not restarted yet
        self.running: dict[int, int] = {}  # decisions the learner credited to episodes not finished yet
        self._chunk_means = MetricMeans()
        self._sync_means = MetricMeans()

    def _start_actors(self, cfg) -> None:
        # The learner may land on another node than this driver: "auto" asks the cluster (its nodes, then the node
        # types its autoscaler may add), not this machine, and says what it chose
        device, why = choose_device(cfg.device)
        gpus = 1 if device == "cuda" else 0
        ray_train = cfg.learner == "ray_train"
        check_resources([("rollout worker", cfg.num_workers, cfg.worker_cpus, 0),
                         ("learner worker" if ray_train else "learner", cfg.learner_workers, cfg.learner_cpus, gpus)],
                        wait_s=cfg.scale_wait)
        if why:
            print(why, flush=True)
        config = config_to_dict(cfg)
        if ray_train:  # its checkpoints go to the run folder through Ray Train
            self.learner = RayTrainLearner(cfg, config, device, run_location(cfg))
        else:
            self.learner = ray.remote(LearnerActor).options(num_cpus=cfg.learner_cpus, num_gpus=gpus).remote(
                config, threads_for(cfg.learner_cpus), device)
        worker_cls = ray.remote(RolloutWorker).options(num_cpus=cfg.worker_cpus, max_restarts=WORKER_RESTARTS,
                                                       max_task_retries=0, **fault_runtime_env())
        self.workers = [worker_cls.remote(config, i, threads_for(cfg.worker_cpus)) for i in range(cfg.num_workers)]
        self.version, self.weights_box = _get(self.learner.weights.remote(), "the learner")

    # ------------------------------------------------------------------ the backend interface
    def advance(self, total_decisions: int) -> list:
        return self._advance_sync(total_decisions) if self.cfg.sync else self._advance_async(total_decisions)

    def evaluate(self, episodes: int, seed: int):
        return _get(self.learner.evaluate.remote(episodes, seed, self.version, self.weights_box),
                    "the learner (evaluating)")

    def state(self) -> dict:
        if isinstance(self.learner, RayTrainLearner):  # a Ray Train checkpoint, and a small state naming it
            env_steps = self.decisions * self.spec.action_repeat
            state = _get(self.learner.checkpoint.remote(env_steps), "the learner (checkpointing)")
        else:
            state = _get(self.learner.state.remote(), "the learner (checkpointing)")
        if self.cfg.sync:
            state["collector"] = _get(self.workers[0].collector_state.remote(), "the rollout worker")
        return state

    def save_state_to(self, location: str, meta: dict) -> None:
        """A checkpoint on a URI (output_dir=s3://...): the learner actor adds its state to `meta` (the driver's
        small part: loop counters, config) and writes train_state.pt to `location` itself, so the replay buffer
        never passes through the driver. (The Ray Train learner's ranks write their state to the Ray Train checkpoint;
        the driver writes the small state naming it.)"""
        if isinstance(self.learner, RayTrainLearner):
            save_checkpoint(location, {**meta, **self.state()})
            return
        if self.cfg.sync:
            meta = {**meta, "collector": _get(self.workers[0].collector_state.remote(), "the rollout worker")}
        _get(self.learner.save_train_state.remote(location, meta), "the learner (checkpointing)")

    def load_state(self, ckpt: dict) -> None:
        if "learner" not in ckpt:  # a checkpoint of the in-process loop: its collector knows the episodes
            col = ckpt["collector"]
            ckpt = {**ckpt, "learner": {"decisions": col["decisions"], "deferred": 0,
                                        "episode_ids": list(range(int(col["episode_index"])))}}
        saved = ckpt.get(CHECKPOINT_KEY)  # a ray_train run: its learner state is in that Ray Train checkpoint
        if saved is not None and isinstance(self.learner, RayTrainLearner):  # every rank reads it from storage
            _get(self.learner.restore.remote(saved, int(ckpt["env_steps"])), "the learner (resuming)")
        else:
            if saved is not None:  # resumed with learner=single: the state comes through this process
                ckpt = {**ckpt, **read_learner_state(saved)}
            _get(self.learner.load_state.remote(ckpt), "the learner (resuming)")
        if self.cfg.sync:
            _get(self.workers[0].load_collector_state.remote(ckpt["collector"]), "the rollout worker")
        extra = ckpt["learner"]
        self.decisions = int(extra["decisions"])
        self.num_updates = int(ckpt["num_updates"])
        ids = set(int(i) for i in extra["episode_ids"])
        self.running = {int(i): int(n) for i, n in extra.get("running", [])}
        self.next_id = max(ids | set(self.running)) + 1 if ids or self.running else 0
        self.retry_ids.extend(sorted(set(range(self.next_id)) - ids))  # lost in flight when the job stopped
        self.version, self.weights_box = _get(self.learner.weights.remote(), "the learner")

    def agent_weights(self) -> dict:
        return _get(self.learner.agent_weights.remote(), "the learner")

    def close(self) -> None:
        """Kill the actors and leave Ray (if this backend started it). Safe to call twice."""
        try:
            for actor in self.workers:
                ray.kill(actor, no_restart=True)
            if isinstance(self.learner, RayTrainLearner):
                self.learner.close()
            elif self.learner is not None:
                ray.kill(self.learner, no_restart=True)
        finally:
            self.workers, self.learner = [], None
            disconnect(self._connected)
            self._connected = False

    # ------------------------------------------------------------------ lockstep
    def _advance_sync(self, total_decisions: int) -> list:
        worker = self.workers[0]
        episode, self.decisions = _get(worker.sync_step.remote(self.version, self.weights_box), "the rollout worker")
        learned = _get(self.learner.sync_step.remote(episode, self.decisions), "the learner")
        self.num_updates = learned["num_updates"]
        if learned["ran"]:
            self.version, self.weights_box = _get(self.learner.weights.remote(), "the learner")
            self._sync_means.add(learned["metrics"], learned["ran"])
        if episode is None and self.decisions < total_decisions:
            return []
        if episode is None:  # stopped mid-episode at the step budget
            _get(worker.drop_partial_episode.remote(), "the rollout worker")
            return []
        return [(EpisodeSummary(episode.episode_id, len(episode), episode.total_reward), self._sync_means.take())]

    # ------------------------------------------------------------------ asynchronous
    def _random_end(self) -> int:
        """Ids below this are seed-phase episodes, played with random actions."""
        return math.ceil(self.seed_steps / self.spec.episode_length)

    def _pending_episodes(self) -> int:
        return sum(len(ids) for ids, _ in self.batches.values())

    def _next_batch(self, total_decisions: int):
        """(ids, random_actions) of a new batch for an idle worker, or None when nothing should start now."""
        envs, random_end = self.cfg.num_envs, self._random_end()
        waiting_for_weights = self.version == 0 and bool(self.batches)
        if self.retry_ids:
            random_actions = self.retry_ids[0] < random_end
            if not random_actions and waiting_for_weights:
                return None
            ids = []
            while self.retry_ids and len(ids) < envs and (self.retry_ids[0] < random_end) == random_actions:
                ids.append(self.retry_ids.popleft())
            return ids, random_actions
        finished_decisions = self.decisions - sum(self.running.values())
        room = math.ceil((total_decisions - finished_decisions) / self.spec.episode_length) - self._pending_episodes()
        if room <= 0:
            return None
        random_actions = self.next_id < random_end
        if random_actions:
            n = min(envs, random_end - self.next_id, room)
        elif waiting_for_weights:  # the seed phase is collected: wait for weights that learned from it
            return None
        else:
            n = min(envs, room)
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        return ids, random_actions

    def _dispatch(self, total_decisions: int) -> None:
        """Each idle worker plays its next chunk: of the batch it holds, else of a new batch."""
        for w in [w for w in self.idle if self.unreachable.ready(w)]:
            start = None
            if w not in self.batches:
                batch = self._next_batch(total_decisions)
                if batch is None:
                    continue
                self.batches[w] = batch
                start = batch[0]
            random_actions = self.batches[w][1]
            # random episodes need no weights: whole episodes in one call
            chunk = self.spec.episode_length if random_actions else self.cfg.chunk_decisions
            ref = self.workers[w].play_chunk.remote(self.version, self.weights_box, start, random_actions, chunk)
            self.in_flight[ref] = w
            self.idle.remove(w)

    def _ingested(self, ref) -> list:
        """A finished learner ingest: new counters and weights; its worker may play on. A chunk the learner
        could not fetch (lost with its worker's node) is played again like a dead worker's."""
        w = self.ingesting.pop(ref)
        try:
            result = _get(ref, "the learner")
        except ObjectLostError:  # raised before the learner changed anything
            self._replay(w)
            self.unreachable.failed(w)  # its worker went with the node: a call bouncing off it is the same loss
            return []
        self.decisions, self.num_updates = result["decisions"], result["updates"]
        self.version, self.weights_box = result["version"], result["weights"]
        self.running = {int(i): int(n) for i, n in result["running"].items()}
        ids, random_actions = self.batches[w]
        unfinished = [i for i in ids if i in self.running]
        if unfinished:
            self.batches[w] = (unfinished, random_actions)
        else:
            del self.batches[w]
        self.idle.append(w)
        self._chunk_means.add(result["metrics"], result["ran"])
        if not result["episodes"]:
            return []
        metrics = self._chunk_means.take()
        return [(EpisodeSummary(*s), metrics) for s in result["episodes"]]

    def _played(self, ref) -> None:
        """A finished play_chunk: hand it to the learner, or, if its worker died, replay its unfinished episodes
        on the restarted worker under the same ids (same starts)."""
        w = self.in_flight.pop(ref)
        try:
            ray.get(ref, timeout=WAIT_SECONDS)  # raises if the worker (or its node) died before finishing
        except ActorUnavailableError:  # it crashed or its node died, and Ray has not restarted it yet
            again = self.unreachable.waiting(w)  # a call bouncing off it before its restart: the same loss
            if not self.unreachable.failed(w):
                raise TrainingActorError(f"a rollout worker was unreachable for over {self.unreachable.limit_s:g} s; "
                                         "giving up") from None
            self._replay(w, died=False, counted=again)
            return
        except (RayActorError, ObjectLostError):
            self._replay(w)
            self.unreachable.failed(w)  # a call that bounces off it before its restart is this same loss
            return
        self.unreachable.reached(w)
        self.ingesting[self.learner.ingest.remote([ref])] = w  # the learner fetches the chunk

    def _replay(self, w: int, died: bool = True, counted: bool = False) -> None:
        """Worker `w`'s unfinished episodes are played again from their starts, under the same ids. `counted`: the
        loss that made them unfinished was counted already (a restart per crash or node death)."""
        self.restarts += not counted
        self.deaths += died
        if self.deaths > WORKER_RESTARTS * len(self.workers):
            raise TrainingActorError(f"rollout workers died {self.deaths} times; giving up") from None
        ids, _ = self.batches.pop(w)
        self.retry_ids.extendleft(sorted(ids, reverse=True))
        self.idle.append(w)

    def _advance_async(self, total_decisions: int) -> list:
        self._dispatch(total_decisions)
        waiting = [*self.ingesting, *self.in_flight]
        pause = self.unreachable.next_in(self.idle)  # idle workers waiting to be reachable again
        if not waiting:
            if pause is None:
                raise TrainingActorError("no episode is being collected or learned from, yet the run is not done")
            time.sleep(pause)
            return []
        done, _ = ray.wait(waiting, num_returns=1, timeout=WAIT_SECONDS if pause is None else pause)
        if not done:
            if pause is not None:
                return []
            raise TrainingActorError(f"no rollout worker or learner answered within {WAIT_SECONDS} s")
        if done[0] in self.ingesting:
            return self._ingested(done[0])
        self._played(done[0])
        return []
