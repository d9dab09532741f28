"""The registry segment: the broker's topology, written only by the coordinator.

How this works
--------------
The topology (topics, producers, lanes, consumers) is one msgpack document kept in two
buffers. The coordinator writes the next version into the buffer the current generation
does not point at, then stores the new generation (its parity picks the buffer): the
store is the publish. A client checks one 8-byte word per poll; when it differs from the
generation it last read, it copies the live buffer, decodes it, and re-checks the
generation (a seqlock: if the coordinator published twice meanwhile, it reads again).

A restarted coordinator adopts the segment: it reads the last topology from it, keeps
the generation counting up, and clients never notice the restart in shared memory.
"""

from __future__ import annotations

import os
import time

import msgspec

from mycelium.errors import LimitExceeded, SegmentError
from mycelium.shm.layout import (
    KIND_REGISTRY,
    REGISTRY_BUFFER_BYTES,
    REGISTRY_BUFFER_OFF,
    REGISTRY_COORDINATOR_Q,
    REGISTRY_GENERATION_Q,
    REGISTRY_SEGMENT_BYTES,
)
from mycelium.shm.segment import DEFAULT_SEGMENT_MODE, Segment

__all__ = [
    "ConsumerEntry",
    "LaneEntry",
    "ProducerEntry",
    "Registry",
    "RegistryView",
    "TopicEntry",
    "Topology",
]

#: A reader retries a torn read (coordinator published twice while we copied) this often.
READ_TRIES = 100


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


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Topology)
_LEN_BYTES = 8


def _buffer_off(generation: int) -> int:
    return REGISTRY_BUFFER_OFF + (generation & 1) * REGISTRY_BUFFER_BYTES


class RegistryView:
    """A client's read-only view: ``generation`` is the one word to poll."""

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.q = seg.q

    @classmethod
    def attach(cls, name: str) -> RegistryView:
        return cls(Segment.attach(name, KIND_REGISTRY, writable=False))

    @property
    def generation(self) -> int:
        return self.q[REGISTRY_GENERATION_Q]

    @property
    def coordinator_pid(self) -> int:
        return self.q[REGISTRY_COORDINATOR_Q]

    def read(self) -> tuple[int, Topology]:
        """The current (generation, topology). Raises SegmentError if it cannot be read."""
        mm = self.seg.mm
        for _ in range(READ_TRIES):
            gen = self.q[REGISTRY_GENERATION_Q]
            off = _buffer_off(gen)
            length = int.from_bytes(mm[off : off + _LEN_BYTES], "little")
            if length > REGISTRY_BUFFER_BYTES - _LEN_BYTES:
                continue  # torn: the coordinator is rewriting this buffer
            blob = mm[off + _LEN_BYTES : off + _LEN_BYTES + length]
            if self.q[REGISTRY_GENERATION_Q] != gen:
                continue
            try:
                return gen, _decoder.decode(blob)
            except msgspec.DecodeError as exc:
                raise SegmentError(f"{self.seg.name}: unreadable topology: {exc}") from exc
        raise SegmentError(f"{self.seg.name}: topology kept changing while being read")

    def close(self) -> None:
        self.seg.close()


class Registry(RegistryView):
    """The coordinator's writable registry (the single writer)."""

    @classmethod
    def create(cls, name: str, mode: int = DEFAULT_SEGMENT_MODE) -> Registry:
        """A new, empty registry under a fresh name (O_EXCL). Raises SegmentError."""
        return cls(Segment.create(name, REGISTRY_SEGMENT_BYTES, KIND_REGISTRY, mode))

    @classmethod
    def adopt(cls, name: str) -> tuple[Registry, Topology]:
        """Take over a predecessor's registry, learned from the broker's own state file.

        Raises SegmentError if it is gone, not trusted (owner, mode) or unreadable.
        """
        reg = cls(Segment.attach(name, KIND_REGISTRY, writable=True))
        try:
            _, topo = reg.read()
        except SegmentError:
            reg.close()
            raise
        return reg, topo

    def publish(self, topology: Topology) -> int:
        """Write ``topology`` as the next generation; returns that generation.

        Raises LimitExceeded (nothing written) if it does not fit the buffer.
        """
        blob = _encoder.encode(topology)
        if len(blob) > REGISTRY_BUFFER_BYTES - _LEN_BYTES:
            raise LimitExceeded(
                f"topology of {len(blob)} bytes exceeds the registry buffer",
                limit="topology_bytes",
                maximum=REGISTRY_BUFFER_BYTES - _LEN_BYTES,
            )
        gen = self.q[REGISTRY_GENERATION_Q] + 1
        off = _buffer_off(gen)
        mm = self.seg.mm
        mm[off : off + _LEN_BYTES] = len(blob).to_bytes(_LEN_BYTES, "little")
        mm[off + _LEN_BYTES : off + _LEN_BYTES + len(blob)] = blob
        self.q[REGISTRY_COORDINATOR_Q] = os.getpid()
        self.q[REGISTRY_COORDINATOR_Q + 1] = time.time_ns()
        # Publish: buffer stores above precede this store (Store/Store); pairs with the
        # generation loads in RegistryView.read.
        self.q[REGISTRY_GENERATION_Q] = gen
        return gen
