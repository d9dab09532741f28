"""Hard limits of the control plane: what one client may ask of the coordinator.

How this works
--------------
One client must not be able to deny service to the others, so everything a request can
make the coordinator keep is bounded here: name lengths and characters, entries per
connection and per process, the request frame size (which bounds each connection's read
buffer). The coordinator checks a request against these before it creates anything;
``LimitExceeded`` names the limit, and docs/limits.md lists each with the test proving it.
"""

from __future__ import annotations

import re

from mycelium.control.wire import ReportFigures
from mycelium.errors import LimitExceeded
from mycelium.shm.layout import CONSUMER_MAX_SLOTS

__all__ = [
    "LANES_PER_CONSUMER",
    "MAX_CONSUMERS_PER_CONNECTION",
    "MAX_ENTRIES_PER_PROCESS",
    "MAX_NAME_CHARS",
    "MAX_REPORTED_FIGURES",
    "MAX_REPORTED_TOPICS",
    "MAX_REQUEST_FRAME_BYTES",
    "check_name",
    "check_report",
]

#: Longest group, client or topic name a request may carry (topics: config allows 64).
MAX_NAME_CHARS = 128
#: Names are ASCII letters, digits and ``_ . - : @ /``: printable in logs, safe in paths.
_NAME = re.compile(r"[A-Za-z0-9_.:@/-]*", re.ASCII)
#: Subscriptions one control connection may hold (a Consumer handle holds one).
MAX_CONSUMERS_PER_CONNECTION = 64
#: Producer and consumer entries one process (pid) may hold over all its connections.
MAX_ENTRIES_PER_PROCESS = 1024
#: Largest request frame the coordinator reads: every request is a few hundred bytes, and
#: this bounds what a connection can make it buffer (a reply may be up to 1 MiB).
MAX_REQUEST_FRAME_BYTES = 16 * 1024
#: Lanes one consumer reads (its state segment's slots): producers per fanout topic, or
#: per queue consumer.
LANES_PER_CONSUMER = CONSUMER_MAX_SLOTS
#: Topics and counters per topic one ReportFigures may carry (a bridge has a dozen counters).
MAX_REPORTED_TOPICS = 64
MAX_REPORTED_FIGURES = 16
#: Counters are non-negative and fit a signed 64-bit word (Prometheus, JSON readers).
_MAX_FIGURE = (1 << 63) - 1
#: A figure's name becomes part of a Prometheus metric name.
_FIGURE = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)


def check_name(kind: str, name: str, *, allow_empty: bool = False) -> None:
    """Raise LimitExceeded unless ``name`` is short, of allowed characters (and not empty)."""
    if len(name) > MAX_NAME_CHARS:
        raise LimitExceeded(
            f"{kind} name of {len(name)} characters exceeds {MAX_NAME_CHARS}",
            limit=f"{kind}_name_chars",
            maximum=MAX_NAME_CHARS,
        )
    if not name and not allow_empty:
        raise LimitExceeded(f"{kind} name is empty", limit=f"{kind}_name_chars")
    if _NAME.fullmatch(name) is None:
        raise LimitExceeded(
            f"{kind} name {name!r} may only use letters, digits and _ . - : @ /",
            limit=f"{kind}_name_chars",
            maximum=MAX_NAME_CHARS,
        )


def check_report(report: ReportFigures) -> None:
    """Raise LimitExceeded unless every name, count and counter of ``report`` is in bounds."""
    check_name("bridge", report.name)
    if len(report.server) > MAX_NAME_CHARS or not report.server.isprintable():
        raise LimitExceeded("a reported server is over 128 characters", limit="server_chars")
    if len(report.topics) > MAX_REPORTED_TOPICS:
        raise LimitExceeded(
            f"a report names {len(report.topics)} topics, over {MAX_REPORTED_TOPICS}",
            limit="reported_topics",
            maximum=MAX_REPORTED_TOPICS,
        )
    counters = [report.reconnects]
    for entry in report.topics:
        check_name("topic", entry.topic)
        if len(entry.figures) > MAX_REPORTED_FIGURES:
            raise LimitExceeded(
                f"topic {entry.topic} reports {len(entry.figures)} figures, "
                f"over {MAX_REPORTED_FIGURES}",
                limit="reported_figures",
                maximum=MAX_REPORTED_FIGURES,
            )
        bad = [key for key in entry.figures if _FIGURE.fullmatch(key) is None]
        if bad:
            raise LimitExceeded(
                f"figure name {bad[0]!r} is not lower-case letters, digits and _",
                limit="figure_name_chars",
                maximum=MAX_NAME_CHARS,
            )
        counters += entry.figures.values()
    if any(not 0 <= n <= _MAX_FIGURE for n in counters):
        raise LimitExceeded("a reported figure is negative or over 2**63", limit="figure_value")
