"""The planner in a thread of its own, for control on the wall clock (`realtime=true`).

One job at a time, in the order submitted: the thread runs `compute(job)` under inference mode with its own torch
thread count (torch's intra-op thread count is per thread with the OpenMP backend this project's torch uses) and,
on CUDA, on its own stream, so the environment's thread keeps stepping while a plan is made. Every random number
of a job comes from the generator the job's `compute` is given (never the process's global stream, which the
environment's thread uses: swapping global RNG state from two threads is not thread-safe).

A job is cancelled by setting its flag: the planner checks it between MPPI iterations (planner.PlanCancelled),
so a cancel waits at most one iteration. The CUDA path (a side stream, events ordering the two streams, the
caching allocator told which stream uses each tensor) is written but has not run here: this machine has no GPU.
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from ..tdmpc2.planner import PlanCancelled


@dataclass
class PlanJob:
    """One plan: started at decision `started`, taking over at `ready_at`, planned from `z_start` (1, L),
    warm-started from `prev_mean` shifted by `shift`. The planner thread fills `result` (or `error`), `seconds`
    and `generator_state` (the generator's state when the job began drawing) and sets `done`."""

    started: int
    ready_at: int
    z_start: torch.Tensor
    prev_mean: torch.Tensor | None
    shift: int
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None
    cancelled: bool = False
    seconds: float = 0.0
    generator_state: torch.Tensor | None = None
    inputs_ready: object = None  # CUDA: an event recorded on the submitting thread's stream


class BackgroundPlanner:
    """Runs `compute(job)` for submitted PlanJobs in a daemon thread, one at a time (see the module docstring).
    `threads`: torch threads of the planner thread (None: leave its default)."""

    def __init__(self, compute, threads: int | None = None, device: torch.device | str = "cpu"):
        self.compute, self.threads = compute, threads
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="gym-qwen-planner", daemon=True)
        self._thread.start()

    def submit(self, job: PlanJob) -> PlanJob:
        if self.stream is not None:  # the job's inputs were made on this thread's stream: the planner waits for them
            job.inputs_ready = torch.cuda.Event()
            job.inputs_ready.record()
        self._jobs.put(job)
        return job

    def result(self, job: PlanJob):
        """Block until `job` is done; its result (on CUDA, handed to the calling thread's stream)."""
        job.done.wait()
        if job.error is not None:
            raise job.error
        if job.cancelled:
            raise RuntimeError("the result of a cancelled plan was asked for")
        if self.stream is not None:
            here = torch.cuda.current_stream(self.device)
            for t in _tensors(job.result):
                t.record_stream(here)
        return job.result

    def cancel(self, job: PlanJob) -> None:
        """Ask `job` to stop and wait until the planner has let it go (finished or given up)."""
        job.cancel.set()
        job.done.wait()

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                if job.cancel.is_set():  # cancelled before it began: it drew nothing
                    job.cancelled = True
                    continue
                start = time.perf_counter()
                with torch.inference_mode(), self._on_stream(job):
                    job.result = self.compute(job)
                    if self.stream is not None:
                        self.stream.synchronize()
                job.seconds = time.perf_counter() - start
            except PlanCancelled:
                job.cancelled = True
            except BaseException as e:  # handed to the thread that waits for the result
                job.error = e
            finally:
                job.done.set()

    def _on_stream(self, job: PlanJob):
        if self.stream is None:
            return contextlib.nullcontext()
        self.stream.wait_event(job.inputs_ready)
        for t in (job.z_start, job.prev_mean):
            if t is not None:
                t.record_stream(self.stream)
        return torch.cuda.stream(self.stream)


def _tensors(obj):
    """The tensors in a job's result (a tensor, or an object whose attributes hold tensors)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    values = vars(obj).values() if hasattr(obj, "__dict__") else obj
    return [v for v in values if isinstance(v, torch.Tensor)]
