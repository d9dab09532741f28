"""Test-side drivers of the dashboard's web page: headless Chromium over the DevTools
protocol, and ``mycelium`` commands run as child processes whose stderr we read.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it when missing). It picks its own
DevTools port (``--remote-debugging-port=0``) and writes it to ``DevToolsActivePort`` in
its profile directory; we talk to the page's target over aiohttp's WebSocket client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from service_helpers import wait_for

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1100", "--hide-scrollbars")  # fmt: skip
START_S = 60.0
STOP_S = 10.0
POLL_S = 0.05
URL_LINE = re.compile(r"dashboard page: (http://\S+)")


class Command:
    """``python -m mycelium ARGS`` in a child process; stdout and stderr go to files."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.out = tmp_path / f"{name}.out"
        self.err = tmp_path / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "mycelium", *args],
                                         stdout=out, stderr=err)  # fmt: skip

    def url(self) -> str:
        """The page's URL, once the command printed it."""

        def printed() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}: {self.stderr()}")
            match = URL_LINE.search(self.stderr())
            return match.group(1) if match else None

        return str(wait_for(printed, START_S, "the dashboard page's URL"))

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal it (by PID), wait, SIGKILL if it will not go; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_S)
        return self.proc.returncode


class Chromium:
    """Headless Chromium with a fresh profile, showing ``url``; kill it by PID in a finally."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        exe = shutil.which("chromium")
        assert exe is not None, "Debian's chromium is not installed (.ci/run installs it)"
        self.profile = tmp_path / "chromium-profile"
        self.profile.mkdir()
        self.log = tmp_path / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                 "--remote-debugging-port=0", url],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def devtools_port(self) -> int:
        def written() -> int | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}:\n"
                                     f"{self.log.read_text(errors='replace')[-3000:]}")  # fmt: skip
            try:
                return int((self.profile / "DevToolsActivePort").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return None

        return int(wait_for(written, START_S, "chromium's DevTools port"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_S)


class Page:
    """One page target over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, port: int) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as reply:
                targets = await reply.json()
            page = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield cls(ws)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are skipped)."""
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        while True:
            reply = json.loads(await self.ws.receive_str(timeout=30.0))
            if reply.get("id") == msg_id:
                assert "error" not in reply, reply
                return dict(reply["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> Path:
        result = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    async def poll(
        self, expression: str, check: Callable[[Any], Any], what: str, timeout: float = START_S
    ) -> Any:
        """Evaluate ``expression`` until ``check`` passes on its value, which is returned;
        fail after ``timeout`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if check(value):
                return value
            if loop.time() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {value}")
            await asyncio.sleep(POLL_S)
