"""Reads whose bytes the writer must not have back yet: zero-copy views and manual acks.

``poll_view`` hands out the frame's bytes in place and leaves the slot's cursor before
them until ``release()`` (or the next read); ``hold``/``ack`` split the cursor a writer
gates on from the one reads move, so bytes are given back only when the caller says so.
A mixin of ``LaneReader``, at no cost per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mycelium.shm.layout import (
    FRAME_HEADER_BYTES,
    LANE_DATA_OFF,
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

    _held: bool
    _lossy: bool
    _mask: int

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
