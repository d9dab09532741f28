"""A lane's header: its static geometry, its creation, and the tail record readers join at.

How this works
--------------
A lane segment starts with its static facts (capacity, max_message, lane uid, writer pid,
flags), written once by the coordinator and checked by every process that maps it. The
writer publishes a double-buffered *tail record* (the oldest intact checkpoint, the
tail, and the newest, the head); the version's parity picks the live buffer, so a reader
that sees the same version before and after its loads read one consistent record. The
lane's first writer also records who it is (``record_producer``): a name and a random id,
which every envelope read from the lane carries (``read_producer``).
"""

from __future__ import annotations

import os
import secrets

from mycelium.errors import CorruptFrame, SegmentError
from mycelium.shm.layout import (
    HEAD_COUNT_Q,
    HEAD_POS_Q,
    KIND_LANE,
    LANE_DATA_OFF,
    LANE_FLAG_LOSSY,
    LANE_MIN_FRAMES,
    LANE_PRODUCER,
    LANE_PRODUCER_NAME_MAX,
    LANE_PRODUCER_NAME_OFF,
    LANE_PRODUCER_OFF,
    LANE_PRODUCER_Q,
    LANE_RESERVED_Q,
    LANE_STATIC,
    LANE_STATIC_OFF,
    LANE_TAIL_VERSION_Q,
    TAIL_COUNT_Q,
    TAIL_POS_Q,
    frame_bytes,
    lane_segment_bytes,
    lane_tail_record_q,
)
from mycelium.shm.segment import DEFAULT_SEGMENT_MODE, Segment

__all__ = [
    "MAX_FRAME_PAYLOAD",
    "LaneInfo",
    "create_lane_segment",
    "cursor_trusted",
    "read_producer",
    "read_tail_record",
    "record_producer",
]

#: A reader re-reads a double-buffered tail record at most this many times.
TAIL_READ_TRIES = 64
#: Largest payload a frame header can describe (WRAP_MARKER is reserved).
MAX_FRAME_PAYLOAD = (1 << 32) - 1


class LaneInfo:
    """The static facts of a lane, read from its segment and checked."""

    __slots__ = ("capacity", "lane_uid", "lossy", "max_message", "writer_pid")

    def __init__(self, seg: Segment) -> None:
        cap, max_msg, uid, pid, flags, data_off = LANE_STATIC.unpack_from(seg.mm, LANE_STATIC_OFF)
        if (
            cap & (cap - 1)
            or max_msg >= MAX_FRAME_PAYLOAD
            or cap < LANE_MIN_FRAMES * frame_bytes(max_msg)
            or data_off != LANE_DATA_OFF
        ):
            raise SegmentError(f"{seg.name}: impossible lane geometry cap={cap} max={max_msg}")
        if seg.size < lane_segment_bytes(cap):
            raise SegmentError(f"{seg.name}: {seg.size} bytes cannot hold a {cap}-byte ring")
        self.capacity: int = cap
        self.max_message: int = max_msg
        self.lane_uid: int = uid
        self.writer_pid: int = pid
        self.lossy = bool(flags & LANE_FLAG_LOSSY)


def create_lane_segment(
    name: str,
    capacity: int,
    max_message: int,
    lane_uid: int,
    writer_pid: int,
    *,
    lossy: bool = False,
    mode: int = DEFAULT_SEGMENT_MODE,
) -> Segment:
    """Create a lane segment (the coordinator's job); the producer then maps it writable.

    ``capacity`` must be a power of two holding at least ``LANE_MIN_FRAMES`` frames of
    ``max_message``, so a maximum-size frame always fits whatever the wrap position.
    Raises ValueError on a bad geometry, SegmentError if the segment cannot be created.
    """
    if (
        capacity <= 0
        or capacity & (capacity - 1)
        or not 0 <= max_message < MAX_FRAME_PAYLOAD
        or capacity < LANE_MIN_FRAMES * frame_bytes(max_message)
    ):
        raise ValueError(
            f"lane capacity {capacity} must be a power of two >= {LANE_MIN_FRAMES} frames "
            f"of {max_message} bytes"
        )
    if lane_uid <= 0:
        raise ValueError("lane_uid must be positive (0 marks a free consumer slot)")
    flags = LANE_FLAG_LOSSY if lossy else 0

    def init(seg: Segment) -> None:
        LANE_STATIC.pack_into(
            seg.mm, LANE_STATIC_OFF, capacity, max_message, lane_uid, writer_pid, flags,
            LANE_DATA_OFF,
        )  # fmt: skip

    return Segment.create(name, lane_segment_bytes(capacity), KIND_LANE, mode, init=init)


def read_tail_record(seg: Segment) -> tuple[int, int, int, int]:
    """The live (tail, tail count, head, head count), read consistently and checked.

    Raises CorruptFrame if the record never holds still or is impossible (positions are
    8-byte aligned, tail <= head, and every frame takes at least 8 bytes, so a count never
    exceeds its position / 8): only a broken writer does that.
    """
    hq = seg.q
    for _ in range(TAIL_READ_TRIES):
        version = hq[LANE_TAIL_VERSION_Q]
        r = lane_tail_record_q(version)
        tail, tail_count = hq[r + TAIL_POS_Q], hq[r + TAIL_COUNT_Q]
        head, head_count = hq[r + HEAD_POS_Q], hq[r + HEAD_COUNT_Q]
        # The writer fills the idle record, then stores the version: if the version is
        # unchanged after our loads (Load/Load order), no store of a later update reached us.
        if hq[LANE_TAIL_VERSION_Q] == version:
            break
        os.sched_yield()
    else:
        raise CorruptFrame(f"lane {seg.name}: the tail record never held still")
    if (
        (tail | head) & 7
        or head < tail
        or tail_count > tail >> 3
        or not tail_count <= head_count <= head >> 3
    ):
        raise CorruptFrame(
            f"lane {seg.name}: impossible tail record {tail}/{tail_count} {head}/{head_count}"
        )
    return tail, tail_count, head, head_count


def cursor_trusted(hq: memoryview, pos: int, cursor: int) -> bool:
    """Whether a writer could have published ``cursor`` for a reader at ``pos``.

    A real cursor is a frame boundary (8-byte aligned), never below a position a reader
    reached (it only grows) and never past the writer's reservation (it writes nothing at
    or past it). More than a ring ahead of the reader is possible (a reader the writer
    does not gate on is lapped: the overrun check counts it); beyond the reservation is
    not. ``hq`` is the lane's header as words; the reservation is loaded after the
    caller's cursor load (Load/Load), and it only grows, so it is at least the cursor's.
    """
    return not cursor & 7 and pos <= cursor <= hq[LANE_RESERVED_Q]


def record_producer(seg: Segment, name: str) -> None:
    """Record the producer's identity in a writable lane, once: a lane resumed by a new
    writer keeps the identity its frames were numbered under (their sequences go on).

    The name is cut to LANE_PRODUCER_NAME_MAX bytes of UTF-8; the random id makes two
    producers of one name (or one producer's successive lanes) tell apart.
    """
    if seg.q[LANE_PRODUCER_Q]:
        return
    raw = name.encode()[:LANE_PRODUCER_NAME_MAX]
    seg.mm[LANE_PRODUCER_NAME_OFF : LANE_PRODUCER_NAME_OFF + len(raw)] = raw
    seg.q[LANE_PRODUCER_Q + 1] = len(raw)
    # The name and its length precede the id (Store/Store): a reader that loads a nonzero
    # id first (Load/Load) reads the whole name.
    seg.q[LANE_PRODUCER_Q] = secrets.randbits(63) | 1


def read_producer(seg: Segment) -> str | None:
    """The identity a lane's writer recorded, as "name/id" (id in 16 hex digits), or None
    if it has not recorded one yet. Raises CorruptFrame on an impossible name length."""
    ident, n = LANE_PRODUCER.unpack_from(seg.mm, LANE_PRODUCER_OFF)
    if not ident:
        return None
    if n > LANE_PRODUCER_NAME_MAX:
        raise CorruptFrame(f"lane {seg.name}: producer name length {n} exceeds the maximum")
    name = bytes(seg.mm[LANE_PRODUCER_NAME_OFF : LANE_PRODUCER_NAME_OFF + n])
    return f"{name.decode(errors='replace')}/{ident:016x}"
