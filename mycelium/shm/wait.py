"""Wait strategies for a reader with nothing to read: spin, then yield, then block.

How this works
--------------
``wait_until(poll, ...)`` calls ``poll()`` until it returns something other than None or
the deadline passes. It spins first (lowest latency, one core busy), then yields the CPU
with ``sched_yield`` (still no sleep), then, for the ``block`` strategy, announces
"sleeping" in the consumer's state, fences (the flag is visible before we look again),
polls once more (a producer that published before seeing the flag is caught here), and
sleeps on the doorbell semaphore that producers ring after a publish only when they see
the flag. Each sleep is capped at ``BLOCK_SAFETY_S`` (ordering.py says why), so a missed
ring costs at most that much latency, and an idle consumer wakes a few dozen times a
second: ~0% CPU. After waking it takes back the extra rings a busy producer posted while
the flag was still up, so they do not turn into empty wake-ups later. A consumer that
finds data never makes a syscall.
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable
from typing import TypeVar

import posix_ipc

from mycelium.shm.consumer_state import ConsumerState
from mycelium.shm.ordering import BLOCK_SAFETY_S, full_fence

__all__ = ["DEFAULT_SPINS", "DEFAULT_YIELDS", "WaitStrategy", "wait_until"]

T = TypeVar("T")

DEFAULT_SPINS = 2000
DEFAULT_YIELDS = 200
#: A spinning waiter reads the clock once per this many polls.
SPIN_CLOCK_EVERY = 64


class WaitStrategy(enum.StrEnum):
    """How a reader waits: ``spin`` burns a core for the lowest latency, ``yield`` gives
    the CPU away between polls, ``block`` spins and yields a fixed budget, then sleeps on
    the doorbell; ``adaptive`` (the consumer's default) spins as long as its recent gaps
    between messages say is worth it, then sleeps (``mycelium.client.waiting``). Here,
    with no memory of past waits, ``adaptive`` waits as ``block``."""

    SPIN = "spin"
    YIELD = "yield"
    BLOCK = "block"
    ADAPTIVE = "adaptive"


def wait_until(
    poll: Callable[[], T | None],
    state: ConsumerState,
    deadline: float | None,
    strategy: WaitStrategy = WaitStrategy.BLOCK,
    *,
    spins: int = DEFAULT_SPINS,
    yields: int = DEFAULT_YIELDS,
    on_wake: Callable[[], None] | None = None,
) -> T | None:
    """Poll until a result or ``deadline`` (``time.monotonic()``; None: no deadline).

    ``on_wake`` runs after each doorbell sleep (heartbeats, topology refresh).
    """
    strategy = WaitStrategy(strategy)  # accept the plain strings of a config file too
    for _ in range(spins):
        result = poll()
        if result is not None:
            return result
    if strategy is WaitStrategy.SPIN:
        return _spin(poll, deadline)
    if strategy is WaitStrategy.YIELD:
        return _yield(poll, deadline)
    result = _yield(poll, deadline, yields)
    if result is not None or (deadline is not None and time.monotonic() >= deadline):
        return result
    bell = state.doorbell
    while True:
        state.set_sleeping(True)
        full_fence()  # Store/Load: the flag is visible before poll() loads the cursors
        try:
            result = poll()  # re-check after announcing sleep: catches a publish in between
            if result is not None:
                return result
            timeout = BLOCK_SAFETY_S
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    return None
            try:
                bell.acquire(timeout)
            except (posix_ipc.BusyError, posix_ipc.SignalError):
                pass  # timed out, or a signal woke us: its handler runs now; we re-poll
        finally:
            state.set_sleeping(False)
        _drain(bell)
        if on_wake is not None:
            on_wake()
        result = poll()
        if result is not None:
            return result


def _drain(bell: posix_ipc.Semaphore) -> None:
    """Take back rings posted while our flag was up: each would be an empty wake-up."""
    for _ in range(bell.value):
        try:
            bell.acquire(0)
        except posix_ipc.BusyError:
            return


def _spin(poll: Callable[[], T | None], deadline: float | None) -> T | None:
    while True:
        for _ in range(SPIN_CLOCK_EVERY):
            result = poll()
            if result is not None:
                return result
        if deadline is not None and time.monotonic() >= deadline:
            return None


def _yield(
    poll: Callable[[], T | None], deadline: float | None, rounds: int | None = None
) -> T | None:
    """Yield the CPU between polls, for ``rounds`` polls (None: until the deadline)."""
    done = 0
    while rounds is None or done < rounds:
        done += 1
        os.sched_yield()
        result = poll()
        if result is not None:
            return result
        if deadline is not None and time.monotonic() >= deadline:
            return None
    return None
