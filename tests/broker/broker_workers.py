"""Client processes for the broker end-to-end tests: one producer and one consumer worker.

Spawned children import this module by name (pytest puts ``tests/broker`` on ``sys.path``
and multiprocessing's spawn passes ``sys.path`` on), so it imports neither pytest nor
the test modules. Every message a worker publishes says who sent it and its place in
that sender's stream (``make_payload``): the receiving worker checks each one byte for
byte and records the (tag, sequence) pairs, so the test can assert exact delivery,
per-producer order and integrity.

Workers talk to the test through two queues: ``results`` (worker -> test: ``ready``,
``paused``, ``done`` or ``error`` with the traceback) and their own ``commands``
(test -> worker: one item per "go on"). A worker never waits on the test without a
deadline, so a failing test cannot leave one hanging.
"""

from __future__ import annotations

import os
import struct
import traceback
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mycelium import Consumer, Producer
from mycelium.protocol import Message, encode_message, parse_message

#: Producer tag (u32) and sequence (u64) at the start of every test payload.
HEAD = struct.Struct("<IQ")
#: Payload sizes vary between HEAD.size and HEAD.size + SIZE_SPREAD, so frames wrap
#: at every alignment.
SIZE_SPREAD = 97
_FILL = bytes(range(256)) * 320
#: Raw TLV type that carries a test payload inside a Protocol V2 message.
TEST_TLV_TYPE = 200
#: How long a worker waits for the test's next command before giving up.
COMMAND_WAIT_S = 60.0
RECV_BATCH = 1000
RECV_WAIT_S = 0.05


def payload_size(tag: int, seq: int, spread: int = SIZE_SPREAD) -> int:
    """The size of message ``seq`` of producer ``tag`` (deterministic, varied)."""
    return HEAD.size + (seq * 13 + tag * 7) % (spread + 1)


def make_payload(tag: int, seq: int, size: int | None = None) -> bytes:
    """Message ``seq`` of producer ``tag``: head, then a fill that depends on both."""
    if size is None:
        size = payload_size(tag, seq)
    k = (seq * 7 + tag) % 251
    return HEAD.pack(tag, seq) + _FILL[k : k + size - HEAD.size]


def check_payload(data: bytes | memoryview) -> tuple[int, int]:
    """(tag, seq) of a received test payload; AssertionError if any byte is wrong."""
    tag, seq = HEAD.unpack_from(data)
    if data != make_payload(tag, seq, len(data)):
        raise AssertionError(f"message {seq} of producer {tag} arrived damaged: {bytes(data)!r}")
    return tag, seq


def make_message(domain: int, tag: int, seq: int) -> bytes:
    """A Protocol V2 message from source ``tag`` carrying test payload ``seq``."""
    return encode_message(
        domain, tag, [(TEST_TLV_TYPE, make_payload(tag, seq))], sequence=seq, timestamp=seq
    )


@dataclass(frozen=True)
class ProducerPlan:
    """What a producer worker publishes, and where it stops for the test.

    ``pauses``: counts after which it reports ``paused`` and waits for a command.
    ``batch``: 0 publishes one at a time, else ``publish_many`` in batches of that size.
    ``domain``: if set, publishes Protocol V2 messages with ``publish_message``.
    ``hold``: after ``done``, wait for one more command before closing.
    """

    socket: str
    topic: str
    tag: int
    count: int
    batch: int = 0
    pauses: tuple[int, ...] = ()
    domain: int = 0
    hold: bool = False


@dataclass(frozen=True)
class ConsumerPlan:
    """What a consumer worker reads. It reads until told to stop and then finds nothing.

    ``pause_after``: stop reading after that many messages, report ``paused`` with what
    was read, and wait (the test usually kills it then).
    ``batch``: messages per ``recv_many``; 1 uses ``recv`` (or ``recv_message``).
    ``messages``: payloads are Protocol V2 messages whose relay domain must be ``domain``.
    """

    socket: str
    topic: str
    name: str
    group: str | None = None
    pause_after: int = 0
    batch: int = RECV_BATCH
    messages: bool = False
    domain: int = 0


def _run(name: str, results: Any, body: Callable[[], None]) -> None:
    """Run a worker body; any failure goes to the test as an ``error`` report."""
    try:
        body()
    except BaseException:
        results.put(("error", name, traceback.format_exc()))
        raise


def _await(commands: Any) -> None:
    """Wait for the test's next command (bounded: a failed test must not leave us hanging)."""
    commands.get(timeout=COMMAND_WAIT_S)


def producer_main(plan: ProducerPlan, results: Any, commands: Any, progress: Any = None) -> None:
    """Publish ``plan.count`` test messages; ``progress.value`` counts those published."""
    name = f"producer{plan.tag}"
    _run(name, results, lambda: _produce(plan, name, results, commands, progress))


def _produce(plan: ProducerPlan, name: str, results: Any, commands: Any, progress: Any) -> None:
    with Producer(socket_path=plan.socket, name=name) as p:
        results.put(("ready", name, os.getpid()))
        _await(commands)
        stops = sorted({*plan.pauses, plan.count})
        seq = 0
        for stop in stops:
            while seq < stop:
                seq += _publish_some(p, plan, seq, stop)
                if progress is not None:
                    progress.value = seq
            if stop != plan.count:
                results.put(("paused", name, seq))
                _await(commands)
        results.put(("done", name, {"published": seq, "reconnects": p.channel.reconnects}))
        if plan.hold:
            _await(commands)


def _publish_some(p: Producer, plan: ProducerPlan, seq: int, stop: int) -> int:
    """Publish message ``seq`` (or a batch from it, up to ``stop``); returns how many."""
    if plan.batch:
        end = min(seq + plan.batch, stop)
        return p.publish_many(plan.topic, [make_payload(plan.tag, s) for s in range(seq, end)])
    if plan.domain:
        p.publish_message(make_message(plan.domain, plan.tag, seq))
    else:
        p.publish(plan.topic, make_payload(plan.tag, seq))
    return 1


def consumer_main(plan: ConsumerPlan, results: Any, commands: Any, progress: Any = None) -> None:
    """Read test messages until told to stop; report every (tag, seq) per producer.

    ``progress.value`` counts the messages received so far.
    """
    _run(plan.name, results, lambda: _consume(plan, results, commands, progress))


class _Received:
    """Sequences received, per producer tag, in arrival order."""

    def __init__(self) -> None:
        self.seqs: dict[int, array[int]] = {}
        self.count = 0

    def add(self, tag: int, seq: int) -> None:
        got = self.seqs.get(tag)
        if got is None:
            got = self.seqs[tag] = array("Q")
        got.append(seq)
        self.count += 1

    def report(self) -> dict[int, bytes]:
        return {tag: seqs.tobytes() for tag, seqs in self.seqs.items()}


def _receive(c: Consumer, plan: ConsumerPlan, n: int) -> list[bytes | memoryview]:
    """Up to ``n`` test payloads: ``recv``/``recv_message`` for one, ``recv_many`` else."""
    if n > 1:
        raw = c.recv_many(n, timeout=RECV_WAIT_S)
        return [_unwrap(plan, parse_message(d)) for d in raw] if plan.messages else list(raw)
    try:
        if plan.messages:
            return [_unwrap(plan, c.recv_message(RECV_WAIT_S))]
        return [c.recv(RECV_WAIT_S)]
    except TimeoutError:
        return []


def _unwrap(plan: ConsumerPlan, msg: Message) -> memoryview:
    """The test payload inside a Protocol V2 message, after checking its relay domain."""
    if msg.header.relay_domain != plan.domain:
        raise AssertionError(
            f"{plan.name}: relay domain {msg.header.relay_domain} arrived on {plan.topic}"
        )
    (tlv,) = msg.tlvs
    if tlv.type != TEST_TLV_TYPE or msg.header.sequence != HEAD.unpack_from(tlv.payload)[1]:
        raise AssertionError(f"{plan.name}: unexpected message {msg.header}")
    return tlv.payload


def _consume(plan: ConsumerPlan, results: Any, commands: Any, progress: Any) -> None:
    got = _Received()
    with Consumer(plan.topic, socket_path=plan.socket, group=plan.group) as c:
        results.put(("ready", plan.name, os.getpid()))
        while True:
            stopping = not commands.empty()  # a stop seen before an empty read: drained
            want = plan.batch
            if plan.pause_after:
                want = min(want, plan.pause_after - got.count)
            batch = _receive(c, plan, want)
            for data in batch:
                got.add(*check_payload(data))
            if progress is not None:
                progress.value = got.count
            if plan.pause_after and got.count >= plan.pause_after:
                results.put(("paused", plan.name, got.report()))
                _await(commands)
                return
            if stopping and not batch:
                break
        results.put(
            (
                "done",
                plan.name,
                {
                    "seqs": got.report(),
                    "reconnects": c.channel.reconnects,
                    "corrupt": c.corrupt,
                    "lost": c.lost,
                },
            )
        )
