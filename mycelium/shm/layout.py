"""Byte layout of every shared-memory segment kind, as data.

How this works
--------------
Each segment starts with the same 64-byte identity line (magic, layout version, kind,
size) that ``Segment.attach`` checks. After it, every word that some process writes on
the hot path sits alone on its own 64-byte cache line, so a producer storing its cursor
never invalidates the line a consumer stores its cursor in (no false sharing). Offsets
are in bytes; the ``*_Q`` names are the same offsets as indices into a ``cast("Q")``
view, which is how the hot paths touch them.

Lane (one per topic x producer [x consumer, for queue topics]), written only by its producer::

    0     identity line
    64    static: capacity, max_message, lane_uid, writer_pid, flags, data_offset
    128   write cursor          (byte position, only grows)
    192   published count       (messages)
    256   tail version, reservation (the writer writes no byte at or past the reservation)
    320   two tail records (tail, tail count, head, head count); the version's parity
          picks the live one
    384   closed flag           (the producer will write no more)
    448   backpressure timeouts (publishes refused because the ring stayed full);
          stamped from / until: 1 + the positions between which frames store their
          time (0: never / still on)
    512   producer identity, written once by the lane's first writer: random id (0 until
          written, stored last), name length, name (UTF-8, at most LANE_PRODUCER_NAME_MAX)
    4096  ring data, ``capacity`` bytes (a power of two)

A frame is a 24-byte little-endian header, then the payload padded to 8 bytes: the payload
length (``WRAP_MARKER`` instead sends readers to the start of the ring), the sequence (the
lane's 1-based message number) and published_ns (CLOCK_REALTIME at publish, valid between
the lane's stamped from / until positions). The sequence is stored, not derived from a
reader's counts, so every reader of the frame (another consumer, a durable consumer after
a restart) sees one number. (Packing it into the length word would save 8 bytes a frame
but cost a publish three big-int operations: more than twice the separate store.)

Consumer state (one per consumer), written only by its consumer::

    0     identity line
    64    static: consumer_uid, pid, slot count
    128   heartbeat (CLOCK_MONOTONIC ns)
    192   sleeping flag         (doorbell wanted)
    256   lost, corrupt counters
    320   retired received  (messages received on lanes since released)
    512   slot i at 512 + 64*i: lane_uid, cursor, count, start count

Registry (one per broker), written only by the coordinator::

    0     identity line
    64    generation (even/odd picks the live topology buffer)
    128   coordinator pid, started ns
    4096  buffer 0: length u64 + msgpack topology
    4096 + REGISTRY_BUFFER_BYTES   buffer 1
"""

from __future__ import annotations

import struct

CACHE_LINE = 64
PAGE = 4096

MAGIC = int.from_bytes(b"MYCELIUM", "little")
#: Bumped whenever any offset or the frame format changes: attach refuses other versions
#: (3: the 16-byte packed header of one intermediate commit; 4: the 24-byte header).
LAYOUT_VERSION = 4

# Segment kinds, stored in the identity line.
KIND_LANE = 1
KIND_CONSUMER = 2
KIND_REGISTRY = 3
KIND_NAMES = {KIND_LANE: "lane", KIND_CONSUMER: "consumer", KIND_REGISTRY: "registry"}

#: magic u64, version u32, kind u32, total size u64.
IDENTITY = struct.Struct("<QIIQ")

# --- lane ---------------------------------------------------------------------------
LANE_STATIC = struct.Struct("<QQQQQQ")  # capacity, max_message, lane_uid, pid, flags, data_off
LANE_STATIC_OFF = 64
LANE_WRITE_OFF = 128
LANE_COUNT_OFF = 192
LANE_TAIL_VERSION_OFF = 256
LANE_RESERVED_OFF = 264
LANE_TAIL_RECORDS_OFF = 320
LANE_TAIL_RECORD_BYTES = 32  # tail, tail count, head, head count
LANE_CLOSED_OFF = 384
LANE_TIMEOUTS_OFF = 448
LANE_STAMPED_OFF = 456  # cold: from, until; written when a topic's ``timestamps`` changes
LANE_PRODUCER_OFF = 512
LANE_PRODUCER = struct.Struct("<QQ")  # producer id (nonzero once written), name length
LANE_PRODUCER_NAME_OFF = LANE_PRODUCER_OFF + LANE_PRODUCER.size
LANE_PRODUCER_NAME_MAX = 256
LANE_PRODUCER_Q = LANE_PRODUCER_OFF // 8
LANE_DATA_OFF = PAGE
LANE_FLAG_LOSSY = 1
#: A ring holds at least this many maximum-size frames, so one always fits after a wrap.
LANE_MIN_FRAMES = 4

LANE_WRITE_Q = LANE_WRITE_OFF // 8
LANE_COUNT_Q = LANE_COUNT_OFF // 8
LANE_TAIL_VERSION_Q = LANE_TAIL_VERSION_OFF // 8
LANE_RESERVED_Q = LANE_RESERVED_OFF // 8
LANE_CLOSED_Q = LANE_CLOSED_OFF // 8
LANE_TIMEOUTS_Q = LANE_TIMEOUTS_OFF // 8
LANE_STAMPED_Q = LANE_STAMPED_OFF // 8
LANE_STAMPED_UNTIL_Q = LANE_STAMPED_Q + 1
# Within a tail record, as Q indices relative to the record's first word.
TAIL_POS_Q = 0
TAIL_COUNT_Q = 1
HEAD_POS_Q = 2
HEAD_COUNT_Q = 3


def lane_tail_record_q(version: int) -> int:
    """Q index of the tail record that tail version ``version`` makes live."""
    return (LANE_TAIL_RECORDS_OFF + (version & 1) * LANE_TAIL_RECORD_BYTES) // 8


#: A frame is a 24-byte header (length, sequence, published_ns) then the payload, padded
#: to 8 bytes. The header's words, as Q offsets from the frame's first word:
FRAME_HEADER_BYTES = 24
FRAME_SEQUENCE_Q = 1
FRAME_TIME_Q = 2
#: Where the payload of the frame at ring offset 0 starts in a lane segment.
FRAME_PAYLOAD_OFF = LANE_DATA_OFF + FRAME_HEADER_BYTES


#: Header value telling readers "nothing more before the end of the ring: go to offset 0".
WRAP_MARKER = (1 << 64) - 1


def frame_bytes(payload_len: int) -> int:
    """Ring bytes one frame of ``payload_len`` takes: header plus payload rounded up to 8."""
    return FRAME_HEADER_BYTES + ((payload_len + 7) & ~7)


def lane_segment_bytes(capacity: int) -> int:
    """Total size of a lane segment whose ring holds ``capacity`` bytes."""
    return LANE_DATA_OFF + capacity


# --- consumer state -----------------------------------------------------------------
CONSUMER_STATIC = struct.Struct("<QQQ")  # consumer_uid, pid, slots
CONSUMER_STATIC_OFF = 64
CONSUMER_HEARTBEAT_OFF = 128
CONSUMER_SLEEPING_OFF = 192
CONSUMER_LOST_OFF = 256
CONSUMER_CORRUPT_OFF = 264
CONSUMER_RETIRED_OFF = 320
CONSUMER_SLOTS_OFF = 512
CONSUMER_SLOT_BYTES = CACHE_LINE
CONSUMER_MAX_SLOTS = 256
CONSUMER_SEGMENT_BYTES = CONSUMER_SLOTS_OFF + CONSUMER_MAX_SLOTS * CONSUMER_SLOT_BYTES

CONSUMER_HEARTBEAT_Q = CONSUMER_HEARTBEAT_OFF // 8
CONSUMER_SLEEPING_Q = CONSUMER_SLEEPING_OFF // 8
CONSUMER_LOST_Q = CONSUMER_LOST_OFF // 8
CONSUMER_CORRUPT_Q = CONSUMER_CORRUPT_OFF // 8
CONSUMER_RETIRED_Q = CONSUMER_RETIRED_OFF // 8
# Within a slot, as Q indices relative to the slot's first word.
SLOT_LANE_Q = 0
SLOT_CURSOR_Q = 1
SLOT_COUNT_Q = 2
SLOT_START_Q = 3
#: Manual acknowledgement: where the reader has read to (cursor, message index); the
#: cursor and count above then move only when the consumer acknowledges.
SLOT_READ_CURSOR_Q = 4
SLOT_READ_COUNT_Q = 5


def slot_q(slot: int) -> int:
    """Q index of the first word of consumer slot ``slot``."""
    return (CONSUMER_SLOTS_OFF + slot * CONSUMER_SLOT_BYTES) // 8


# --- registry -----------------------------------------------------------------------
REGISTRY_GENERATION_OFF = 64
REGISTRY_COORDINATOR_OFF = 128  # pid u64, started ns u64
REGISTRY_BUFFER_OFF = PAGE
REGISTRY_BUFFER_BYTES = 1 << 20
REGISTRY_SEGMENT_BYTES = REGISTRY_BUFFER_OFF + 2 * REGISTRY_BUFFER_BYTES
REGISTRY_GENERATION_Q = REGISTRY_GENERATION_OFF // 8
REGISTRY_COORDINATOR_Q = REGISTRY_COORDINATOR_OFF // 8

#: Every word some process stores on the hot path; tests assert each is on its own line.
HOT_WORD_OFFSETS = {
    "lane.write": LANE_WRITE_OFF,
    "lane.count": LANE_COUNT_OFF,
    "lane.tail": LANE_TAIL_VERSION_OFF,
    "lane.tail_records": LANE_TAIL_RECORDS_OFF,
    "lane.closed": LANE_CLOSED_OFF,
    "consumer.heartbeat": CONSUMER_HEARTBEAT_OFF,
    "consumer.sleeping": CONSUMER_SLEEPING_OFF,
    "consumer.counters": CONSUMER_LOST_OFF,
    "consumer.retired": CONSUMER_RETIRED_OFF,
    "consumer.slots": CONSUMER_SLOTS_OFF,
    "registry.generation": REGISTRY_GENERATION_OFF,
}
