"""The importing bridge SIGKILLed between a write into the ring and the ack of its batch.

The import acks once per batch (AckPolicy.ALL: the highest sequence acks all before it),
after the whole batch is in the ring. A full ring holds the importer exactly there: part
of a batch written, the rest waiting for room, nothing of it acked. B's consumer is
subscribed and does not read, so the ring of its small market_data lane fills and stays
full; the bridge is killed in that state and restarted, then the consumer reads: every
message once, in order (the successor gets the batch again, or newer ones and reads the
gap from the stream, and its cursor drops what the predecessor had written).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge_kit import TEST_BRIDGE, BridgeProcess, check_exact, collect, host_config, produce
from harness import Processes, wait_for

from mycelium import Consumer
from mycelium.bridge.natsd import NatsServer

MESSAGES = 5000
#: A market_data ring of a few hundred frames: the import fills it within one fetch.
SMALL_RING = "lane_bytes = 65536"
MAX_MESSAGE = "max_message_size = 1024"


def _config(name: str, url: str, section: str) -> str:
    text = host_config(f'name = "{name}"\nnats = ["{url}"]\n{TEST_BRIDGE}{section}\n')
    # market_data is the first topic of the default config: its keys come first.
    text = text.replace("lane_bytes = 0", SMALL_RING, 1)
    return text.replace("max_message_size = 65536", MAX_MESSAGE, 1)


def test_sigkill_while_a_batch_is_half_in_the_ring_loses_and_duplicates_nothing(
    nats_server: NatsServer,
    make_broker: Callable[..., Any],
    procs: Processes,
    tmp_path: Path,
) -> None:
    a = make_broker(_config("A", nats_server.url, 'export = ["market_data"]'))
    b = make_broker(_config("B", nats_server.url, 'import = ["market_data"]'))
    bridge_a = BridgeProcess(a.socket, a.config, tmp_path / "bridge-A")
    bridge_b = BridgeProcess(b.socket, b.config, tmp_path / "bridge-B")
    try:
        with Consumer("market_data", b.socket) as c:  # subscribed, not reading yet
            bridge_b.start()
            bridge_a.start()
            procs.start(produce, a.socket, "market_data", "A", MESSAGES, 0.0)

            def held() -> dict[str, Any]:
                f = dict(bridge_b.status().get("imports", {}).get("market_data", {}))
                return f if f.get("ring_full_waits") and f.get("acks_pending") else {}

            before = wait_for(held, 60.0, "B's import held by a full ring")
            assert before["imported"] < MESSAGES, before
            bridge_b.kill()
            bridge_b.start(wait=False)
            (got,) = collect([c], MESSAGES)
        check_exact(got, "A", MESSAGES)
    finally:
        for bridge in (bridge_b, bridge_a):
            try:
                bridge.stop()
            finally:
                bridge.kill()
