"""A durable import consumer made before this bridge version, met by the bridge at start.

Earlier bridges made it with AckPolicy.ALL and ``max_ack_pending`` = one fetch, which
leaves the standing pull requests nothing to fill: it must be kept (the import resumes at
its ack floor) with ``max_ack_pending`` raised in place. One with another ack policy
(made by hand; the policy cannot be edited) is made anew from its ack floor. Either way
B's consumers then see exactly what the durable had not acked, once, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import nats
import pytest
from bridge_kit import check_exact, collect, host_config, make_payload
from nats.js import api as js_api

from mycelium import Consumer
from mycelium.bridge import headers, link
from mycelium.bridge.natsd import NatsServer
from mycelium.config import parse_config

MESSAGES = 300
ACKED = 100
SECTION = 'import = ["market_data"]'


async def _earlier_bridge(url: str, policy: js_api.AckPolicy) -> js_api.ConsumerConfig:
    """The stream and B's durable as an earlier bridge left them: MESSAGES published,
    the first ACKED acked. Returns the config the bridge must have given it."""
    cfg = parse_config(host_config(f'name = "B"\nnats = ["{url}"]\n{SECTION}')).bridge
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        stream = await link.ensure_stream(js, cfg, "market_data")
        durable = headers.durable_name("B", "market_data")
        await js.add_consumer(
            stream,
            js_api.ConsumerConfig(
                durable_name=durable,
                ack_policy=policy,
                max_ack_pending=cfg.fetch_batch,
                filter_subject=headers.subject(cfg.subject_prefix, "market_data"),
            ),
        )
        for i in range(MESSAGES):
            await js.publish(
                headers.subject(cfg.subject_prefix, "market_data"), make_payload("A", i)
            )
        sub = await js.pull_subscribe_bind(durable, stream)
        for msg in await sub.fetch(ACKED, timeout=10):
            await msg.ack_sync()
        await sub.unsubscribe()
        info = await js.consumer_info(stream, durable)
        assert info.ack_floor is not None and info.ack_floor.stream_seq == ACKED
        return js_api.ConsumerConfig(max_ack_pending=link.max_ack_pending(cfg))
    finally:
        await nc.close()


async def _consumer_config(url: str) -> js_api.ConsumerConfig:
    nc = await nats.connect(url)
    try:
        stream = headers.stream_name("mycelium", "market_data")
        info = await nc.jetstream().consumer_info(stream, headers.durable_name("B", "market_data"))
        config: js_api.ConsumerConfig = info.config
        return config
    finally:
        await nc.close()


@pytest.mark.parametrize("policy", [js_api.AckPolicy.ALL, js_api.AckPolicy.EXPLICIT])
def test_an_earlier_durable_is_upgraded_and_the_import_resumes_at_its_ack_floor(
    nats_server: NatsServer, hosts: Callable[..., Any], policy: js_api.AckPolicy
) -> None:
    want = asyncio.run(_earlier_bridge(nats_server.url, policy))
    (b, bridges) = hosts([nats_server.url], B=SECTION)
    with Consumer("market_data", b.socket) as c:
        bridges["B"].start()
        (got,) = collect([c], MESSAGES - ACKED)
    check_exact(got, "A", MESSAGES - ACKED, start=ACKED)
    now = asyncio.run(_consumer_config(nats_server.url))
    assert now.ack_policy == js_api.AckPolicy.ALL
    assert now.max_ack_pending == want.max_ack_pending
