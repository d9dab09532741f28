"""Reading a lane's own frames back, for the producer that wrote them.

How this works
--------------
When a queue consumer dies (or leaves) with messages still unread in its lane, the lane's
producer (its only writer, so the bytes cannot change under it) walks the frames from the
consumer's last stored cursor up to its own write cursor and hands them to the rest of
the group. Every header is bounds-checked as a reader would, so even a damaged lane
yields only whole frames and a clear error.
"""

from __future__ import annotations

from mycelium.errors import CorruptFrame
from mycelium.shm.lane import LaneInfo
from mycelium.shm.layout import LANE_DATA_OFF, LANE_WRITE_Q, WRAP_MARKER
from mycelium.shm.segment import Segment

__all__ = ["unread_frames"]


def unread_frames(seg: Segment, start: int) -> list[bytes]:
    """Copies of the frames from position ``start`` up to the lane's write cursor.

    Raises CorruptFrame if a header is out of bounds (the frames before it are lost to
    this call; the caller logs and counts it).
    """
    info = LaneInfo(seg)
    cap = info.capacity
    mask = cap - 1
    end = seg.q[LANE_WRITE_Q]
    if end - start > cap:
        raise CorruptFrame(f"{seg.name}: cursor {start} is more than a ring behind {end}")
    mm = seg.mm
    out = []
    pos = start
    while pos < end:
        off = pos & mask
        n = int.from_bytes(mm[LANE_DATA_OFF + off : LANE_DATA_OFF + off + 8], "little")
        if n == WRAP_MARKER:
            pos = (pos | mask) + 1
            continue
        if n > info.max_message or off + 8 + n > cap or pos + 8 + n > end:
            raise CorruptFrame(f"{seg.name}: bad frame header {n} at position {pos}")
        data_start = LANE_DATA_OFF + off + 8
        out.append(mm[data_start : data_start + n])
        pos += (n + 15) & -8
    return out
