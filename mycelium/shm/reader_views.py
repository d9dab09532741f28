"""Reads whose bytes the writer must not have back yet: zero-copy views and manual acks.

``poll_view`` hands out the frame's bytes in place and leaves the slot's cursor before
them until ``release()`` (or the next read); ``hold``/``ack`` split the cursor a writer
gates on from the one reads move, so bytes are given back only when the caller says so.
A mixin of ``LaneReader``, at no cost per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mycelium.shm.layout import (
    FRAME_PAYLOAD_OFF,
    LANE_RESERVED_Q,
    LANE_WRITE_Q,
    SLOT_COUNT_Q,
    SLOT_CURSOR_Q,
    SLOT_READ_COUNT_Q,
    SLOT_READ_CURSOR_Q,
)
from mycelium.shm.reader_checks import OVERRUN_RETRIES, ReaderChecks, _Overrun

__all__ = ["ZeroCopyViews"]


class ZeroCopyViews(ReaderChecks):
    """``LaneReader``'s views and holds; ``_held``: a view is out, the slot is before it."""

    if not TYPE_CHECKING:  # no __dict__; hidden from mypy, which would check our
        __slots__ = ()  # assignments against () instead of LaneReader's own slots

    _buf: memoryview
    _held: bool
    _lossy: bool
    _mask: int
    _room: int

    def poll_view(self) -> memoryview | None:
        """The next message as a zero-copy, read-only view, or None.

        The view stays valid until the next read on this reader (poll, poll_many,
        poll_view) or ``release()``: until then our slot points before the frame, so a
        writer that gates on us cannot reuse its bytes. Keep it longer and the bytes may
        change under you; copy what you keep. Not offered on lossy lanes, where the writer
        never waits (ValueError). Raises CorruptFrame.

        The hot path: ``poll``'s inline checks of an ordinary frame, minus the copy.
        """
        if self._held:  # release(), inlined
            self._held = False
            self._sq[self._cnt_i] = self._count
            self._sq[self._cur_i] = self._pos
        pos = self._pos
        if self._lossy:
            raise ValueError("zero-copy views are not offered on lossy lanes")
        if pos >= self._avail:
            if self._pending_error is not None:
                self._raise_pending()
            # Observe, as in poll(): this load precedes the header load (Load/Load).
            avail = self._avail = self._hq[LANE_WRITE_Q]
            if pos >= avail or self._distrust:
                if pos == avail and not self._distrust:
                    return None
                return self._view_slow()
        off = pos & self._mask
        n = self._dq[off >> 3]
        end = pos + ((n + 31) & -8)  # frame_bytes(n), inlined as in poll()
        # The reservation load follows the header load (Load/Load): a frame the writer
        # may have lapped already, or a cursor past its reservation, takes the slow path.
        reserved = self._hq[LANE_RESERVED_Q]
        if (
            n > self._max
            or end > self._avail
            or off + n > self._room
            or pos + self._cap < reserved
            or self._avail > reserved
        ):
            return self._view_slow()
        # The slot keeps pointing at this frame's start until release().
        self._pos = end
        self._count += 1
        self._held = True
        start = off + FRAME_PAYLOAD_OFF
        return self._buf[start : start + n]

    def _view_slow(self) -> memoryview | None:
        """poll_view() for everything but an ordinary intact frame: wrap markers, overruns
        (skip to the tail, count the loss, retry) and corrupt headers (raise)."""
        self._avail = self._pos  # re-load and check the cursor the hot path may have trusted
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
            self._pos = end
            self._count += 1
            self._held = True
            start = (pos & self._mask) + FRAME_PAYLOAD_OFF
            return self._buf[start : start + n]
        return None

    def release(self) -> None:
        """Give a held zero-copy view's bytes back to the writer (any later read does too)."""
        if self._held:
            self._held = False
            self._sq[self._cnt_i] = self._count
            self._sq[self._cur_i] = self._pos

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
