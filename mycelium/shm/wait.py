"""Wait primitives for a reader with nothing to read; the policy is the client's.

How this works
--------------
``WaitStrategy`` names how a consumer waits (spin, yield, block, adaptive); the policy
that follows it, with its sync and asyncio drivers, is ``mycelium.client.waiting``. This
module holds the three steps every doorbell wait takes, whoever drives it: ``arm()``
announces "sleeping" in the consumer's state and fences (the flag is visible before the
driver's last poll loads the cursors; a producer that published before seeing the flag
is caught by that poll), ``ring_wait()`` sleeps on the doorbell semaphore that producers
ring after a publish only when they see the flag, for a bounded time (``BLOCK_SAFETY_S``,
ordering.py says why, so a missed ring costs at most that much latency), and
``disarm()`` lowers the flag and takes back the extra rings a busy producer posted while
it was up, so they do not turn into empty wake-ups later. A consumer that finds data
never makes a syscall.
"""

from __future__ import annotations

import enum
from typing import Protocol

import posix_ipc

from mycelium.shm.ordering import full_fence

__all__ = [
    "DEFAULT_SPINS",
    "DEFAULT_YIELDS",
    "SPIN_CLOCK_EVERY",
    "Sleeper",
    "WaitStrategy",
    "arm",
    "disarm",
    "ring_wait",
]

DEFAULT_SPINS = 2000
DEFAULT_YIELDS = 200
#: A spinning waiter reads the clock once per this many polls.
SPIN_CLOCK_EVERY = 64


class WaitStrategy(enum.StrEnum):
    """How a reader waits: ``spin`` burns a core for the lowest latency, ``yield`` gives
    the CPU away between polls, ``block`` spins and yields a fixed budget, then sleeps on
    the doorbell; ``adaptive`` (the consumer's default) spins as long as its recent gaps
    between messages say is worth it, then sleeps (``mycelium.client.waiting``)."""

    SPIN = "spin"
    YIELD = "yield"
    BLOCK = "block"
    ADAPTIVE = "adaptive"


class Sleeper(Protocol):
    """What a doorbell wait arms: a consumer's state (``ConsumerState``), or the flags of
    several subscriptions that share one doorbell (a multi-topic consumer)."""

    doorbell: posix_ipc.Semaphore

    def set_sleeping(self, flag: bool) -> None: ...


def arm(state: Sleeper) -> None:
    """Announce "sleeping" before the last poll ahead of a doorbell wait."""
    state.set_sleeping(True)
    full_fence()  # Store/Load: the flag is visible before poll() loads the cursors


def disarm(state: Sleeper) -> None:
    """Lower the flag, then take back rings posted while it was up."""
    state.set_sleeping(False)
    bell = state.doorbell
    for _ in range(bell.value):
        try:
            bell.acquire(0)
        except posix_ipc.BusyError:
            return


def ring_wait(bell: posix_ipc.Semaphore, timeout: float) -> None:
    """One bounded doorbell wait; a timeout or a signal just ends it (the caller polls)."""
    try:
        bell.acquire(timeout)
    except (posix_ipc.BusyError, posix_ipc.SignalError):
        pass
