"""Choosing the adaptive mode's mismatch threshold from corrector data (collection episodes, never evaluation ones).

Collection runs open-loop chunks of k steps and records the mismatch ||z_real - z^_j|| of every speculative step.
Under `adaptive` a chunk continues while each step's mismatch is within the threshold, so on these chunks the
planner calls per step of a threshold are (chunks) / (steps the chunks would have run). The smallest threshold
whose estimate meets a budget of calls per step is the most cautious one that saves what is asked.
"""
from __future__ import annotations

import numpy as np


def chunk_mismatches(columns: dict, k: int) -> list[np.ndarray]:
    """Per collected chunk, the mismatches of its steps j = 1..k-1 in order (chunks cut short by an episode's
    end keep what they have)."""
    episode, t, j, d = columns["episode"], columns["t"], columns["step_in_chunk"], columns["distance"]
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


def choose_threshold(columns: dict, k: int, budget: float) -> tuple[float, float]:
    """(threshold, its estimated calls per step): the smallest observed mismatch whose estimate is <= budget."""
    chunks = chunk_mismatches(columns, k)
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
