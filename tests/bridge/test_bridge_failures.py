"""Crashes while messages flow A -> B: a bridge, the nats-server, a cluster node.

Each test kills one process by PID once a third of the messages reached B's consumer,
brings it back, and then requires every message exactly once, in order, byte-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from bridge_kit import check_exact, collect, produce
from harness import Processes

from mycelium import Consumer
from mycelium.bridge.natsd import NatsServer

MESSAGES = 20_000
RATE = 4000.0
EXPORT_A = 'export = ["market_data"]'
IMPORT_B = 'import = ["market_data"]'


def _once(
    action: Callable[[], None], ready: Callable[[int], bool], done: list[int]
) -> Callable[[int], None]:
    """A progress callback that runs ``action`` the first time ``ready(received)`` holds
    (and notes in ``done`` how many had arrived then)."""

    def progress(n: int) -> None:
        if not done and ready(n):
            done.append(n)
            action()

    return progress


def _run(
    hosts: Callable[..., Any],
    procs: Processes,
    urls: list[str],
    crash: Callable[[dict[str, Any]], None],
    timeout: float | None = None,
    **sections: str,
) -> list[bytes]:
    a, b, bridges = hosts(urls, A=sections.get("A", EXPORT_A), B=sections.get("B", IMPORT_B))
    with Consumer("market_data", b.socket) as c:
        bridges["B"].start()
        bridges["A"].start()
        procs.start(produce, a.socket, "market_data", "A", MESSAGES, RATE)

        # The crash is timed by the bridges' own figures (written between two batches),
        # not by what B's consumer just read, which would aim it at the instant a batch
        # lands in the ring, before its cursor store (the one window docs/distribution.md
        # lists: a SIGKILL exactly there re-imports that batch).
        def ready(n: int) -> bool:
            status = bridges["B"].status()
            return bool(status["imports"]["market_data"]["imported"] >= MESSAGES // 3)

        crashed: list[int] = []
        progress = _once(lambda: crash(bridges), ready, crashed)
        kwargs = {} if timeout is None else {"timeout": timeout}
        (got,) = collect([c], MESSAGES, progress, **kwargs)
    assert crashed, "the stream ended before the crash was due"
    return got


@pytest.mark.xfail(
    strict=False,
    reason="known bug, issue 11: one run in about four lost one in-flight batch (77 messages) "
    "after the importing bridge's SIGKILL; every other run delivers all, exactly once",
)
def test_importing_bridge_sigkilled_and_restarted_loses_and_duplicates_nothing(
    nats_server: NatsServer, hosts: Callable[..., Any], procs: Processes
) -> None:
    def crash(bridges: dict[str, Any]) -> None:
        bridges["B"].kill()
        bridges["B"].start(wait=False)  # B's consumer keeps draining meanwhile

    got = _run(hosts, procs, [nats_server.url], crash)
    check_exact(got, "A", MESSAGES)


@pytest.mark.xfail(
    strict=True,
    reason="the export acknowledges nothing yet: manual ack needs message ids that survive a restart "
    "(origin producer and per-lane sequence, issue 14)",
)
def test_exporting_bridge_sigkilled_and_restarted_loses_and_duplicates_nothing(
    nats_server: NatsServer, hosts: Callable[..., Any], procs: Processes
) -> None:
    def crash(bridges: dict[str, Any]) -> None:
        bridges["A"].kill()
        bridges["A"].start(wait=False)

    got = _run(hosts, procs, [nats_server.url], crash, timeout=30.0)
    check_exact(got, "A", MESSAGES)


def test_nats_server_sigkilled_and_restarted_loses_nothing(
    nats_server: NatsServer, hosts: Callable[..., Any], procs: Processes
) -> None:
    def crash(bridges: dict[str, Any]) -> None:
        nats_server.kill()
        nats_server.start()  # same port, same store directory (file storage)

    got = _run(hosts, procs, [nats_server.url], crash)
    check_exact(got, "A", MESSAGES)


def test_cluster_node_sigkilled_bridges_fail_over_and_lose_nothing(
    nats_cluster: list[NatsServer], hosts: Callable[..., Any], procs: Processes
) -> None:
    urls = [s.url for s in nats_cluster]
    replicated = "replicas = 3\n"

    def crash(bridges: dict[str, Any]) -> None:
        serving = bridges["A"].status()["server"]
        victim = next(s for s in nats_cluster if s.url.endswith(serving))
        victim.kill()

    got = _run(
        hosts, procs, urls, crash, A=EXPORT_A + "\n" + replicated, B=IMPORT_B + "\n" + replicated
    )
    check_exact(got, "A", MESSAGES)
