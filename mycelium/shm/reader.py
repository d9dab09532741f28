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
equal-size frames is read by ``runs.py``. The checks behind the slow paths (overruns,
impossible cursors, corrupt headers) are ``reader_checks.py``; zero-copy views and manual
acks ``reader_views.py``; fixed-size records as an array ``reader_records.py``: mixins,
found through the class like its own methods, at no cost per call.

Memory ordering (why plain loads and stores suffice) is argued once, in ``ordering.py``.
"""

from __future__ import annotations

import numpy as np

from mycelium.errors import CorruptFrame, SegmentError
from mycelium.shm.consumer_state import ConsumerState
from mycelium.shm.frames import BadFrame, walk_frames
from mycelium.shm.lane_header import LaneInfo, cursor_trusted, read_producer, read_tail_record
from mycelium.shm.layout import (
    FRAME_HEADER_BYTES,
    FRAME_PAYLOAD_OFF,
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
    SLOT_START_Q,
)
from mycelium.shm.ordering import full_fence
from mycelium.shm.reader_checks import OVERRUN_RETRIES, _Overrun
from mycelium.shm.reader_records import RecordReads
from mycelium.shm.reader_views import ZeroCopyViews
from mycelium.shm.runs import READER_RUN_MIN_FRAMES, read_run
from mycelium.shm.segment import Segment

__all__ = ["LaneReader"]


class LaneReader(RecordReads, ZeroCopyViews):
    """One consumer's reader of one lane; its cursor lives in the consumer's own segment.

    ``start="end"`` reads what is published from now on, ``start="begin"`` everything the
    lane still holds (from its tail); ``slot`` re-adopts a slot this consumer already holds.
    ``poll`` returns a copy; ``poll_view`` a zero-copy view, valid until the next read on
    this reader (see its docstring). Counts are exact: ``count`` is the lane's index of the
    next message, so ``lost`` and ``backlog`` are exact too.
    """

    __slots__ = (
        "_avail",
        "_buf",
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
        "_room",
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
        self._buf = seg.buf  # zero-copy views are slices of it
        self._hq = seg.q
        self._cap = info.capacity
        self._mask = info.capacity - 1
        self._max = info.max_message
        self._room = info.capacity - FRAME_HEADER_BYTES  # a payload ends at or below it
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
            if pos >= avail or self._distrust:
                if pos == avail and not self._distrust:
                    return None
                return self._poll_slow()  # behind us, or after a bad cursor
        off = pos & self._mask
        n = self._dq[off >> 3]
        end = pos + ((n + 31) & -8)  # frame_bytes(n), inlined: a call costs a few percent here
        # A misaligned cursor fails here too: no frame can end on it.
        if n > self._max or end > self._avail or off + n > self._room:
            return self._poll_slow()
        start = off + FRAME_PAYLOAD_OFF
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

    def close(self, *, release_slot: bool = True) -> None:
        """Unmap the lane; by default also give the slot back (the writer stops gating)."""
        if release_slot:
            self.state.release_slot(self.slot)
        self._dq.release()
        del self._ring64  # a numpy view pins the mapping until dropped
        self.seg.close()
