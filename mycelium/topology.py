"""The broker's topology: topics, producers, consumers, their groups and lanes.

The vocabulary the coordinator writes and every client reads. It is plain data
(msgspec structs), so it sits below every layer that speaks it: ``shm/registry.py``
carries it in shared memory (bytes and generations only), the coordinator keeps it
(``coordinator/topology.py``) and clients follow it (``client/topology.py``).
"""

from __future__ import annotations

import msgspec

__all__ = ["ConsumerEntry", "LaneEntry", "ProducerEntry", "TopicEntry", "Topology"]


class TopicEntry(msgspec.Struct, frozen=True):
    name: str
    routing: str  # "fanout" | "queue"
    max_message_size: int
    lane_bytes: int
    lossy: bool = False
    backpressure_timeout_ms: int = 5000
    timestamps: bool = False  # frames store their publish time


class ProducerEntry(msgspec.Struct, frozen=True):
    id: int
    pid: int
    started: float = 0.0  # the process's create time: pid reuse cannot fool liveness
    name: str = ""
    topics: tuple[str, ...] = ()
    alive: bool = True


class ConsumerEntry(msgspec.Struct, frozen=True):
    id: int
    pid: int
    topic: str
    group: str
    segment: str
    doorbell: str
    started: float = 0.0
    alive: bool = True
    name: str = ""
    #: A durable consumer's name: its entry, segment and position outlive its process.
    durable: str = ""
    away_since: float = 0.0  # wall-clock time a durable consumer left (0: present)


class LaneEntry(msgspec.Struct, frozen=True):
    """A lane: ``consumer`` is 0 for a fanout lane (every consumer of the topic reads it),
    else the one queue consumer it feeds; ``group`` names that consumer's group."""

    uid: int
    topic: str
    producer: int
    segment: str
    consumer: int = 0
    group: str = ""
    draining: bool = False  # no new messages (producer gone, or handed over): then removed
    #: A queue lane handed over from a departed member: ``previous`` is the consumer whose
    #: slot (or pending gate) holds the frames from ``resume_pos`` (message index
    #: ``resume_count``) on; producers gate on it until the new holder has claimed a slot.
    previous: int = 0
    resume_pos: int = 0
    resume_count: int = 0
    #: The message index the previous holder had read to (above ``resume_count`` when it
    #: read more than it acknowledged): what the heir gets below it is a redelivery.
    resume_seen: int = 0


class Topology(msgspec.Struct):
    broker_id: str = ""
    coordinator_pid: int = 0
    next_id: int = 1
    topics: list[TopicEntry] = msgspec.field(default_factory=list)
    producers: list[ProducerEntry] = msgspec.field(default_factory=list)
    consumers: list[ConsumerEntry] = msgspec.field(default_factory=list)
    lanes: list[LaneEntry] = msgspec.field(default_factory=list)
    #: Counts of lanes and consumers already removed, per topic: kept here, in shared
    #: memory, so a restarted coordinator's counters carry on instead of going back.
    retired_published: dict[str, int] = msgspec.field(default_factory=dict)
    retired_delivered: dict[str, int] = msgspec.field(default_factory=dict)
    retired_timeouts: dict[str, int] = msgspec.field(default_factory=dict)
    #: Messages dropped with durable consumers that stayed away past their topic's TTL.
    retired_lost: dict[str, int] = msgspec.field(default_factory=dict)

    def topic(self, name: str) -> TopicEntry | None:
        for t in self.topics:
            if t.name == name:
                return t
        return None
