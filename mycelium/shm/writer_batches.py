"""The writer's batches: many frames, one cursor store (``publish_many``, ``publish_array``).

Sizes are checked before a byte is written; items of one size go as a run, one strided
numpy copy per stretch up to the limit (``runs.py``), mixed sizes one frame at a time.
Either way the count and cursor are stored once per batch (``_publish_upto``), and before
each slow-path claim, since readers may need the frames written so far to free space.
A mixin of ``LaneWriter``: found through the class like its own methods, at no cost per
call (``publish``, the per-message path, stays in ``writer.py``).
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mycelium.errors import BackpressureTimeout, MessageTooLarge
from mycelium.shm.frames import frame_bytes
from mycelium.shm.gating import Gating
from mycelium.shm.layout import LANE_COUNT_Q, LANE_DATA_OFF, LANE_WRITE_Q
from mycelium.shm.payload import Payload, payload_bytes
from mycelium.shm.runs import WRITER_RUN_MIN_ITEMS, write_run

__all__ = ["BatchWrites"]

_time_ns = time.time_ns
_ONLY_BYTES = {bytes}


class BatchWrites:
    """``LaneWriter``'s batch and array writes, over the state it declares here."""

    if not TYPE_CHECKING:  # no __dict__; hidden from mypy, which would check our
        __slots__ = ()  # assignments against () instead of LaneWriter's own slots

    max_message: int
    _bells: tuple[tuple[memoryview, int, Any], ...]
    _count: int
    _dq: memoryview
    _dq1: memoryview
    _dq2: memoryview
    _gating: Gating
    _hq: memoryview
    _limit: int
    _mask: int
    _mm: mmap.mmap
    _pos: int
    _scan_in: int
    _stamp: bool
    _u8: np.ndarray
    _u64: np.ndarray

    if TYPE_CHECKING:  # LaneWriter's own

        def _check_thread(self) -> None: ...
        def _claim(self, pos: int, fb: int) -> int: ...

    def publish_many(self, items: Sequence[Payload]) -> int:
        """Write a batch and publish it with one cursor store; returns how many were written.

        Sizes are checked first, so MessageTooLarge means nothing was written. If the ring
        stays full, what was written so far is published and BackpressureTimeout carries
        that count in ``published``. NonContiguousPayload: nothing written.
        """
        self._check_thread()
        k = len(items)
        if not k:
            return 0
        lens = list(map(len, items))
        n = lens[0]
        if lens.count(n) == k and k >= WRITER_RUN_MIN_ITEMS:
            # One join sizes the run in bytes: it refuses a non-contiguous item (TypeError)
            # and is longer than k * n if some item is a typed view of n items.
            try:
                joined = b"".join(items)
            except TypeError:
                joined = b""
            if len(joined) == k * n:
                if n > self.max_message:
                    raise MessageTooLarge(n, self.max_message)
                return self._write_run(np.frombuffer(joined, np.uint8).reshape(k, n))
        if set(map(type, items)) != _ONLY_BYTES:
            items = [payload_bytes(x) for x in items]
            lens = list(map(len, items))
        largest = max(lens)
        if largest > self.max_message:
            raise MessageTooLarge(largest, self.max_message)
        return self._write_each(items)

    def publish_array(self, records: np.ndarray) -> int:
        """Publish each row of a C-contiguous 2-D uint8 array as one message (fixed-size
        records, e.g. a numpy structured batch viewed as bytes); returns the rows written.

        Raises MessageTooLarge (nothing written) or BackpressureTimeout (as publish_many).
        """
        self._check_thread()
        if records.ndim != 2 or records.dtype != np.uint8:
            raise ValueError(f"need a 2-D uint8 array, not {records.ndim}-D {records.dtype}")
        if records.shape[1] > self.max_message:
            raise MessageTooLarge(records.shape[1], self.max_message)
        return self._write_run(records)

    def _write_each(self, items: Sequence[Payload]) -> int:
        """publish_many for items of mixed sizes: one frame at a time, one cursor store."""
        dq, dq1, dq2 = self._dq, self._dq1, self._dq2
        mm = self._mm
        mask = self._mask
        pos = self._pos
        count = first = self._count
        limit = self._limit
        ns = _time_ns() if self._stamp else 0  # one publish time per batch
        try:
            for item in items:
                n = len(item)
                fb = (n + 31) & -8  # frame_bytes(n), inlined as in publish()
                end = pos + fb
                if end > limit:
                    self._publish_upto(pos, count)  # readers may need these to free space
                    pos = self._claim(pos, fb)
                    end = pos + fb
                    limit = self._limit
                off = pos & mask
                count += 1
                i = off >> 3
                dq[i] = n
                dq1[i] = count
                dq2[i] = ns
                start = LANE_DATA_OFF + off + 24
                mm[start : start + n] = item
                pos = end
        except BackpressureTimeout as exc:
            exc.published = count - first
            raise
        finally:
            self._publish_upto(pos, count)
        return len(items)

    def _write_run(self, src: np.ndarray) -> int:
        """Write the rows of ``src`` (k x n bytes) as k frames: each stretch up to the limit
        is one strided numpy copy of payloads and one of headers."""
        k, n = src.shape
        fb = frame_bytes(n)
        pos = self._pos
        count = first = self._count
        done = 0
        ns = _time_ns() if self._stamp else 0  # one publish time per batch
        try:
            while done < k:
                fit = (self._limit - pos) // fb
                if fit <= 0:
                    self._publish_upto(pos, count)
                    pos = self._claim(pos, fb)
                    continue
                j = min(fit, k - done)
                write_run(self._u8, self._u64, pos & self._mask, src[done : done + j], count, ns)
                pos += j * fb
                count += j
                done += j
        except BackpressureTimeout as exc:
            exc.published = count - first
            raise
        finally:
            self._publish_upto(pos, count)
        return int(k)

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
        self._scan_in = self._gating.ring_sleepers()  # a large lane: once per batch
