"""Backoff: how long to wait before trying again, once for the whole project.

How this works
--------------
A publish that finds no room (a fanout ring whose slowest live reader is a ring behind,
or a queue group with no lane that has room) writes nothing and returns "full". The
driver then asks a ``Backpressure`` what to do until its deadline: retry at once for
``BACKPRESSURE_SPINS`` tries, then yield for ``BACKPRESSURE_YIELDS``, then sleep with an
exponential backoff between ``BACKPRESSURE_SLEEP_MIN_S`` and ``BACKPRESSURE_SLEEP_MAX_S``.
Every ``LIVENESS_EVERY_S`` it also says "check liveness", so the driver drops readers
whose process died (a dead fanout consumer cannot stall a producer while the
coordinator is down) and picks up topology changes. Past the deadline it raises
``BackpressureTimeout``. ``pause_sync`` carries a pause out in this thread (``Producer``,
and a bare ``LaneWriter`` given a wait bound: ``shm/gating.py``); ``AsyncProducer`` uses
``asyncio.sleep``.

A reconnect (the control channel's, the bridge's) waits ``jittered_backoff_s``: capped
exponential backoff with jitter, nats.py style.

It sits below every layer (it knows only ``mycelium.errors``), so the data plane, the
clients and the bridge share it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

from mycelium.errors import BackpressureTimeout

__all__ = ["Backpressure", "jittered_backoff_s", "pause_sync"]

BACKPRESSURE_SPINS = 200
BACKPRESSURE_YIELDS = 50
BACKPRESSURE_SLEEP_MIN_S = 20e-6
BACKPRESSURE_SLEEP_MAX_S = 1e-3
#: How often a waiting publish checks its readers' processes and the topology.
LIVENESS_EVERY_S = 0.1


class Backpressure:
    """One publish waiting for room: the next pause, or BackpressureTimeout."""

    __slots__ = (
        "_next_liveness",
        "_sleep",
        "_tries",
        "deadline",
        "on_timeout",
        "timeout_s",
        "topic",
    )

    def __init__(
        self, timeout_s: float, topic: str, on_timeout: Callable[[], None] | None = None
    ) -> None:
        now = time.monotonic()
        self.timeout_s = timeout_s
        self.topic = topic
        self.on_timeout = on_timeout  # counts a bounded wait that ran out
        self.deadline = now + timeout_s
        self._next_liveness = now + LIVENESS_EVERY_S
        self._sleep = BACKPRESSURE_SLEEP_MIN_S
        self._tries = 0

    def pause(self) -> float:
        """Seconds to pause before the next try: < 0 retry at once, 0 yield, > 0 sleep.

        Raises BackpressureTimeout once the deadline has passed.
        """
        self._tries = tries = self._tries + 1
        if self.timeout_s > 0:
            if tries <= BACKPRESSURE_SPINS:
                return -1.0
            if tries <= BACKPRESSURE_SPINS + BACKPRESSURE_YIELDS:
                return 0.0
        now = time.monotonic()
        if now >= self.deadline:  # a zero timeout: at once
            if self.timeout_s > 0 and self.on_timeout is not None:
                self.on_timeout()
            raise BackpressureTimeout(
                f"topic {self.topic!r}: no room for {self.timeout_s}s (a reader is behind);"
                " nothing written",
                waited_s=self.timeout_s,
                topic=self.topic,
            )
        delay = min(self._sleep, self.deadline - now)
        self._sleep = min(self._sleep * 2, BACKPRESSURE_SLEEP_MAX_S)
        return delay

    def liveness_due(self) -> bool:
        """Whether it is time to drop dead readers and re-read the topology."""
        now = time.monotonic()
        if now < self._next_liveness:
            return False
        self._next_liveness = now + LIVENESS_EVERY_S
        return True


def pause_sync(bp: Backpressure) -> None:
    """Carry out one backpressure pause in this thread."""
    delay = bp.pause()
    if delay > 0:
        time.sleep(delay)
    elif delay == 0:
        os.sched_yield()


def jittered_backoff_s(
    attempt: int, low_s: float, high_s: float, jitter: float = 1.0, rng: random.Random | None = None
) -> float:
    """The wait before reconnect ``attempt`` (0 first): its cap doubles from ``low_s`` per
    attempt up to ``high_s``, and the wait is uniform in the cap's top ``jitter`` fraction,
    never under ``low_s`` (so attempt 0 waits ``low_s``; ``jitter`` 1 is full jitter)."""
    cap = min(high_s, low_s * 2.0 ** min(attempt, 30))
    return (rng or random).uniform(max(low_s, cap * (1 - jitter)), cap)
