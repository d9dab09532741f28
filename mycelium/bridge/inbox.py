"""One subscription's messages taken straight off nats-py's read path, raw.

How this works
--------------
nats-py's parser hands every message it reads to the client's ``_process_msg``, which
makes a ``Msg`` of it (headers parsed character by character), queues it for the
subscription's task and awaits the callback from there: several microseconds and an
allocation or four per message, which the bridge pays once per imported message and
once per publish ack. ``RawInbox`` subscribes as usual (so the server routes the subject
to this connection and nats-py resubscribes nothing behind its back: the bridge does not
let it reconnect), then wraps ``_process_msg`` on that one connection: a message of its
subscription (by sid) goes to ``on_msg(subject, reply, payload, raw headers)`` at once,
synchronously, and everything else to nats-py as before. Several inboxes on a connection
chain their wrappers.

This rides two nats-py internals (``Client._process_msg`` and ``Subscription._id``),
bounded by the extras' nats-py range (``<3``) and checked when an inbox is made and
opened, so a nats-py that changed them is refused by name instead of failing later.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.subscription import Subscription

__all__ = ["RawInbox"]

#: What nats-py's parser calls with every message: (sid, subject, reply, payload, headers).
_INTERNAL = "_process_msg"

OnMsg = Callable[[bytes, bytes, bytes, bytes | None], None]


def _unsupported(what: str) -> RuntimeError:
    """A nats-py outside the tested range: say so instead of failing later."""
    return RuntimeError(
        f"this nats-py ({what} missing or changed) is not one the bridge supports; "
        "install the version range of mycelium's bridge extra"
    )


class RawInbox:
    """Messages of one subject to ``on_msg(subject, reply, payload, headers)``, run on the
    loop from nats-py's read task (it must not block)."""

    def __init__(self, nc: Client, on_msg: OnMsg) -> None:
        inner = getattr(nc, _INTERNAL, None)
        if not callable(inner) or len(inspect.signature(inner).parameters) != 5:
            raise _unsupported(f"Client.{_INTERNAL}")
        self.nc = nc
        self.on_msg = on_msg
        self._sub: Subscription | None = None

    async def open(self, subject: str) -> None:
        """Subscribe to ``subject`` (wildcards allowed). Raises nats errors, RuntimeError."""
        self._sub = await self.nc.subscribe(subject)
        sid = getattr(self._sub, "_id", None)
        if not isinstance(sid, int):
            raise _unsupported("Subscription._id")
        # The one in place now: nats-py's own, or another inbox's wrapper (a chain).
        inner: Callable[..., Awaitable[None]] = getattr(self.nc, _INTERNAL)
        on_msg = self.on_msg

        async def process_msg(
            at: int, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None
        ) -> None:
            if at == sid:
                on_msg(subject, reply, data, hdr)
            else:
                await inner(at, subject, reply, data, hdr)

        setattr(self.nc, _INTERNAL, process_msg)

    async def close(self) -> None:
        """Unsubscribe (the connection may be gone already); the wrapper stays and passes
        everything on, since nothing arrives for the sid any more."""
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                pass  # the connection is gone; its subscriptions with it
