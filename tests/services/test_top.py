"""``mycelium top`` driven in a real 80x24 pseudo-terminal against a real broker: it fits
(no line wider than the terminal, no cell cut to an ellipsis), draws each topic's rate as
a sparkline, and a malformed message's log line lands in its log pane instead of tearing
the display."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from typing import TYPE_CHECKING

from service_helpers import wait_for

from mycelium import Producer
from mycelium.services.top import SPARK_CHARS, sparkline

if TYPE_CHECKING:
    from conftest import BrokerProcess

COLUMNS, ROWS = 80, 24
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()=>78]")
EXIT_TIMEOUT_S = 10.0


class Terminal:
    """A child process on an 80x24 pty; everything it writes is collected."""

    def __init__(self, args: list[str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):  # EIO once the child has closed the pty
            while data := os.read(self.master, 65536):
                self.chunks.append(data)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(EXIT_TIMEOUT_S)
        self._reader.join(EXIT_TIMEOUT_S)
        os.close(self.master)


def screen_lines(raw: str) -> list[str]:
    """What the terminal shows, line by line, with escape sequences removed."""
    return re.split(r"\r\n|\n|\r", ANSI.sub("", raw))


def test_top_fits_80x24_draws_sparklines_and_keeps_logs_in_their_pane(
    broker: BrokerProcess,
) -> None:
    term = Terminal([sys.executable, "-m", "mycelium", "top", "--socket", broker.socket,
                     "--refresh", "0.2"])  # fmt: skip
    try:
        with Producer(broker.socket, name="garbage") as p:

            def shown() -> bool:
                p.publish("market_data", b"not a protocol v2 message")  # logged by top
                text = term.text()
                return "skipped a malformed" in text and SPARK_CHARS[-1] in text

            wait_for(shown, 60, "top to show a sparkline and the malformed message's log line")
    finally:
        term.close()
    raw = term.text()
    lines = screen_lines(raw)
    too_wide = [line for line in lines if len(line.rstrip()) > COLUMNS]
    assert not too_wide, f"lines wider than {COLUMNS} columns: {too_wide}"
    assert "…" not in raw and "..." not in raw
    for needle in ("market_data", "signals", "execution", "Topics", "Consumers", "PnL"):
        assert needle in raw, needle
    logged = [line for line in lines if "skipped a malformed" in line]
    assert logged, "the log line is not in the pane"
    assert "Traceback" not in raw


def test_sparkline_scales_to_its_width_and_maximum() -> None:
    assert sparkline([], 4) == "    "
    assert sparkline([0.0, 0.0], 3) == " " + SPARK_CHARS[0] * 2
    assert sparkline([1.0, 2.0], 2) == SPARK_CHARS[4] + SPARK_CHARS[-1]
    assert len(sparkline([float(i) for i in range(60)], 20)) == 20  # a minute into 20 chars
