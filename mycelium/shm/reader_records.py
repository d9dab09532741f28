"""Fixed-size records read as one numpy array: ``poll_records`` for ``recv_array``.

Each stretch of equal frames up to the ring's end is one strided header check and one
strided copy into a (k, n) block; overruns and corrupt frames are handled as in
``poll_many``. A mixin of ``LaneReader``, at no
cost per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mycelium.errors import CorruptFrame
from mycelium.shm.layout import FRAME_HEADER_BYTES
from mycelium.shm.reader_checks import OVERRUN_RETRIES, ReaderChecks, _Overrun

__all__ = ["RecordReads"]


class RecordReads(ReaderChecks):
    """``LaneReader``'s array reads."""

    if not TYPE_CHECKING:  # no __dict__; hidden from mypy, which would check our
        __slots__ = ()  # assignments against () instead of LaneReader's own slots

    _mask: int
    _ring64: np.ndarray

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
