"""The data-parallel learner of `learner=ray_train learner_workers=N`: N Ray Train workers under one TorchTrainer,
each holding the same LearnerActor (replay buffer and agent) and learning from its share of every global batch
(gym_qwen/platform/training/data_parallel.py has the maths: one update of the group equals the single learner's).

The training backend talks to it as to the single learner actor: `learner.<method>.remote(...)` returns an object
ref (RayTrainingBackend waits on ingest refs beside rollout chunks). Behind that, a hub actor numbers the calls;
every worker runs them in that order (those that change the learner on every rank, so the collectives line up;
the read-only ones on rank 0), and rank 0's answer resolves the call's ref. Weights reach the rollout workers
as today: rank 0 `ray.put`s each version. A checkpoint goes through Ray Train: every rank calls `ray.train.report`,
rank 0 with a `Checkpoint` of its state, which Ray Train persists under the run folder (`<run dir>/ray_train`).

The hub keeps the calls since the last checkpoint (a restarted group replays them), at most `learner_log_limit`:
at the limit it adds a checkpoint call of its own and holds the driver's next call until that checkpoint is
persisted and the log trimmed. The driver's own checkpoints answer a small state (agent weights, counters and
the Ray Train checkpoint's path) for its train_state.pt; a resumed run restores every rank from that Ray Train
checkpoint (`restore`), so the replay buffer never passes through the driver. Ray Train keeps two checkpoints:
ranked by a score that puts the newest checkpoint the driver named above the learner's own ones before it.
"""
from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path

import ray

from gym_qwen.platform.config import TrainConfig
from gym_qwen.platform.storage import is_uri, join
from gym_qwen.platform.torch_files import read_tagged_file, save_tagged_file
from gym_qwen.platform.training.data_parallel import DataParallelGroup, default_backend

from .cluster import threads_for
from .learner import LearnerActor

# Calls that change the learner: every rank runs them (they hold collectives, or keep the replicas alike)
ALL_RANKS = ("ingest", "update", "load_state", "checkpoint", "restore")
STATE_FILE = "learner_state.pt"
RUN_NAME = "ray_train"  # Ray Train's folder under the storage (the run folder)
STATE_FORMAT, STATE_VERSION = "gym-qwen-ray-train-learner", 1  # a weights-only torch file (torch_files.py)
STOP = "__stop__"
LEARNER_RESTARTS = 3  # a learner worker that dies: the group restarts from the last checkpoint this often
CHECKPOINT_KEY = "ray_train_checkpoint"  # train_state.pt of a ray_train run: its Ray Train checkpoint's path
SCORE = "keep"  # the metric Ray Train ranks checkpoints by (num_to_keep=2; the newest is always kept)


class LearnerStopped(RuntimeError):
    """The data-parallel learner's trainer stopped; calls to it fail with this (one line)."""


class LearnerHub:
    """Async actor: numbers the driver's calls, hands them to every worker in order and resolves each call with
    rank 0's answer. A call is forgotten once every rank has fetched it and its answer is back (its args hold
    chunk refs, its answer a weights ref: kept, they would pin every chunk and weights version)."""

    def __init__(self, world: int, log_limit: int = 256):
        self.log_limit = max(4, int(log_limit))  # calls kept at most (replay log and calls not fetched yet)
        self.admit = asyncio.Lock()  # FIFO: calls held at the limit keep their order
        self.trimmed = asyncio.Event()
        self.checkpoint_issued = -1  # the newest checkpoint call (the driver's or the hub's own)
        self.driver_env_steps = 0  # of the driver's newest checkpoint (or the one a resumed run restored)
        self.auto_checkpoints = 0
        self.calls: dict[int, tuple[str, tuple]] = {}
        self.next_seq = 0
        self.cursors = [0] * world  # the next call each rank fetches
        self.answers: dict[int, asyncio.Future] = {}
        self.arrived = asyncio.Event()
        self.failure: str | None = None
        self.last_error: str | None = None
        self.checkpoint_seq = -1  # calls after it are kept: a restarted group replays them from that checkpoint
        self.checkpoint_path: str | None = None
        self.pids: dict[int, int] = {}

    async def call(self, method: str, *args):
        if self.failure is not None:
            raise LearnerStopped(self.failure)
        async with self.admit:
            while len(self.calls) >= self.log_limit - 1:  # room for this call and a checkpoint call
                if self.checkpoint_issued <= self.checkpoint_seq:  # none on its way: the learner takes one
                    self._append("checkpoint", (self.driver_env_steps, True))
                    self.auto_checkpoints += 1
                self.trimmed.clear()
                await self.trimmed.wait()
                if self.failure is not None:
                    raise LearnerStopped(self.failure)
            if method == "checkpoint":
                self.driver_env_steps = int(args[0])
            elif method == "restore":
                self.driver_env_steps = int(args[1])
            seq = self._append(method, args)
            fut = self.answers[seq] = asyncio.get_running_loop().create_future()
        try:
            ok, value = await fut
        finally:
            self.answers.pop(seq, None)
        if not ok:
            raise LearnerStopped(value)
        return value

    def _append(self, method: str, args: tuple) -> int:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        self.calls[seq] = (method, args)
        if method == "checkpoint":
            self.checkpoint_issued = seq
        self.arrived.set()
        return seq

    def _trim(self) -> None:
        """Forget the calls every rank has fetched that the newest checkpoint holds."""
        for old in [s for s in self.calls if s < min(min(self.cursors), self.checkpoint_seq + 1)]:
            del self.calls[old]
        self.trimmed.set()

    def kept(self) -> dict:
        """The calls kept now, the limit and the checkpoints the hub asked for (diagnostics, tests)."""
        return {"calls": len(self.calls), "limit": self.log_limit, "auto_checkpoints": self.auto_checkpoints}

    async def next_call(self, rank: int, seq: int):
        """(method, args, answered) of call `seq` for `rank`, once the driver made it (rank has run every call
        before it). `answered`: its answer is back already (a restarted group replaying it)."""
        self.cursors[rank] = seq
        self._trim()
        while seq >= self.next_seq:
            self.arrived.clear()
            await self.arrived.wait()
        method, args = self.calls[seq]
        return method, args, seq not in self.answers

    def checkpointed(self, seq: int, path: str) -> None:
        """Rank 0 reported the checkpoint of call `seq` (persisted at `path`) to Ray Train: a restart resumes
        after it."""
        if seq > self.checkpoint_seq:
            self.checkpoint_seq, self.checkpoint_path = seq, path
            self._trim()

    def last_checkpoint(self) -> str | None:
        """Where the newest checkpoint is (the one Ray Train's controller registers may lag behind it)."""
        return self.checkpoint_path

    def error(self, message: str) -> None:
        """A rank failed (one line); the trainer may restart the group, else `fail` says this."""
        self.last_error = message

    def put_weights(self, weights: dict) -> list:
        """[ref] of rank 0's weights, owned by the hub: they outlive a restarted learner group."""
        return [ray.put(weights)]

    def register(self, rank: int, pid: int) -> None:
        self.pids[rank] = pid

    def worker_pids(self) -> dict[int, int]:
        """The process id of each rank's worker (diagnostics, and the tests' kill drills)."""
        return dict(self.pids)

    def answer(self, seq: int, ok: bool, value) -> None:
        fut = self.answers.get(seq)
        if fut is not None and not fut.done():
            fut.set_result((ok, value))

    def fail(self, message: str) -> None:
        """The trainer stopped: every pending call, and every later one, fails with `message` (one line), or with
        the last error a rank noted."""
        self.failure = message = self.last_error or message
        self.trimmed.set()  # calls held at the limit fail too
        for fut in self.answers.values():
            if not fut.done():
                fut.set_result((False, message))


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: a LearnerActor in a data-parallel group, running the hub's calls until STOP."""
    import ray.train  # about a second to import: only this learner's processes pay for it
    from ray.train.torch import get_device  # the same

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    hub = config["hub"]
    device = str(get_device()) if config["device"] == "cuda" else "cpu"
    learner = LearnerActor(config["train"], config["threads"], device)
    learner.learner.set_data_parallel(DataParallelGroup(rank, world))
    learner.publishes = rank == 0
    learner.put_weights = lambda w: ray.get(hub.put_weights.remote(w))[0]  # refs that outlive this worker
    ray.get(hub.register.remote(rank, os.getpid()))
    seq = _restore(learner, ray.get(hub.last_checkpoint.remote()))
    while True:
        method, args, answered = ray.get(hub.next_call.remote(rank, seq))
        if method == STOP:
            return
        if method in ALL_RANKS or (rank == 0 and not answered):
            try:
                if method == "checkpoint":
                    tag = f"{config['started']}-{seq:09d}"
                    value = _checkpoint(learner, rank, tag, seq, hub, config["checkpoints"], *args)
                elif method == "restore":  # a resumed run: every rank loads the Ray Train checkpoint it names
                    value = learner.load_state(read_learner_state(args[0]))
                else:
                    value = getattr(learner, method)(*args)
            except Exception as e:  # noted in one line; Ray Train restarts the group from the last checkpoint
                hub.error.remote(f"the Ray Train learner stopped: rank {rank} failed in {method}: "
                                 f"{type(e).__name__}: {e}".splitlines()[0])
                raise
            if rank == 0:
                hub.answer.remote(seq, True, value)
        seq += 1


def _read(path: str) -> dict:
    import ray.train  # about a second to import: only this learner's processes (and a resume) pay for it

    with ray.train.Checkpoint(path).as_directory() as d:
        return read_tagged_file(Path(d) / STATE_FILE, STATE_FORMAT, STATE_VERSION, RuntimeError,
                                "Ray Train learner checkpoint")


def read_learner_state(path: str) -> dict:
    """The learner state (LearnerActor.state) in the Ray Train checkpoint at `path` (a folder or a URI)."""
    return _read(path)["state"]


def _restore(learner: LearnerActor, path: str | None) -> int:
    """Load the Ray Train checkpoint a restarted group starts from (if any); returns the first call to run."""
    if path is None:
        return 0
    saved = _read(path)
    learner.load_state(saved["state"])
    learner.version = int(saved["weights_version"])  # replaying the calls after it gives the same versions again
    return int(saved["seq"]) + 1


def _checkpoint(learner: LearnerActor, rank: int, tag: str, seq: int, hub, checkpoint_root: str,
                env_steps: int, auto: bool = False) -> dict:
    """Every rank reports to Ray Train (a barrier); rank 0 with a Checkpoint of the learner's state, which Ray Train
    persists to the run's storage. Rank 0 also answers a small state for the driver's own train_state.pt: the
    agent's weights, the counters and the checkpoint's path (a resumed run restores the ranks from it). `auto`: the
    hub's own checkpoint (its call log at the limit; `env_steps` of the driver's last one): ranked below the
    driver's checkpoint before it, so Ray Train keeps that one (and the newest) of its two."""
    import ray.train  # about a second to import: only this learner's processes pay for it (loaded there already)

    state = learner.state() if rank == 0 else None
    metrics = {"env_steps": int(env_steps), "updates": learner.learner.num_updates,
               SCORE: 2 * int(env_steps) + (0 if auto else 1)}
    if rank != 0:
        ray.train.report(metrics)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        save_tagged_file(Path(tmp) / STATE_FILE, STATE_FORMAT, STATE_VERSION,  # atomic
                         {"state": state, "seq": seq, "weights_version": learner.version})
        name = f"checkpoint_{tag}"
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
    path = join(checkpoint_root, name)
    ray.get(hub.checkpointed.remote(seq, path))
    return {"agent": learner.agent_weights(), "num_updates": state["num_updates"], "learner": state["learner"],
            CHECKPOINT_KEY: path}


class _Method:
    def __init__(self, hub, name: str):
        self.hub, self.name = hub, name

    def remote(self, *args):
        return self.hub.call.remote(self.name, *args)


class RayTrainLearner:
    """Driver side: starts the hub and the TorchTrainer (its `fit` in a thread) and stands in for the learner
    actor's handle: `learner.ingest.remote([ref])` etc. `storage` is where Ray Train keeps its checkpoints."""

    def __init__(self, cfg: TrainConfig, config: dict, device: str, storage: str | os.PathLike):
        import ray.train  # about a second to import: only learner=ray_train pays for it
        from ray.train.torch import TorchConfig, TorchTrainer  # the same

        self.hub = ray.remote(LearnerHub).options(num_cpus=0, max_concurrency=1000).remote(cfg.learner_workers,
                                                                                          cfg.learner_log_limit)
        # a local folder, or a URI (output_dir=s3://...): Ray Train's workers write their checkpoints straight to it
        self.storage = storage if is_uri(storage) else str(Path(storage).resolve())
        loop_config = {"train": config, "device": device, "threads": threads_for(cfg.learner_cpus), "hub": self.hub,
                       "checkpoints": join(self.storage, RUN_NAME),
                       # names this trainer's checkpoints apart from an earlier trainer's (a resumed run)
                       "started": time.strftime("%Y%m%d-%H%M%S")}
        self.trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=loop_config,
            torch_config=TorchConfig(backend=default_backend(device)),
            scaling_config=ray.train.ScalingConfig(num_workers=cfg.learner_workers, use_gpu=device == "cuda",
                                                   resources_per_worker={"CPU": cfg.learner_cpus}),
            run_config=ray.train.RunConfig(name=RUN_NAME, storage_path=self.storage,
                                           failure_config=ray.train.FailureConfig(max_failures=LEARNER_RESTARTS),
                                           checkpoint_config=ray.train.CheckpointConfig(
                                               num_to_keep=2, checkpoint_score_attribute=SCORE)))
        self.result, self.error = None, None
        self._thread = threading.Thread(target=self._fit, name="ray-train-learner", daemon=True)
        self._thread.start()

    def _fit(self) -> None:
        try:
            self.result = self.trainer.fit()
        except Exception as e:  # noqa: BLE001 -- any failure of the trainer fails the pending calls, in one line
            self.error = f"the Ray Train learner stopped: {type(e).__name__}: {str(e).strip().splitlines()[0]}"
            try:
                ray.get(self.hub.fail.remote(self.error), timeout=60)
            except Exception:  # noqa: BLE001 -- the hub may be gone already (closing)
                pass

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self.hub, name)

    @property
    def checkpoint(self) -> _Method:
        """`checkpoint.remote(env_steps)`: a Ray Train checkpoint; resolves to a small state for train_state.pt
        (agent weights, counters, CHECKPOINT_KEY: the checkpoint's path)."""
        return _Method(self.hub, "checkpoint")

    def close(self, timeout: float = 120.0) -> None:
        """Let the workers return (the trainer finishes), then drop the hub."""
        if self._thread.is_alive() and self.error is None:
            self.hub.call.remote(STOP)
            self._thread.join(timeout)
        ray.kill(self.hub, no_restart=True)

    def latest_checkpoint_file(self) -> Path | None:
        """The learner state file of the newest Ray Train checkpoint (after close)."""
        if self.result is None or self.result.checkpoint is None:
            return None
        return Path(self.result.checkpoint.path) / STATE_FILE
