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

from mycelium.errors import LimitExceeded
from mycelium.shm.layout import CONSUMER_MAX_SLOTS

__all__ = [
    "LANES_PER_CONSUMER",
    "MAX_CONSUMERS_PER_CONNECTION",
    "MAX_ENTRIES_PER_PROCESS",
    "MAX_NAME_CHARS",
    "MAX_REQUEST_FRAME_BYTES",
    "check_name",
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
