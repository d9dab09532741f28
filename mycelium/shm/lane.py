"""The lane: a single-writer ring of variable-size frames in one shared-memory segment.

How this works
--------------
Positions are 64-bit byte sequences that only grow; a position's place in the ring is
``pos & mask`` (the capacity is a power of two). A frame is an 8-byte header holding the
payload length, then the payload padded to 8 bytes, so every header is an aligned word.
A frame never straddles the end of the ring: when it would, the writer stores
``WRAP_MARKER`` in the next header and starts the frame at offset 0.

Writer (``LaneWriter``, the lane's only writer): write header and payload, then store the
write cursor (``publish``); ``publish_many`` stores it once per batch. Before writing
past its cached *limit* (the end of the current lap, or the slowest gate plus capacity)
it takes the slow path: rescan the gating readers' cursors (in their consumer segments,
mapped read-only), wait for space with a bounded spin/yield/sleep, and raise
``BackpressureTimeout`` having written nothing if the space does not come. A *lossy*
lane never waits: it moves its tail (a seqlock-published "oldest intact frame") past the
frames it is about to overwrite, and readers that fall behind jump to the tail and count
what they lost.

Reader (``LaneReader``): load the write cursor only when it has consumed everything it
saw last time, read frames below it, and store its own cursor (and message count) in its
slot after each message, or once per batch in ``poll_many``. Every header is checked
against the lane's ``max_message``, the published cursor and the ring's end before a byte
of payload is touched: a corrupt frame raises ``CorruptFrame`` after the reader has
skipped to the newest published position and counted it, so the next poll goes on.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from mycelium.errors import BackpressureTimeout, CorruptFrame, MessageTooLarge, SegmentError
from mycelium.shm.consumer_state import ConsumerState, ConsumerStateView
from mycelium.shm.layout import (
    CONSUMER_SLEEPING_Q,
    KIND_LANE,
    LANE_CLOSED_Q,
    LANE_COUNT_Q,
    LANE_DATA_OFF,
    LANE_FLAG_LOSSY,
    LANE_STATIC,
    LANE_STATIC_OFF,
    LANE_TAIL_COUNT_Q,
    LANE_TAIL_Q,
    LANE_TAIL_VERSION_Q,
    LANE_WRITE_Q,
    SLOT_COUNT_Q,
    SLOT_CURSOR_Q,
    SLOT_LANE_Q,
    WRAP_MARKER,
    frame_bytes,
    lane_segment_bytes,
)
from mycelium.shm.segment import DEFAULT_SEGMENT_MODE, Segment

__all__ = ["LaneInfo", "LaneReader", "LaneWriter", "create_lane_segment", "read_lane_info"]

#: Backpressure wait: rescans with no pause, then sched_yield, then sleeps doubling up to max.
WRITER_SPINS = 200
WRITER_YIELDS = 50
WRITER_SLEEP_MIN_S = 20e-6
WRITER_SLEEP_MAX_S = 1e-3
#: How often a waiting writer re-checks that the readers holding it back are still alive.
WRITER_LIVENESS_EVERY_S = 0.1
#: A reader re-reads a seqlocked tail at most this many times before treating it as moving.
TAIL_READ_TRIES = 64


class LaneInfo:
    """The static facts of a lane, read from its segment."""

    __slots__ = ("capacity", "lane_uid", "lossy", "max_message", "writer_pid")

    def __init__(self, seg: Segment) -> None:
        cap, max_msg, uid, pid, flags, data_off = LANE_STATIC.unpack_from(seg.mm, LANE_STATIC_OFF)
        if cap & (cap - 1) or cap < 4 * frame_bytes(max_msg) or data_off != LANE_DATA_OFF:
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

    ``capacity`` must be a power of two holding at least four frames of ``max_message``,
    so a maximum-size frame always fits whatever the wrap position.
    """
    if capacity & (capacity - 1) or capacity < 4 * frame_bytes(max_message):
        raise ValueError(
            f"lane capacity {capacity} must be a power of two >= 4 frames of {max_message} bytes"
        )
    if lane_uid <= 0:
        raise ValueError("lane_uid must be positive (0 marks a free consumer slot)")
    seg = Segment.create(name, lane_segment_bytes(capacity), KIND_LANE, mode)
    flags = LANE_FLAG_LOSSY if lossy else 0
    LANE_STATIC.pack_into(
        seg.mm, LANE_STATIC_OFF, capacity, max_message, lane_uid, writer_pid, flags, LANE_DATA_OFF
    )
    return seg


class _Gate:
    """One reader a writer must not overrun: its consumer state and the slot for our lane."""

    __slots__ = ("base", "floor", "view")

    def __init__(self, view: ConsumerStateView, floor: int) -> None:
        self.view = view
        self.base: int | None = None
        #: Until the reader claims its slot we gate at the position where we first saw it.
        self.floor = floor


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
        self.backpressure_timeout_s = backpressure_timeout_s
        #: Called while waiting for space, e.g. to pick up topology changes.
        self.on_wait = on_wait
        self._owner = threading.get_ident()
        self._mm = seg.mm
        self._hq = seg.q
        self._cap = info.capacity
        self._mask = info.capacity - 1
        self._dq = seg.buf[LANE_DATA_OFF : LANE_DATA_OFF + info.capacity].cast("Q")
        self._lossy = info.lossy
        # Resume where the lane stands (a fresh lane: 0).
        self._pos = self._hq[LANE_WRITE_Q]
        self._count = self._hq[LANE_COUNT_Q]
        self._tail = self._hq[LANE_TAIL_Q]
        self._tail_count = self._hq[LANE_TAIL_COUNT_Q]
        self._gates: list[_Gate] = []
        self._bells: tuple = ()
        self._limit = self._pos  # forces the first publish through the slow path

    # -- readers ------------------------------------------------------------------------
    def set_readers(self, views: Iterable[ConsumerStateView]) -> None:
        """Gate on exactly these consumers (keeping what we know of ones seen before)."""
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
        """The lowest position some live gated reader still needs (our own if none)."""
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
        """Write one frame and publish it. Raises MessageTooLarge or BackpressureTimeout
        (in both cases nothing was written)."""
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
        self._count += 1
        hq = self._hq
        hq[LANE_COUNT_Q] = self._count
        # Publish: payload stores above precede this cursor store (x86-64 Store/Store order);
        # pairs with the reader's load of LANE_WRITE_Q in LaneReader.poll.
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
        max_message = self.max_message
        for item in items:
            if len(item) > max_message:
                raise MessageTooLarge(len(item), max_message)
        dq = self._dq
        mm = self._mm
        mask = self._mask
        pos = self._pos
        count = first = self._count
        try:
            for item in items:
                n = len(item)
                end = pos + ((n + 15) & -8)
                if end > self._limit:
                    self._publish_upto(pos, count)  # readers may need these to free space
                    pos = self._claim(pos, end - pos)
                    end = pos + ((n + 15) & -8)
                off = pos & mask
                dq[off >> 3] = n
                start = LANE_DATA_OFF + off + 8
                mm[start : start + n] = item
                pos = end
                count += 1
        except BackpressureTimeout as exc:
            exc.published = count - first
            raise
        finally:
            self._publish_upto(pos, count)
        return len(items)

    def _publish_upto(self, pos: int, count: int) -> None:
        """Store count and cursor for frames written up to ``pos`` (no-op if nothing new)."""
        if pos == self._pos:
            return
        self._pos = pos
        self._count = count
        hq = self._hq
        hq[LANE_COUNT_Q] = count
        hq[LANE_WRITE_Q] = pos  # publish, as in publish(): payload stores came first
        for q, i, bell in self._bells:
            if q[i]:
                bell.release()

    def close(self, *, final: bool = True) -> None:
        """Mark the lane closed (readers drain it, then forget it) and unmap it."""
        if final:
            self._hq[LANE_CLOSED_Q] = 1
        self._dq.release()
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

    def mark_closed(self) -> None:
        """Set the closed flag but keep the mapping (the producer hands a lane back)."""
        self._hq[LANE_CLOSED_Q] = 1

    @property
    def closed_by_us(self) -> bool:
        return bool(self._hq[LANE_CLOSED_Q])

    # -- slow path ----------------------------------------------------------------------
    def _claim(self, pos: int, fb: int) -> int:
        """Make room for a frame of ``fb`` bytes at ``pos``; returns where it goes.

        Writes the wrap marker if the frame must start at the next lap. Raises
        BackpressureTimeout (nothing written) if gated readers do not free the space.
        """
        cap = self._cap
        off = pos & self._mask
        skip = cap - off if off + fb > cap else 0
        need_end = pos + skip + fb
        if self._lossy:
            self._advance_tail(need_end)
            floor = need_end - cap
        else:
            floor = self._wait_for_space(need_end)
        if skip:
            self._dq[off >> 3] = WRAP_MARKER
            pos += skip
        lap_end = (pos | self._mask) + 1
        if self._lossy:
            self._limit = lap_end
        elif any(g.base is None for g in self._gates):
            # A reader has not claimed its slot yet: rescan on every publish until it
            # does, so its starting cursor is honoured as soon as it appears.
            self._limit = pos
        else:
            self._limit = min(floor + cap, lap_end)
        return pos

    def _wait_for_space(self, need_end: int) -> int:
        """Wait (bounded) until every gated reader is within a ring of ``need_end``."""
        cap = self._cap
        floor = self._floor()
        if need_end <= floor + cap:
            return floor
        if self.backpressure_timeout_s <= 0:  # caller waits its own way (asyncio)
            raise BackpressureTimeout(
                f"lane {self.seg.name}: ring full; nothing written",
                needed=need_end - cap - floor,
            )
        deadline = time.monotonic() + self.backpressure_timeout_s
        next_liveness = time.monotonic() + WRITER_LIVENESS_EVERY_S
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

    def _advance_tail(self, need_end: int) -> None:
        """Lossy lanes: move the tail past every frame the coming write will overwrite."""
        tail = self._tail
        count = self._tail_count
        cap = self._cap
        mask = self._mask
        dq = self._dq
        while tail + cap < need_end and tail < self._pos:
            n = dq[(tail & mask) >> 3]
            if n == WRAP_MARKER:
                tail = (tail | mask) + 1
            else:
                tail += (n + 15) & -8
                count += 1
        if tail + cap < need_end:  # nothing left to keep: everything written is older
            tail = need_end - cap
        if tail != self._tail:
            hq = self._hq
            # Seqlock: odd version while the pair changes; readers retry on odd or changed.
            hq[LANE_TAIL_VERSION_Q] += 1
            hq[LANE_TAIL_COUNT_Q] = count
            hq[LANE_TAIL_Q] = tail
            hq[LANE_TAIL_VERSION_Q] += 1
            self._tail = tail
            self._tail_count = count


class LaneReader:
    """One consumer's reader of one lane; its cursor lives in the consumer's own segment.

    ``poll`` returns a copy. ``poll_view`` returns a zero-copy memoryview that stays valid
    until the next read on this reader (the slot keeps the writer from reusing those
    bytes until then); on a lossy lane views are not offered, as the writer never waits.
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
        self._lossy = info.lossy
        self._sq = state.q
        if slot is None:
            pos, count = self._start_position(start)
            slot = state.claim_slot(self.lane_uid, pos, count)
        else:  # re-adopting our own slot (e.g. after the client re-read the topology)
            pos, count = state.q[slot + SLOT_CURSOR_Q], state.q[slot + SLOT_COUNT_Q]
        self.slot = slot
        self._cur_i = slot + SLOT_CURSOR_Q
        self._cnt_i = slot + SLOT_COUNT_Q
        self._pos = pos
        self._count = count
        self._avail = pos
        self._held = False  # a zero-copy view is out: the slot still points before it
        self._pending_error: CorruptFrame | None = None
        if self._lossy:
            self.poll = self._poll_lossy  # type: ignore[method-assign]

    def _start_position(self, start: str) -> tuple[int, int]:
        """Where a new reader begins: the current end (live data only) or the oldest frame."""
        hq = self._hq
        if start == "end":
            for _ in range(TAIL_READ_TRIES):
                pos, count = hq[LANE_WRITE_Q], hq[LANE_COUNT_Q]
                if hq[LANE_WRITE_Q] == pos:  # count is stored before the cursor
                    return pos, count
            raise SegmentError(f"{self.seg.name}: lane cursor never settled")
        if start == "begin":
            tail, tail_count = self._read_tail()
            return tail, tail_count
        raise ValueError(f"start must be 'end' or 'begin', not {start!r}")

    def _read_tail(self) -> tuple[int, int]:
        hq = self._hq
        for _ in range(TAIL_READ_TRIES):
            v1 = hq[LANE_TAIL_VERSION_Q]
            tail, count = hq[LANE_TAIL_Q], hq[LANE_TAIL_COUNT_Q]
            if not v1 & 1 and hq[LANE_TAIL_VERSION_Q] == v1:
                return tail, count
            os.sched_yield()
        raise SegmentError(f"{self.seg.name}: lane tail never settled")

    # -- reading ----------------------------------------------------------------------
    def poll(self) -> bytes | None:
        """The next message as bytes, or None if there is none yet. Raises CorruptFrame.

        The hot path: its frame checks are those of ``_locate``, inlined.
        """
        pos = self._pos
        if pos >= self._avail:
            # Observe: this cursor load precedes the payload loads below (Load/Load order);
            # pairs with the writer's store of LANE_WRITE_Q.
            self._avail = self._hq[LANE_WRITE_Q]
            if pos >= self._avail:
                self._raise_pending()
                return None
        off = pos & self._mask
        n = self._dq[off >> 3]
        end = pos + ((n + 15) & -8)
        if n > self._max or end > self._avail or off + 8 + n > self._cap:
            found = self._locate()
            if found is None:
                return None
            pos, n, end = found
            off = pos & self._mask
        start = LANE_DATA_OFF + off + 8
        data = self._mm[start : start + n]
        self._pos = end
        self._count += 1
        sq = self._sq
        sq[self._cnt_i] = self._count
        sq[self._cur_i] = end  # release the bytes to the writer only after copying them
        return data

    def _locate(self) -> tuple[int, int, int] | None:
        """The next frame as (position, length, end), following a wrap marker; None if
        nothing is published. Raises CorruptFrame (after skipping) on a bad header."""
        pos = self._pos
        if pos >= self._avail:
            self._avail = self._hq[LANE_WRITE_Q]  # observe, as in poll()
            if pos >= self._avail:
                return None
        n = self._dq[(pos & self._mask) >> 3]
        if n == WRAP_MARKER:
            pos = self._pos = (pos | self._mask) + 1
            if pos > self._avail:
                self._corrupt("wrap marker past the published cursor")
            if pos == self._avail:
                return None
            n = self._dq[0]
        if n > self._max:
            self._corrupt(f"frame length {n} exceeds max_message {self._max}")
        end = pos + ((n + 15) & -8)
        if end > self._avail or (pos & self._mask) + 8 + n > self._cap:
            self._corrupt(f"frame of {n} bytes at {pos} runs past the published cursor")
        return pos, n, end

    def poll_many(self, max_n: int) -> list[bytes]:
        """Up to ``max_n`` messages as bytes, with one cursor store for the batch.

        A corrupt frame after some good ones returns the good ones first; the next call
        raises CorruptFrame.
        """
        if self._lossy:
            out = []
            for _ in range(max_n):
                data = self.poll()
                if data is None:
                    break
                out.append(data)
            return out
        self._raise_pending()
        out = []
        mm = self._mm
        mask = self._mask
        locate = self._locate
        try:
            while len(out) < max_n:
                found = locate()
                if found is None:
                    break
                pos, n, end = found
                start = LANE_DATA_OFF + (pos & mask) + 8
                out.append(mm[start : start + n])
                self._pos = end
        except CorruptFrame as exc:
            if not out:
                raise
            # Deliver the good frames now; the skipped, counted corrupt one is raised next.
            self._pending_error = exc
        if out:
            self._count += len(out)
            sq = self._sq
            sq[self._cnt_i] = self._count
            sq[self._cur_i] = self._pos
        return out

    def _raise_pending(self) -> None:
        if self._pending_error is not None:
            exc, self._pending_error = self._pending_error, None
            raise exc

    def poll_view(self) -> memoryview | None:
        """The next message as a zero-copy view, valid until the next read on this reader."""
        if self._lossy:
            raise ValueError("zero-copy views are not offered on lossy lanes")
        self.release()
        found = self._locate()
        if found is None:
            return None
        pos, n, end = found
        # The slot keeps pointing at this frame's start until release(): the writer
        # cannot reuse these bytes while the view is out.
        self._pos = end
        self._count += 1
        self._held = True
        start = LANE_DATA_OFF + (pos & self._mask) + 8
        return self.seg.buf[start : start + n]

    def release(self) -> None:
        """Give a held zero-copy view's bytes back to the writer (any later read does too)."""
        if self._held:
            self._held = False
            self._sq[self._cnt_i] = self._count
            self._sq[self._cur_i] = self._pos

    def _poll_lossy(self) -> bytes | None:
        """poll() for lossy lanes: validate the copy against the tail, count overruns."""
        tail, tail_count = self._read_tail()
        if self._pos < tail:
            self._skip_to(tail, tail_count)
        data = LaneReader.poll(self)
        if data is None:
            return None
        tail, tail_count = self._read_tail()
        start = self._pos - ((len(data) + 15) & -8)
        if start < tail or (start & self._mask) + 8 + len(data) > self._cap:
            # The writer overwrote the frame while we copied it: drop the copy.
            self._count -= 1
            self._skip_to(tail, tail_count)
            return LaneReader.poll(self)
        return data

    def _skip_to(self, tail: int, tail_count: int) -> None:
        lost = tail_count - self._count
        if lost > 0:
            self.state.add_lost(lost)
        self._pos = tail
        self._count = tail_count
        self._sq[self._cnt_i] = tail_count
        self._sq[self._cur_i] = tail

    def _corrupt(self, why: str) -> None:
        """Skip everything published so far, count it, and raise CorruptFrame."""
        avail = self._hq[LANE_WRITE_Q]
        count = self._hq[LANE_COUNT_Q]
        self.state.add_corrupt()
        skipped = self._pos
        self._pos = self._avail = avail
        self._count = max(self._count, count)
        self._sq[self._cnt_i] = self._count
        self._sq[self._cur_i] = avail
        raise CorruptFrame(
            f"lane {self.seg.name}: {why}; skipped {avail - skipped} bytes to position {avail}"
        )

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
        """True when the writer closed the lane (or died) and we have read all of it."""
        return self._pos >= self._hq[LANE_WRITE_Q]

    @property
    def closed(self) -> bool:
        return bool(self._hq[LANE_CLOSED_Q])

    def close(self, *, release_slot: bool = True) -> None:
        """Unmap the lane; by default also give the slot back (the writer stops gating)."""
        if release_slot:
            self.state.release_slot(self.slot)
        self._dq.release()
        self.seg.close()
