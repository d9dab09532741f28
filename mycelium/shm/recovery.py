"""Reading a lane's own frames back, for the producer that wrote them.

How this works
--------------
When a queue consumer dies (or leaves) with messages still unread in its lane, the lane's
producer (its only writer, so the bytes cannot change under it) walks the frames from the
consumer's last stored cursor up to its own write cursor (``frames.walk_frames``, the
walk every reader uses) and hands them to the rest of the group. Every header is
bounds-checked as a reader would, so even a damaged lane yields only whole frames and a
clear error.
"""

from __future__ import annotations

from mycelium.errors import CorruptFrame
from mycelium.shm.frames import BadFrame, walk_frames
from mycelium.shm.lane_header import LaneInfo
from mycelium.shm.layout import FRAME_HEADER_BYTES, LANE_DATA_OFF, LANE_WRITE_Q
from mycelium.shm.segment import Segment

__all__ = ["unread_frames"]


def unread_frames(seg: Segment, start: int) -> list[bytes]:
    """Copies of the frames from position ``start`` up to the lane's write cursor.

    Raises CorruptFrame if a header is out of bounds (the frames before it are lost to
    this call; the caller logs and counts it).
    """
    info = LaneInfo(seg)
    cap = info.capacity
    end = seg.q[LANE_WRITE_Q]
    if end - start > cap:
        raise CorruptFrame(f"{seg.name}: cursor {start} is more than a ring behind {end}")
    mm = seg.mm
    dq = seg.buf[LANE_DATA_OFF : LANE_DATA_OFF + cap].cast("Q")
    out = []
    try:
        for pos, n, _ in walk_frames(dq, cap, info.max_message, start, end):
            at = LANE_DATA_OFF + (pos & (cap - 1)) + FRAME_HEADER_BYTES
            out.append(mm[at : at + n])
    except BadFrame as exc:
        raise CorruptFrame(f"{seg.name}: {exc}") from exc
    finally:
        dq.release()
    return out
