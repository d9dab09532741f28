"""The dashboard's web server at the HTTP level: ``mycelium service dashboard --http`` on
a real broker, its page and assets, the WebSocket's JSON updates, a 100k-message burst
coalesced to at most ~10 updates a second, and the addresses it refuses."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from service_helpers import ETH_ASSET, Q8, wait_for
from typer.testing import CliRunner
from web_helpers import Command

from mycelium import Producer
from mycelium.cli import app
from mycelium.errors import ConfigError
from mycelium.protocol import (
    AssetType,
    RelayDomain,
    SourceType,
    TLVType,
    TradeTLV,
    VenueId,
    encode_message,
)
from mycelium.services.web import parse_listen

if TYPE_CHECKING:
    from conftest import BrokerProcess

BURST = 100_000
CHUNK = 1_000
UPDATES_PER_S = 10  # UPDATE_EVERY_S = 0.1


def trade_message(price: float, sequence: int = 0) -> bytes:
    trade = TradeTLV(asset_id=ETH_ASSET, price=int(price * Q8), volume=Q8 // 2,
                     timestamp_ns=time.time_ns(), venue_id=VenueId.KRAKEN,
                     asset_type=AssetType.COIN, side=0)  # fmt: skip
    return encode_message(RelayDomain.MARKET_DATA, SourceType.KRAKEN,
                          [(TLVType.TRADE, trade.to_bytes())], sequence=sequence)  # fmt: skip


@pytest.fixture
def page(broker: BrokerProcess, tmp_path: Path) -> Iterator[str]:
    """``mycelium service dashboard --http 127.0.0.1:0`` on the test's broker, subscribed;
    yields the page's URL and stops the service (SIGTERM, by PID) before the broker."""
    cmd = Command(tmp_path, "dashboard", "service", "dashboard", "--socket", broker.socket,
                  "--http", "127.0.0.1:0", "--log-level", "WARNING")  # fmt: skip
    try:
        url = cmd.url()
        wait_for(lambda: len(broker.stats()["consumers"]) == 3, 30.0, "the dashboard's consumers")
        yield url
    finally:
        code = cmd.stop()
    assert code == 0, cmd.stderr()
    assert json.loads(cmd.out.read_text())["service"] == "dashboard"


async def next_document(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    return dict(json.loads(await ws.receive_str(timeout=30.0)))


async def document_where(ws: aiohttp.ClientWebSocketResponse, check: Any) -> dict[str, Any]:
    """Read updates until one passes ``check``."""
    while not check(doc := await next_document(ws)):
        pass
    return doc


def test_page_assets_and_socket_deliver_json(page: str, broker: BrokerProcess) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(page) as reply:
                assert reply.status == 200 and reply.content_type == "text/html"
                html = await reply.text()
            assert '<script src="/app.js">' in html and 'href="/app.css"' in html
            for asset in ("app.js", "app.css"):
                async with http.get(page + asset) as reply:
                    assert reply.status == 200
                    assert "https://" not in await reply.text()  # self-contained: no CDN
            async with http.get(page + "nothing") as reply:
                assert reply.status == 404

            async with http.ws_connect(page + "ws") as ws:
                first = await next_document(ws)
                assert first["seen"] == {"market_data": 0, "signals": 0, "execution": 0}
                with Producer(broker.socket) as p:
                    for i, price in enumerate((2001.5, 2002.25, 2003.0)):
                        p.publish_message(trade_message(price, i))
                doc = await document_where(ws, lambda d: d["seen"]["market_data"] == 3)
                assert [t["price"] for t in doc["trades"]] == [2003.0, 2002.25, 2001.5]
                assert doc["trades"][0] | {"time": ""} == {
                    "time": "", "venue": "kraken", "asset": "ETH", "side": "buy",
                    "price": 2003.0, "qty": 0.5}  # fmt: skip
                doc = await document_where(
                    ws, lambda d: [t["published"] for t in d["topics"]] == [3, 0, 0]
                )
                assert doc["broker"]["socket"] == broker.socket
                assert doc["web"]["clients"] == 1

            # A page of another origin may not read the stream.
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(page + "ws", headers={"Origin": "http://evil.example"})
            assert refused.value.status == 403

            # The page sends nothing: a client that floods the socket is cut off, and the
            # server goes on serving everyone else.
            async with http.ws_connect(page + "ws") as ws:
                await next_document(ws)
                await ws.send_str("x" * 10_000)
                message = await ws.receive(timeout=30.0)
                assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            async with http.ws_connect(page + "ws") as ws:
                assert (await next_document(ws))["seen"]["market_data"] == 3

    asyncio.run(run())


def test_burst_of_100k_messages_is_coalesced(page: str, broker: BrokerProcess) -> None:
    frame = trade_message(2000.0)

    def publish() -> float:
        started = time.monotonic()
        with Producer(broker.socket) as p:
            for _ in range(BURST // CHUNK):
                assert p.publish_many("market_data", [frame] * CHUNK) == CHUNK
        return time.monotonic() - started

    async def run() -> tuple[int, float, dict[str, Any], float]:
        async with aiohttp.ClientSession() as http, http.ws_connect(page + "ws") as ws:
            await next_document(ws)
            started = time.monotonic()
            publishing = asyncio.create_task(asyncio.to_thread(publish))
            updates = 0
            while True:
                doc = await next_document(ws)
                updates += 1
                if doc["seen"]["market_data"] == BURST:
                    break
            elapsed = time.monotonic() - started
            return updates, elapsed, doc, await publishing

    updates, elapsed, last, publish_s = asyncio.run(run())
    print(f"{BURST} messages published in {publish_s:.2f}s, seen in {elapsed:.2f}s: "
          f"{updates} updates, {last['shed']} shed")  # fmt: skip
    assert updates <= UPDATES_PER_S * elapsed + 2, (updates, elapsed)
    assert last["trades"][0]["price"] == 2000.0
    wait_for(lambda: all(c["lag"] == 0 for c in broker.stats()["consumers"]), 30.0, "no lag")
    market = next(t for t in broker.stats()["topics"] if t["name"] == "market_data")
    assert market["published"] == BURST and market["dropped"] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8080", ("127.0.0.1", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0)),
     ("localhost:9000", ("localhost", 9000)), ("[::1]:8080", ("::1", 8080)),
     ("127.5.6.7:1", ("127.5.6.7", 1))],
)  # fmt: skip
def test_parse_listen_takes_loopback_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "http", "host:", ":80", "127.0.0.1:65536", "1.2.3.4:-1"])
def test_parse_listen_refuses_malformed_addresses(text: str) -> None:
    with pytest.raises(ConfigError, match="expected PORT or HOST:PORT"):
        parse_listen(text, allow_remote=True)


@pytest.mark.parametrize("text", ["0.0.0.0:8080", "192.168.1.2:80", "[::]:80", "example.com:80"])
def test_remote_addresses_need_allow_remote(text: str) -> None:
    with pytest.raises(ConfigError, match="--allow-remote"):
        parse_listen(text)
    assert parse_listen(text, allow_remote=True)[1] == int(text.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("args", "message"),
    [(["service", "dashboard", "--http", "0.0.0.0:8080"], "--allow-remote"),
     (["demo", "--http", "10.0.0.1:8080"], "--allow-remote"),
     (["service", "dashboard", "--http", "port"], "expected PORT or HOST:PORT"),
     (["service", "portfolio", "--http", "8080"], "for the dashboard only")],
)  # fmt: skip
def test_cli_refuses_bad_http_addresses(args: list[str], message: str) -> None:
    """Refused before anything starts: no broker is needed, nothing is left behind."""
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2 and message in done.output, done.output


def test_cli_reports_a_port_in_use(tmp_path: Path) -> None:
    """A port another process holds: a clear error, exit code 1, nothing started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = CliRunner().invoke(app, ["service", "dashboard", "--http", f"127.0.0.1:{port}",
                                        "--socket", str(tmp_path / "none.sock")])  # fmt: skip
    assert done.exit_code == 1, done.output
    assert f"cannot serve on 127.0.0.1:{port}" in done.output
