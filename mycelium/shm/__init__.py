"""The shared-memory data plane: segments, single-writer lanes, consumer state, registry.

A lane is split Disruptor-style: ``lane_header`` (geometry, tail record), ``frames``
(the frame format and its one walk), ``payload``, ``gating`` (the readers a writer
waits on), ``writer`` (the sequencer; its batches in ``writer_batches``), ``reader``
(its checks, views and record reads in ``reader_checks``, ``reader_views``,
``reader_records``) and ``runs`` (vectorised batches).

Knows nothing of sockets or the coordinator: tests and tools create and attach segments
directly; the coordinator and client handles use the same calls.
"""

from mycelium.shm.consumer_state import (
    ConsumerState,
    ConsumerStateView,
    create_consumer_segment,
    remove_consumer_objects,
)
from mycelium.shm.lane_header import LaneInfo, create_lane_segment
from mycelium.shm.reader import LaneReader
from mycelium.shm.segment import Segment, broker_id_for, list_segments, segment_name
from mycelium.shm.wait import WaitStrategy
from mycelium.shm.writer import LaneWriter

__all__ = [
    "ConsumerState",
    "ConsumerStateView",
    "LaneInfo",
    "LaneReader",
    "LaneWriter",
    "Segment",
    "WaitStrategy",
    "broker_id_for",
    "create_consumer_segment",
    "create_lane_segment",
    "list_segments",
    "remove_consumer_objects",
    "segment_name",
]
