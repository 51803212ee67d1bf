"""EpisodeFarm: a pool of Ray actors running a per-episode function, merged into one Arrow dataset.

Each actor builds its state once (`setup(*setup_args)`: load an agent, make an environment), then runs
`episode_fn(state, index)` for the episode indices it is handed; the function returns records (a list of
dicts, or an Arrow table). The farm tags every record with its episode index, restarts actors that die (alone
or with their node) and hands their episodes out again, as it does episodes whose results were lost with their
node; it keeps each episode once, and stops handing out episodes when a global cap on records is reached. The
merged table is ordered by episode (then by record), so it equals what one process running the episodes in
order would produce, whatever the number of actors. Evaluation runs on it; corrector
data collection (which records many rows per episode) will too.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable

import pyarrow as pa
import ray
import torch
from ray.exceptions import ActorUnavailableError, ObjectLostError, RayActorError

from gym_qwen.platform.envs import quiet_library_logs

from .cluster import check_resources, threads_for
from .rollout_worker import FAULTS_ENV, fault_runtime_env, injected_fault
from .unreachable import UnreachableActors

EPISODE_COLUMN = "episode"
MAX_RESTARTS = 8
WAIT_SECONDS = 3600


class EpisodeFarmError(RuntimeError):
    """The farm could not finish (one-line message)."""


def records_to_table(records: Any, index: int) -> pa.Table:
    table = records if isinstance(records, pa.Table) else pa.Table.from_pylist(list(records))
    if EPISODE_COLUMN in table.column_names:
        table = table.drop_columns([EPISODE_COLUMN])
    return table.append_column(EPISODE_COLUMN, pa.array([index] * table.num_rows, pa.int64()))


class FarmWorker:
    """Ray actor: the state of `setup`, and `run(index)` -> Arrow table of that episode's records."""

    def __init__(self, setup: Callable, episode_fn: Callable, threads: int, *setup_args):
        torch.set_num_threads(threads)
        quiet_library_logs()
        self.state = setup(*setup_args)
        self.episode_fn = episode_fn
        self.plan = json.loads(os.environ[FAULTS_ENV]) if os.environ.get(FAULTS_ENV) else {}

    def run(self, index: int) -> pa.Table:
        table = records_to_table(self.episode_fn(self.state, index), index)
        injected_fault(self.plan, "episode", index)  # a test's: die (or wait to die) with the result unsent
        return table


def _first_line(e: Exception) -> str:
    """The last exception line of a Ray error text (its cause), shortened."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    causes = [line for line in lines if ("Error" in line or "Exception" in line) and ":" in line]
    return (causes[-1] if causes else (lines[0] if lines else type(e).__name__))[:300]


def merge(tables: Iterable[pa.Table], max_records: int | None = None) -> pa.Table:
    """One table ordered by episode (stable within an episode), cut to `max_records` rows."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({EPISODE_COLUMN: pa.array([], pa.int64())})
    merged = pa.concat_tables(sorted(tables, key=lambda t: t[EPISODE_COLUMN][0].as_py()), promote_options="default")
    return merged.slice(0, max_records) if max_records is not None else merged


class EpisodeFarm:
    """A pool of `num_workers` FarmWorker actors (`cpus` each). `run(indices)` returns the merged table.
    `scale_wait`: seconds to wait for the autoscaler when only nodes it may add hold the actors."""

    def __init__(self, setup: Callable, episode_fn: Callable, num_workers: int, *, setup_args: tuple = (),
                 cpus: float = 1.0, max_records: int | None = None, what: str = "episode worker",
                 scale_wait: float = 0.0):
        check_resources([(what, num_workers, cpus, 0)], hint="lower num_workers= or worker_cpus=", wait_s=scale_wait)
        cls = ray.remote(FarmWorker).options(num_cpus=cpus, max_restarts=MAX_RESTARTS, max_task_retries=0,
                                             **fault_runtime_env())
        # Held for the farm's life: a restarted actor is rebuilt from these arguments, and an object ref among them
        # (the checkpoint) that went out of scope would make every restart fail.
        self.setup_args = setup_args
        self.workers = [cls.remote(setup, episode_fn, threads_for(cpus), *setup_args) for _ in range(num_workers)]
        self.max_records = max_records
        self.restarts = 0  # actors lost (a crash or a node death, each once): their episodes were handed out again
        self.deaths = 0  # of those, the actors Ray saw die (the budget: MAX_RESTARTS an actor)

    def run(self, indices: Iterable[int], on_episode: Callable[[int, pa.Table], None] | None = None,
            keep: bool = True) -> pa.Table | None:
        """Run the episodes; each finished one goes to `on_episode(index, table)` once. Returns the merged table,
        or None with keep=False (the caller streamed the tables away: the farm then holds none of them)."""
        todo = list(indices)
        todo.reverse()  # pop() hands out the smallest index first
        retry: list[int] = []  # episodes lost with a dead actor: always run again, cap or not
        done: dict[int, pa.Table] = {}
        in_flight: dict = {}
        idle = list(range(len(self.workers)))
        unreachable = UnreachableActors()
        records, waited = 0, 0.0

        def wanted() -> bool:  # episodes to hand out: lost ones always, new ones below the cap
            return bool(retry) or bool(todo and (self.max_records is None or records < self.max_records))

        while todo or retry or in_flight:
            for w in [w for w in idle if unreachable.ready(w)]:
                if not wanted():
                    break
                index = retry.pop() if retry else todo.pop()
                idle.remove(w)
                in_flight[self.workers[w].run.remote(index)] = (w, index)
            pause = unreachable.next_in(idle) if wanted() else None
            if not in_flight and pause is None:
                break  # the cap is reached: the rest is not needed
            timeout = WAIT_SECONDS if pause is None else pause
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=timeout) if in_flight else ([], [])
            if not ready:
                if not in_flight:
                    time.sleep(pause)  # every idle actor is unreachable for now
                waited += timeout
                if waited >= WAIT_SECONDS:
                    raise EpisodeFarmError(f"no episode finished within {WAIT_SECONDS} s")
                continue
            waited = 0.0
            w, index = in_flight.pop(ready[0])
            idle.append(w)
            try:
                table = ray.get(ready[0], timeout=WAIT_SECONDS)
            except ActorUnavailableError:  # it crashed or its node died, and Ray has not restarted it yet
                if not unreachable.waiting(w):  # one loss, however many calls bounce off it before its restart
                    self.restarts += 1
                if not unreachable.failed(w):
                    raise EpisodeFarmError(f"an episode worker was unreachable for over {unreachable.limit_s:g} s; "
                                           "giving up") from None
                retry.append(index)
                continue
            except (RayActorError, ObjectLostError) as e:  # the actor died, or the node holding its result did
                if getattr(e, "actor_init_failed", False):  # a deterministic setup error: retrying cannot help
                    raise EpisodeFarmError(f"an episode worker could not start: {_first_line(e)}") from None
                self.restarts += 1
                self.deaths += 1
                if self.deaths > MAX_RESTARTS * len(self.workers):
                    raise EpisodeFarmError(f"episode workers died {self.deaths} times; giving up") from None
                unreachable.failed(w)  # a call that bounces off it before its restart is this same loss
                retry.append(index)  # run it again on the restarted actor
                continue
            unreachable.reached(w)
            if index not in done:
                done[index] = table if keep else None
                records += table.num_rows
                if on_episode is not None:
                    on_episode(index, table)
        return merge(done.values(), self.max_records) if keep else None

    def close(self) -> None:
        for actor in self.workers:
            ray.kill(actor, no_restart=True)
        self.workers = []

    def __enter__(self) -> "EpisodeFarm":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
