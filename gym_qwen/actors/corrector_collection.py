"""Corrector data collection: a teacher's speculative chunks, the full planner's action at every speculative step,
written episode by episode to a Parquet file, in process or spread over episode-farm actors (each holds the
teacher; rows stream to the driver's writer episode by episode, and the farm keeps none of them). An interrupted
collection continues from its finished episodes (resume=true)."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from gym_qwen.platform.config import CollectConfig, ConfigError
from gym_qwen.platform.files import code_version, output_folder_problem, sha256_of
from gym_qwen.platform.progress import progress_bar
from gym_qwen.platform.seeds import RESET_SEED_BASE
from gym_qwen.platform.speculative.collection import collection_episode, collection_setup, data_schema, seed_kind
from gym_qwen.platform.speculative.comparison import corrector_path
from gym_qwen.platform.speculative.corrector_data import ShardedParquetWriter
from gym_qwen.platform.speculative.correctors import load_corrector
from gym_qwen.platform.speculative.modes import budget_overrides, parse_budget
from gym_qwen.platform.storage import display, download, exists, is_uri, parent, storage_problem, upload
from gym_qwen.platform.tdmpc2.checkpoints import check_compatible, load_checkpoint

from .cluster import ray_session
from .episode_farm import EpisodeFarm

CHUNK_STATS_HEADER = ("step in chunk", "rows", "mean ||z - z^||", "plan-teacher MSE")


class ChunkStats:
    """Per step-in-chunk sums streamed from each finished episode (the driver never holds the rows)."""

    def __init__(self):
        self.rows = defaultdict(int)
        self.distance = defaultdict(float)
        self.plan_sq = defaultdict(float)

    def add(self, shard) -> None:
        j = shard["step_in_chunk"].to_numpy()
        d = shard["distance"].to_numpy()
        n, A = shard.num_rows, shard.schema.field("a_plan").type.list_size
        a_plan = shard["a_plan"].combine_chunks().flatten().to_numpy().reshape(n, A)
        a_teacher = shard["a_teacher"].combine_chunks().flatten().to_numpy().reshape(n, A)
        err = ((a_plan - a_teacher) ** 2).mean(1)
        for step in np.unique(j):
            sel = j == step
            self.rows[int(step)] += int(sel.sum())
            self.distance[int(step)] += float(d[sel].sum())
            self.plan_sq[int(step)] += float(err[sel].sum())

    def lines(self) -> list[tuple]:
        return [(j, self.rows[j], f"{self.distance[j] / self.rows[j]:.3f}", f"{self.plan_sq[j] / self.rows[j]:.4f}")
                for j in sorted(self.rows)]


def _dagger_corrector(cfg: CollectConfig, metadata: dict) -> str | None:
    """DAgger: the corrector file whose actions the chunks execute (checked against the teacher here, before
    anything starts), recorded in the data's metadata; None for open-loop collection."""
    if cfg.corrector_type == "none":
        return None
    path = cfg.corrector_checkpoint or corrector_path(cfg.checkpoint, cfg.corrector_type)
    if not Path(path).is_file():
        raise ConfigError(f"corrector file {path} not found: distill one with gym-qwen distill, or give "
                          "corrector_checkpoint=")
    corrector, _ = load_corrector(path, teacher_sha256=metadata["teacher_sha256"], history_len=cfg.history_len)
    if corrector.kind != cfg.corrector_type:
        raise ConfigError(f"{path} is a {corrector.kind} corrector, not {cfg.corrector_type}")
    metadata.update(executed=f"corrector ({cfg.corrector_type})", corrector_checkpoint=path,
                    corrector_sha256=sha256_of(path))
    return path


def staging_output(uri: str) -> Path:
    """The local file an output on a URI is written as before its upload, in a folder of the system's temporary
    directory named after the URI (without its query), so a resumed collection of the same URI on this machine
    finds its episode shards there.

    The shards (`<file>.parts/`, one per finished episode) stay local rather than going to the URI: only the
    driver writes them (actors stream each episode's rows to it, num_workers or not), so no other node ever needs
    them; an object store would take one upload per episode, and the merge reads them all back. The merged file
    is uploaded whole, once, so the URI only ever shows a finished output."""
    digest = hashlib.sha256(display(uri).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gym-qwen-collect-{digest}" / Path(display(uri)).name


def collect_corrector_data(cfg: CollectConfig) -> tuple[int, ChunkStats]:
    """`gym-qwen collect`: the episodes of `cfg` (those not collected yet, with resume=true) into cfg.output, on
    cfg.num_workers actors or in this process. Returns the rows written and their per-step statistics. An output
    on a URI (s3://...) is checked before any work (written to for real), collected in a local staging folder
    (staging_output) and uploaded whole at the end."""
    torch.set_num_threads(cfg.torch_threads)
    remote = cfg.output if is_uri(cfg.output) else None
    if remote is not None:
        problem = storage_problem(parent(remote))
        if problem:
            raise ConfigError(f"output={display(remote)}: cannot write there ({problem})")
        if exists(remote) and not (cfg.force or cfg.resume):
            raise ConfigError(f"output {display(remote)} exists; use force=true to replace it")
        output = staging_output(remote)
        if cfg.resume and not output.exists() and not output.with_name(output.name + ".parts").exists():
            download(remote, output)  # a finished collection there: resumed from its rows (none collected again)
    else:
        output = Path(cfg.output)
        if output.exists() and not (cfg.force or cfg.resume):
            raise ConfigError(f"output {output} exists; use force=true to replace it")
    ckpt = load_checkpoint(cfg.checkpoint)
    check_compatible(ckpt, task=cfg.task, path=cfg.checkpoint)
    overrides = {} if cfg.spec_plan_horizon is None else {"horizon": cfg.spec_plan_horizon}
    if cfg.planner_budget is not None:  # the chunks' planner and the teacher: the cheap planner the data is for
        overrides.update(budget_overrides(*parse_budget(cfg.planner_budget)))
    plan_horizon = cfg.spec_plan_horizon or int(ckpt["config"].get("horizon", 3))
    metadata = {"task": ckpt["task"], "teacher_checkpoint": cfg.checkpoint, "teacher_sha256": sha256_of(cfg.checkpoint),
                "plan_horizon": plan_horizon, "exec_horizon": cfg.spec_exec_horizon, "seed": cfg.seed,
                "episodes": cfg.episodes, "min_distance": cfg.min_distance, "max_samples": cfg.max_samples,
                "code_version": code_version(), "executed": "plan", "planner_budget": cfg.planner_budget}
    corrector_file = _dagger_corrector(cfg, metadata)
    if cfg.async_delay is not None:  # the async clock's d: how many decisions each plan spans (no chunks of k)
        metadata.update(async_delay=cfg.async_delay, exec_horizon=cfg.async_delay, past_horizon=cfg.past_horizon,
                        executed=f"async d={cfg.async_delay}, " + metadata["executed"])
    metadata["seed_kind"] = seed_kind(corrector_file is not None, cfg.async_delay is not None)  # its seed range
    metadata["reset_seed_base"] = RESET_SEED_BASE[metadata["seed_kind"]]
    max_rows = None if cfg.max_samples < 0 else cfg.max_samples
    setup_args = (overrides, cfg.device if cfg.num_workers == 0 else "cpu", cfg.seed, cfg.spec_exec_horizon,
                  cfg.history_len, cfg.min_distance, metadata, corrector_file, cfg.async_delay, cfg.past_horizon)
    problem = output_folder_problem(output.parent)
    if problem:
        raise ConfigError(f"output={output}: cannot write there ({problem})")
    schema = data_schema(int(ckpt["arch"]["latent_dim"]), int(ckpt["task_spec"]["action_dim"]), cfg.history_len,
                         metadata)
    writer, stats = ShardedParquetWriter(output, schema), ChunkStats()
    done = writer.start(resume=cfg.resume, episodes=cfg.episodes)
    todo = [i for i in range(cfg.episodes) if i not in done]
    if max_rows is not None and writer.rows >= max_rows:
        todo = []
    if done:
        print(f"resuming: {cfg.episodes - len(todo)} of {cfg.episodes} episodes already collected ({writer.rows} rows)")
        for shard in writer.shards(cfg.episodes):
            stats.add(shard)
    try:
        with progress_bar(total=cfg.episodes, desc=f"collect {ckpt['task']}", unit="ep", enabled=cfg.progress,
                          initial=cfg.episodes - len(todo)) as bar:
            def on_episode(index, shard):
                writer.write_episode(index, shard)
                stats.add(shard)
                bar.update(1)
                bar.set_postfix(rows=writer.rows)

            if cfg.num_workers == 0 and todo:
                state = collection_setup(ckpt, *setup_args)
                try:
                    for i in todo:
                        if max_rows is not None and writer.rows >= max_rows:
                            break
                        on_episode(i, collection_episode(state, i))
                finally:
                    state["env"].close()
            elif todo:
                left = None if max_rows is None else max_rows - writer.rows
                collect_with_actors(ckpt, todo, setup_args, num_workers=cfg.num_workers, cpus=cfg.worker_cpus,
                                    ray_address=cfg.ray_address, max_rows=left, on_episode=on_episode,
                                    scale_wait=cfg.scale_wait)
        # staged for a URI: the shards outlive the merge until the upload has succeeded
        rows = writer.finish(max_rows, cfg.episodes, keep_shards=remote is not None)
        if remote is not None:
            try:
                upload(output, remote)
            except OSError as e:
                raise ConfigError(f"output={display(remote)}: upload failed ({str(e).splitlines()[0]}); the "
                                  f"collected episodes stay staged in {output.parent}: the same command with "
                                  "resume=true uploads them without collecting again") from e
    except BaseException:
        writer.abort(keep_shards=True)  # the finished episodes stay: resume=true continues from them
        raise
    if remote is not None:  # uploaded: the staging folder has done its work
        shutil.rmtree(output.parent, ignore_errors=True)
    return rows, stats


def collect_with_actors(ckpt: dict, episodes: list[int], setup_args: tuple, *, num_workers: int, cpus: float,
                        ray_address: str | None, max_rows: int | None, on_episode, scale_wait: float = 0.0) -> None:
    """Collection episodes `episodes` (indices) on `num_workers` actors; `on_episode(index, table)` once each."""
    import ray  # here, not at the top: collecting in process never loads Ray


    with ray_session(ray_address):
        with EpisodeFarm(collection_setup, collection_episode, max(1, min(num_workers, len(episodes))), cpus=cpus,
                         setup_args=(ray.put(ckpt), *setup_args), max_records=max_rows, what="collector",
                         scale_wait=scale_wait) as farm:
            farm.run(episodes, on_episode=on_episode, keep=False)
