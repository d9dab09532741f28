"""The reader's distrust: what a ``LaneReader`` does when the lane's memory cannot be taken
at its word.

The hot paths (``poll``, ``_copy_frames``) check each header inline and call here for
anything unusual: a wrap marker or bad header (``_locate``), an impossible write cursor
(``_observe``: one CorruptFrame, then the lane is skipped until it is sane), a frame the
writer may have overwritten during the copy (``_check_intact`` raises ``_Overrun``; the
caller skips to the tail with ``_skip_to_tail``, counting the loss), and a corrupt header
(``_corrupt``: skip what is published, count it, raise). A mixin of ``LaneReader``: the
methods are found through the class like its own, at no cost per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from mycelium.errors import CorruptFrame
from mycelium.shm.consumer_state import ConsumerState
from mycelium.shm.frames import BadFrame, frame_at
from mycelium.shm.lane_header import cursor_trusted, read_tail_record
from mycelium.shm.layout import LANE_COUNT_Q, LANE_RESERVED_Q, LANE_WRITE_Q, SLOT_START_Q
from mycelium.shm.segment import Segment

__all__ = ["OVERRUN_RETRIES", "ReaderChecks"]

#: A read that keeps being overrun gives up after this many skips and returns nothing.
OVERRUN_RETRIES = 16


class _Overrun(Exception):
    """Internal: the writer overwrote (or may have) what this reader was reading."""


class ReaderChecks:
    """The slow-path checks of ``LaneReader``, which holds the state declared here."""

    if not TYPE_CHECKING:  # no __dict__; hidden from mypy, which would check our
        __slots__ = ()  # assignments against () instead of LaneReader's own slots

    seg: Segment
    state: ConsumerState
    slot: int
    _avail: int
    _cap: int
    _cnt_i: int
    _count: int
    _cur_i: int
    _distrust: bool
    _dq: memoryview
    _hq: memoryview
    _max: int
    _pending_error: CorruptFrame | None
    _pos: int
    _sq: memoryview

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
