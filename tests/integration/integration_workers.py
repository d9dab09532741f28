"""Client processes of the migration validation suite: producers and consumers that check.

Spawned children import this module by name (pytest puts ``tests/integration`` on
``sys.path`` and multiprocessing's spawn passes ``sys.path`` on), so it imports neither
pytest nor the test modules.

Every payload starts with ``HEAD``: the producer's tag and the message's place in that
producer's stream, then a filler that depends on nothing but the length, so a consumer
can check every byte. A producer ends its stream with an END frame (``END_SEQ``): a fanout
consumer is done when it has one END per producer it expects. A queue consumer cannot
rely on END (one member of the group gets it), so the test stops it with ``Link.stop``
once the group's counters add up.

A worker and the test talk through a ``Link``: ``started`` (about to connect),
``ready`` (connected to the broker), ``go`` (start), ``stop``, two counters each written by the worker only (``count``:
messages published or received so far; ``events``: BackpressureTimeouts a producer met,
CorruptFrames a consumer met) and ``report``, which gets one final dict, or
``{"error": traceback}``. Every wait has a deadline, so a failing test never leaves a
worker hanging.
"""

from __future__ import annotations

import os
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mycelium import Consumer, Producer
from mycelium.errors import BackpressureTimeout, CorruptFrame
from mycelium.shm.lane_header import LaneInfo
from mycelium.shm.layout import KIND_LANE, LANE_DATA_OFF, LANE_WRITE_Q
from mycelium.shm.segment import Segment

#: Producer tag and sequence number at the start of every payload.
HEAD = struct.Struct("<QQ")
#: The sequence number of the frame that ends a producer's stream.
END_SEQ = (1 << 64) - 1
_FILL = bytes(range(256)) * 257
#: A paced producer that is ahead of its schedule sleeps this long before looking again.
PACE_SLEEP_S = 0.001
#: How long a consumer waits for the first message of a batch before re-checking ``stop``.
RECV_WAIT_S = 0.05
#: At most this many gap / disorder / error examples go into a report.
MAX_EXAMPLES = 20
#: How a corrupting producer damages its victim frame's length header (see below).
CORRUPTIONS = ("length_over_max_message", "length_past_cursor")


def frame(tag: int, seq: int, size: int) -> bytes:
    """Message ``seq`` of producer ``tag``, ``size`` bytes long (at least ``HEAD.size``)."""
    return HEAD.pack(tag, seq) + _FILL[: size - HEAD.size]


@dataclass
class Link:
    """The channels between the test and one worker (see the module docstring)."""

    started: Any
    ready: Any
    go: Any
    stop: Any
    count: Any
    events: Any
    report: Any

    @classmethod
    def create(cls, ctx: Any) -> Link:
        """New channels from a multiprocessing context (the test's spawn context)."""
        return cls(
            ctx.Event(),
            ctx.Event(),
            ctx.Event(),
            ctx.Event(),
            ctx.Value("Q", 0, lock=False),
            ctx.Value("Q", 0, lock=False),
            ctx.Queue(),
        )


@dataclass(frozen=True)
class ProducerSpec:
    """What a producer worker publishes on ``topic`` as producer ``tag``.

    ``count`` None publishes until ``Link.stop``; ``rate`` 0 publishes as fast as the
    ring allows; ``batch`` 1 uses ``publish``, more uses ``publish_many``. A publish that
    meets ``BackpressureTimeout`` (after the topic's bound) is timed, counted and retried
    with what was not written.
    """

    socket: str
    topic: str
    tag: int
    count: int | None = None
    size: int = 64
    rate: float = 0.0
    batch: int = 100
    wait_for_broker: float = 0.0
    deadline_s: float = 60.0


@dataclass(frozen=True)
class ConsumerSpec:
    """What a consumer worker expects on ``topic``: the streams of producers ``tags``.

    ``ends``: the tags whose END frames finish the read (None: all of ``tags``); until
    then, and with ``()`` (a queue group member) until stopped and drained, it reads.
    ``contiguous``: every seq of a tag must come (fanout); False: an
    increasing subset (a queue group member). ``from_start``: False lets the first seq
    of each tag be anything (a consumer that joins mid-stream). ``batch`` 1 reads with
    ``recv``, more with ``recv_many``. ``hold``: read only after ``Link.go``.
    ``keep_seqs``: report every seq (for exactly-once checks across a group).
    """

    socket: str
    topic: str
    tags: tuple[int, ...]
    group: str | None = None
    ends: tuple[int, ...] | None = None
    contiguous: bool = True
    from_start: bool = True
    batch: int = 1000
    wait_for_broker: float = 0.0
    hold: bool = False
    keep_seqs: bool = False
    deadline_s: float = 60.0


def _run(link: Link, body: Callable[[], dict[str, Any]]) -> None:
    """Run a worker body; its result, or the traceback of its failure, goes to the test."""
    link.started.set()
    try:
        link.report.put(body() | {"pid": os.getpid()})
    except BaseException:
        link.report.put({"error": traceback.format_exc()})
        raise


def _wait(event: Any, timeout: float, what: str) -> None:
    if not event.wait(timeout):
        raise TimeoutError(f"waited {timeout}s for {what}")


# -- producers ------------------------------------------------------------------------
def producer_main(spec: ProducerSpec, link: Link) -> None:
    """Publish ``spec``'s stream then END; reports sent, stalls (s) and reconnects."""
    _run(link, lambda: _produce(spec, link))


def _producer(spec: ProducerSpec) -> Producer:
    return Producer(
        socket_path=spec.socket,
        name=f"producer{spec.tag}",
        wait_for_broker=spec.wait_for_broker,
    )


def _produce(spec: ProducerSpec, link: Link) -> dict[str, Any]:
    with _producer(spec) as p:
        link.ready.set()
        _wait(link.go, spec.deadline_s, "go")
        deadline = time.monotonic() + spec.deadline_s
        stalls: list[float] = []
        total = END_SEQ if spec.count is None else spec.count
        start = time.monotonic()
        seq = 0
        while seq < total and not link.stop.is_set():
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"published {seq} of {total} in {spec.deadline_s}s")
            n = min(spec.batch, total - seq)
            if spec.rate:
                n = min(n, int((now - start) * spec.rate) - seq)
                if n <= 0:
                    time.sleep(PACE_SLEEP_S)
                    continue
            seq += _publish(p, spec, seq, n, stalls)
            link.count.value = seq
            link.events.value = len(stalls)
        _publish_end(p, spec, seq, deadline, stalls)
        return {"sent": seq, "stalls": stalls, "reconnects": p.channel.reconnects}


def _publish(p: Producer, spec: ProducerSpec, seq: int, n: int, stalls: list[float]) -> int:
    """Publish messages ``seq`` .. ``seq + n - 1``; returns how many were written."""
    t0 = time.monotonic()
    try:
        if spec.batch == 1:
            p.publish(spec.topic, frame(spec.tag, seq, spec.size))
            return 1
        items = [frame(spec.tag, s, spec.size) for s in range(seq, seq + n)]
        return p.publish_many(spec.topic, items)
    except BackpressureTimeout as exc:
        stalls.append(time.monotonic() - t0)
        return getattr(exc, "published", 0)


def _publish_end(
    p: Producer, spec: ProducerSpec, sent: int, deadline: float, stalls: list[float]
) -> None:
    """Publish the END frame, waiting out backpressure until the worker's deadline."""
    while True:
        t0 = time.monotonic()
        try:
            p.publish(spec.topic, HEAD.pack(spec.tag, END_SEQ))
            return
        except BackpressureTimeout:
            stalls.append(time.monotonic() - t0)
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not publish END after {sent} messages") from None


def corrupting_producer_main(
    spec: ProducerSpec, reader: Link, good: int, how: str, link: Link
) -> None:
    """Publish ``good`` messages and a victim (seq ``good``) whose length header this
    process then overwrites in its own ring (``how``: one of ``CORRUPTIONS``); sets
    ``count`` to ``good + 1`` when the damage is done. Once ``reader`` has met the
    corrupt frame, publishes ``spec.count`` more messages (seqs from ``good + 1``) and END.

    The header is damaged after the frame is published, which is race-free because the
    reader waits for the test's ``go``, given only once ``count`` says the damage is done.
    Writing the frame normally keeps the LaneWriter's position right for what follows.
    """
    _run(link, lambda: _corrupt(spec, link, reader, good, how))


def _corrupt(spec: ProducerSpec, link: Link, reader: Link, good: int, how: str) -> dict[str, Any]:
    with _producer(spec) as p:
        link.ready.set()
        _wait(link.go, spec.deadline_s, "go")
        p.publish_many(spec.topic, [frame(spec.tag, s, spec.size) for s in range(good)])
        _, topo = p.registry.read()
        (lane,) = [x for x in topo.lanes if x.producer == p.id and x.topic == spec.topic]
        seg = Segment.attach(lane.segment, KIND_LANE, writable=True)
        try:
            info = LaneInfo(seg)
            pos = seg.q[LANE_WRITE_Q]
            p.publish(spec.topic, frame(spec.tag, good, spec.size))
            header_q = (LANE_DATA_OFF + (pos & (info.capacity - 1))) // 8
            if seg.q[header_q] != spec.size:
                raise AssertionError(f"the victim frame is not at position {pos}")
            if how == "length_over_max_message":
                seg.q[header_q] = info.max_message + 1
            elif how == "length_past_cursor":  # a legal length whose frame ends past the cursor
                seg.q[header_q] = spec.size + 8
            else:
                raise ValueError(f"unknown corruption {how!r}; one of {CORRUPTIONS}")
        finally:
            seg.close()
        link.count.value = good + 1
        deadline = time.monotonic() + spec.deadline_s
        while reader.events.value < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the reader never reported the corrupt frame")
            time.sleep(PACE_SLEEP_S)
        first = good + 1
        total = spec.count or 0
        p.publish_many(
            spec.topic, [frame(spec.tag, s, spec.size) for s in range(first, first + total)]
        )
        p.publish(spec.topic, HEAD.pack(spec.tag, END_SEQ))
        link.count.value = first + total
        return {"sent": good + 1 + total, "victim": good}


# -- consumers ------------------------------------------------------------------------
@dataclass
class Tally:
    """What a consumer received, checked as it arrives against its ``ConsumerSpec``."""

    spec: ConsumerSpec
    counts: dict[int, int] = field(default_factory=dict)
    next_seq: dict[int, int | None] = field(default_factory=dict)
    first: dict[int, int] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)
    gaps: list[tuple[int, int, int]] = field(default_factory=list)
    disorder: list[tuple[int, int, int]] = field(default_factory=list)
    damaged: list[tuple[int, int]] = field(default_factory=list)
    foreign: int = 0
    seqs: dict[int, list[int]] = field(default_factory=dict)
    total: int = 0
    t_first: float = 0.0
    t_last: float = 0.0

    def __post_init__(self) -> None:
        for tag in self.spec.tags:
            self.counts[tag] = 0
            self.next_seq[tag] = 0 if self.spec.from_start else None
            self.seqs[tag] = []

    def add(self, data: bytes) -> None:
        """Check one payload: its producer, its place in that stream, its bytes."""
        tag, seq = HEAD.unpack_from(data)
        if tag not in self.counts:
            self.foreign += 1
            return
        if seq == END_SEQ:
            self.ended.add(tag)
            return
        expected = self.next_seq[tag]
        if expected is None:
            self.first[tag] = expected = seq
        elif seq < expected:
            _example(self.disorder, (tag, expected, seq))
        elif seq > expected and self.spec.contiguous:
            _example(self.gaps, (tag, expected, seq))
        self.next_seq[tag] = max(expected, seq + 1)
        if data[HEAD.size :] != _FILL[: len(data) - HEAD.size]:
            _example(self.damaged, (tag, seq))
        self.counts[tag] += 1
        if self.spec.keep_seqs:
            self.seqs[tag].append(seq)
        self.total += 1

    def add_batch(self, batch: list[bytes]) -> None:
        if not batch:
            return
        now = time.monotonic()
        if not self.total:
            self.t_first = now
        for data in batch:
            self.add(data)
        self.t_last = now

    @property
    def complete(self) -> bool:
        ends = self.spec.tags if self.spec.ends is None else self.spec.ends
        return bool(ends) and self.ended.issuperset(ends)

    def report(self) -> dict[str, Any]:
        span = self.t_last - self.t_first
        return {
            "counts": self.counts,
            "first": self.first,
            "ended": sorted(self.ended),
            "gaps": self.gaps,
            "disorder": self.disorder,
            "damaged": self.damaged,
            "foreign": self.foreign,
            "seqs": self.seqs if self.spec.keep_seqs else {},
            "rate": (self.total - 1) / span if span > 0 else 0.0,
        }


def _example(examples: list[Any], item: Any) -> None:
    if len(examples) < MAX_EXAMPLES:
        examples.append(item)


def consumer_main(spec: ConsumerSpec, link: Link) -> None:
    """Read and check until done (see ``ConsumerSpec``); reports the ``Tally`` plus the
    consumer's own counters (corrupt, lost, reconnects) and the CorruptFrames it met."""
    _run(link, lambda: _consume(spec, link))


def _consume(spec: ConsumerSpec, link: Link) -> dict[str, Any]:
    with Consumer(
        spec.topic, socket_path=spec.socket, group=spec.group, wait_for_broker=spec.wait_for_broker
    ) as c:
        link.ready.set()
        if spec.hold:
            _wait(link.go, spec.deadline_s, "go")
        tally = Tally(spec)
        corrupt_errors: list[str] = []
        timed_out = False
        deadline = time.monotonic() + spec.deadline_s
        while not tally.complete:
            if time.monotonic() > deadline:
                timed_out = True
                break
            stopping = link.stop.is_set()  # seen before an empty read: everything is read
            try:
                batch = _receive(c, spec.batch)
            except CorruptFrame as exc:
                _example(corrupt_errors, str(exc))
                link.events.value += 1
                continue
            tally.add_batch(batch)
            link.count.value = tally.total
            if stopping and not batch:
                break
        return tally.report() | {
            "timed_out": timed_out,
            "corrupt_errors": corrupt_errors,
            "corrupt": c.corrupt,
            "lost": c.lost,
            "reconnects": c.channel.reconnects,
        }


def _receive(c: Consumer, batch: int) -> list[bytes]:
    if batch > 1:
        return c.recv_many(batch, timeout=RECV_WAIT_S)
    try:
        return [c.recv(timeout=RECV_WAIT_S)]
    except TimeoutError:
        return []
