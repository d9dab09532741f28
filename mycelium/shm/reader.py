"""The lane's reader: one consumer's cursor over one lane, which trusts nothing it reads.

How this works
--------------
The reader loads the write cursor only when it has consumed everything it saw last time;
checks each header against ``max_message``, the published cursor and the ring's end
before a byte of payload is touched (``frames.py``); copies the frame; then loads the
reservation. A frame more than one ring below the reservation may have been overwritten
during the copy: the copy is dropped, the reader jumps to the tail and adds the messages
it skipped to its ``lost`` counter. A reader the writer gates on is never overrun, so on a
lossless lane this only catches readers the writer did not know about yet; on a lossy
lane (the writer never waits) it is how overruns are detected. A corrupt header raises
``CorruptFrame`` after the reader skipped to the newest published position and counted
it, so the next poll goes on. ``poll_many`` stores its cursor once per batch; a run of
equal-size frames is read by ``runs.py``.

Memory ordering (why plain loads and stores suffice) is argued once, in ``ordering.py``.
"""

from __future__ import annotations

from typing import NoReturn

import numpy as np

from mycelium.errors import CorruptFrame, SegmentError
from mycelium.shm.consumer_state import ConsumerState
from mycelium.shm.frames import BadFrame, frame_at, walk_frames
from mycelium.shm.lane_header import LaneInfo, cursor_trusted, read_producer, read_tail_record
from mycelium.shm.layout import (
    FRAME_HEADER_BYTES,
    FRAME_SEQUENCE_Q,
    FRAME_TIME_Q,
    LANE_CLOSED_Q,
    LANE_COUNT_Q,
    LANE_DATA_OFF,
    LANE_RESERVED_Q,
    LANE_STAMPED_Q,
    LANE_STAMPED_UNTIL_Q,
    LANE_WRITE_Q,
    SLOT_COUNT_Q,
    SLOT_CURSOR_Q,
    SLOT_READ_COUNT_Q,
    SLOT_READ_CURSOR_Q,
    SLOT_START_Q,
)
from mycelium.shm.ordering import full_fence
from mycelium.shm.runs import READER_RUN_MIN_FRAMES, read_run
from mycelium.shm.segment import Segment

__all__ = ["LaneReader"]

#: A read that keeps being overrun gives up after this many skips and returns nothing.
OVERRUN_RETRIES = 16


class _Overrun(Exception):
    """Internal: the writer overwrote (or may have) what this reader was reading."""


class LaneReader:
    """One consumer's reader of one lane; its cursor lives in the consumer's own segment.

    ``start="end"`` reads what is published from now on, ``start="begin"`` everything the
    lane still holds (from its tail); ``slot`` re-adopts a slot this consumer already holds.
    ``poll`` returns a copy; ``poll_view`` a zero-copy view, valid until the next read on
    this reader (see its docstring). Counts are exact: ``count`` is the lane's index of the
    next message, so ``lost`` and ``backlog`` are exact too.
    """

    __slots__ = (
        "_avail",
        "_cap",
        "_cnt_i",
        "_count",
        "_cur_i",
        "_distrust",
        "_dq",
        "_held",
        "_hq",
        "_lossy",
        "_mask",
        "_max",
        "_mm",
        "_pending_error",
        "_pos",
        "_producer",
        "_ring64",
        "_sq",
        "info",
        "lane_uid",
        "seg",
        "slot",
        "state",
    )

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
            tail, tail_count, head, head_count = read_tail_record(seg)
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
        #: The write cursor was impossible (counted once): nothing is read until it is sane.
        self._distrust = False
        self._producer: str | None = None

    def _find_end(self, head: int, head_count: int) -> tuple[int, int]:
        """Store and return the write cursor and its exact message count, counting the
        frames from the head checkpoint (at most a checkpoint step of them)."""
        hq = self._hq
        for _ in range(OVERRUN_RETRIES):
            end = hq[LANE_WRITE_Q]
            if not cursor_trusted(hq, head, end):
                end = head  # join at the head; the first poll counts the bad cursor
            pos, count = head, head_count
            if end - head <= self._cap:
                try:
                    for _, _, stop in walk_frames(self._dq, self._cap, self._max, head, end):
                        pos = stop
                        count += 1
                except BadFrame:
                    pass  # pos stops short of end: the count falls back below
            if head + self._cap >= hq[LANE_RESERVED_Q]:  # the frames held still as we walked
                break
            _, _, head, head_count = read_tail_record(self.seg)
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
            avail = self._avail = self._hq[LANE_WRITE_Q]
            if pos >= avail or avail & 7 or self._distrust:
                if pos == avail and not self._distrust:
                    return None
                return self._poll_slow()  # behind us, misaligned, or after a bad cursor
        off = pos & self._mask
        n = self._dq[off >> 3]
        end = pos + ((n + 31) & -8)  # frame_bytes(n), inlined: a call costs a few percent here
        if n > self._max or end > self._avail or off + 24 + n > self._cap:
            return self._poll_slow()
        start = LANE_DATA_OFF + off + 24
        data = self._mm[start : start + n]
        # Validate: the reservation load follows the copy (Load/Load); if the writer may
        # have written over the frame, or the cursor is past what it reserved (impossible),
        # take the slow path that skips and counts.
        reserved = self._hq[LANE_RESERVED_Q]
        if pos + self._cap < reserved or self._avail > reserved:
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
        self._avail = self._pos  # re-load and check the cursor poll() may have trusted
        got = self._read_frame()
        return None if got is None else got[0]

    def poll_envelope(self) -> tuple[bytes, int, int] | None:
        """The next message as (payload, sequence, published_ns), as its writer stored
        them (the same for every reader of the frame), or None. Raises CorruptFrame."""
        self._raise_pending()
        return self._read_frame()

    def _read_frame(self) -> tuple[bytes, int, int] | None:
        """Read the next frame through every check: wrap markers, overruns (skip to the
        tail, count the loss, retry) and corrupt headers (raise)."""
        for _ in range(OVERRUN_RETRIES):
            try:
                found = self._locate(self._pos)
                if found is None:
                    return None
                pos, n, end = found
                i = (pos & self._mask) >> 3
                start = LANE_DATA_OFF + (i << 3) + FRAME_HEADER_BYTES
                data = self._mm[start : start + n]
                seq, ns = self._dq[i + FRAME_SEQUENCE_Q], self._dq[i + FRAME_TIME_Q]
                # After the cursor load (Load/Load): is the time word this frame's own?
                since, until = self._hq[LANE_STAMPED_Q], self._hq[LANE_STAMPED_UNTIL_Q]
                if not since or pos < since - 1 or (until and pos >= until - 1):
                    ns = 0  # written while the topic stored no times: the word is stale
                self._check_intact(self._pos)  # from where this read began: a wrap marker too
            except _Overrun:
                self._skip_to_tail()
                continue
            self._pos = end
            self._count = count = self._count + 1
            self._sq[self._cnt_i] = count
            self._sq[self._cur_i] = end
            return data, seq, ns
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
                    avail = self._observe(pos)
                    if pos >= avail:
                        break
                off = pos & mask
                n = dq[off >> 3]
                end = pos + ((n + 31) & -8)  # frame_bytes(n), inlined as in poll()
                if n > limit or end > avail or off + 24 + n > cap:
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
                    got = read_run(self._ring64, mm, off, n, k)
                    out += got
                    pos += len(got) * fb
                    left -= len(got)
                else:
                    start = LANE_DATA_OFF + 24 + off
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

    def poll_records(self, n: int, max_n: int) -> np.ndarray | None:
        """Up to ``max_n`` messages of exactly ``n`` bytes as a (k, n) uint8 array, with one
        cursor store; None if none is waiting. Vectorised: each stretch of equal frames up
        to the ring's end is one strided header check and one strided copy.

        Stops before the first message of another size; if that is the first one, returns
        an empty array and consumes nothing (the caller raises). Overruns and corrupt
        frames are handled as in ``poll_many``.
        """
        if max_n <= 0:
            raise ValueError(f"max_n must be positive, not {max_n}")
        self._raise_pending()
        ring8 = self._ring64.view(np.uint8)
        mask, cap = self._mask, self._cap
        for _ in range(OVERRUN_RETRIES):
            first, count = self._pos, self._count
            parts: list[np.ndarray] = []
            got = 0
            pos = first
            try:
                while got < max_n:
                    found = self._locate(pos)
                    if found is None or found[1] != n:
                        break
                    fpos, _, fend = found
                    off, fb = fpos & mask, fend - fpos
                    k = min(max_n - got, (self._avail - fpos) // fb, (cap - off) // fb)
                    same = self._ring64[off >> 3 : (off >> 3) + k * (fb >> 3) : fb >> 3] == n
                    if not same.all():
                        k = int(same.argmin())  # the first frame of another size
                    rows = ring8[off : off + k * fb].reshape(k, fb)
                    parts.append(rows[:, FRAME_HEADER_BYTES : FRAME_HEADER_BYTES + n].copy())
                    got += k
                    pos = fpos + k * fb
                self._check_intact(first)
            except _Overrun:
                self._pos, self._count = first, count
                self._skip_to_tail()
                continue
            except CorruptFrame as exc:
                if not got:
                    raise
                self._pending_error = exc  # deliver the good records first, as poll_many
                pos = self._pos  # _corrupt moved it past the bad frame
            if got == 0 and found is None:
                return None
            self._pos = pos
            self._count = count = max(self._count, count + got)
            if got:
                self._sq[self._cnt_i] = count
                self._sq[self._cur_i] = pos
            if len(parts) == 1:
                return parts[0]
            return np.concatenate(parts) if parts else np.empty((0, n), np.uint8)
        return None

    def next_size(self) -> int:
        """The payload size of the next published message (-1 if none): for errors."""
        found = self._locate(self._pos)
        return -1 if found is None else found[1]

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
            start = LANE_DATA_OFF + (pos & self._mask) + FRAME_HEADER_BYTES
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
        if pos >= avail or self._distrust:
            avail = self._observe(pos)
            if pos >= avail:
                return None
        try:
            return frame_at(self._dq, self._cap, self._max, pos, avail)
        except BadFrame as exc:
            self._bad(str(exc))

    def _observe(self, pos: int) -> int:
        """Load the write cursor for a reader at ``pos`` and return it if the lane's geometry
        can produce it (``cursor_trusted``); else return ``pos`` (nothing to read), having
        raised CorruptFrame and counted it the first time, so a bad cursor is one error and
        the lane is skipped until its writer publishes a sane one again."""
        # Observe, as in poll(); cursor_trusted loads the reservation after it (Load/Load).
        avail = self._hq[LANE_WRITE_Q]
        if cursor_trusted(self._hq, pos, avail):
            self._distrust = False
            self._avail = avail
            return avail
        self._avail = pos
        if self._distrust:
            return pos
        self._distrust = True
        self._pos = pos  # the frames before pos were read (poll_many delivers them first)
        self.state.add_corrupt()
        raise CorruptFrame(
            f"lane {self.seg.name}: impossible write cursor {avail} for a reader at {pos}"
            " (misaligned, behind it, or past the writer's reservation); lane skipped until"
            " its writer publishes a sane cursor"
        )

    def _check_intact(self, pos: int) -> None:
        """Raise _Overrun if the writer may have written over bytes at or after ``pos``.

        Called after the copy: the reservation load follows the payload loads (Load/Load)
        and the writer stores the reservation before writing below it (Store/Store).
        """
        if pos + self._cap < self._hq[LANE_RESERVED_Q]:
            raise _Overrun

    def _bad(self, why: str) -> NoReturn:
        """A header failed its checks: an overrun if the writer lapped the bytes read since
        our position (a chain of overwritten headers can lead anywhere), else corrupt."""
        self._check_intact(self._pos)
        self._corrupt(why)

    def _skip_to_tail(self) -> None:
        """After an overrun: jump to the oldest intact frame and count what we skipped."""
        tail, tail_count, _, _ = read_tail_record(self.seg)
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

    def _corrupt(self, why: str) -> NoReturn:
        """Skip everything published so far, count it, and raise CorruptFrame."""
        skipped = self._pos
        cursor = self._hq[LANE_WRITE_Q]
        avail = cursor if cursor_trusted(self._hq, skipped, cursor) else skipped  # never back
        self.state.add_corrupt()
        self._pos = self._avail = avail
        # Best effort: the lane's count is at least the count at `avail` (stored first),
        # and at most avail / 8 (a frame takes at least 8 bytes).
        before = self._count
        self._count = max(before, min(self._hq[LANE_COUNT_Q], avail >> 3))
        if self._count > before:  # the frames skipped were published, never delivered
            self.state.add_lost(self._count - before)
            self._sq[self.slot + SLOT_START_Q] += self._count - before
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
        cursor = self._hq[LANE_WRITE_Q]
        return self._pos >= cursor or not cursor_trusted(self._hq, self._pos, cursor)

    @property
    def producer(self) -> str:
        """The identity the lane's writer recorded ("name/id"); "" until it has."""
        if self._producer is None:
            self._producer = read_producer(self.seg)
        return self._producer or ""

    @property
    def closed(self) -> bool:
        return bool(self._hq[LANE_CLOSED_Q])

    def hold(self) -> None:
        """Manual acknowledgement: from now on reads move the slot's read words only; the
        cursor writers gate on (and an heir resumes from) moves with ``ack``."""
        sq = self._sq
        sq[self.slot + SLOT_READ_COUNT_Q] = sq[self._cnt_i]
        sq[self.slot + SLOT_READ_CURSOR_Q] = sq[self._cur_i]
        self._cur_i = self.slot + SLOT_READ_CURSOR_Q
        self._cnt_i = self.slot + SLOT_READ_COUNT_Q

    def ack(self) -> None:
        """Acknowledge what was read (a held zero-copy view stays unacknowledged): count
        first, then the cursor that releases the bytes to the writer."""
        sq = self._sq
        base = self.slot
        sq[base + SLOT_COUNT_Q] = sq[base + SLOT_READ_COUNT_Q]
        sq[base + SLOT_CURSOR_Q] = sq[base + SLOT_READ_CURSOR_Q]

    def close(self, *, release_slot: bool = True) -> None:
        """Unmap the lane; by default also give the slot back (the writer stops gating)."""
        if release_slot:
            self.state.release_slot(self.slot)
        self._dq.release()
        del self._ring64  # a numpy view pins the mapping until dropped
        self.seg.close()
