"""Playing whole episodes through the speculative executor: one environment or a batch of them."""
from __future__ import annotations

import numpy as np

from .executor import COUNTERS, TIMERS

RECORD_COUNTS = tuple(k for k in COUNTERS if k != "decisions")
LATE_KEPT = 200  # late decisions an episode's record lists (all of them are counted and their lateness summed)


def play_episodes(executor, envs: list, reset_seeds: list[int], frames: list | None = None) -> list[dict]:
    """One episode per environment (len(envs) <= executor.B), planned as one batch until every one has ended.
    Returns one record per environment: return, length, the executor's tallies and seconds per kind of work.
    `frames`: if a list, RGB frames of the first environment are appended to it."""
    B = len(envs)
    rows = list(range(B))
    executor.reset(rows)
    obs = [env.reset(seed=int(s))[0] for env, s in zip(envs, reset_seeds)]
    if frames is not None:
        frames.append(envs[0].render())
    steps, totals, done = [0] * B, [0.0] * B, [False] * B
    while not all(done):
        active = [b for b in rows if not done[b]]
        actions = executor.act(np.stack([obs[b] for b in active]), active, [steps[b] for b in active])
        for a, b in zip(actions, active):
            obs[b], reward, terminated, truncated, _ = envs[b].step(a)
            totals[b] += float(reward)
            steps[b] += 1
            done[b] = bool(terminated or truncated)
            if done[b]:
                executor.finish([b])
            if frames is not None and b == 0:
                frames.append(envs[0].render())
    records = []
    for b in rows:
        st = executor.stats[b]
        if st.counts["decisions"] != steps[b]:
            raise RuntimeError(f"executor counted {st.counts['decisions']} decisions, the environment {steps[b]}")
        rec = {"return": totals[b], "length": steps[b], "seconds": st.seconds["total"]}
        rec.update({k: st.counts[k] for k in RECORD_COUNTS})
        rec.update({f"{k}_seconds": st.seconds[k] for k in TIMERS})
        rec.update(teacher_sq_error=st.teacher_sq_error, teacher_steps=st.teacher_steps)
        if st.late_decisions:  # when a wall-clock run missed deadlines, and by how much (the first LATE_KEPT)
            rec["late_decisions"] = [list(x) for x in st.late_decisions[:LATE_KEPT]]
        records.append(rec)
    return records
