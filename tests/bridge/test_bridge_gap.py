"""The importer at a gap, without a server: a fetch whose sequences skip some must get the
missing ones from the stream by sequence, import everything once and in order, and ack the
whole fetch; nothing of it may be left for a redelivery.

This is the state the SIGKILL test stalled in: the durable's ``max_ack_pending`` full of
messages delivered at different times, so every fetch (redeliveries first, then newer
messages) skipped sequences whose ``ack_wait`` had not run out yet; the importer took the
run up to the first gap and left the rest for another ``ack_wait``, every time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from bridge_kit import host_config
from nats.js.errors import NotFoundError

from mycelium.bridge import headers
from mycelium.bridge.figures import ImportFigures
from mycelium.bridge.importer import ImportCursor, Importer
from mycelium.bridge.puller import Delivery
from mycelium.config import parse_config

HOST = "B"
OTHER = "A"


def delivery(seq: int, consumer_seq: int, origin: str = OTHER) -> Delivery:
    """A delivered JetStream message: stream and delivery sequence, payload, origin."""
    return Delivery(seq, consumer_seq, 0, b"m%d" % seq, origin, f"ack.{seq}.{consumer_seq}")


class Acks:
    """The acks the importer publishes, by ack subject."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, msg: Delivery) -> None:
        self.sent.append(msg.reply)


class FakeStream:
    """``js.get_msg(stream, seq, subject=..., next=True)`` over a dict of sequences."""

    def __init__(self, held: dict[int, str]) -> None:
        self.held = held  # sequence -> origin; absent: deleted or another subject's
        self.reads: list[int] = []

    async def get_msg(self, stream: str, seq: int, subject: str, next: bool) -> Any:
        assert next
        found = [s for s in sorted(self.held) if s >= seq]
        if not found:
            raise NotFoundError
        self.reads.append(found[0])
        origin = self.held[found[0]]
        return SimpleNamespace(
            seq=found[0], data=b"m%d" % found[0], headers={headers.ORIGIN: origin}
        )


class FakeProducer:
    """The ring: takes at most ``room`` frames a write (a full ring takes part of a run)."""

    def __init__(self, room: int = 3) -> None:
        self.room = room
        self.ring: list[bytes] = []

    async def publish_many(self, topic: str, payloads: list[bytes], timeout: float) -> int:
        self.ring += payloads[: self.room]
        return min(self.room, len(payloads))


def _importer(tmp_path: Path, cursor_at: int) -> tuple[Importer, FakeProducer]:
    cfg = parse_config(host_config('import = ["market_data"]\nfetch_batch = 4\n')).bridge
    cursor = ImportCursor(tmp_path / "import.seq")
    cursor.value = cursor_at
    producer = FakeProducer()
    imp = Importer(cfg, HOST, "market_data", producer, cursor, ImportFigures())
    return imp, producer


def test_gaps_before_and_inside_a_fetch_are_read_from_the_stream(tmp_path: Path) -> None:
    imp, producer = _importer(tmp_path, cursor_at=10)
    # 11..15 a killed predecessor's, 18..19 delivered earlier and not yet redelivered;
    # 13 is this host's own export, 16 was deleted by the stream's limits.
    stream = FakeStream({s: OTHER for s in range(11, 26) if s != 16} | {13: HOST})
    fetch = [delivery(s, 100 + s) for s in (22, 17, 20, 21, 10, 23)]  # 10: a redelivery
    acks = Acks()
    asyncio.run(imp._take(stream, "S", fetch, acks))
    expected = [b"m%d" % s for s in range(11, 24) if s not in (13, 16)]
    assert producer.ring == expected
    assert imp.cursor.value == 23
    assert stream.reads == [11, 12, 13, 14, 15, 17, 18, 19]  # 16: deleted, 17 fetched
    assert acks.sent == ["ack.23.123"]  # one cumulative ack, of 23
    f = imp.figures
    assert (f.imported, f.gap_filled, f.own_dropped, f.duplicates_dropped) == (11, 7, 1, 1)
    imp.cursor.close()


def test_the_predecessors_batch_redelivered_later_is_dropped_and_acked(tmp_path: Path) -> None:
    imp, producer = _importer(tmp_path, cursor_at=23)
    late = [delivery(s, 300 + s) for s in (11, 12, 14)]
    acks = Acks()
    asyncio.run(imp._take(FakeStream({}), "S", late, acks))
    assert producer.ring == []
    assert imp.cursor.value == 23
    assert acks.sent == ["ack.14.314"]  # below the ack floor: the server ignores it, no stall
    assert imp.figures.duplicates_dropped == 3
    imp.cursor.close()


@pytest.mark.parametrize("held", [{}, {30: OTHER}])
def test_a_gap_that_holds_nothing_of_the_topic_is_passed_over(
    tmp_path: Path, held: dict[int, str]
) -> None:
    imp, producer = _importer(tmp_path, cursor_at=5)
    fetch = [delivery(9, 1), delivery(10, 2)]
    asyncio.run(imp._take(FakeStream(held), "S", fetch, Acks()))
    assert producer.ring == [b"m9", b"m10"]
    assert imp.cursor.value == 10
    assert imp.figures.gap_filled == 0
    imp.cursor.close()
