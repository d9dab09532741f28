"""Pull requests kept in flight on a durable JetStream consumer, deliveries read lean.

How this works
--------------
nats-py's ``fetch`` asks for one batch, waits for it message by message (a task, a uuid
and a timer per message) and only then can the next request go out: a round trip and a
batch's worth of per-message overhead in series, about 4,800 msg/s. ``Puller`` instead
keeps ``REQUESTS_IN_FLIGHT`` pull requests (``{"batch": n, "expires": ns}`` to the
consumer's ``MSG.NEXT`` subject) standing on one inbox subscription, so the server
delivers the next batch while the importer writes the previous one into the ring.

Deliveries are taken off nats-py's read path (``inbox.RawInbox``): nats-py would make a
``Msg`` of each with all six headers parsed character by character, most of the import's
time once the fetch was gone. Each becomes a ``Delivery`` at once: the stream and delivery
sequences and what is pending, read from the ack subject (the reply), and the one header
the import needs (the origin); ``take`` hands out what has arrived. Acks are the
importer's (one cumulative ack per batch, see ``importer``); the server's
``max_ack_pending`` bounds what can be delivered unacked, so memory stays bounded whatever
the requests ask for.

The requests are accounted oldest first (the server fills them in that order): a
delivery counts against the oldest, a 408 (expired) or 409 (a limit, a leader change)
status ends it, and one past its expiry and a grace is forgotten (a killed cluster node
takes its requests along silently). Any other status (the consumer deleted, JetStream
gone) fails the pull; the session then ends and the bridge reconnects.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass

from nats.aio.client import Client

from mycelium.bridge import headers
from mycelium.bridge.inbox import RawInbox

__all__ = ["Delivery", "PullFailed", "Puller"]

#: Pull requests standing at once: one being delivered while the previous is imported.
REQUESTS_IN_FLIGHT = 2
#: A request the server neither filled nor ended is forgotten this long after its expiry.
EXPIRY_GRACE_S = 1.0
#: The JetStream API prefix (the bridge uses no JetStream domain).
API_PREFIX = "$JS.API"

_STATUS_LINE = "NATS/1.0 "
_ORIGIN = f"\r\n{headers.ORIGIN}: ".encode()
#: Statuses that end one pull request and nothing else.
_REQUEST_ENDED = ("408", "409")
#: 409 descriptions that mean the consumer is gone, not just one request.
_CONSUMER_GONE = ("consumer deleted", "consumer is push based")


class PullFailed(Exception):
    """The server refused the pull (consumer deleted, JetStream unavailable)."""


@dataclass(slots=True)
class Delivery:
    """One delivered JetStream message, as the importer needs it."""

    seq: int  # stream sequence
    delivery: int  # consumer sequence: a redelivered copy has a higher one
    pending: int  # what the stream holds for the consumer beyond this one
    data: bytes
    origin: str | None  # the exporting host (headers.ORIGIN)
    reply: str  # the ack subject


def _header(block: bytes, key: bytes) -> str | None:
    """The value after ``key`` (``\\r\\n<name>: ``) in a raw header block, or None."""
    at = block.find(key)
    if at < 0:
        return None
    at += len(key)
    return block[at : block.find(b"\r\n", at)].decode(errors="replace")


def ack_fields(reply: str) -> tuple[int, int, int]:
    """(stream sequence, consumer sequence, pending) from an ack subject, either form:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` or the one with
    domain and account hash after ``$JS.ACK`` (and a token at the end). Raises ValueError."""
    tokens = reply.split(".")
    at = 5 if len(tokens) == 9 else 7
    if len(tokens) not in (9, 11, 12) or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"not a JetStream ack subject: {reply!r}")
    return int(tokens[at]), int(tokens[at + 1]), int(tokens[at + 3])


class Puller:
    """Deliveries of one durable pull consumer on one connection."""

    def __init__(self, nc: Client, stream: str, durable: str, batch: int, expires_s: float) -> None:
        self.nc = nc
        self.durable = durable
        self.batch = batch
        self.expires_s = expires_s
        self._next = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._request = json.dumps({"batch": batch, "expires": int(expires_s * 1e9)}).encode()
        self._reply = nc.new_inbox()
        self._inbox = RawInbox(nc, self._on_msg)
        self._requests: deque[list[float]] = deque()  # [still to deliver, forget at], oldest first
        self._ready: deque[Delivery] = deque()
        self._arrived = asyncio.Event()
        self._failed: PullFailed | None = None

    async def open(self) -> None:
        """Subscribe to the deliveries. Raises nats errors, RuntimeError (inbox)."""
        await self._inbox.open(self._reply)

    def _on_msg(self, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        """One message on the inbox, as nats-py's parser read it off the socket."""
        if reply:
            ack = reply.decode()
            try:
                seq, delivery, pending = ack_fields(ack)
            except ValueError as exc:  # not raised into nats-py's read task
                self._failed = PullFailed(f"pull on {self.durable}: {exc}")
                self._arrived.set()
                return
            origin = _header(hdr, _ORIGIN) if hdr else None
            self._ready.append(Delivery(seq, delivery, pending, data, origin, ack))
            if self._requests:
                head = self._requests[0]
                head[0] -= 1
                if head[0] <= 0:
                    self._requests.popleft()
            self._arrived.set()
            return
        line = (hdr or b"").partition(b"\r\n")[0].decode(errors="replace")
        status, _, text = line.removeprefix(_STATUS_LINE).partition(" ")
        if status == "100":
            return  # a heartbeat: none are asked for, nothing to do
        if status in _REQUEST_ENDED and not text.lower().startswith(_CONSUMER_GONE):
            if self._requests:
                self._requests.popleft()
        else:
            self._failed = PullFailed(f"pull on {self.durable}: {line or 'no status'}")
        self._arrived.set()

    async def top_up(self) -> None:
        """Keep REQUESTS_IN_FLIGHT requests standing. Raises nats errors."""
        now = time.monotonic()
        while self._requests and self._requests[0][1] < now:
            self._requests.popleft()  # its server is gone, or its end never came
        while len(self._requests) < REQUESTS_IN_FLIGHT:
            forget_at = now + self.expires_s + EXPIRY_GRACE_S
            self._requests.append([float(self.batch), forget_at])
            await self.nc.publish(self._next, self._request, reply=self._reply)

    async def take(self, limit: int, timeout: float) -> list[Delivery]:
        """Up to ``limit`` deliveries in arrival order, waiting up to ``timeout`` for the
        first; [] when none came or a request ended. Raises PullFailed."""
        if not self._ready and self._failed is None:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                pass
        if self._failed is not None:
            raise self._failed
        ready = self._ready
        return [ready.popleft() for _ in range(min(limit, len(ready)))]

    async def ack(self, delivery: Delivery) -> None:
        """Ack ``delivery`` (and, the policy being AckPolicy.ALL, all before it); not waited
        for: a lost ack is a redelivery, which the importer drops. Raises nats errors."""
        await self.nc.publish(delivery.reply)

    async def close(self) -> None:
        """Stop the deliveries (the connection may be gone already)."""
        await self._inbox.close()
