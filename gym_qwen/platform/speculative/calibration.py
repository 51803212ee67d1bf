"""Choosing the adaptive mode's mismatch threshold from corrector data (collection episodes, never evaluation ones).

Collection runs open-loop chunks of k steps and records the mismatch ||z_real - z^_j|| of every speculative step.
Under `adaptive` a chunk continues while each step's mismatch is within the threshold, so on these chunks the
planner calls per step of a threshold are (chunks) / (steps the chunks would have run). The smallest threshold
whose estimate meets a budget of calls per step is the most cautious one that saves what is asked.
"""
from __future__ import annotations

import io

import numpy as np

from ..files import atomic_write_bytes, sha256_of
from .corrector_data import read_metadata

MISMATCH_COLUMNS = {"open_loop": "distance", "one_step": "distance_one_step"}
# what choosing a threshold reads of a collection file (with its metadata): scripts/frontier.sh ships files slimmed
# to these, small enough for git, so a later machine chooses the same thresholds
CALIBRATION_COLUMNS = ("episode", "t", "step_in_chunk", *MISMATCH_COLUMNS.values())


def chunk_mismatches(columns: dict, k: int, mismatch: str = "open_loop") -> list[np.ndarray]:
    """Per collected chunk, the mismatches (`mismatch`'s kind) of its steps j = 1..k-1 in order (chunks cut short
    by an episode's end keep what they have)."""
    episode, t, j = columns["episode"], columns["t"], columns["step_in_chunk"]
    d = columns[MISMATCH_COLUMNS[mismatch]]
    start = t - j
    chunks: dict = {}
    for e, s, step, dist in zip(episode, start, j, d):
        if step < k:
            chunks.setdefault((int(e), int(s)), {})[int(step)] = float(dist)
    return [np.array([steps[i] for i in sorted(steps)]) for steps in chunks.values()]


def estimated_calls_per_step(chunks: list[np.ndarray], threshold: float, k: int) -> float:
    """Planner calls per step `adaptive` (k, threshold) would make on these chunks."""
    steps = 0
    for d in chunks:
        accepted = np.argmax(d > threshold) if np.any(d > threshold) else len(d)
        steps += 1 + min(int(accepted), k - 1)
    return len(chunks) / max(steps, 1)


def choose_threshold(columns: dict, k: int, budget: float, mismatch: str = "open_loop") -> tuple[float, float]:
    """(threshold, its estimated calls per step): the smallest observed mismatch whose estimate is <= budget."""
    chunks = chunk_mismatches(columns, k, mismatch)
    candidates = np.unique(np.round(np.concatenate(chunks), 4)) if chunks else np.array([])
    if not len(candidates) or estimated_calls_per_step(chunks, float(candidates[-1]), k) > budget:
        raise ValueError(f"no threshold reaches {budget} planner calls per step with k={k} on these chunks")
    lo, hi = 0, len(candidates) - 1  # calls per step never rise with the threshold: bisect for the first <= budget
    while lo < hi:
        mid = (lo + hi) // 2
        if estimated_calls_per_step(chunks, float(candidates[mid]), k) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo]), estimated_calls_per_step(chunks, float(candidates[lo]), k)


RULE = ("the smallest mismatch seen on the collection episodes whose estimated planner calls per step at k is "
        "<= the budget (open-loop chunks: a chunk runs while each step's mismatch is within the threshold)")


def threshold_from_data(path: str, k: int, budget: float, mismatch: str = "open_loop") -> dict:
    """Choose the adaptive threshold of `mismatch`'s kind on a collection file by RULE; everything needed to say
    how it was chosen. ValueError (one line) if the file holds evaluation episodes, lacks that kind's mismatches or
    no threshold meets the budget."""
    import pyarrow.parquet as pq  # pyarrow only where Parquet is read (import cost)


    info = read_metadata(path)  # only the columns the rule needs: a file slimmed to them chooses the same
    present = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[c for c in CALIBRATION_COLUMNS if c in present])
    columns = {name: table[name].to_numpy() for name in table.column_names}
    kind = info.get("seed_kind", "collection")
    if kind.startswith("async_"):
        raise ValueError(f"{path} was collected under the async clock: adaptive's thresholds are chosen on chunked "
                         "collections (collect without async_delay=)")
    if kind not in ("collection", "dagger"):
        raise ValueError(f"{path} holds {kind} episodes: thresholds are chosen on collection episodes")
    if int(info.get("exec_horizon", k)) < k:
        raise ValueError(f"{path} was collected with chunks of {info.get('exec_horizon')} steps: it cannot say how "
                         f"adaptive at k={k} behaves; collect with spec_exec_horizon={k}")
    if MISMATCH_COLUMNS[mismatch] not in columns:
        raise ValueError(f"{path} has no {mismatch} mismatches (collected before they were recorded): collect again")
    threshold, estimate = choose_threshold(columns, k, budget, mismatch)
    return {"threshold": threshold, "mismatch": mismatch, "estimated_planner_calls_per_step": estimate, "k": k, "budget": budget,
            "data": str(path), "data_sha256": sha256_of(path), "seed_kind": kind, "seed": info.get("seed"),
            "episodes": int(len(set(columns["episode"].tolist()))), "rule": RULE}


def slim_calibration(source: str, target: str) -> str:
    """Write `source` (a collection file) slimmed to CALIBRATION_COLUMNS and its metadata, atomically: the file the
    frontier ships so that a later machine chooses the same thresholds (`python -m
    gym_qwen.platform.speculative.calibration <source> <target>`)."""
    import pyarrow.parquet as pq  # pyarrow only where Parquet is read (import cost)

    table = pq.read_table(source)
    slim = table.select([c for c in CALIBRATION_COLUMNS if c in table.column_names])
    buf = io.BytesIO()
    pq.write_table(slim.replace_schema_metadata(table.schema.metadata), buf)
    return str(atomic_write_bytes(target, lambda f: f.write(buf.getvalue())))


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        print("usage: python -m gym_qwen.platform.speculative.calibration <collection.parquet> <slim.parquet>",
              file=sys.stderr)
        raise SystemExit(2)
    print(slim_calibration(sys.argv[1], sys.argv[2]))
