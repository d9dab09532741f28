"""The dashboard's web server: one page, its two assets, a WebSocket of coalesced updates.

How this works
--------------
``WebServer`` runs an aiohttp application on an asyncio loop in a thread of its own, next
to a running ``Dashboard`` service (the Mycelium consumer, in its own thread). It never
touches a ring: it reads the dashboard's state under its lock, so however slowly a
browser reads, the consumer and so the producers never wait for it.

Two tasks drive it. ``_sample_loop`` asks the broker for its stats every
``STATS_EVERY_S`` (in an executor: the control socket is blocking) and files them in the
``Feed``. ``_push_loop`` wakes every ``UPDATE_EVERY_S``; when anything changed it builds
one JSON document and offers it to every client. A client holds at most one unsent
document: a newer one replaces it (counted in ``web.replaced``), so a slow browser gets
fewer updates, never a queue, and a burst of any size yields at most ten updates a
second.

The server binds loopback unless told otherwise: the page has no authentication, so
``parse_listen`` refuses any other address without ``allow_remote``. A WebSocket from a
page of another origin (a site the user visits, DNS rebinding) is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
import time
from importlib.resources import files
from typing import Any, Self
from urllib.parse import urlsplit

from aiohttp import web

from mycelium.errors import ConfigError
from mycelium.services.dashboard import Dashboard, broker_stats
from mycelium.services.web.feed import Feed

__all__ = ["DEFAULT_HOST", "UPDATE_EVERY_S", "WebServer", "parse_listen"]

DEFAULT_HOST = "127.0.0.1"
#: The shortest interval between two updates to a browser.
UPDATE_EVERY_S = 0.1
#: How often the broker's stats (topics, rates) are asked for.
STATS_EVERY_S = 0.5
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
#: The page sends nothing; anything larger than this closes its socket.
CLIENT_MESSAGE_MAX_BYTES = 1024
ASSETS = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
          "/app.css": ("app.css", "text/css")}  # fmt: skip


def parse_listen(text: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port); port 0 picks a free one.

    Raises ConfigError for a malformed address, and for a host that is not loopback
    unless ``allow_remote``: the page has no authentication.
    """
    host, sep, port_text = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if sep else DEFAULT_HOST
    if not port_text.isdigit() or int(port_text) > 65535 or not host:
        raise ConfigError(f"--http {text!r}: expected PORT or HOST:PORT with a port 0-65535")
    if not allow_remote and not _is_loopback(host):
        raise ConfigError(f"--http {text!r}: {host} is not a loopback address; the page has "
                          "no authentication, pass --allow-remote to serve it to other "
                          "machines")  # fmt: skip
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


class _Client:
    """One browser: at most one document waiting to be sent."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.pending: str | None = None
        self.ready = asyncio.Event()
        self.replaced = 0

    def offer(self, text: str) -> None:
        if self.pending is not None:
            self.replaced += 1
        self.pending = text
        self.ready.set()

    async def send_loop(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            text, self.pending = self.pending, None
            if text is not None:
                try:
                    await self.ws.send_str(text)
                except ConnectionResetError:  # the browser left; its handler cleans up
                    return


class WebServer:
    """Serves ``dashboard``'s state on ``host:port`` until stopped (a context manager)."""

    def __init__(
        self, dashboard: Dashboard, socket_path: str | None, host: str = DEFAULT_HOST,
        port: int = 0,
    ) -> None:  # fmt: skip
        self.dashboard = dashboard
        self.socket_path = socket_path
        self.host = host
        self.port = port
        self.feed = Feed()
        self.updates = 0
        self._replaced = 0  # by clients that left; live ones count their own
        self._clients: set[_Client] = set()
        self._assets = {
            path: ((files(__package__) / name).read_bytes(), kind)
            for path, (name, kind) in ASSETS.items()
        }
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> Self:
        """Bind and serve in a thread; returns once listening. Raises OSError if the
        address cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="dashboard-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._thread.join(STOP_TIMEOUT_S)
                if isinstance(self._failure, OSError):
                    raise OSError(f"cannot serve on {self.host}:{self.port}: "
                                  f"{self._failure.strerror or self._failure}") from self._failure  # fmt: skip
                raise RuntimeError("the dashboard's web server did not start") from self._failure
        return self

    def stop(self) -> None:
        """Close every socket and end the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def counters(self) -> dict[str, int]:
        """Clients now, documents built, documents replaced unsent (slow clients)."""
        replaced = self._replaced + sum(c.replaced for c in self._clients)
        return {"clients": len(self._clients), "updates": self.updates, "replaced": replaced}

    def document(self) -> dict[str, Any]:
        return self.feed.document(self.dashboard.view.snapshot(), time.time(), self.counters())

    # -- the loop ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._failure = exc

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        for path in self._assets:
            app.router.add_get(path, self._asset)
        app.router.add_get("/ws", self._socket)
        app.router.add_get("/state.json", self._state)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
            self.port = runner.addresses[0][1]
            tasks = [asyncio.create_task(self._sample_loop()),
                     asyncio.create_task(self._push_loop())]  # fmt: skip
            self._ready.set()
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            for client in list(self._clients):
                await client.ws.close()
        finally:
            await runner.cleanup()

    async def _sample_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            stats = await loop.run_in_executor(None, broker_stats, self.socket_path)
            pnl = self.dashboard.view.snapshot()["book"]["pnl_usd"]
            self.feed.sample(stats, pnl, time.time())
            await asyncio.sleep(STATS_EVERY_S)

    async def _push_loop(self) -> None:
        last: tuple[Any, ...] = ()
        while True:
            await asyncio.sleep(UPDATE_EVERY_S)
            if not self._clients:
                continue
            view = self.dashboard.view.snapshot()
            mark = (self.feed.stats_seq, view["shed"], *view["counts"].values())
            if mark == last:
                continue
            last = mark
            self.updates += 1
            text = json.dumps(self.feed.document(view, time.time(), self.counters()))
            for client in self._clients:
                client.offer(text)

    # -- handlers ---------------------------------------------------------------------
    async def _asset(self, request: web.Request) -> web.Response:
        body, kind = self._assets[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers={"Cache-Control": "no-store"})  # fmt: skip

    async def _state(self, _request: web.Request) -> web.Response:
        return web.json_response(self.document())

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text=f"WebSocket from origin {origin} refused")
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=CLIENT_MESSAGE_MAX_BYTES)
        await ws.prepare(request)
        client = _Client(ws)
        self._clients.add(client)
        client.offer(json.dumps(self.document()))
        sender = asyncio.create_task(client.send_loop())
        try:
            async for _message in ws:  # the page sends nothing: read and ignore
                pass
        finally:
            self._clients.discard(client)
            self._replaced += client.replaced
            sender.cancel()
        return ws
