"""Client processes for the delivery tests: numbered messages, exact reports.

A producer publishes ``0..n-1`` (the number in the first 8 bytes), reports, and waits to
be told to close (or to be SIGKILLed). A consumer reads until it has ``take`` messages
(then reports them and waits to be SIGKILLed) or until told to stop (then drains and
reports). With ``ack_every`` it acknowledges manually every that many messages.
"""

from __future__ import annotations

import os
import queue
import struct
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mycelium import Consumer, Producer

SEQ = struct.Struct("<Q")
PAD = bytes(56)
COMMAND_WAIT_S = 120.0
RECV_WAIT_S = 0.02


def numbered(seq: int) -> bytes:
    return SEQ.pack(seq) + PAD


def number_of(data: bytes) -> int:
    return int(SEQ.unpack_from(data)[0])


@dataclass(frozen=True)
class ConsumerPlan:
    socket: str
    topic: str
    name: str
    group: str | None = None
    take: int = 0  # stop after this many and wait (to be killed); 0: until told to stop
    ack: str = "auto"
    ack_every: int = 0  # manual: ack after every this many received
    acked: int = 0  # manual with take: ack only the first this many
    durable: str | None = None
    start: str = "latest"


def _run(name: str, results: Any, body: Callable[[], None]) -> None:
    try:
        body()
    except BaseException:
        results.put(("error", name, traceback.format_exc()))
        raise


def produce(socket: str, topic: str, n: int, results: Any, commands: Any, rate: int = 0) -> None:
    """Publish ``n`` numbered messages (``rate`` a second, 0: at once), report
    ``published``, close when told to."""

    def body() -> None:
        with Producer(socket_path=socket, name="numbers") as p:
            begun = time.monotonic()
            for seq in range(n):
                if rate and seq % 100 == 0:
                    ahead = begun + seq / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the stream, not waiting for a condition
                p.publish(topic, numbered(seq))
            results.put(("published", "producer", os.getpid()))
            commands.get(timeout=COMMAND_WAIT_S)

    _run("producer", results, body)


def consume(plan: ConsumerPlan, results: Any, commands: Any, progress: Any) -> None:
    """Read numbered messages as ``plan`` says; reports go to ``results``."""
    _run(plan.name, results, lambda: _consume(plan, results, commands, progress))


def _options(plan: ConsumerPlan) -> dict[str, Any]:
    kw: dict[str, Any] = {"socket_path": plan.socket, "group": plan.group}
    if plan.ack != "auto":
        kw["ack"] = plan.ack
    if plan.durable is not None:
        kw["durable"] = plan.durable
    if plan.start != "latest":
        kw["start"] = plan.start
    return kw


def _consume(plan: ConsumerPlan, results: Any, commands: Any, progress: Any) -> None:
    got: list[int] = []
    with Consumer(plan.topic, **_options(plan)) as c:
        results.put(("ready", plan.name, os.getpid()))
        while True:
            try:
                command = commands.get_nowait()
            except queue.Empty:
                command = None
            if command == "mark":
                results.put(("mark", plan.name, len(got)))
            want = 1000 if not plan.take else min(1000, plan.take - len(got))
            for every in (plan.ack_every, plan.acked):  # a batch ends where an ack is due
                if every and len(got) < every:
                    want = min(want, every - len(got) % every)
            batch = c.recv_many(want, timeout=RECV_WAIT_S)
            for data in batch:
                got.append(number_of(data))
                if plan.ack_every and len(got) % plan.ack_every == 0:
                    c.ack()
                if plan.acked and len(got) == plan.acked:
                    c.ack()
            progress.value = len(got)
            if plan.take and len(got) >= plan.take:
                results.put(("took", plan.name, got))
                commands.get(timeout=COMMAND_WAIT_S)
                return
            if command == "stop":
                while batch:
                    batch = c.recv_many(1000, timeout=RECV_WAIT_S)
                    got += [number_of(d) for d in batch]
                if plan.ack != "auto":
                    c.ack()
                redelivered = getattr(c, "redelivered", 0)
                results.put(("done", plan.name, {"seqs": got, "redelivered": redelivered}))
                return
