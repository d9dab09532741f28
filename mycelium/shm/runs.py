"""Runs: equal-size frames written and read in bulk with numpy and one struct per run.

How this works
--------------
A batch of equal-size messages is a run: its frames sit at a fixed stride, so the writer
stores all payloads with one strided numpy copy and all headers with another, and the
reader checks all headers with one strided comparison and copies the payloads out with
one ``struct`` unpack per power of two (formats cached by size and count).
"""

from __future__ import annotations

import mmap
import struct

import numpy as np

from mycelium.shm.layout import (
    FRAME_HEADER_BYTES,
    FRAME_SEQUENCE_Q,
    FRAME_TIME_Q,
    LANE_DATA_OFF,
    frame_bytes,
)

__all__ = [
    "READER_RUN_MAX_FRAMES",
    "READER_RUN_MIN_FRAMES",
    "WRITER_RUN_MIN_ITEMS",
    "read_run",
    "write_run",
]

#: publish_many copies a run of at least this many equal-size items with numpy.
WRITER_RUN_MIN_ITEMS = 16
#: poll_many reads a run of equal-size frames vectorised when at least this many could be.
READER_RUN_MIN_FRAMES = 4
#: Longest run read in one go (bounds the cached formats' size).
READER_RUN_MAX_FRAMES = 1024
#: Cached run formats kept before the cache is cleared.
RUN_STRUCT_CACHE_SIZE = 256

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


def write_run(
    u8: np.ndarray, u64: np.ndarray, off: int, rows: np.ndarray, count: int, ns: int
) -> None:
    """Write the rows of ``rows`` (j x n bytes) as j consecutive frames at ring offset
    ``off`` (the caller checked they fit before the ring's end and its limit), numbered
    from ``count + 1`` and stamped ``ns`` (0: not stamped, the word left as it was, as
    ``publish`` does). Each header word is one strided store: a numpy operation costs
    as much as a few messages of a batch."""
    j, n = rows.shape
    fb = frame_bytes(n)
    words = fb >> 3
    u8[off : off + j * fb].reshape(j, fb)[:, FRAME_HEADER_BYTES : FRAME_HEADER_BYTES + n] = rows
    at = off >> 3
    stop = at + j * words
    u64[at:stop:words] = n
    u64[at + FRAME_SEQUENCE_Q : stop : words] = np.arange(count + 1, count + 1 + j, dtype=np.uint64)
    if ns:
        u64[at + FRAME_TIME_Q : stop : words] = ns


def read_run(ring64: np.ndarray, mm: mmap.mmap, off: int, n: int, k: int) -> list[bytes]:
    """Payloads of the run of frames of ``n`` bytes at ring offset ``off``: up to ``k`` of
    them (all published, none past the ring's end), as long as each header says ``n``."""
    k = min(k, READER_RUN_MAX_FRAMES)
    fb = frame_bytes(n)
    words = fb >> 3
    same = ring64[off >> 3 : (off >> 3) + k * words : words] == n
    if not same.all():
        k = int(same.argmin())  # the first frame that differs
    out: list[bytes] = []
    at = LANE_DATA_OFF + off
    while k:
        p = 1 << (k.bit_length() - 1)
        out += _run_struct(n, p).unpack_from(mm, at)
        at += p * fb
        k -= p
    return out
