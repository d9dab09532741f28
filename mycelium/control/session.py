"""The control connection's state machine: one table says which request may come when.

How this works
--------------
A connection starts in AWAIT_HELLO, where only Hello is accepted; a Hello of the right
protocol version moves it to READY, where every request but Hello is accepted; Goodbye
moves it to CLOSED, where nothing is. ``TRANSITIONS`` is that whole story (h11's
"Rule 1": everything that moves the state lives in one table). ``ServerSession`` is
sans-IO: the coordinator decodes a request, passes it to ``receive`` and acts on it
only if ``receive`` did not raise. Any refusal closes the session, because after a
protocol error nothing later on the stream can be trusted.
"""

from __future__ import annotations

import enum

from mycelium.control.wire import (
    PROTOCOL_VERSION,
    DeleteDurable,
    ErrorCode,
    Goodbye,
    Heartbeat,
    Hello,
    RegisterProducer,
    Reload,
    ReportFigures,
    Request,
    Shutdown,
    StatsRequest,
    Subscribe,
    Unsubscribe,
)
from mycelium.errors import ControlProtocolError

__all__ = ["TRANSITIONS", "ClientState", "ServerSession", "SessionState"]


class SessionState(enum.Enum):
    """Where a control connection is, seen from the coordinator."""

    AWAIT_HELLO = "await_hello"
    READY = "ready"
    CLOSED = "closed"


class ClientState(enum.Enum):
    """Where a client handle's control connection is (nats.py style)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


_READY_REQUESTS: tuple[type[Request], ...] = (
    RegisterProducer,
    Subscribe,
    Unsubscribe,
    Heartbeat,
    StatsRequest,
    Reload,
    Shutdown,
    DeleteDurable,
    ReportFigures,
)

#: (state, request type) -> next state. A pair missing here is refused as out_of_order.
TRANSITIONS: dict[tuple[SessionState, type[Request]], SessionState] = {
    (SessionState.AWAIT_HELLO, Hello): SessionState.READY,
    **{(SessionState.READY, kind): SessionState.READY for kind in _READY_REQUESTS},
    (SessionState.READY, Goodbye): SessionState.CLOSED,
}


class ServerSession:
    """One client connection's protocol state on the coordinator side.

    ``role``, ``pid`` and ``hello`` are known once the Hello was accepted; ``client_id``
    is the id the coordinator gives the connection (it sends it back in Welcome).
    """

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.state = SessionState.AWAIT_HELLO
        self.hello: Hello | None = None

    @property
    def role(self) -> str | None:
        """The client's declared role, None before its Hello."""
        return self.hello.role if self.hello else None

    @property
    def pid(self) -> int | None:
        """The client's declared pid, None before its Hello."""
        return self.hello.pid if self.hello else None

    @property
    def closed(self) -> bool:
        """Whether the session has ended (a method, so a check after ``receive`` is not
        narrowed away by the one before it)."""
        return self.state is SessionState.CLOSED

    def receive(self, request: Request) -> None:
        """Check ``request`` against the table and the protocol version; advance the state.

        Raises ControlProtocolError with code out_of_order (not allowed in this state) or
        bad_version; either leaves the session CLOSED.
        """
        next_state = TRANSITIONS.get((self.state, type(request)))
        if next_state is None:
            raise self._refuse(
                ErrorCode.OUT_OF_ORDER,
                f"{type(request).__name__} is not allowed in state {self.state.name}",
            )
        if isinstance(request, Hello):
            if request.version != PROTOCOL_VERSION:
                raise self._refuse(
                    ErrorCode.BAD_VERSION,
                    f"client speaks protocol version {request.version}, "
                    f"this broker speaks version {PROTOCOL_VERSION}",
                )
            self.hello = request
        self.state = next_state

    def _refuse(self, code: ErrorCode, message: str) -> ControlProtocolError:
        """Close the session and build the error to raise."""
        self.state = SessionState.CLOSED
        return ControlProtocolError(message, code=code)

    def close(self) -> None:
        """The connection ended without Goodbye (EOF, timeout, undecodable bytes)."""
        self.state = SessionState.CLOSED
