"""A consumer's own segment: its read cursors, heartbeat, sleeping flag and counters.

How this works
--------------
Only the consumer writes its state segment (``ConsumerState``); producers and the
coordinator map it read-only (``ConsumerStateView``). Each lane the consumer reads gets a
slot on its own cache line: ``lane_uid, cursor, count, start``. ``cursor`` is the lane
position below which the consumer needs nothing (the writer may reuse those bytes),
``count`` the lane's index of the next message, and ``count - start`` the messages
delivered through the slot (a reader that skips messages it lost moves ``start`` up too).
With manual acknowledgement, ``cursor`` and ``count`` are the acknowledged position and
the reader's own position goes to ``read cursor, read count`` on the same line: producers
keep everything unacknowledged, and an heir (``redelivery.py``) reads on from it.
The consumer claims a slot by writing cursor, count and start first and the lane uid
last, so a producer that finds its lane uid in a slot always sees a valid cursor next to
it (Store/Store order, see ordering.py). Clearing the lane uid releases the slot:
producers stop gating on it at once.

The doorbell is a named POSIX semaphore created with the segment. A consumer about to
block sets ``sleeping``; a producer rings the doorbell after publishing only when it sees
that flag, so a busy consumer never costs a producer a syscall.
"""

from __future__ import annotations

import time

import posix_ipc
import psutil

from mycelium.errors import SegmentError
from mycelium.shm.layout import (
    CONSUMER_CORRUPT_Q,
    CONSUMER_HEARTBEAT_Q,
    CONSUMER_LOST_Q,
    CONSUMER_MAX_SLOTS,
    CONSUMER_RETIRED_Q,
    CONSUMER_SEGMENT_BYTES,
    CONSUMER_SLEEPING_Q,
    CONSUMER_STATIC,
    CONSUMER_STATIC_OFF,
    KIND_CONSUMER,
    SLOT_COUNT_Q,
    SLOT_CURSOR_Q,
    SLOT_LANE_Q,
    SLOT_READ_COUNT_Q,
    SLOT_READ_CURSOR_Q,
    SLOT_START_Q,
    slot_q,
)
from mycelium.shm.segment import DEFAULT_SEGMENT_MODE, Segment, check_doorbell, unlink_quietly

__all__ = [
    "ConsumerState",
    "ConsumerStateView",
    "create_consumer_segment",
    "open_doorbell",
    "remove_consumer_objects",
]

_SLOT_BASES = tuple(slot_q(i) for i in range(CONSUMER_MAX_SLOTS))
#: Counters are u64 words and wrap as such: a scribbled slot (count below its start, a
#: sum past 2**64) yields a wrong count, never an exception from the store.
_U64 = (1 << 64) - 1


def create_consumer_segment(
    name: str,
    doorbell: str,
    uid: int,
    pid: int,
    mode: int = DEFAULT_SEGMENT_MODE,
    *,
    new_doorbell: bool = True,
) -> Segment:
    """Create a consumer's state segment and its doorbell semaphore (the creator's job);
    ``new_doorbell=False``: the doorbell exists (shared with another subscription)."""
    seg = Segment.create(name, CONSUMER_SEGMENT_BYTES, KIND_CONSUMER, mode)
    CONSUMER_STATIC.pack_into(seg.mm, CONSUMER_STATIC_OFF, uid, pid, CONSUMER_MAX_SLOTS)
    seg.q[CONSUMER_HEARTBEAT_Q] = time.monotonic_ns()
    if not new_doorbell:
        return seg
    try:
        posix_ipc.Semaphore(doorbell, posix_ipc.O_CREX, mode, 0).close()
    except posix_ipc.Error as exc:
        seg.close()
        seg.unlink()
        raise SegmentError(f"cannot create doorbell {doorbell}: {exc}") from exc
    return seg


def open_doorbell(name: str) -> posix_ipc.Semaphore:
    """Open an existing doorbell semaphore; SegmentError if it is gone or not trusted."""
    check_doorbell(name)
    try:
        return posix_ipc.Semaphore(name)
    except posix_ipc.Error as exc:
        raise SegmentError(f"cannot open doorbell {name}: {exc}") from exc


class _StateFields:
    """Reads shared by the owner and read-only views of a consumer segment."""

    seg: Segment

    @property
    def uid(self) -> int:
        return int(CONSUMER_STATIC.unpack_from(self.seg.mm, CONSUMER_STATIC_OFF)[0])

    @property
    def pid(self) -> int:
        return int(CONSUMER_STATIC.unpack_from(self.seg.mm, CONSUMER_STATIC_OFF)[1])

    @property
    def heartbeat_ns(self) -> int:
        return self.seg.q[CONSUMER_HEARTBEAT_Q]

    @property
    def lost(self) -> int:
        return self.seg.q[CONSUMER_LOST_Q]

    @property
    def corrupt(self) -> int:
        return self.seg.q[CONSUMER_CORRUPT_Q]

    @property
    def sleeping(self) -> bool:
        return bool(self.seg.q[CONSUMER_SLEEPING_Q])

    def find_slot(self, lane_uid: int) -> int | None:
        """The Q index of the slot holding ``lane_uid``, or None if the consumer has none."""
        q = self.seg.q
        for base in _SLOT_BASES:
            if q[base + SLOT_LANE_Q] == lane_uid:
                return base
        return None

    def slots(self) -> list[tuple[int, int, int, int]]:
        """Every claimed slot as (lane_uid, cursor, count, start)."""
        q = self.seg.q
        return [
            (q[b + SLOT_LANE_Q], q[b + SLOT_CURSOR_Q], q[b + SLOT_COUNT_Q], q[b + SLOT_START_Q])
            for b in _SLOT_BASES
            if q[b + SLOT_LANE_Q]
        ]

    def acked_and_read(self, base: int) -> tuple[int, int]:
        """A slot's acknowledged message index and how far its reader had read (the same
        unless it acknowledged manually and read ahead)."""
        q = self.seg.q
        acked = q[base + SLOT_COUNT_Q]
        return acked, max(acked, q[base + SLOT_READ_COUNT_Q])

    def received(self) -> int:
        """Messages delivered in total: released lanes plus those still claimed."""
        return (self.seg.q[CONSUMER_RETIRED_Q] + sum(c - s for _, _, c, s in self.slots())) & _U64


class ConsumerState(_StateFields):
    """The consumer's writable view of its own segment (the single writer)."""

    def __init__(self, seg: Segment, doorbell: str) -> None:
        if not seg.writable:
            raise SegmentError(f"{seg.name}: a consumer must map its own state writable")
        self.seg = seg
        self.q = seg.q
        self.doorbell = open_doorbell(doorbell)

    @classmethod
    def attach(cls, name: str, doorbell: str) -> ConsumerState:
        """Map the consumer's segment writable (only the consumer itself does this)."""
        return cls(Segment.attach(name, KIND_CONSUMER, writable=True), doorbell)

    def claim_slot(self, lane_uid: int, cursor: int, count: int) -> int:
        """Claim a free slot for ``lane_uid`` starting at ``cursor``; returns its Q index."""
        q = self.q
        for base in _SLOT_BASES:
            if q[base + SLOT_LANE_Q] == 0:
                q[base + SLOT_CURSOR_Q] = cursor
                q[base + SLOT_COUNT_Q] = count
                q[base + SLOT_START_Q] = count
                q[base + SLOT_READ_CURSOR_Q] = cursor
                q[base + SLOT_READ_COUNT_Q] = count
                # Publish the slot: lane uid stored last (pairs with find_slot's load).
                q[base + SLOT_LANE_Q] = lane_uid
                return base
        raise SegmentError(f"{self.seg.name}: all {CONSUMER_MAX_SLOTS} lane slots are in use")

    def release_slot(self, base: int) -> None:
        """Give a slot back; its messages move to the retired total so received() stays."""
        q = self.q
        q[CONSUMER_RETIRED_Q] = (
            q[CONSUMER_RETIRED_Q] + q[base + SLOT_COUNT_Q] - q[base + SLOT_START_Q]
        ) & _U64
        q[base + SLOT_LANE_Q] = 0

    def beat(self) -> None:
        """Store a heartbeat (monotonic ns): proof of progress for stats and liveness."""
        self.q[CONSUMER_HEARTBEAT_Q] = time.monotonic_ns()

    def set_sleeping(self, flag: bool) -> None:
        """Raise or lower the flag that asks producers to ring our doorbell."""
        self.q[CONSUMER_SLEEPING_Q] = 1 if flag else 0

    def add_lost(self, n: int) -> None:
        self.q[CONSUMER_LOST_Q] = (self.q[CONSUMER_LOST_Q] + n) & _U64

    def add_corrupt(self, n: int = 1) -> None:
        self.q[CONSUMER_CORRUPT_Q] = (self.q[CONSUMER_CORRUPT_Q] + n) & _U64

    def close(self) -> None:
        """Release every slot (producers stop gating on us) and unmap."""
        for base in _SLOT_BASES:
            if self.q[base + SLOT_LANE_Q]:
                self.release_slot(base)
        self.set_sleeping(False)
        self.doorbell.close()
        self.seg.close()


class ConsumerStateView(_StateFields):
    """A producer's or the coordinator's read-only view of one consumer's state."""

    def __init__(self, seg: Segment, doorbell: str | None = None) -> None:
        self.seg = seg
        self.q = seg.q
        self.doorbell_name = doorbell
        self._doorbell: posix_ipc.Semaphore | None = None
        self._pid = self.pid
        self._proc: psutil.Process | None = None
        #: A durable consumer's position is kept while its process is away.
        self.durable = False

    @classmethod
    def attach(cls, name: str, doorbell: str | None = None) -> ConsumerStateView:
        return cls(Segment.attach(name, KIND_CONSUMER, writable=False), doorbell)

    @property
    def doorbell(self) -> posix_ipc.Semaphore | None:
        """The consumer's doorbell, opened on first use (None if it has none or it is gone)."""
        if self._doorbell is None and self.doorbell_name:
            try:
                self._doorbell = open_doorbell(self.doorbell_name)
            except SegmentError:
                self.doorbell_name = None
        return self._doorbell

    def alive(self) -> bool:
        """Whether the consumer's process still exists (same pid *and* start time)."""
        try:
            if self._proc is None:
                self._proc = psutil.Process(self._pid)
            return self._proc.is_running() and self._proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def holds(self) -> bool:
        """Whether a writer must keep gating on this consumer: durable, or alive."""
        return self.durable or self.alive()

    def close(self) -> None:
        if self._doorbell is not None:
            self._doorbell.close()
        self.seg.close()


def remove_consumer_objects(name: str, doorbell: str) -> None:
    """Unlink a consumer's segment and doorbell (coordinator cleanup)."""
    unlink_quietly(name)
    unlink_quietly("sem:" + doorbell)
