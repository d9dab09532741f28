"""JetStream publishes in batches: one socket write per batch, acks matched by reply subject.

How this works
--------------
nats-py's ``publish_async`` costs, per message, a semaphore, a future with a callback, a
fresh reply token and a header dict encoded and checked key by key; it ran at a quarter
of what the bridge needs. ``BatchPublisher`` writes a whole batch of ``HPUB`` commands
(headers already encoded, see ``headers.HeaderBlock``) into the connection's pending
buffer at once, each with the reply subject ``<inbox>.<token>``; one subscription on
``<inbox>.*``, read raw off nats-py's read path (``inbox.RawInbox``: no ``Msg``, queue
and callback task per ack), receives JetStream's acks and hands ``(token, ack)`` to the
exporter, which keeps the bound on what is in flight and the order of settling.

This rides two of nats-py's internals (``_send_command``, ``_flush_pending``: the calls its
own ``publish`` makes), bounded by the extras' nats-py range (``<3``) and checked when a
publisher is made; the subjects and header values are the bridge's own, validated names
and numbers, so nats-py's checks are not needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
from nats.aio.client import Client

from mycelium.bridge.inbox import RawInbox

__all__ = ["BatchPublisher", "PubAck"]


class PubAck(msgspec.Struct):
    """JetStream's answer to one publish (``error`` set when it refused it)."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, object] | None = None


_ACK = msgspec.json.Decoder(PubAck)
#: The two nats-py internals the batched write rides (see the module note).
_INTERNALS = ("_send_command", "_flush_pending")
_UNREADABLE = PubAck(error={"description": "unreadable publish ack"})


class BatchPublisher:
    """Publishes on one connection; ``on_ack(token, ack)`` runs on the loop for each ack."""

    def __init__(self, nc: Client, on_ack: Callable[[int, PubAck], None]) -> None:
        missing = [name for name in _INTERNALS if not callable(getattr(nc, name, None))]
        if missing:  # a nats-py outside the tested range: say so instead of failing later
            raise RuntimeError(
                f"this nats-py ({', '.join(missing)} missing) is not one the bridge supports; "
                "install the version range of mycelium's bridge extra"
            )
        self.nc = nc
        self.on_ack = on_ack
        self.prefix = (nc.new_inbox() + ".").encode()
        self._inbox = RawInbox(nc, self._on_msg)

    async def open(self) -> None:
        """Subscribe to the acks (before the first publish). Raises nats errors,
        RuntimeError (inbox)."""
        await self._inbox.open(self.prefix.decode() + "*")

    def _on_msg(self, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        token = subject.rpartition(b".")[2]
        try:
            ack = _ACK.decode(data)
        except msgspec.DecodeError:
            ack = _UNREADABLE
        if token.isdigit():
            self.on_ack(int(token), ack)

    async def send(self, subject: bytes, batch: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Publish ``(token, encoded headers, payload)`` items in one write.

        Raises nats.errors.ConnectionClosedError, MaxPayloadError (nothing of the batch sent).
        """
        nc = self.nc
        if nc.is_closed or not nc.is_connected:
            raise ConnectionError("the NATS connection is closed")
        limit = nc.max_payload
        buf = bytearray()
        for token, hdr, payload in batch:
            total = len(hdr) + len(payload)
            if total > limit:
                raise ValueError(f"a message of {total} bytes exceeds NATS max_payload {limit}")
            buf += b"HPUB %b %b%d %d %d\r\n" % (subject, self.prefix, token, len(hdr), total)
            buf += hdr
            buf += payload
            buf += b"\r\n"
        await nc._send_command(bytes(buf))
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()

    async def close(self) -> None:
        """Stop receiving acks (the connection may be gone already)."""
        await self._inbox.close()
