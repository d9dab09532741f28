"""The lane: a single-writer ring of variable-size frames in one shared-memory segment.

How this works
--------------
Positions are 64-bit byte sequences that only grow; a position's place in the ring is
``pos & mask`` (the capacity is a power of two). A frame is an 8-byte header holding the
payload length, then the payload padded to 8 bytes, so every header is an aligned word.
A frame never straddles the end of the ring: when it would, the writer stores
``WRAP_MARKER`` in the next header and starts the frame at offset 0.

Writer (``LaneWriter``, the lane's only writer): write header and payload, then store the
message count and the write cursor (``publish``); ``publish_many`` stores them once per
batch and copies a run of equal-size items with one numpy assignment. The writer runs
freely up to a cached *limit*. Crossing it (at least ``CHECKPOINTS_PER_LAP`` times a lap)
takes the slow path, in this order:

1. rescan the gating readers' cursors (in their consumer segments, mapped read-only) and,
   on a lossless lane, wait for space: a bounded spin/yield/sleep, then
   ``BackpressureTimeout`` with nothing written;
2. record a *checkpoint*: a frame boundary whose message count is known;
3. publish the *tail* (the oldest checkpoint the new limit leaves intact) and the *head*
   (the newest checkpoint) in a double-buffered record, then store the new limit as the
   *reservation*: the writer writes no byte at or past it. Only then does it write on.

Reader (``LaneReader``): load the write cursor only when it has consumed everything it
saw last time; check each header against ``max_message``, the published cursor and the
ring's end before a byte of payload is touched; copy the frame; then load the
reservation. A frame more than one ring below the reservation may have been overwritten
during the copy: the copy is dropped, the reader jumps to the tail and adds the messages
it skipped to its ``lost`` counter. A reader the writer gates on is never overrun, so on a
lossless lane this only catches readers the writer did not know about yet; on a lossy lane
(the writer never waits) it is how overruns are detected. A corrupt header raises
``CorruptFrame`` after the reader skipped to the newest published position and counted it,
so the next poll goes on. ``poll_many`` stores its cursor once per batch; a run of
equal-size frames is checked with one strided numpy comparison of its headers and copied
out with one ``struct`` unpack per power of two.

Memory ordering (why plain loads and stores suffice) is argued once, in ``ordering.py``.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from mycelium.errors import BackpressureTimeout, CorruptFrame, MessageTooLarge, SegmentError
from mycelium.shm.consumer_state import ConsumerState, ConsumerStateView
from mycelium.shm.layout import (
    CONSUMER_SLEEPING_Q,
    FRAME_HEADER_BYTES,
    HEAD_COUNT_Q,
    HEAD_POS_Q,
    KIND_LANE,
    LANE_CLOSED_Q,
    LANE_COUNT_Q,
    LANE_DATA_OFF,
    LANE_FLAG_LOSSY,
    LANE_MIN_FRAMES,
    LANE_RESERVED_Q,
    LANE_STATIC,
    LANE_STATIC_OFF,
    LANE_TAIL_VERSION_Q,
    LANE_TIMEOUTS_Q,
    LANE_WRITE_Q,
    SLOT_COUNT_Q,
    SLOT_CURSOR_Q,
    SLOT_LANE_Q,
    SLOT_START_Q,
    TAIL_COUNT_Q,
    TAIL_POS_Q,
    WRAP_MARKER,
    frame_bytes,
    lane_segment_bytes,
    lane_tail_record_q,
)
from mycelium.shm.ordering import full_fence
from mycelium.shm.segment import DEFAULT_SEGMENT_MODE, Segment

__all__ = ["LaneInfo", "LaneReader", "LaneWriter", "create_lane_segment", "read_lane_info"]

#: Backpressure wait: rescans with no pause, then sched_yield, then sleeps doubling up to max.
WRITER_SPINS = 200
WRITER_YIELDS = 50
WRITER_SLEEP_MIN_S = 20e-6
WRITER_SLEEP_MAX_S = 1e-3
#: How often a waiting writer re-checks that the readers holding it back are still alive.
WRITER_LIVENESS_EVERY_S = 0.1
#: The writer takes its slow path (rescan readers, checkpoint, move the tail) at least
#: this many times per lap, so the tail trails the overwrite point by at most 1/this lap
#: and a reader joining at the end walks at most that many bytes to learn its count.
CHECKPOINTS_PER_LAP = 64
#: publish_many copies a run of at least this many equal-size items with numpy.
WRITER_RUN_MIN_ITEMS = 16
#: poll_many reads a run of equal-size frames vectorised when at least this many could be.
READER_RUN_MIN_FRAMES = 4
#: Longest run read in one go (bounds the cached formats' size).
READER_RUN_MAX_FRAMES = 1024
#: Cached run formats kept before the cache is cleared.
RUN_STRUCT_CACHE_SIZE = 256
#: A reader re-reads a double-buffered tail record at most this many times.
TAIL_READ_TRIES = 64
#: A read that keeps being overrun gives up after this many skips and returns nothing.
OVERRUN_RETRIES = 16
#: Largest payload a frame header can describe (WRAP_MARKER is reserved).
MAX_FRAME_PAYLOAD = (1 << 32) - 1
#: Highest frame boundary a u64 position can hold (reached only by a corrupt cursor).
MAX_POSITION = (1 << 64) - 8

_RUN_STRUCTS: dict[tuple[int, int], struct.Struct] = {}


def _run_struct(n: int, count: int) -> struct.Struct:
    """The format of the payloads of ``count`` consecutive frames of ``n`` bytes."""
    key = (n, count)
    fmt = _RUN_STRUCTS.get(key)
    if fmt is None:
        if len(_RUN_STRUCTS) >= RUN_STRUCT_CACHE_SIZE:
            _RUN_STRUCTS.clear()
        pad = frame_bytes(n) - FRAME_HEADER_BYTES - n
        fmt = _RUN_STRUCTS[key] = struct.Struct(f"{FRAME_HEADER_BYTES}x{n}s{pad}x" * count)
    return fmt


class _Overrun(Exception):
    """Internal: the writer overwrote (or may have) what this reader was reading."""


class LaneInfo:
    """The static facts of a lane, read from its segment and checked."""

    __slots__ = ("capacity", "lane_uid", "lossy", "max_message", "writer_pid")

    def __init__(self, seg: Segment) -> None:
        cap, max_msg, uid, pid, flags, data_off = LANE_STATIC.unpack_from(seg.mm, LANE_STATIC_OFF)
        if (
            cap & (cap - 1)
            or max_msg >= MAX_FRAME_PAYLOAD
            or cap < LANE_MIN_FRAMES * frame_bytes(max_msg)
            or data_off != LANE_DATA_OFF
        ):
            raise SegmentError(f"{seg.name}: impossible lane geometry cap={cap} max={max_msg}")
        if seg.size < lane_segment_bytes(cap):
            raise SegmentError(f"{seg.name}: {seg.size} bytes cannot hold a {cap}-byte ring")
        self.capacity = cap
        self.max_message = max_msg
        self.lane_uid = uid
        self.writer_pid = pid
        self.lossy = bool(flags & LANE_FLAG_LOSSY)


def read_lane_info(seg: Segment) -> LaneInfo:
    """Validate and return a lane segment's static header."""
    return LaneInfo(seg)


def create_lane_segment(
    name: str,
    capacity: int,
    max_message: int,
    lane_uid: int,
    writer_pid: int,
    *,
    lossy: bool = False,
    mode: int = DEFAULT_SEGMENT_MODE,
) -> Segment:
    """Create a lane segment (the coordinator's job); the producer then maps it writable.

    ``capacity`` must be a power of two holding at least ``LANE_MIN_FRAMES`` frames of
    ``max_message``, so a maximum-size frame always fits whatever the wrap position.
    Raises ValueError on a bad geometry, SegmentError if the segment cannot be created.
    """
    if (
        capacity <= 0
        or capacity & (capacity - 1)
        or not 0 <= max_message < MAX_FRAME_PAYLOAD
        or capacity < LANE_MIN_FRAMES * frame_bytes(max_message)
    ):
        raise ValueError(
            f"lane capacity {capacity} must be a power of two >= {LANE_MIN_FRAMES} frames "
            f"of {max_message} bytes"
        )
    if lane_uid <= 0:
        raise ValueError("lane_uid must be positive (0 marks a free consumer slot)")
    flags = LANE_FLAG_LOSSY if lossy else 0

    def init(seg: Segment) -> None:
        LANE_STATIC.pack_into(
            seg.mm, LANE_STATIC_OFF, capacity, max_message, lane_uid, writer_pid, flags,
            LANE_DATA_OFF,
        )  # fmt: skip

    return Segment.create(name, lane_segment_bytes(capacity), KIND_LANE, mode, init=init)


def _read_tail_record(seg: Segment) -> tuple[int, int, int, int]:
    """The live (tail, tail count, head, head count), read consistently and checked.

    Raises CorruptFrame if the record never holds still or is impossible (positions are
    8-byte aligned, tail <= head, and every frame takes at least 8 bytes, so a count never
    exceeds its position / 8): only a broken writer does that.
    """
    hq = seg.q
    for _ in range(TAIL_READ_TRIES):
        version = hq[LANE_TAIL_VERSION_Q]
        r = lane_tail_record_q(version)
        tail, tail_count = hq[r + TAIL_POS_Q], hq[r + TAIL_COUNT_Q]
        head, head_count = hq[r + HEAD_POS_Q], hq[r + HEAD_COUNT_Q]
        # The writer fills the idle record, then stores the version: if the version is
        # unchanged after our loads (Load/Load order), no store of a later update reached us.
        if hq[LANE_TAIL_VERSION_Q] == version:
            break
        os.sched_yield()
    else:
        raise CorruptFrame(f"lane {seg.name}: the tail record never held still")
    if (
        (tail | head) & 7
        or head < tail
        or tail_count > tail >> 3
        or not tail_count <= head_count <= head >> 3
    ):
        raise CorruptFrame(
            f"lane {seg.name}: impossible tail record {tail}/{tail_count} {head}/{head_count}"
        )
    return tail, tail_count, head, head_count


def _aligned_cursor(cursor: int) -> int:
    """A published cursor rounded up to a frame boundary (it is one, unless corrupt)."""
    return min((cursor + 7) & -8, MAX_POSITION)


class _Gate:
    """One reader a writer must not overrun: its consumer state and the slot for our lane."""

    __slots__ = ("base", "floor", "view")

    def __init__(self, view: ConsumerStateView, floor: int) -> None:
        self.view = view
        self.base: int | None = None
        #: Until the reader claims its slot we gate at the position where we first saw it.
        self.floor: int | None = floor


class LaneWriter:
    """The single writer of one lane. Not thread-safe by design: one thread owns it."""

    def __init__(
        self,
        seg: Segment,
        *,
        backpressure_timeout_s: float = 5.0,
        on_wait: Callable[[], None] | None = None,
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
        self._owner = threading.get_ident()
        self._mm = seg.mm
        self._hq = seg.q
        cap = info.capacity
        self._cap = cap
        self._mask = cap - 1
        self._step = max(cap // CHECKPOINTS_PER_LAP, FRAME_HEADER_BYTES)
        self._dq = seg.buf[LANE_DATA_OFF : LANE_DATA_OFF + cap].cast("Q")
        self._u8 = np.frombuffer(seg.mm, np.uint8, cap, LANE_DATA_OFF)
        self._u64 = self._u8.view(np.uint64)
        self._lossy = info.lossy
        # Resume where the lane stands (a fresh lane: all zero).
        hq = seg.q
        pos, count = hq[LANE_WRITE_Q], hq[LANE_COUNT_Q]
        self._tail_version = hq[LANE_TAIL_VERSION_Q]
        try:
            tail, tail_count, _, _ = _read_tail_record(seg)
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
        self._gates: list[_Gate] = []
        self._bells: tuple = ()
        self._limit = pos  # forces the first publish through the slow path

    # -- readers ------------------------------------------------------------------------
    def set_readers(self, views: Iterable[ConsumerStateView]) -> None:
        """Gate on exactly these consumers (keeping what we know of ones seen before).

        A consumer that has not claimed its slot on this lane yet is gated at our current
        position, so it loses nothing published from now on.
        """
        old = {id(g.view): g for g in self._gates}
        self._gates = [old.get(id(v)) or _Gate(v, self._pos) for v in views]
        self._bells = tuple(
            (g.view.q, CONSUMER_SLEEPING_Q, g.view.doorbell)
            for g in self._gates
            if g.view.doorbell is not None
        )
        self._limit = min(self._limit, self._pos)  # re-evaluate on the next publish

    @property
    def readers(self) -> list[ConsumerStateView]:
        return [g.view for g in self._gates]

    def _floor(self) -> int:
        """The lowest position some gated reader still needs (our own if none)."""
        lo = self._pos
        uid = self.lane_uid
        for g in self._gates:
            q = g.view.q
            base = g.base
            if base is None or q[base + SLOT_LANE_Q] != uid:
                base = g.base = g.view.find_slot(uid)
                if base is None:
                    if g.floor is not None and g.floor < lo:
                        lo = g.floor
                    continue
                g.floor = None  # claimed a slot: from now on its cursor speaks
            cursor = q[base + SLOT_CURSOR_Q]
            if q[base + SLOT_LANE_Q] == uid and cursor < lo:
                lo = cursor
        return lo

    def _drop_dead_gates(self) -> bool:
        """Stop gating on readers whose process is gone; True if any was dropped."""
        live = [g for g in self._gates if g.view.alive()]
        if len(live) == len(self._gates):
            return False
        self.set_readers(g.view for g in live)
        return True

    # -- publishing -----------------------------------------------------------------------
    def publish(self, data: bytes | bytearray | memoryview) -> None:
        """Write one frame and publish it.

        Raises MessageTooLarge or BackpressureTimeout; in both cases nothing was written.
        """
        n = len(data)
        if n > self.max_message:
            raise MessageTooLarge(n, self.max_message)
        pos = self._pos
        end = pos + ((n + 15) & -8)
        if end > self._limit:
            pos = self._claim(pos, end - pos)
            end = pos + ((n + 15) & -8)
        off = pos & self._mask
        self._dq[off >> 3] = n
        start = LANE_DATA_OFF + off + 8
        self._mm[start : start + n] = data
        self._pos = end
        self._count = count = self._count + 1
        hq = self._hq
        hq[LANE_COUNT_Q] = count
        # Publish: the header and payload stores above precede this cursor store (x86-64
        # Store/Store order); pairs with the reader's load of LANE_WRITE_Q in poll().
        hq[LANE_WRITE_Q] = end
        for q, i, bell in self._bells:
            if q[i]:
                bell.release()

    def publish_many(self, items: Sequence[bytes | bytearray | memoryview]) -> int:
        """Write a batch and publish it with one cursor store; returns how many were written.

        Sizes are checked first, so MessageTooLarge means nothing was written. If the ring
        stays full, what was written so far is published and BackpressureTimeout carries
        that count in ``published``.
        """
        if threading.get_ident() != self._owner:
            raise RuntimeError("a LaneWriter is single-writer: use it from one thread only")
        k = len(items)
        if not k:
            return 0
        lens = list(map(len, items))
        n = lens[0]
        if lens.count(n) == k:
            if n > self.max_message:
                raise MessageTooLarge(n, self.max_message)
            if k >= WRITER_RUN_MIN_ITEMS:
                return self._write_run(np.frombuffer(b"".join(items), np.uint8).reshape(k, n))
        else:
            largest = max(lens)
            if largest > self.max_message:
                raise MessageTooLarge(largest, self.max_message)
        return self._write_each(items)

    def publish_array(self, records: np.ndarray) -> int:
        """Publish each row of a C-contiguous 2-D uint8 array as one message (fixed-size
        records, e.g. a numpy structured batch viewed as bytes); returns the rows written.

        Raises MessageTooLarge (nothing written) or BackpressureTimeout (as publish_many).
        """
        if threading.get_ident() != self._owner:
            raise RuntimeError("a LaneWriter is single-writer: use it from one thread only")
        if records.ndim != 2 or records.dtype != np.uint8:
            raise ValueError(f"need a 2-D uint8 array, not {records.ndim}-D {records.dtype}")
        if records.shape[1] > self.max_message:
            raise MessageTooLarge(records.shape[1], self.max_message)
        return self._write_run(records)

    def _write_each(self, items: Sequence[bytes | bytearray | memoryview]) -> int:
        """publish_many for items of mixed sizes: one frame at a time, one cursor store."""
        dq = self._dq
        mm = self._mm
        mask = self._mask
        pos = self._pos
        count = first = self._count
        limit = self._limit
        try:
            for item in items:
                n = len(item)
                end = pos + ((n + 15) & -8)
                if end > limit:
                    self._publish_upto(pos, count)  # readers may need these to free space
                    pos = self._claim(pos, end - pos)
                    end = pos + ((n + 15) & -8)
                    limit = self._limit
                off = pos & mask
                dq[off >> 3] = n
                start = LANE_DATA_OFF + off + 8
                mm[start : start + n] = item
                pos = end
                count += 1
        except BackpressureTimeout as exc:
            exc.published = count - first  # type: ignore[attr-defined]
            raise
        finally:
            self._publish_upto(pos, count)
        return len(items)

    def _write_run(self, src: np.ndarray) -> int:
        """Write the rows of ``src`` (k x n bytes) as k frames: each stretch up to the limit
        is one strided numpy copy of payloads and one of headers."""
        k, n = src.shape
        fb = frame_bytes(n)
        words = fb >> 3
        pos = self._pos
        count = first = self._count
        done = 0
        try:
            while done < k:
                fit = (self._limit - pos) // fb
                if fit <= 0:
                    self._publish_upto(pos, count)
                    pos = self._claim(pos, fb)
                    continue
                j = min(fit, k - done)
                off = pos & self._mask
                self._u8[off : off + j * fb].reshape(j, fb)[:, 8 : 8 + n] = src[done : done + j]
                self._u64[off >> 3 : (off >> 3) + j * words : words] = n
                pos += j * fb
                count += j
                done += j
        except BackpressureTimeout as exc:
            exc.published = count - first  # type: ignore[attr-defined]
            raise
        finally:
            self._publish_upto(pos, count)
        return k

    def _publish_upto(self, pos: int, count: int) -> None:
        """Store count and cursor for frames written up to ``pos`` (no-op if nothing new)."""
        if pos == self._pos:
            return
        self._pos = pos
        self._count = count
        hq = self._hq
        hq[LANE_COUNT_Q] = count
        hq[LANE_WRITE_Q] = pos  # publish, as in publish(): the frame stores came first
        for q, i, bell in self._bells:
            if q[i]:
                bell.release()

    def close(self, *, final: bool = True) -> None:
        """Mark the lane closed (readers drain it, then forget it) and unmap it."""
        if final:
            self._hq[LANE_CLOSED_Q] = 1
        self._dq.release()
        del self._u8, self._u64  # numpy views pin the mapping until dropped
        self.seg.close()

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
        return self._floor() + self._cap - self._pos

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

    # -- slow path ----------------------------------------------------------------------
    def _claim(self, pos: int, fb: int) -> int:
        """Make room for a frame of ``fb`` bytes at the published position ``pos``; returns
        where it goes and sets the new limit.

        Writes the wrap marker if the frame must start at the next lap. Raises
        BackpressureTimeout (nothing written) if gated readers do not free the space.
        """
        if threading.get_ident() != self._owner:
            raise RuntimeError("a LaneWriter is single-writer: use it from one thread only")
        cap = self._cap
        mask = self._mask
        off = pos & mask
        skip = cap - off if off + fb > cap else 0
        need_end = pos + skip + fb
        limit = ((pos + skip) | mask) + 1  # the end of the frame's lap
        if not self._lossy:
            limit = min(limit, self._wait_for_space(need_end) + cap)
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

    def _wait_for_space(self, need_end: int) -> int:
        """Wait (bounded) until every gated reader is within a ring of ``need_end``;
        returns the lowest reader position."""
        cap = self._cap
        # Our cursor store is visible before we load the readers' slots: a reader that
        # joins concurrently either is seen here or sees our cursor (ordering.py).
        full_fence()
        floor = self._floor()
        if need_end <= floor + cap:
            return floor
        if self.backpressure_timeout_s <= 0:  # caller waits its own way (asyncio)
            raise BackpressureTimeout(
                f"lane {self.seg.name}: ring full; nothing written",
                needed=need_end - cap - floor,
            )
        now = time.monotonic()
        deadline = now + self.backpressure_timeout_s
        next_liveness = now + WRITER_LIVENESS_EVERY_S
        sleep_s = WRITER_SLEEP_MIN_S
        attempt = 0
        while True:
            attempt += 1
            if attempt > WRITER_SPINS:
                if attempt <= WRITER_SPINS + WRITER_YIELDS:
                    os.sched_yield()
                else:
                    now = time.monotonic()
                    if now >= deadline:
                        self._hq[LANE_TIMEOUTS_Q] += 1  # for stats; we are its only writer
                        raise BackpressureTimeout(
                            f"lane {self.seg.name}: ring full for {self.backpressure_timeout_s}s"
                            f" (a reader is {need_end - cap - floor} bytes too far behind);"
                            " nothing written",
                            waited_s=self.backpressure_timeout_s,
                            needed=need_end - cap - floor,
                        )
                    if now >= next_liveness:
                        next_liveness = now + WRITER_LIVENESS_EVERY_S
                        self._drop_dead_gates()
                        if self.on_wait is not None:
                            self.on_wait()
                    time.sleep(sleep_s)
                    sleep_s = min(sleep_s * 2, WRITER_SLEEP_MAX_S)
            floor = self._floor()
            if need_end <= floor + cap:
                return floor


class LaneReader:
    """One consumer's reader of one lane; its cursor lives in the consumer's own segment.

    ``start="end"`` reads what is published from now on, ``start="begin"`` everything the
    lane still holds (from its tail); ``slot`` re-adopts a slot this consumer already holds.
    ``poll`` returns a copy; ``poll_view`` a zero-copy view, valid until the next read on
    this reader (see its docstring). Counts are exact: ``count`` is the lane's index of the
    next message, so ``lost`` and ``backlog`` are exact too.
    """

    def __init__(
        self,
        seg: Segment,
        state: ConsumerState,
        *,
        start: str = "end",
        slot: int | None = None,
    ) -> None:
        info = LaneInfo(seg)
        self.seg = seg
        self.info = info
        self.lane_uid = info.lane_uid
        self.state = state
        self._mm = seg.mm
        self._hq = seg.q
        self._cap = info.capacity
        self._mask = info.capacity - 1
        self._max = info.max_message
        self._dq = seg.buf[LANE_DATA_OFF : LANE_DATA_OFF + info.capacity].cast("Q")
        self._ring64 = np.frombuffer(seg.mm, np.uint64, info.capacity >> 3, LANE_DATA_OFF)
        self._lossy = info.lossy
        self._sq = state.q
        if slot is None:
            if start not in ("end", "begin"):
                raise ValueError(f"start must be 'end' or 'begin', not {start!r}")
            tail, tail_count, head, head_count = _read_tail_record(seg)
            pos, count = (tail, tail_count) if start == "begin" else (head, head_count)
            self.slot = state.claim_slot(self.lane_uid, pos, count)
            # Our slot is visible before we load the write cursor: either the writer's next
            # rescan sees us or we see its latest cursor (ordering.py).
            full_fence()
            if start == "end":
                pos, count = self._find_end(pos, count)
        else:  # re-adopting our own slot (e.g. after the client re-read the topology)
            self.slot = slot
            pos, count = state.q[slot + SLOT_CURSOR_Q], state.q[slot + SLOT_COUNT_Q]
            if pos & 7:
                raise SegmentError(f"{state.seg.name}: slot cursor {pos} is misaligned")
        self._cur_i = self.slot + SLOT_CURSOR_Q
        self._cnt_i = self.slot + SLOT_COUNT_Q
        self._pos = pos
        self._count = count
        self._avail = pos  # the published cursor as last loaded
        self._held = False  # a zero-copy view is out: the slot still points before it
        self._pending_error: CorruptFrame | None = None

    def _find_end(self, head: int, head_count: int) -> tuple[int, int]:
        """Store and return the write cursor and its exact message count, counting the
        frames from the head checkpoint (at most a checkpoint step of them)."""
        hq = self._hq
        dq = self._dq
        mask = self._mask
        for _ in range(OVERRUN_RETRIES):
            end = _aligned_cursor(hq[LANE_WRITE_Q])
            pos, count = head, head_count
            while pos < end and end - head <= self._cap:
                n = dq[(pos & mask) >> 3]
                if n == WRAP_MARKER:
                    pos = (pos | mask) + 1
                elif n <= self._max:
                    pos += (n + 15) & -8
                    count += 1
                else:
                    break
            if head + self._cap >= hq[LANE_RESERVED_Q]:  # the frames held still as we walked
                break
            _, _, head, head_count = _read_tail_record(self.seg)
        else:
            pos = -1  # lapped every time: settle for the published count below
        if pos != end:  # a corrupt header, or lapped: the lane's count is stored first
            count = max(head_count, min(hq[LANE_COUNT_Q], end >> 3))
        sq = self._sq
        sq[self.slot + SLOT_START_Q] = count
        sq[self.slot + SLOT_COUNT_Q] = count
        sq[self.slot + SLOT_CURSOR_Q] = end
        return end, count

    # -- reading ----------------------------------------------------------------------
    def poll(self) -> bytes | None:
        """The next message as bytes, or None if there is none yet. Raises CorruptFrame.

        The hot path: the checks of ``_locate`` inlined for an ordinary frame.
        """
        pos = self._pos
        if pos >= self._avail:
            if self._pending_error is not None:
                self._raise_pending()
            # Observe: this cursor load precedes the header and payload loads below
            # (Load/Load order); pairs with the writer's store of LANE_WRITE_Q.
            self._avail = self._hq[LANE_WRITE_Q]
            if pos >= self._avail:
                return None
        off = pos & self._mask
        n = self._dq[off >> 3]
        end = pos + ((n + 15) & -8)
        if n > self._max or end > self._avail or off + 8 + n > self._cap:
            return self._poll_slow()
        start = LANE_DATA_OFF + off + 8
        data = self._mm[start : start + n]
        # Validate: the reservation load follows the copy (Load/Load); if the writer may
        # have written over the frame, take the slow path that skips and counts.
        if pos + self._cap < self._hq[LANE_RESERVED_Q]:
            return self._poll_slow()
        self._pos = end
        self._count = count = self._count + 1
        sq = self._sq
        sq[self._cnt_i] = count
        sq[self._cur_i] = end  # release the bytes to the writer only after copying them
        return data

    def _poll_slow(self) -> bytes | None:
        """poll() for everything but an ordinary intact frame: wrap markers, overruns
        (skip to the tail, count the loss, retry) and corrupt headers (raise)."""
        for _ in range(OVERRUN_RETRIES):
            try:
                found = self._locate(self._pos)
                if found is None:
                    return None
                pos, n, end = found
                start = LANE_DATA_OFF + (pos & self._mask) + 8
                data = self._mm[start : start + n]
                self._check_intact(self._pos)  # from where this read began: a wrap marker too
            except _Overrun:
                self._skip_to_tail()
                continue
            self._pos = end
            self._count = count = self._count + 1
            self._sq[self._cnt_i] = count
            self._sq[self._cur_i] = end
            return data
        return None

    def poll_many(self, max_n: int) -> list[bytes]:
        """Up to ``max_n`` messages as bytes, with one cursor store for the batch.

        The whole batch is checked against the reservation once, after the last copy: if
        the writer overran its first frame, the batch is dropped and read again from the
        tail (the skipped messages counted as lost). A corrupt frame after some good ones
        returns the good ones first; the next call raises CorruptFrame.
        """
        self._raise_pending()
        for _ in range(OVERRUN_RETRIES):
            first, count = self._pos, self._count
            try:
                out = self._copy_frames(max_n)
                self._check_intact(first)
            except _Overrun:
                self._pos, self._count = first, count
                self._skip_to_tail()
                continue
            if out:
                self._count = count = max(self._count, count + len(out))
                sq = self._sq
                sq[self._cnt_i] = count
                sq[self._cur_i] = self._pos
            return out
        return []

    def _copy_frames(self, max_n: int) -> list[bytes]:
        """Copy up to ``max_n`` frames from our position on and advance it (not the slot).

        Ordinary frames are handled inline; wrap markers and bad headers go through
        ``_locate``. Raises _Overrun, or CorruptFrame if the first frame is corrupt (a
        later one is kept for the next call).
        """
        out: list[bytes] = []
        mm = self._mm
        dq = self._dq
        mask = self._mask
        cap = self._cap
        limit = self._max
        pos = self._pos
        avail = self._avail
        left = max_n
        try:
            while left > 0:
                if pos >= avail:
                    # Observe, as in poll().
                    avail = self._avail = self._hq[LANE_WRITE_Q]
                    if pos >= avail:
                        break
                off = pos & mask
                n = dq[off >> 3]
                end = pos + ((n + 15) & -8)
                if n > limit or end > avail or off + 8 + n > cap:
                    found = self._locate(pos)  # a wrap marker, or a bad header
                    if found is None:
                        break
                    pos, n, end = found
                    off = pos & mask
                    avail = self._avail
                fb = end - pos
                # A run of equal frames? The second header says so before we pay for more.
                if (
                    left >= READER_RUN_MIN_FRAMES
                    and dq[((off + fb) & mask) >> 3] == n
                    and (k := min(left, (avail - pos) // fb, (cap - off) // fb))
                    >= READER_RUN_MIN_FRAMES
                ):
                    got = self._read_run(off, n, fb, k)
                    out += got
                    pos += len(got) * fb
                    left -= len(got)
                else:
                    start = LANE_DATA_OFF + 8 + off
                    out.append(mm[start : start + n])
                    pos = end
                    left -= 1
        except CorruptFrame as exc:
            if not out:
                raise
            # Deliver the good frames now; the skipped, counted corrupt one is raised next.
            self._pending_error = exc
            return out  # _corrupt moved our position past the bad frame
        self._pos = pos
        return out

    def _read_run(self, off: int, n: int, fb: int, k: int) -> list[bytes]:
        """Payloads of the run of frames of ``n`` bytes at ring offset ``off``: up to
        ``k`` of them (all published, none past the ring's end), as long as each header
        says ``n``. The headers are compared in one strided numpy view, the payloads
        copied out with one struct unpack per power of two."""
        k = min(k, READER_RUN_MAX_FRAMES)
        words = fb >> 3
        same = self._ring64[off >> 3 : (off >> 3) + k * words : words] == n
        if not same.all():
            k = int(same.argmin())  # the first frame that differs
        out: list[bytes] = []
        at = LANE_DATA_OFF + off
        while k:
            p = 1 << (k.bit_length() - 1)
            out += _run_struct(n, p).unpack_from(self._mm, at)
            at += p * fb
            k -= p
        return out

    def poll_view(self) -> memoryview | None:
        """The next message as a zero-copy, read-only view, or None.

        The view stays valid until the next read on this reader (poll, poll_many,
        poll_view) or ``release()``: until then our slot points before the frame, so a
        writer that gates on us cannot reuse its bytes. Keep it longer and the bytes may
        change under you; copy what you keep. Not offered on lossy lanes, where the writer
        never waits (ValueError). Raises CorruptFrame.
        """
        if self._lossy:
            raise ValueError("zero-copy views are not offered on lossy lanes")
        self._raise_pending()
        self.release()
        for _ in range(OVERRUN_RETRIES):
            try:
                found = self._locate(self._pos)
                if found is None:
                    return None
                pos, n, end = found
                self._check_intact(self._pos)  # from where this read began: a wrap marker too
            except _Overrun:
                self._skip_to_tail()
                continue
            # The slot keeps pointing at this frame's start until release().
            self._pos = end
            self._count += 1
            self._held = True
            start = LANE_DATA_OFF + (pos & self._mask) + 8
            return self.seg.buf[start : start + n]
        return None

    def release(self) -> None:
        """Give a held zero-copy view's bytes back to the writer (any later read does too)."""
        if self._held:
            self._held = False
            self._sq[self._cnt_i] = self._count
            self._sq[self._cur_i] = self._pos

    # -- slow-path helpers ----------------------------------------------------------------
    def _locate(self, pos: int) -> tuple[int, int, int] | None:
        """The frame at ``pos`` as (position, length, end), following a wrap marker; None
        if nothing is published there yet. Raises _Overrun if the writer lapped our read
        (which began at our position), or CorruptFrame (after skipping) on a bad header."""
        avail = self._avail
        if pos >= avail:
            avail = self._avail = self._hq[LANE_WRITE_Q]  # observe, as in poll()
            if pos >= avail:
                return None
        mask = self._mask
        n = self._dq[(pos & mask) >> 3]
        if n == WRAP_MARKER:
            if (pos | mask) + 1 + FRAME_HEADER_BYTES > avail:
                self._bad(f"wrap marker at {pos} with no frame published after it")
            pos = (pos | mask) + 1
            n = self._dq[0]
        if n > self._max:
            self._bad(f"frame length {n} at {pos} exceeds max_message {self._max}")
        end = pos + ((n + 15) & -8)
        if end > avail or (pos & mask) + 8 + n > self._cap:
            self._bad(f"frame of {n} bytes at {pos} runs past the published cursor {avail}")
        return pos, n, end

    def _check_intact(self, pos: int) -> None:
        """Raise _Overrun if the writer may have written over bytes at or after ``pos``.

        Called after the copy: the reservation load follows the payload loads (Load/Load)
        and the writer stores the reservation before writing below it (Store/Store).
        """
        if pos + self._cap < self._hq[LANE_RESERVED_Q]:
            raise _Overrun

    def _bad(self, why: str) -> None:
        """A header failed its checks: an overrun if the writer lapped the bytes read since
        our position (a chain of overwritten headers can lead anywhere), else corrupt."""
        self._check_intact(self._pos)
        self._corrupt(why)

    def _skip_to_tail(self) -> None:
        """After an overrun: jump to the oldest intact frame and count what we skipped."""
        tail, tail_count, _, _ = _read_tail_record(self.seg)
        if tail <= self._pos or tail > self._hq[LANE_WRITE_Q]:
            self._corrupt(f"impossible tail {tail} for a reader at {self._pos}")
        lost = max(0, tail_count - self._count)
        self.state.add_lost(lost)
        self._pos = self._avail = tail
        self._count = tail_count = self._count + lost
        sq = self._sq
        sq[self.slot + SLOT_START_Q] += lost  # received() counts delivered messages only
        sq[self._cnt_i] = tail_count
        sq[self._cur_i] = tail

    def _corrupt(self, why: str) -> None:
        """Skip everything published so far, count it, and raise CorruptFrame."""
        skipped = self._pos
        avail = max(skipped, _aligned_cursor(self._hq[LANE_WRITE_Q]))  # never go back
        self.state.add_corrupt()
        self._pos = self._avail = avail
        # Best effort: the lane's count is at least the count at `avail` (stored first),
        # and at most avail / 8 (a frame takes at least 8 bytes).
        self._count = max(self._count, min(self._hq[LANE_COUNT_Q], avail >> 3))
        self._sq[self._cnt_i] = self._count
        self._sq[self._cur_i] = avail
        raise CorruptFrame(
            f"lane {self.seg.name}: {why}; skipped {avail - skipped} bytes to position {avail}"
        )

    def _raise_pending(self) -> None:
        if self._pending_error is not None:
            exc, self._pending_error = self._pending_error, None
            raise exc

    # -- state --------------------------------------------------------------------------
    @property
    def position(self) -> int:
        return self._pos

    @property
    def count(self) -> int:
        return self._count

    def backlog(self) -> int:
        """Messages published on this lane that this reader has not read yet."""
        return max(0, self._hq[LANE_COUNT_Q] - self._count)

    def drained(self) -> bool:
        """True when we have read everything published so far (with ``closed``: for good)."""
        return self._pos >= self._hq[LANE_WRITE_Q]

    @property
    def closed(self) -> bool:
        return bool(self._hq[LANE_CLOSED_Q])

    def close(self, *, release_slot: bool = True) -> None:
        """Unmap the lane; by default also give the slot back (the writer stops gating)."""
        if release_slot:
            self.state.release_slot(self.slot)
        self._dq.release()
        del self._ring64  # a numpy view pins the mapping until dropped
        self.seg.close()
