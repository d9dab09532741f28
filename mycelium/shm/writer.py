"""The lane's writer: the one sequencer of a single-writer ring of variable-size frames.

How this works
--------------
Positions are 64-bit byte sequences that only grow; a position's place in the ring is
``pos & mask`` (the capacity is a power of two). The writer writes header and payload,
then stores the message count and the write cursor (``publish``) and rings the doorbells
of sleeping readers (after every publish on a small lane, every few on a large one: the
rule is in ``gating.py``); ``publish_many`` stores them once per batch and copies a run of
equal-size items with one numpy assignment (``runs.py``): the batch writes are
``writer_batches.py``, a mixin found through the class at no cost per call. The writer
runs freely up to a cached *limit*. Crossing it (at least ``CHECKPOINTS_PER_LAP`` times a
lap) takes the slow path, ``_claim``, in this order:

1. rescan the gating readers' cursors and, on a lossless lane, wait for space
   (``gating.py``): ``BackpressureTimeout`` with nothing written if they stay behind;
2. record a *checkpoint*: a frame boundary whose message count is known;
3. publish the *tail* (the oldest checkpoint the new limit leaves intact) and the *head*
   (the newest checkpoint) in the double-buffered tail record, then store the new limit
   as the *reservation*: the writer writes no byte at or past it. Only then does it write on.

One thread owns a writer: every entry point refuses another thread (the check is one
``get_ident`` call, cheap next to the frame copy). Payloads are any C-contiguous buffer,
measured in bytes.

Memory ordering (why plain loads and stores suffice) is argued once, in ``ordering.py``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from mycelium.errors import BackpressureTimeout, CorruptFrame, MessageTooLarge, SegmentError
from mycelium.shm.consumer_state import ConsumerStateView
from mycelium.shm.frames import frame_bytes
from mycelium.shm.gating import Gating
from mycelium.shm.lane_header import LaneInfo, read_tail_record, record_producer
from mycelium.shm.layout import (
    FRAME_HEADER_BYTES,
    FRAME_PAYLOAD_OFF,
    FRAME_SEQUENCE_Q,
    FRAME_TIME_Q,
    HEAD_COUNT_Q,
    HEAD_POS_Q,
    LANE_CLOSED_Q,
    LANE_COUNT_Q,
    LANE_DATA_OFF,
    LANE_RESERVED_Q,
    LANE_STAMPED_Q,
    LANE_STAMPED_UNTIL_Q,
    LANE_TAIL_VERSION_Q,
    LANE_TIMEOUTS_Q,
    LANE_WRITE_Q,
    TAIL_COUNT_Q,
    TAIL_POS_Q,
    WRAP_MARKER,
    lane_tail_record_q,
)
from mycelium.shm.payload import Payload, payload_bytes
from mycelium.shm.segment import Segment
from mycelium.shm.writer_batches import BatchWrites

__all__ = ["CHECKPOINTS_PER_LAP", "LaneWriter"]

#: The writer takes its slow path (rescan readers, checkpoint, move the tail) at least
#: this many times per lap, so the tail trails the overwrite point by at most 1/this lap
#: and a reader joining at the end walks at most that many bytes to learn its count.
CHECKPOINTS_PER_LAP = 64

_get_ident = threading.get_ident
_time_ns = time.time_ns
#: Above any max_message: sends a payload without len() to ``_make_room``.
_UNSIZED = 1 << 62


class LaneWriter(BatchWrites):
    """The single writer of one lane. Not thread-safe by design: one thread owns it."""

    __slots__ = (
        "_bell",
        "_bells",
        "_cap",
        "_checkpoints",
        "_count",
        "_dq",
        "_dq1",
        "_dq2",
        "_flag_i",
        "_flags",
        "_gating",
        "_hq",
        "_limit",
        "_lossy",
        "_mask",
        "_mm",
        "_owner",
        "_pos",
        "_reserved",
        "_scan_in",
        "_stamp",
        "_step",
        "_tail_version",
        "_u8",
        "_u64",
        "backpressure_timeout_s",
        "info",
        "lane_uid",
        "max_message",
        "on_wait",
        "seg",
    )

    def __init__(
        self,
        seg: Segment,
        *,
        backpressure_timeout_s: float = 5.0,
        on_wait: Callable[[], None] | None = None,
        producer_name: str = "",
        timestamps: bool = False,
    ) -> None:
        if not seg.writable:
            raise SegmentError(f"{seg.name}: the writer must map its lane writable")
        info = LaneInfo(seg)
        self.seg = seg
        self.info = info
        self.lane_uid = info.lane_uid
        self.max_message = info.max_message
        #: How long a publish waits for a slow reader; <= 0 raises at once (async callers).
        self.backpressure_timeout_s = backpressure_timeout_s
        #: Called while waiting for space, e.g. to pick up topology changes.
        self.on_wait = on_wait
        self._owner = _get_ident()
        self._mm = seg.mm
        self._hq = seg.q
        cap = info.capacity
        self._cap = cap
        self._mask = cap - 1
        self._step = max(cap // CHECKPOINTS_PER_LAP, FRAME_HEADER_BYTES)
        self._dq = seg.buf[LANE_DATA_OFF : LANE_DATA_OFF + cap].cast("Q")
        # The same words from a frame's sequence and time words on: one index for all.
        self._dq1 = self._dq[FRAME_SEQUENCE_Q:]
        self._dq2 = self._dq[FRAME_TIME_Q:]
        self._u8 = np.frombuffer(seg.mm, np.uint8, cap, LANE_DATA_OFF)
        self._u64 = self._u8.view(np.uint64)
        self._lossy = info.lossy
        # Resume where the lane stands (a fresh lane: all zero).
        hq = seg.q
        pos, count = hq[LANE_WRITE_Q], hq[LANE_COUNT_Q]
        self._tail_version = hq[LANE_TAIL_VERSION_Q]
        try:
            tail, tail_count, _, _ = read_tail_record(seg)
        except CorruptFrame as exc:
            raise SegmentError(f"{seg.name}: cannot resume: {exc}") from exc
        if pos & 7 or not tail <= pos <= tail + cap or not tail_count <= count <= pos >> 3:
            raise SegmentError(
                f"{seg.name}: cannot resume: cursor {pos}/{count}, tail {tail}/{tail_count}"
            )
        self._pos = pos
        self._count = count
        #: Frame boundaries with their counts, oldest first; the tail is the first one.
        self._checkpoints: deque[tuple[int, int]] = deque([(tail, tail_count)])
        self._reserved = hq[LANE_RESERVED_Q]
        self._gating = Gating(info.lane_uid)
        #: Publishes left until the next scan of the readers' "sleeping" flags (gating.py).
        self._scan_in = 1
        #: The lone bell of a lane with one (its reader's words, flag index, doorbell).
        self._flags: memoryview | None = None
        self._flag_i = 0
        self._bell: Any = None
        self._take_bells()
        self._limit = pos  # forces the first publish through the slow path
        record_producer(seg, producer_name)
        self._stamp = bool(hq[LANE_STAMPED_Q]) and not hq[LANE_STAMPED_UNTIL_Q]
        self.timestamps = timestamps

    # -- readers ------------------------------------------------------------------------
    def set_readers(self, views: Iterable[ConsumerStateView]) -> None:
        """Gate on exactly these consumers (keeping what we know of ones seen before).

        A consumer that has not claimed its slot on this lane yet is gated at our current
        position, so it loses nothing published from now on.
        """
        self._gating.set_readers(views, self._pos)
        self._scan_in = 1  # look at the new readers' flags on the next publish
        self._take_bells()
        self._limit = min(self._limit, self._pos)  # re-evaluate on the next publish

    def _take_bells(self) -> None:
        """Cache the bells ``publish`` checks itself: a lone one unpacked into slots, one
        flag load with no loop for the usual lane of one consumer."""
        bells = self._bells = self._gating.every_publish
        if len(bells) == 1:
            self._flags, self._flag_i, self._bell = bells[0]
        else:
            self._flags = None

    @property
    def readers(self) -> list[ConsumerStateView]:
        return self._gating.readers

    def _check_thread(self) -> None:
        if _get_ident() != self._owner:
            raise RuntimeError("a LaneWriter is single-writer: use it from one thread only")

    # -- publishing -----------------------------------------------------------------------
    def publish(self, data: Payload) -> None:
        """Write one frame and publish it.

        Raises MessageTooLarge, NonContiguousPayload or BackpressureTimeout (nothing was
        written), or RuntimeError from a thread that does not own the writer.

        The hot path takes ``len(data)`` as the size and lets the payload copy check it:
        the copy refuses (before writing) any buffer that is not one run of exactly
        ``len(data)`` bytes, and a typed view goes round again sized in bytes
        (``payload_bytes``); an oversize payload and a frame that crosses the limit go
        through ``_make_room``. No type check or size conversion for the common case.
        """
        if _get_ident() != self._owner:  # _check_thread(), inlined for the hot path
            self._check_thread()
        try:
            n = len(data)
        except TypeError:  # a buffer without len(), or no buffer: _make_room sizes it
            n = _UNSIZED
        pos = self._pos
        end = pos + ((n + 31) & -8)  # frame_bytes(n), inlined: a call costs a few percent here
        if n > self.max_message or end > self._limit:
            pos, end, data = self._make_room(data)
            n = len(data)
        off = pos & self._mask
        start = off + FRAME_PAYLOAD_OFF
        try:
            self._mm[start : start + n] = data
        except (TypeError, ValueError, IndexError, BufferError):  # not n flat bytes
            flat = payload_bytes(data)  # NonContiguousPayload, TypeError: nothing written
            if flat is data:
                raise  # flat already: the mapping itself refused (closed)
            self.publish(flat)  # again, sized in bytes
            return
        i = off >> 3
        self._count = count = self._count + 1
        self._dq[i] = n
        self._dq1[i] = count  # the frame's number (FRAME_SEQUENCE_Q): views save an add
        if self._stamp:
            self._dq2[i] = _time_ns()  # FRAME_TIME_Q
        self._pos = end
        hq = self._hq
        hq[LANE_COUNT_Q] = count
        # Publish: the header and payload stores above precede this cursor store (x86-64
        # Store/Store order); pairs with the reader's load of LANE_WRITE_Q in poll().
        hq[LANE_WRITE_Q] = end
        flags = self._flags
        if flags is not None:  # one reader with a doorbell (the usual lane): its flag
            if flags[self._flag_i]:
                self._bell.release()
        elif self._bells:  # two: every flag, every publish
            for q, i, bell in self._bells:
                if q[i]:
                    bell.release()
        else:  # a large lane (or none with a doorbell): a scan every few publishes
            left = self._scan_in - 1
            if left:
                self._scan_in = left
            else:
                self._scan_in = self._gating.ring_sleepers()

    def _make_room(self, data: Payload) -> tuple[int, int, bytes | memoryview]:
        """The checked half of ``publish``: ``data`` sized in bytes and room claimed for
        its frame; returns (position, end, flat data). Raises NonContiguousPayload,
        TypeError, MessageTooLarge or BackpressureTimeout, with nothing written."""
        flat = payload_bytes(data)
        n = len(flat)
        if n > self.max_message:
            raise MessageTooLarge(n, self.max_message)
        fb = frame_bytes(n)
        pos = self._pos
        if pos + fb > self._limit:
            pos = self._claim(pos, fb)
        return pos, pos + fb, flat

    def close(self, *, final: bool = True) -> None:
        """Mark the lane closed (readers drain it, then forget it) and unmap it."""
        if final:
            self._hq[LANE_CLOSED_Q] = 1
        for view in (self._dq2, self._dq1, self._dq):
            view.release()
        del self._u8, self._u64  # numpy views pin the mapping until dropped
        self.seg.close()

    @property
    def timestamps(self) -> bool:
        """Whether frames store CLOCK_REALTIME ns: a clock call per publish, so opt-in."""
        return self._stamp

    @timestamps.setter
    def timestamps(self, on: bool) -> None:
        if on == self._stamp:
            return
        # Readers trust a frame's time word between "from" and "until" (1 + position; 0:
        # never / still on), stored before any frame after the switch (Store/Store); a
        # reader loads them after the write cursor (Load/Load). "From" goes first, so a
        # reader never sees the old "from" with "until" cleared. Unstamped frames leave
        # the word as the ring had it.
        hq = self._hq
        if on:
            hq[LANE_STAMPED_Q] = self._pos + 1
            hq[LANE_STAMPED_UNTIL_Q] = 0
        else:
            hq[LANE_STAMPED_UNTIL_Q] = self._pos + 1
        self._stamp = on

    @property
    def position(self) -> int:
        return self._pos

    @property
    def count(self) -> int:
        return self._count

    def free_bytes(self) -> int:
        """Ring bytes this writer could fill now without waiting (rescans its readers)."""
        if self._lossy:
            return self._cap
        return self._gating.floor(self._pos) + self._cap - self._pos

    def has_room(self, need: int) -> bool:
        """Whether ``need`` ring bytes fit now without waiting. The cached limit (never
        above what the readers allow) answers most calls; only a "no" rescans them."""
        return self._pos + need <= self._limit or self.free_bytes() >= need

    def mark_closed(self) -> None:
        """Set the closed flag but keep the mapping (the producer hands a lane back)."""
        self._hq[LANE_CLOSED_Q] = 1

    @property
    def closed_by_us(self) -> bool:
        return bool(self._hq[LANE_CLOSED_Q])

    def count_timeout(self) -> None:
        """Count a publish refused after its bounded wait ran out, for stats and metrics
        (the lane's timeout word; we are its only writer)."""
        self._hq[LANE_TIMEOUTS_Q] += 1

    # -- slow path ----------------------------------------------------------------------
    def _claim(self, pos: int, fb: int) -> int:
        """Make room for a frame of ``fb`` bytes at the published position ``pos``; returns
        where it goes and sets the new limit.

        Writes the wrap marker if the frame must start at the next lap. Raises
        BackpressureTimeout (nothing written) if gated readers do not free the space.
        """
        self._check_thread()
        cap = self._cap
        mask = self._mask
        off = pos & mask
        skip = cap - off if off + fb > cap else 0
        need_end = pos + skip + fb
        limit = ((pos + skip) | mask) + 1  # the end of the frame's lap
        if not self._lossy:
            try:
                floor = self._gating.wait_for_space(
                    pos, need_end, cap, self.backpressure_timeout_s, self.on_wait, self.seg.name
                )
            except BackpressureTimeout:
                if self.backpressure_timeout_s > 0:  # a bounded wait ran out
                    self.count_timeout()
                raise
            self._take_bells()  # dead readers may have been dropped
            limit = min(limit, floor + cap)
        limit = min(limit, max(need_end, pos + self._step))
        if pos >= self._checkpoints[-1][0] + self._step:  # at most one per step: bounded
            self._checkpoints.append((pos, self._count))
        self._reserve(limit)
        if skip:
            self._dq[off >> 3] = WRAP_MARKER
        self._limit = limit
        return pos + skip

    def _reserve(self, limit: int) -> None:
        """Publish the tail record for ``limit``, then reserve everything below ``limit``.

        The tail becomes the oldest checkpoint at or after ``limit - capacity``: the first
        frame boundary the coming writes leave intact. There always is one: the newest
        checkpoint is less than a step behind ``pos``, and ``limit`` at most a step (or one
        frame and its wrap, under a quarter ring) past it.
        """
        cps = self._checkpoints
        low = limit - self._cap
        while cps[0][0] < low:
            cps.popleft()
        tail, tail_count = cps[0]
        head, head_count = cps[-1]
        version = self._tail_version + 1
        hq = self._hq
        r = lane_tail_record_q(version)
        hq[r + TAIL_POS_Q] = tail
        hq[r + TAIL_COUNT_Q] = tail_count
        hq[r + HEAD_POS_Q] = head
        hq[r + HEAD_COUNT_Q] = head_count
        # Publish the record: its stores precede the version store (Store/Store); pairs
        # with the version loads in _read_tail_record.
        hq[LANE_TAIL_VERSION_Q] = version
        self._tail_version = version
        if limit > self._reserved:
            # Reserve: stored after the tail it pairs with and before any byte below
            # `limit` is written (Store/Store); pairs with the reservation load that
            # follows each copy in LaneReader (Load/Load).
            hq[LANE_RESERVED_Q] = limit
            self._reserved = limit
