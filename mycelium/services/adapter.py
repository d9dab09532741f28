"""``FeedAdapter``: the service both market-data adapters are, around their pure decoders.

How this works
--------------
An adapter reads text lines from one source (a recorded file, the seeded generator, or
the live WebSocket; see ``feeds``), and for each line calls its decoder in two steps:
``split(line)`` parses the envelope into events (raises ``Malformed`` for a line that is
not the feed's JSON), ``convert(event, now_ns)`` turns one event into a typed TLV (None for
a valid event of no interest; ``Malformed`` for a broken one). Each TLV becomes one
Protocol V2 market-data message with the adapter's source and a sequence number that
counts up from 1, so a consumer can see that nothing is missing.

Malformed input is logged (one line with the reason and the start of the input) and
counted; it never stops the adapter. A recorded file ends the service when it is done.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from mycelium.protocol import OrderBookTLV, RelayDomain, TypedTLV, encode_message
from mycelium.services.base import Malformed, Service
from mycelium.services.feeds import LiveLink, file_lines, live_lines, paced

__all__ = ["DEFAULT_RATE", "FLAG_ARRIVAL_TIME", "FeedAdapter", "MarketTLV", "market_message"]

#: What an adapter publishes: a fixed-layout payload or a variable-depth book.
MarketTLV = TypedTLV | OrderBookTLV

log = logging.getLogger("mycelium.services")

#: Lines per second the generator emits unless told otherwise.
DEFAULT_RATE = 300.0
#: Header flag: the timestamps in this message are our arrival time, not the source's.
FLAG_ARRIVAL_TIME = 0x01
#: How much of a malformed line a log line quotes.
QUOTE_CHARS = 160


def market_message(source: int, tlv: MarketTLV, sequence: int, flags: int = 0) -> bytes:
    """One TLV (a typed payload or an ``OrderBookTLV``) as a market-data message."""
    return encode_message(RelayDomain.MARKET_DATA, source, [(tlv.TLV_TYPE, tlv.to_bytes())],
                          sequence=sequence, flags=flags)  # fmt: skip


class FeedAdapter(Service):
    """Feed lines in, market-data messages out. Subclasses give the decoder."""

    source: ClassVar[int]
    live_url: ClassVar[str]
    #: A live feed silent this long is reconnected (None: never).
    max_silence_s: ClassVar[float | None] = None

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        input: str | os.PathLike[str] | None = None,
        live: bool = False,
        rate: float | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(socket_path, **kwargs)
        if input is not None and live:
            raise ValueError("choose a recorded input or the live feed, not both")
        self.input = input
        self.live = live
        self.rate = rate
        self.seed = seed
        self.sequence = 0
        self.link = LiveLink(max_silence_s=self.max_silence_s)
        self._lines: Iterator[str] = iter(())

    # -- the decoder (pure) -----------------------------------------------------------
    def split(self, line: str) -> list[Any]:
        """The events in one feed line; raises Malformed."""
        raise NotImplementedError

    def convert(self, event: Any, now_ns: int) -> MarketTLV | None:
        """One event as a TLV, or None if it carries nothing we publish; raises Malformed."""
        raise NotImplementedError

    def message_flags(self, event: Any) -> int:
        """Header flags of the message made of ``event`` (``FLAG_ARRIVAL_TIME``)."""
        return 0

    def generate(self) -> Iterator[str]:
        """The built-in feed: endless lines in the real format, seeded by ``self.seed``."""
        raise NotImplementedError

    def subscriptions(self) -> list[dict[str, Any]]:
        """What to send the live feed after connecting."""
        raise NotImplementedError

    # -- the service ------------------------------------------------------------------
    def connect(self) -> None:
        _ = self.producer  # connect now: fail fast when no broker answers
        if self.input is not None:
            lines = file_lines(self.input)
            rate = self.rate
        elif self.live:
            lines = live_lines(self.live_url, self.subscriptions(), self.stopping, self.link)
            rate = None
        else:
            lines = self.generate()
            rate = DEFAULT_RATE if self.rate is None else self.rate
        self._lines = paced(lines, rate, self.stopping)

    def step(self) -> None:
        line = next(self._lines, None)
        if line is None:
            if not self.stopping.is_set():
                log.info("%s: input ended", self.name)
                self.stopping.set()
            return
        self.counters.received += 1
        try:
            events = self.split(line)
        except Malformed as exc:
            self._skip(exc, line)
            return
        if not events:
            self.counters.ignored += 1
        now = time.time_ns()
        for event in events:
            try:
                tlv = self.convert(event, now)
            except Malformed as exc:
                self._skip(exc, event)
                continue
            if tlv is None:
                self.counters.ignored += 1
                continue
            self.sequence += 1
            flags = self.message_flags(event)
            if not self.publish(market_message(self.source, tlv, self.sequence, flags)):
                return

    def _skip(self, exc: Malformed, what: object) -> None:
        self.counters.skipped_malformed += 1
        text = str(what).strip()
        log.warning(
            "%s: skipped malformed input (%s): %s%s",
            self.name,
            exc,
            text[:QUOTE_CHARS],
            "..." if len(text) > QUOTE_CHARS else "",
        )
