"""Two hosts (two brokers) bridged through a real nats-server: order, identity, queue
groups, loops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge_kit import check_exact, collect, produce
from harness import Processes, wait_for

from mycelium import Consumer
from mycelium.bridge.natsd import NatsServer

MESSAGES = 100_000


def test_100k_numbered_messages_arrive_in_order_and_identical(
    nats_server: NatsServer, hosts: Callable[..., Any], procs: Processes
) -> None:
    a, b, bridges = hosts(
        [nats_server.url], A='export = ["market_data"]', B='import = ["market_data"]'
    )
    with Consumer("market_data", b.socket) as c:
        bridges["B"].start()
        bridges["A"].start()
        procs.start(produce, a.socket, "market_data", "A", MESSAGES, 0)
        (got,) = collect([c], MESSAGES)
    check_exact(got, "A", MESSAGES)
    status = wait_for(
        lambda: (
            (s := bridges["B"].status())["imports"]["market_data"]["imported"] == MESSAGES and s
        ),
        30,
        "B's figures",
    )
    assert status["imports"]["market_data"]["duplicates_dropped"] == 0
    assert bridges["A"].status()["exports"]["market_data"]["exported"] == MESSAGES
