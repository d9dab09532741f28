"""Two hosts (two brokers) bridged through a real nats-server: order, identity, queue
groups, loops."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

from bridge_kit import check_exact, collect, number, produce
from harness import Processes, wait_for

from mycelium import Consumer
from mycelium.bridge.natsd import NatsServer, free_port

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
    # B's figures count every message once (a batch redelivered after ack_wait lands in
    # duplicates_dropped instead).
    wait_for(
        lambda: bridges["B"].status()["imports"]["market_data"]["imported"] == MESSAGES,
        30,
        "B's figures",
    )
    # A counts a message exported when JetStream's ack reaches it, which can be after B
    # has it: the figure catches up, it is not there at once.
    wait_for(
        lambda: bridges["A"].status()["exports"]["market_data"]["exported"] == MESSAGES,
        30,
        "A's figures",
    )


def test_queue_topic_imported_is_shared_by_a_queue_group_each_message_once(
    nats_server: NatsServer, hosts: Callable[..., Any], procs: Processes
) -> None:
    count = 10_000
    a, b, bridges = hosts([nats_server.url], A='export = ["execution"]', B='import = ["execution"]')
    with Consumer("execution", b.socket) as c1, Consumer("execution", b.socket) as c2:
        bridges["B"].start()
        bridges["A"].start()
        procs.start(produce, a.socket, "execution", "A", count, 0)
        first, second = collect([c1, c2], count)
    assert first and second, f"the group did not share: {len(first)} / {len(second)}"
    merged = sorted(first + second, key=number)
    check_exact(merged, "A", count)
    for part in (first, second):  # each member sees its share in publish order
        assert [number(p) for p in part] == sorted(number(p) for p in part)


def test_two_hosts_exporting_and_importing_one_topic_do_not_echo(
    nats_server: NatsServer, hosts: Callable[..., Any], procs: Processes
) -> None:
    count = 5_000
    both = 'export = ["market_data"]\nimport = ["market_data"]'
    a, b, bridges = hosts([nats_server.url], A=both, B=both)
    with Consumer("market_data", a.socket) as ca, Consumer("market_data", b.socket) as cb:
        bridges["A"].start()
        bridges["B"].start()
        procs.start(produce, a.socket, "market_data", "A", count, 0)
        procs.start(produce, b.socket, "market_data", "B", count, 0)
        got_a, got_b = collect([ca, cb], 4 * count)

        def settled() -> bool:
            figures = [bridges[h].status() for h in "AB"]
            return all(
                f["exports"]["market_data"]["exported"] == count
                and f["exports"]["market_data"]["echoes_dropped"] == count
                and f["imports"]["market_data"]["last_stream_seq"] == 2 * count
                and f["imports"]["market_data"]["own_dropped"] == count
                for f in figures
            )

        wait_for(settled, 60, "both bridges settled with the stream at 2 x count")
        assert ca.recv_many(1000, timeout=0.2) == [] and cb.recv_many(1000, timeout=0.2) == []
    for got in (got_a, got_b):
        check_exact([p for p in got if p[8:9] == b"A"], "A", count)
        check_exact([p for p in got if p[8:9] == b"B"], "B", count)
        assert len(got) == 2 * count


def test_bridge_figures_in_the_status_file_and_on_the_metrics_endpoint(
    nats_server: NatsServer, hosts: Callable[..., Any], procs: Processes
) -> None:
    count = 1_000
    port = free_port()
    a, b, bridges = hosts(
        [nats_server.url],
        A='export = ["signals"]',
        B=f'import = ["signals"]\nmetrics = "127.0.0.1:{port}"',
    )
    with Consumer("signals", b.socket) as c:
        bridges["B"].start()
        bridges["A"].start()
        procs.start(produce, a.socket, "signals", "A", count, 0)
        (got,) = collect([c], count)
    check_exact(got, "A", count)
    wait_for(
        lambda: bridges["B"].status()["imports"]["signals"]["imported"] == count, 30, "figures"
    )
    status = bridges["B"].status()
    assert (
        status["imports"]["signals"] | {"lag": 0, "acks_pending": 0} == status["imports"]["signals"]
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert f'mycelium_bridge_import_imported{{bridge="B",topic="signals"}} {count}' in text
    assert 'mycelium_bridge_connected{bridge="B"} 1' in text
