"""The consumer's wait policy, once, and its two drivers (sync and asyncio).

How this works
--------------
``WaitPlan`` is the policy with no I/O in it: after each empty poll, ``step()`` says what
to do next (poll again at once, yield, block on the doorbell, or give up at the
deadline), following the consumer's ``WaitStrategy``: spin ``spins`` polls, then yield
(``yield`` yields until the deadline; ``block`` yields ``yields`` times), then block.
``adaptive`` (the default) spins for as long as its ``SpinBudget`` says, then blocks:
the budget remembers how long this consumer's recent waits lasted. A wait that ended
within ``ADAPTIVE_SPIN_MAX_S`` raises it to twice that wait (the next message is likely
that close: spinning catches it without a wake-up); a longer one halves it, down to
``ADAPTIVE_SPIN_MIN_S``. So back-to-back traffic keeps spinning, and a moderate or bursty
rate (gaps of a millisecond) costs one short spin and one wake-up per gap, not a core.
Blocking is always the same protocol: ``arm()`` raises the "sleeping" flag and fences
(the flag is visible before the next poll loads the cursors), the driver polls once
more (a publish that came before the producer saw the flag is caught there), waits on
the doorbell for at most ``block_timeout()``, and ``disarm()`` lowers the flag and
takes back the extra rings a busy producer posted meanwhile (each would be an empty
wake-up later). ``wait_sync`` drives it with ``sched_yield`` and a blocking acquire;
``wait_async`` with loop turns and the acquire in a worker thread, so the loop never
blocks and both keep the same fence and drain.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mycelium.shm.ordering import BLOCK_SAFETY_S
from mycelium.shm.wait import SPIN_CLOCK_EVERY, Sleeper, WaitStrategy, arm, disarm, ring_wait

__all__ = [
    "ADAPTIVE_SPIN_MAX_S",
    "ADAPTIVE_SPIN_MIN_S",
    "BLOCK",
    "EXPIRED",
    "POLL",
    "YIELD",
    "SpinBudget",
    "WaitPlan",
    "wait_async",
    "wait_sync",
]

T = TypeVar("T")

#: ``WaitPlan.step()`` answers: what the driver does before its next poll.
POLL, YIELD, BLOCK, EXPIRED = range(4)


#: The adaptive spin never lasts longer than this (a gap above it is worth a sleep) ...
ADAPTIVE_SPIN_MAX_S = 100e-6
#: ... nor shorter than this (a wake-up costs more).
ADAPTIVE_SPIN_MIN_S = 4e-6
#: An adaptive spin reads the clock once per this many polls.
ADAPTIVE_CLOCK_EVERY = 8


class SpinBudget:
    """How long one consumer's adaptive waits spin before they block, learned from how
    long its recent waits lasted (the rule is in the module docstring)."""

    __slots__ = ("spin_s",)

    def __init__(self) -> None:
        self.spin_s = ADAPTIVE_SPIN_MAX_S

    def learn(self, waited_s: float) -> None:
        """Account for a wait that lasted ``waited_s`` (until a message or the deadline)."""
        if waited_s <= ADAPTIVE_SPIN_MAX_S:
            self.spin_s = min(ADAPTIVE_SPIN_MAX_S, max(self.spin_s, 2 * waited_s))
        else:
            self.spin_s = max(ADAPTIVE_SPIN_MIN_S, self.spin_s / 2)


class WaitPlan:
    """One wait of one consumer: which step comes after each empty poll."""

    __slots__ = ("_block_after", "_budget", "_done", "_spin_until", "_spins", "_start", "deadline")

    def __init__(
        self,
        strategy: WaitStrategy,
        spins: int,
        yields: int,
        deadline: float | None,
        budget: SpinBudget | None = None,
    ) -> None:
        self.deadline = deadline
        self._spins = spins
        self._budget: SpinBudget | None = None
        self._spin_until: float | None = None
        self._start = 0.0
        if strategy is WaitStrategy.ADAPTIVE:
            self._budget = budget or SpinBudget()
            self._start = time.monotonic()
            self._spin_until = self._start + self._budget.spin_s
            self._spins = 0  # then block at once
            self._block_after: int | None = 0
        elif strategy is WaitStrategy.BLOCK:
            self._block_after = spins + yields
        else:
            self._block_after = None  # spin and yield never block
            if strategy is WaitStrategy.SPIN:
                self._spins = -1  # spin until the deadline
        self._done = 0

    def step(self) -> int:
        """What to do after one more empty poll: POLL, YIELD, BLOCK or EXPIRED."""
        done = self._done = self._done + 1
        if self._spin_until is not None:  # adaptive, still spinning
            if done % ADAPTIVE_CLOCK_EVERY:
                return POLL
            now = time.monotonic()
            if now < self._spin_until:
                return POLL if self.deadline is None or now < self.deadline else EXPIRED
            self._spin_until = None  # spun its budget: block from now on
        if self._spins < 0 or done <= self._spins:
            if done % SPIN_CLOCK_EVERY or not self._expired():
                return POLL
            return EXPIRED
        if self._expired():
            return EXPIRED
        if self._block_after is not None and done > self._block_after:
            return BLOCK
        return YIELD

    def block_timeout(self) -> float:
        """How long one doorbell wait may last: capped (a missed ring costs at most
        ``BLOCK_SAFETY_S``); <= 0 means the deadline has passed."""
        if self.deadline is None:
            return BLOCK_SAFETY_S
        return min(BLOCK_SAFETY_S, self.deadline - time.monotonic())

    def _expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def finish(self) -> None:
        """The wait is over (a message or the deadline): teach the budget how long it took."""
        if self._budget is not None:
            self._budget.learn(time.monotonic() - self._start)


def wait_sync(poll: Callable[[], T | None], state: Sleeper, plan: WaitPlan) -> T | None:
    """Poll until a result or the plan's deadline (None), blocking this thread."""
    try:
        return _wait_sync(poll, state, plan)
    finally:
        plan.finish()


def _wait_sync(poll: Callable[[], T | None], state: Sleeper, plan: WaitPlan) -> T | None:
    while True:
        step = plan.step()
        if step == YIELD:
            os.sched_yield()
        elif step == BLOCK:
            timeout = plan.block_timeout()
            if timeout <= 0:
                return None
            arm(state)
            try:
                result = poll()
                if result is not None:
                    return result
                ring_wait(state.doorbell, timeout)
            finally:
                disarm(state)
        elif step == EXPIRED:
            return None
        result = poll()
        if result is not None:
            return result


async def wait_async(
    poll: Callable[[], Awaitable[T | None]], state: Sleeper, plan: WaitPlan
) -> T | None:
    """The same policy on an event loop: yields are loop turns, and the doorbell wait
    runs in a worker thread, so other tasks keep running while this one waits."""
    try:
        return await _wait_async(poll, state, plan)
    finally:
        plan.finish()


async def _wait_async(
    poll: Callable[[], Awaitable[T | None]], state: Sleeper, plan: WaitPlan
) -> T | None:
    polls = 0
    while True:
        step = plan.step()
        polls += 1
        if step == POLL:
            if polls % SPIN_CLOCK_EVERY == 0:
                await asyncio.sleep(0)  # a spinning task still lets the loop turn
        elif step == YIELD:
            await asyncio.sleep(0)
        elif step == BLOCK:
            timeout = plan.block_timeout()
            if timeout <= 0:
                return None
            arm(state)
            try:
                result = await poll()
                if result is not None:
                    return result
                await asyncio.to_thread(ring_wait, state.doorbell, timeout)
            finally:
                disarm(state)
        else:
            return None
        result = await poll()
        if result is not None:
            return result
