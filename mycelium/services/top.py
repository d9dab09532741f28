"""``mycelium top``: the dashboard's live view, fitted to the terminal.

How this works
--------------
``render`` lays the screen out for a given width and height: the broker line, topics
(with a sparkline of each topic's publish rate over the last minute, from the broker's
rate history), consumers, then latest trades, prices, signals and positions, the PnL
line and a small log pane. Each table drops its least important columns until its
natural width fits (a cell is never cut to ``...``), and each section gets the rows the
height leaves it (an overflow is one ``+N more`` row).

``run_top`` moves every log handler of the process into ``LogPane`` while the live view
runs, so a log line (a malformed message, a reconnect) shows in the pane instead of being
written over the display, and puts them back afterwards.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mycelium.logs import JsonFormatter
from mycelium.services.dashboard import Q8, Dashboard, broker_stats, venue_name

__all__ = ["LogPane", "render", "run_top", "sparkline"]

SPARK_CHARS = "▁▂▃▄▅▆▇█"
#: Log lines the pane keeps, and shows at most.
LOG_KEEP = 100
LOG_SHOWN = 2
#: Rows of each lower table when the terminal is tall enough.
MAX_ROWS = 8
#: ``--once`` prints a frame this tall at most (it scrolls; only MAX_ROWS bounds tables).
ONCE_HEIGHT = 1000
Cell = str | Text


def sparkline(values: Sequence[float], width: int) -> str:
    """``values`` (oldest first) as ``width`` block characters scaled to their maximum:
    averaged into buckets when there are more values than characters, padded left."""
    n = len(values)
    if n > width:
        values = [
            sum(values[i * n // width : (i + 1) * n // width])
            / max(1, (i + 1) * n // width - i * n // width)
            for i in range(width)
        ]
    top = max(values, default=0.0)
    steps = len(SPARK_CHARS) - 1
    chars = "".join(SPARK_CHARS[round(v / top * steps) if top > 0 else 0] for v in values)
    return chars.rjust(width)


def _fit(
    console: Console,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    width: int,
    max_rows: int,
) -> Table:
    """A table of ``columns`` (most important first; capitalised: numbers) that fits
    ``width``: the last columns are dropped until it does. At most ``max_rows`` rows."""
    shown = list(rows)
    if len(shown) > max_rows:
        keep = max(0, max_rows - 1)
        more = len(shown) - keep
        shown = [*shown[:keep], [f"+{more} more", *[""] * (len(columns) - 1)]]
    n = len(columns)
    while True:
        table = Table(title=title, title_justify="left", box=None, pad_edge=False,
                      header_style="bold", title_style="bold cyan")  # fmt: skip
        for c in columns[:n]:
            table.add_column(c, justify="right" if c[:1].isupper() else "left", no_wrap=True)
        for row in shown:
            table.add_row(*row[:n])
        if (
            n == 1
            or console.measure(table, options=console.options.update_width(10**4)).maximum <= width
        ):
            return table
        n -= 1


def _height(table: Table) -> int:
    """Lines a fitted table takes: title, header, rows."""
    return 2 + table.row_count


def render(
    view: dict[str, Any],
    stats: dict[str, Any] | None,
    *,
    width: int = 80,
    height: int = 24,
    logs: Sequence[str] = (),
    console: Console | None = None,
) -> Group:
    """The whole screen for a terminal of ``width`` x ``height``."""
    console = console or Console(width=width)
    budget = height - 1  # the live display keeps the cursor on the last line
    parts: list[RenderableType] = []
    if stats is None:
        parts.append(Text("broker: not answering", style="bold red"))
    else:
        b = stats["broker"]
        parts.append(Text(f"broker {b['id']} up {b['uptime_s']:.0f}s, {b['connections']} "
                          f"connections", style="bold", no_wrap=True, overflow="crop"))  # fmt: skip
        spark = max(10, min(30, width - 60))
        topics = _fit(console, "Topics", ["topic", "Pub/s", "last minute", "Published", "Lag",
                                          "Cons", "Prod", "Dlv/s", "Delivered", "Dropped",
                                          "Timeouts", "routing"],
                      [[t["name"], f"{t['publish_rate']:.0f}",
                        Text(sparkline(t.get("publish_rate_history", ()), spark), style="green"),
                        str(t["published"]), str(_topic_lag(stats, t["name"])),
                        str(t["consumers"]), str(t["producers"]), f"{t['deliver_rate']:.0f}",
                        str(t["delivered"]), str(t["dropped"]),
                        str(t.get("backpressure_timeouts", 0)), t["routing"]]
                       for t in stats["topics"]], width, budget)  # fmt: skip
        parts.append(topics)
    kinds = view.get("market_data") or {}
    if any(kinds.values()):
        parts.append(Text("market data: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n),
                          no_wrap=True, overflow="crop"))  # fmt: skip
    used = sum(_height(p) if isinstance(p, Table) else 1 for p in parts)
    log_lines = list(logs)[-LOG_SHOWN:]
    left = budget - used - 1 - len(log_lines)  # the PnL line, the log pane
    book = view["book"]
    if stats is not None and left > 3:
        consumers = _fit(console, "Consumers", ["name", "topic", "Lag", "Lag s", "Received",
                                                "Lost", "group", "Pid", "Id"],
                         [[c.get("name") or str(c["id"]), c["topic"],
                           Text(str(c["lag"]), style="red" if c["lag"] > 1000 else ""),
                           f"{c.get('lag_seconds', 0.0):.1f}", str(c["received"]),
                           str(c["lost"]), c["group"], str(c["pid"]), str(c["id"])]
                          for c in stats["consumers"]],
                         width, max(1, min(len(stats["consumers"]), left // 2 - 2)))  # fmt: skip
        parts.append(consumers)
        left -= _height(consumers)
    if left > 3:
        parts.extend(_lower(console, view, width, left))
    parts.append(Text(f"PnL ${book['pnl_usd']:,.2f} (signals ${book['expected_pnl_usd']:,.2f}), "
                      f"{book['orders']} orders", style="bold", no_wrap=True,
                      overflow="crop"))  # fmt: skip
    parts += [Text(line, style="dim", no_wrap=True, overflow="crop") for line in log_lines]
    return Group(*parts)


def _topic_lag(stats: dict[str, Any], topic: str) -> int:
    return max((c["lag"] for c in stats["consumers"] if c["topic"] == topic), default=0)


def _lower(console: Console, view: dict[str, Any], width: int, lines: int) -> Iterator[Columns]:
    """Trades beside signals (each half the width), then prices beside positions if the
    ``lines`` left hold both pairs (title and header each, and at least two rows)."""
    both = lines >= 2 * (2 + 2)
    rows = min(MAX_ROWS, (lines // 2 if both else lines) - 2)
    half = (width - 2) // 2
    trades = _fit(console, "Latest trades", ["asset", "side", "Price", "Qty", "venue", "time"],
                  [[asset, Text(side, style="green" if side == "buy" else "red"),
                    f"{price:,.2f}", f"{qty:.4f}", venue, stamp]
                   for stamp, venue, asset, side, price, qty in view["trades"]],
                  half, rows)  # fmt: skip
    signals = _fit(console, "Signals", ["Net $", "buy at", "sell at", "Spread bp", "Id"],
                   [[f"{s.net_profit_usd_q8 / Q8:,.2f}", venue_name(s.source_venue),
                     venue_name(s.target_venue), str(s.spread_bps), str(s.signal_id)]
                    for s in view["signals"]], half, rows)  # fmt: skip
    yield Columns([trades, signals], width=half, padding=(0, 1))
    if not both:
        return
    gas = view["gas_gwei"]
    prices = _fit(console, f"Prices (gas {gas if gas is not None else '-'} gwei)",
                  ["asset", "Mid", "venue", "Bid", "Ask"],
                  [[ticker, f"{mid:,.2f}", venue, f"{bid:,.2f}" if bid else "",
                    f"{ask:,.2f}" if ask else ""]
                   for ticker, venue, mid, bid, ask in view["prices"]], half, rows)  # fmt: skip
    positions = _fit(console, "Positions", ["asset", "Qty", "venue"],
                     [[ticker, f"{qty:+.4f}", venue_name(int(venue))]
                      for ticker, venues in view["book"]["positions"].items()
                      for venue, qty in venues.items()], half, rows)  # fmt: skip
    yield Columns([prices, positions], width=half, padding=(0, 1))


class LogPane(logging.Handler):
    """Keeps the last log lines for the view to show: JSON if the process logs JSON,
    else short text lines (time, level, message), so the message fits the width."""

    def __init__(self, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=LOG_KEEP)
        if not isinstance(formatter, JsonFormatter):
            formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record).replace("\n", " "))

    @classmethod
    @contextmanager
    def capture(cls) -> Iterator[LogPane]:
        """Route the root logger's records into a pane for the duration."""
        root = logging.getLogger()
        saved = root.handlers[:]
        pane = cls(saved[0].formatter if saved else None)
        root.handlers = [pane]
        try:
            yield pane
        finally:
            root.handlers = saved


def run_top(
    socket_path: str | None,
    refresh: float = 1.0,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    dashboard: Dashboard | None = None,
    console: Console | None = None,
) -> None:
    """Show the live view until ``stop`` is set (or after one frame with ``once``).

    Uses ``dashboard`` if given (already running), else runs one for the duration.
    """
    stop = stop or threading.Event()
    console = console or Console()
    own = dashboard is None
    with LogPane.capture() as pane:  # from before the first message to after the last
        service = dashboard or Dashboard(socket_path).start()

        def frame(height: int | None = None) -> Group:
            return render(service.view.snapshot(), broker_stats(socket_path),
                          width=console.width, height=height or console.height,
                          logs=pane.lines, console=console)  # fmt: skip

        try:
            if once:  # printed, not redrawn: as tall as it needs
                stop.wait(refresh)
                console.print(frame(ONCE_HEIGHT))
                return
            with Live(console=console, auto_refresh=False) as live:
                while not stop.is_set():
                    live.update(frame(), refresh=True)
                    stop.wait(refresh)
        finally:
            if own:
                service.stop()
