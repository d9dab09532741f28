"""Fixed-size records read as one numpy array: ``poll_records`` for ``recv_array``.

Each stretch of equal frames up to the ring's end is checked (one strided header
compare) and copied (one strided copy) into one output array sized from the published
bytes, chunk by chunk, so the copy finds in the cache the lines the compare brought in;
overruns and corrupt frames are handled as in ``poll_many``. A mixin of ``LaneReader``,
at no cost per call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mycelium.errors import CorruptFrame
from mycelium.shm.layout import FRAME_HEADER_BYTES
from mycelium.shm.reader_checks import OVERRUN_RETRIES, ReaderChecks, _Overrun

__all__ = ["RECORDS_CHUNK_FRAMES", "RecordReads"]

#: Frames checked and copied per chunk: a chunk's lines stay in the cache between the
#: header check and the payload copy (2,048 frames of 88 bytes: 176 KiB).
RECORDS_CHUNK_FRAMES = 2048


class RecordReads(ReaderChecks):
    """``LaneReader``'s array reads."""

    if not TYPE_CHECKING:  # no __dict__; hidden from mypy, which would check our
        __slots__ = ()  # assignments against () instead of LaneReader's own slots

    _mask: int
    _ring64: np.ndarray

    def poll_records(self, n: int, max_n: int) -> np.ndarray | None:
        """Up to ``max_n`` messages of exactly ``n`` bytes as a (k, n) uint8 array, with one
        cursor store; None if none is waiting. Vectorised: each stretch of equal frames up
        to the ring's end is strided header checks and strided copies, chunk by chunk.

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
            out: np.ndarray | None = None
            got = 0
            pos = first
            try:
                while True:
                    found = self._locate(pos)
                    if found is None or found[1] != n:
                        break
                    fpos, _, fend = found
                    off, fb = fpos & mask, fend - fpos
                    if out is None:  # no more frames of fb bytes than the published bytes hold
                        out = np.empty((min(max_n, (self._avail - fpos) // fb), n), np.uint8)
                    k = min(len(out) - got, (self._avail - fpos) // fb, (cap - off) // fb)
                    done = _copy_records(self._ring64, ring8, off, fb, n, k, out[got:])
                    got += done
                    pos = fpos + done * fb
                    if done < k or got >= len(out):
                        break  # a frame of another size, or max_n
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
            if out is None:
                return np.empty((0, n), np.uint8)
            # Sized for the published bytes: a short read keeps a copy, not the whole block.
            return out[:got] if 2 * got >= len(out) else out[:got].copy()
        return None

    def next_size(self) -> int:
        """The payload size of the next published message (-1 if none): for errors."""
        found = self._locate(self._pos)
        return -1 if found is None else found[1]


def _copy_records(
    ring64: np.ndarray, ring8: np.ndarray, off: int, fb: int, n: int, k: int, out: np.ndarray
) -> int:
    """Copy the payloads of up to ``k`` frames of ``fb`` bytes at ring offset ``off`` into
    ``out`` as long as each header says ``n``; returns how many. Chunk by chunk, so the
    payload copy finds the lines the header check just brought into the cache."""
    words = fb >> 3
    done = 0
    while done < k:
        j = min(RECORDS_CHUNK_FRAMES, k - done)
        at = off + done * fb
        same = ring64[at >> 3 : (at >> 3) + j * words : words] == n
        if not same.all():
            j = int(same.argmin())  # the first frame of another size
            k = done + j
        rows = ring8[at : at + j * fb].reshape(j, fb)
        out[done : done + j] = rows[:, FRAME_HEADER_BYTES : FRAME_HEADER_BYTES + n]
        done += j
    return done
