"""The Ray Train learner's hub (gym_qwen/actors/ray_train_learner.py) keeps a bounded call log: driven here in one
asyncio loop, without Ray, by two fake ranks that run its calls in order and report the checkpoints as Ray Train's
rank 0 would. The killed-rank drill on the real trainer is tests/test_ray_train_learner.py (slow)."""
from __future__ import annotations

import asyncio

from gym_qwen.actors.ray_train_learner import STOP, LearnerHub

LIMIT = 6
CALLS = 100


async def _rank(hub: LearnerHub, rank: int, ran: list, checkpoints: list) -> None:
    seq = 0
    while True:
        method, args, answered = await hub.next_call(rank, seq)
        if method == STOP:
            return
        ran.append((seq, method))
        await asyncio.sleep(0)  # the ranks interleave with the driver's calls
        if method == "checkpoint" and rank == 0:
            checkpoints.append((seq, args))
            hub.checkpointed(seq, f"checkpoint-{seq}")
        if rank == 0:
            hub.answer(seq, True, (method, args))
        seq += 1


async def _drive(limit: int):
    hub = LearnerHub(2, limit)
    ran: list[list] = [[], []]
    checkpoints: list = []
    ranks = [asyncio.create_task(_rank(hub, r, ran[r], checkpoints if r == 0 else [])) for r in range(2)]
    most = 0

    async def watch():
        nonlocal most
        while True:
            most = max(most, len(hub.calls))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    # many small calls in flight at once (the driver's ingest refs beside its chunks), then a driver checkpoint
    answers = await asyncio.gather(*(hub.call("ingest", i) for i in range(CALLS)))
    answers.append(await hub.call("checkpoint", 500))
    answers += await asyncio.gather(*(hub.call("ingest", i) for i in range(CALLS, 2 * CALLS)))
    stop = asyncio.create_task(hub.call(STOP))  # never answered (the ranks return), as RayTrainLearner.close
    await asyncio.gather(*ranks)
    stop.cancel()
    watcher.cancel()
    return hub, ran, checkpoints, answers, most


def test_the_call_log_stays_within_its_limit_by_checkpoints_of_the_learners_own():
    hub, ran, checkpoints, answers, most = asyncio.run(_drive(LIMIT))
    assert most <= LIMIT, f"the hub kept {most} calls, more than its limit {LIMIT}"
    assert hub.auto_checkpoints >= 2 * CALLS // LIMIT
    # every call answered, in the order made, and both ranks ran the same calls (the hub's checkpoints among them)
    assert [a for a in answers if a[0] == "ingest"] == [("ingest", (i,)) for i in range(2 * CALLS)]
    assert ran[0] == ran[1]
    assert sum(m == "ingest" for _, m in ran[0]) == 2 * CALLS
    # the hub's own checkpoints carry the env steps of the driver's last one, flagged as its own
    assert checkpoints[0][1] == (0, True) and (500,) in [a for _, a in checkpoints]
    after = [a for _, a in checkpoints[[a for _, a in checkpoints].index((500,)) + 1:]]
    assert after and all(a == (500, True) for a in after)


def test_a_larger_limit_takes_no_checkpoint_of_its_own():
    hub, _, checkpoints, _, most = asyncio.run(_drive(4 * CALLS))
    assert hub.auto_checkpoints == 0 and [a for _, a in checkpoints] == [(500,)]
    assert most > LIMIT
