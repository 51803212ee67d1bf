"""Actors that could not be reached: when an actor's process or node dies, calls to it fail with
ActorUnavailableError until Ray has restarted it (calls made after that wait for the restart); after a node's
death that takes until the GCS has seen the node die, and calls made meanwhile fail at once. A driver that sent
the lost work straight back would spin through failures; this waits 1, 2, 4 ... (at most 30) seconds before the
next call to such an actor, and gives up after `limit_s` seconds unreachable."""
from __future__ import annotations

import time

FIRST_S = 1.0
MOST_S = 30.0


class UnreachableActors:
    """Per actor index: when the next call may go (`ready`), the time to the first such moment (`next_in`)."""

    def __init__(self, limit_s: float = 600.0):
        self.limit_s = limit_s
        self.since: dict[int, float] = {}
        self.until: dict[int, float] = {}
        self.fails: dict[int, int] = {}

    def failed(self, index: int) -> bool:
        """A call to actor `index` found it unreachable. False once it has been so for more than limit_s."""
        now = time.monotonic()
        self.since.setdefault(index, now)
        self.fails[index] = self.fails.get(index, 0) + 1
        self.until[index] = now + min(MOST_S, FIRST_S * 2 ** (self.fails[index] - 1))
        return now - self.since[index] <= self.limit_s

    def waiting(self, index: int) -> bool:
        """Actor `index` failed a call and has not answered one since: a failure now is the same loss."""
        return index in self.since

    def reached(self, index: int) -> None:
        """A call to actor `index` returned: it is reachable again."""
        for d in (self.since, self.until, self.fails):
            d.pop(index, None)

    def ready(self, index: int) -> bool:
        return self.until.get(index, 0.0) <= time.monotonic()

    def next_in(self, indices) -> float | None:
        """Seconds until the first of `indices` may be called again (0 if one may now; None if none waits)."""
        waits = [self.until[i] - time.monotonic() for i in indices if i in self.until]
        return max(0.0, min(waits)) if waits else None
