"""The reset seeds of every kind of episode, in one place (standard library only: the config checks read it)."""
from __future__ import annotations

# Every kind of episode resets its environment from its own range: episode i of a run with seed s starts from
# RESET_SEED_BASE[kind] + s + i, so no two kinds ever share a start while s + i < RESET_SEED_SPAN (checked).
# Training episodes reset with s * 100_003 + i (training.TRAIN_SEED_STRIDE), above every range for s >= 1.
# evaluation: the episodes every table reports; collection: corrector data executing the plan; dagger: corrector
# data executing a corrector; calibration: episodes run to choose a setting before evaluation (none yet);
# async_collection / async_dagger: the same two under the simulated clock's async mode (`collect async_delay=d`).
RESET_SEED_BASE = {"evaluation": 10_000, "collection": 20_000, "dagger": 30_000, "calibration": 40_000,
                   "async_collection": 50_000, "async_dagger": 60_000}
RESET_SEED_SPAN = 10_000


def reset_seed(kind: str, seed: int, index: int) -> int:
    """The environment reset seed of episode `index` of a `kind` run with `seed` (see RESET_SEED_BASE)."""
    if not 0 <= seed + index < RESET_SEED_SPAN:
        raise ValueError(f"seed {seed} + episode {index} must stay below {RESET_SEED_SPAN}: the {kind} episodes "
                         "would leave their seed range")
    return RESET_SEED_BASE[kind] + seed + index
