"""An importing bridge that starts while a predecessor's fetched batch is unacknowledged:
the server hands it newer messages first; it must not ack past them, nor wait for them.

This is the interleaving behind the one-batch loss after an importing bridge's SIGKILL,
set up exactly: a plain nats-py client stands for the killed bridge (it fetches part of
the stream through B's durable consumer and disappears without acking). The redelivery is
set an hour away, far beyond the test's deadline: the successor must read the missing
batch from the stream itself (the import once waited on the redelivery, and under load
one such wait never ended).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import nats
from bridge_kit import check_exact, collect, host_config, make_payload
from harness import wait_for

from mycelium import Consumer
from mycelium.bridge import headers, link
from mycelium.bridge.natsd import NatsServer
from mycelium.config import parse_config

BEFORE = 200
HELD = 50
AFTER = 300
#: Far longer than the test may take: nothing of it may depend on a redelivery.
SECTION = 'import = ["market_data"]\nack_wait_ms = 3600000\n'
#: The whole import, the bridge's start included, is due well within this.
IMPORT_DEADLINE_S = 60.0


async def _predecessor(url: str, section: str) -> None:
    """Publish BEFORE messages, fetch HELD of them through B's durable consumer without
    acking (the killed bridge's batch), leave, then publish AFTER more."""
    cfg = parse_config(host_config(f'name = "B"\nnats = ["{url}"]\n{section}')).bridge
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream = await link.ensure_stream(js, cfg, "market_data")
        durable = await link.ensure_consumer(js, cfg, stream, "B", "market_data")
        subject = headers.subject(cfg.subject_prefix, "market_data")
        for i in range(BEFORE):
            await js.publish(subject, make_payload("A", i))
        sub = await js.pull_subscribe_bind(durable, stream)
        held = await sub.fetch(HELD, timeout=10)
        assert [m.metadata.sequence.stream for m in held] == list(range(1, HELD + 1))
        await sub.unsubscribe()
        for i in range(BEFORE, BEFORE + AFTER):
            await js.publish(subject, make_payload("A", i))
    finally:
        await nc.close()


def test_a_successor_reads_the_predecessors_unacked_batch_from_the_stream(
    nats_server: NatsServer, hosts: Callable[..., Any]
) -> None:
    (b, bridges) = hosts([nats_server.url], B=SECTION)
    asyncio.run(_predecessor(nats_server.url, SECTION))
    with Consumer("market_data", b.socket) as c:
        bridges["B"].start()
        (got,) = collect([c], BEFORE + AFTER, timeout=IMPORT_DEADLINE_S)
    check_exact(got, "A", BEFORE + AFTER)

    def figures() -> dict[str, Any]:
        return dict(bridges["B"].status().get("imports", {}).get("market_data", {}))

    # The status file follows within a second; then: it met the gap and read exactly the held batch from the stream; nothing came twice.
    wait_for(lambda: figures().get("imported") == BEFORE + AFTER, 10.0, "B's figures")
    assert figures()["gap_filled"] == HELD, figures()
    assert figures()["duplicates_dropped"] == 0, figures()
