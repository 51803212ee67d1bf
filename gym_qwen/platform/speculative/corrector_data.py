"""Corrector data on disk: one Parquet row per speculative step, with the file's provenance in its metadata.

A row: episode, t (decision index), step_in_chunk j (1..k-1), extended (j >= plan horizon: an extension step),
distance ||z_real - z_pred|| (the plan's open-loop latent), distance_one_step ||z_real - d(z_real', a')|| (the
world model's one-step prediction from the previous real latent and executed action; absent in files collected
before 2026-12-04), z_real and z_pred (L), a_plan, a_teacher (the full planner's action at the real
state) and a_teacher_mean (its MPPI mean) (A), history (the last K mismatch features, flattened K*F, current
step last, zero-padded at an episode's start) and history_valid (how many of the K are real).

Rows are written as episodes finish, one shard file per episode under `<output>.parts/`; `finish()` merges the
shards in episode order into the output (temp file + rename), cutting at `max_rows`, one shard in memory at a
time. Reading checks the format and the latent size and fails with one line; it also reads a file on a URI (s3://...,
what `gym-qwen collect output=s3://...` writes) through pyarrow's filesystem for it.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

FORMAT = "gym-qwen/corrector-data"
VERSION = 1
META_KEY = b"gym_qwen"
LATENT_COLUMNS = ("z_real", "z_pred")
ACTION_COLUMNS = ("a_plan", "a_teacher", "a_teacher_mean")


class CorrectorDataError(ValueError):
    """A corrector data file that cannot be used (one-line message)."""


def _episode_of(shard: Path) -> int:
    """The episode index in a shard's name, episode-<index>.parquet."""
    return int(shard.stem.split("-")[1])


def schema(latent_dim: int, action_dim: int, history_len: int, feature: int, metadata: dict):
    # pyarrow is imported only where Parquet files are read or written (import cost)
    import pyarrow as pa

    fields = [pa.field("episode", pa.int64()), pa.field("t", pa.int32()), pa.field("step_in_chunk", pa.int32()),
              pa.field("extended", pa.bool_()), pa.field("distance", pa.float32()),
              pa.field("distance_one_step", pa.float32())]
    fields += [pa.field(c, pa.list_(pa.float32(), latent_dim)) for c in LATENT_COLUMNS]
    fields += [pa.field(c, pa.list_(pa.float32(), action_dim)) for c in ACTION_COLUMNS]
    fields += [pa.field("history", pa.list_(pa.float32(), history_len * feature)),
               pa.field("history_valid", pa.int32())]
    meta = {"format": FORMAT, "version": VERSION, **metadata, "latent_dim": latent_dim, "action_dim": action_dim,
            "history_len": history_len, "feature_dim": feature}
    return pa.schema(fields, metadata={META_KEY: json.dumps(meta).encode()})


def rows_to_table(rows: dict, schema_):
    """An Arrow table of `schema_` from column arrays: 1-D for scalars, (N, D) for vectors, (N, K, F) history."""
    # pyarrow is imported only where Parquet files are read or written (import cost)
    import pyarrow as pa

    columns = []
    for field in schema_:
        values = np.asarray(rows[field.name])
        if pa.types.is_fixed_size_list(field.type):
            flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), field.type.list_size))
        else:
            columns.append(pa.array(values, field.type))
    return pa.Table.from_arrays(columns, schema=schema_)


class ShardedParquetWriter:
    """Episode shards beside the output while collecting, merged into one file at the end."""

    def __init__(self, output: str | os.PathLike, schema_):
        self.output = Path(output)
        self.parts = self.output.with_name(self.output.name + ".parts")
        self.schema = schema_
        self.rows = 0

    def start(self, resume: bool = False, episodes: int | None = None) -> set[int]:
        """Begin writing; with `resume`, keep the shards of an interrupted run whose provenance matches (except
        its episode count, cap and code version) and return their episode indices. A finished output with no
        shards beside it is split back into shards first, so resuming it collects only the episodes it lacks (none
        when it is complete) instead of starting over; refused if it holds more than `episodes` (the merge would
        drop the rest)."""
        # pyarrow is imported only where Parquet files are read or written (import cost)
        import pyarrow.parquet as pq

        if resume and not self.parts.is_dir() and self.output.is_file():
            self._split_output(episodes)
        if resume and self.parts.is_dir():
            done = {_episode_of(p): p for p in self.parts.glob("episode-*.parquet")}
            if done:
                self._check_provenance(pq.read_schema(next(iter(done.values()))), f"its shards in {self.parts}")
                self.rows = sum(pq.ParquetFile(p).metadata.num_rows for p in done.values())
            return set(done)
        if self.parts.exists():
            shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True)
        return set()

    def _check_provenance(self, theirs_schema, what: str) -> None:
        """CorrectorDataError unless `theirs_schema` was collected as this writer's data is (its episode count, cap
        and code version may differ)."""
        theirs = json.loads(theirs_schema.metadata[META_KEY])
        mine = json.loads(self.schema.metadata[META_KEY])
        free = ("episodes", "max_samples", "code_version")
        diff = [f"{k}={theirs.get(k)} (now {mine.get(k)})" for k in sorted(set(theirs) | set(mine))
                if k not in free and theirs.get(k) != mine.get(k)]
        if diff:
            raise CorrectorDataError(f"cannot resume {self.output}: {what} were collected with " + ", ".join(diff))

    def _split_output(self, wanted: int | None) -> None:
        """The finished output back into one shard per episode: every episode it was collected with (one that
        kept no rows gets an empty shard), or, where the merge was cut at its cap, the episodes before the last one
        in it (the last may have been cut: it is collected again)."""
        # pyarrow is imported only where Parquet files are read or written (import cost)
        import pyarrow.compute as pc
        # pyarrow is imported only where Parquet files are read or written (import cost)
        import pyarrow.parquet as pq

        self._check_provenance(pq.read_schema(self.output), "its rows")
        table = pq.read_table(self.output)
        meta = json.loads(table.schema.metadata[META_KEY])
        if wanted is not None and int(meta.get("episodes", 0)) > wanted:
            raise CorrectorDataError(f"cannot resume {self.output} to {wanted} episodes: it holds "
                                     f"{meta['episodes']}, and the rest would be dropped (ask for {meta['episodes']} "
                                     "or more, or write another output)")
        if meta.get("max_samples", -1) >= 0 and table.num_rows >= meta["max_samples"]:
            episodes = sorted(set(table.column("episode").to_pylist()))[:-1]
        elif "episodes" in meta:
            episodes = range(int(meta["episodes"]))
        else:  # a file written outside `gym-qwen collect`: the episodes it holds
            episodes = sorted(set(table.column("episode").to_pylist()))
        tmp = self.parts.with_name(self.parts.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for index in episodes:
            pq.write_table(table.filter(pc.equal(table.column("episode"), index)).cast(self.schema),
                           tmp / f"episode-{index:08d}.parquet")
        os.replace(tmp, self.parts)  # all shards or none: a crash here leaves the output as the only copy

    def write_episode(self, index: int, table) -> None:
        # pyarrow is imported only where Parquet files are read or written (import cost)
        import pyarrow.parquet as pq

        table = table.drop_columns([c for c in table.column_names if c not in self.schema.names])
        table = table.select(self.schema.names).cast(self.schema)
        tmp = self.parts / f".episode-{index:08d}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.parts / f"episode-{index:08d}.parquet")
        self.rows += table.num_rows

    def finish(self, max_rows: int | None = None, episodes: int | None = None, keep_shards: bool = False) -> int:
        """Merge the shards (of episodes < `episodes` if given) in episode order into the output (atomically);
        returns the rows written. With `keep_shards` the shards stay until the caller has put the output where it
        belongs (an upload that may fail: resume=true then merges them again rather than collecting again)."""
        # pyarrow is imported only where Parquet files are read or written (import cost)
        import pyarrow.parquet as pq

        shards = sorted(p for p in self.parts.glob("episode-*.parquet")
                        if episodes is None or _episode_of(p) < episodes)
        tmp = self.output.with_name(f".{self.output.name}.tmp")
        written = 0
        try:
            with pq.ParquetWriter(tmp, self.schema) as writer:
                for shard in shards:
                    table = pq.read_table(shard).cast(self.schema)
                    if max_rows is not None:
                        table = table.slice(0, max(0, max_rows - written))
                    if table.num_rows:
                        writer.write_table(table)
                        written += table.num_rows
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.output)
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise
        if not keep_shards:
            shutil.rmtree(self.parts, ignore_errors=True)
        return written

    def shards(self, episodes: int | None = None):
        """The shards written so far (episodes < `episodes`), as tables with the columns that summarise them."""
        # pyarrow is imported only where Parquet files are read or written (import cost)
        import pyarrow.parquet as pq

        for p in sorted(self.parts.glob("episode-*.parquet")):
            if episodes is None or _episode_of(p) < episodes:
                yield pq.read_table(p, columns=["step_in_chunk", "distance", "a_plan", "a_teacher"])

    def abort(self, keep_shards: bool = False) -> None:
        """Stop without an output: remove the shards, or keep them (if any) for a resumed run."""
        if not keep_shards or not any(self.parts.glob("episode-*.parquet")):
            shutil.rmtree(self.parts, ignore_errors=True)


def _located(path: str | os.PathLike):
    """(path, pyarrow filesystem or None) to read `path`: a local path as it is, a URI (s3://...) through its
    filesystem (platform/storage.py; StorageError, one line, for one pyarrow cannot open)."""
    # storage loads pyarrow at its import: imported only where a file is read (import cost, as pyarrow below)
    from ..storage import is_uri, resolve

    if not is_uri(path):
        return str(path), None
    filesystem, where = resolve(str(path))
    return where, filesystem


def _is_file(where: str, filesystem) -> bool:
    if filesystem is None:
        return Path(where).is_file()
    # pyarrow is imported only where Parquet files are read or written (import cost)
    import pyarrow.fs as pafs

    return filesystem.get_file_info(where).type == pafs.FileType.File


def _shown(path: str | os.PathLike) -> str:
    """`path` as messages show it: a URI without its query (its options)."""
    # storage loads pyarrow at its import: imported only where a file is read (import cost)
    from ..storage import display, is_uri

    return display(str(path)) if is_uri(path) else str(path)


def read_metadata(path: str | os.PathLike) -> dict:
    """The provenance of a corrector data file; CorrectorDataError if it is missing, unreadable or foreign."""
    # pyarrow is imported only where Parquet files are read or written (import cost)
    import pyarrow as pa
    # pyarrow is imported only where Parquet files are read or written (import cost)
    import pyarrow.parquet as pq

    where, filesystem = _located(path)
    if not _is_file(where, filesystem):
        raise CorrectorDataError(f"corrector data not found: {_shown(path)}")
    path = _shown(path)
    try:
        meta = pq.read_schema(where, filesystem=filesystem).metadata or {}
    except (pa.ArrowException, OSError) as e:
        raise CorrectorDataError(f"cannot read {path} as Parquet: {' '.join(str(e).split())[:160]}") from None
    try:
        info = json.loads(meta[META_KEY])
    except (KeyError, ValueError):
        raise CorrectorDataError(f"{path} is a Parquet file but not Gym Qwen corrector data "
                                 "(no gym_qwen metadata); make one with gym-qwen collect") from None
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise CorrectorDataError(f"{path} has format {info.get('format')} v{info.get('version')}, "
                                 f"this code reads {FORMAT} v{VERSION}")
    return info


# what distillation reads from a collection (a distance-only copy keeps episode, t, step_in_chunk and the distances)
TRAINING_COLUMNS = ("episode", "step_in_chunk", *LATENT_COLUMNS, *ACTION_COLUMNS, "history", "history_valid")


def read_corrector_data(path: str | os.PathLike, latent_dim: int | None = None) -> tuple[dict, dict]:
    """(columns, metadata): numpy arrays z_real/z_pred (N, L), a_* (N, A), history (N, K, F),
    history_mask (N, K) bool, and the scalar columns. `latent_dim`: the teacher's, checked against the file's."""
    # pyarrow is imported only where Parquet files are read or written (import cost)
    import pyarrow as pa
    # pyarrow is imported only where Parquet files are read or written (import cost)
    import pyarrow.parquet as pq

    info = read_metadata(path)
    where, filesystem = _located(path)
    path = _shown(path)
    if latent_dim is not None and int(info["latent_dim"]) != int(latent_dim):
        raise CorrectorDataError(f"{path} holds latents of size {info['latent_dim']} but the teacher's latent size "
                                 f"is {latent_dim}: collect data with this teacher")
    try:
        table = pq.read_table(where, filesystem=filesystem)
    except (pa.ArrowException, OSError) as e:
        raise CorrectorDataError(f"cannot read {path}: {' '.join(str(e).split())[:160]}") from None
    missing = [c for c in TRAINING_COLUMNS if c not in table.column_names]
    if missing:
        raise CorrectorDataError(f"{path} lacks the columns a corrector learns from ({', '.join(missing)}): a "
                                 "distance-only copy (e.g. docs/frontier/<task>-calibration.parquet) chooses "
                                 "thresholds; distill from the collection itself (gym-qwen collect)")
    n, K, F = table.num_rows, int(info["history_len"]), int(info["feature_dim"])
    out = {}
    for name in table.column_names:
        col = table[name].combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            out[name] = col.flatten().to_numpy(zero_copy_only=False).reshape(n, -1)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    out["history"] = out["history"].reshape(n, K, F)
    positions = np.arange(K)[None, :]
    out["history_mask"] = positions >= (K - out["history_valid"][:, None])
    return out, info
