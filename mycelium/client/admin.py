"""One-shot administrative requests (stats, reload, shutdown) for the CLI and tools."""

from __future__ import annotations

import contextlib
import os
import socket

from mycelium.client.control import exchange, raise_for_error
from mycelium.control.wire import (
    PROTOCOL_VERSION,
    ControlFrameDecoder,
    Goodbye,
    Hello,
    Reply,
    Request,
    Welcome,
    encode_frame,
)
from mycelium.errors import BrokerUnavailable, ControlProtocolError
from mycelium.paths import resolve_socket_path

__all__ = ["admin_request"]

ADMIN_TIMEOUT_S = 5.0


def admin_request(request: Request, socket_path: str | os.PathLike[str] | None = None) -> Reply:
    """Connect, say Hello as ``admin``, send ``request`` and return its reply.

    Raises BrokerUnavailable when no broker answers, and the MyceliumError matching an
    Error reply otherwise.
    """
    path = resolve_socket_path(socket_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ADMIN_TIMEOUT_S)
    decoder = ControlFrameDecoder(expect=Reply)
    try:
        sock.connect(path)
        welcome = raise_for_error(
            exchange(sock, decoder, Hello(version=PROTOCOL_VERSION, pid=os.getpid(), role="admin"))
        )
        if not isinstance(welcome, Welcome):
            raise ControlProtocolError(f"expected Welcome, got {type(welcome).__name__}")
        reply = raise_for_error(exchange(sock, decoder, request))
        with contextlib.suppress(OSError):
            sock.sendall(encode_frame(Goodbye()))
        return reply
    except OSError as exc:
        raise BrokerUnavailable(
            f"no Mycelium broker answers on {path} ({exc.strerror or exc})"
        ) from exc
    finally:
        sock.close()
