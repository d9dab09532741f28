"""A client's control connection to the coordinator: hello, requests, heartbeats, reconnect.

How this works
--------------
``ControlChannel`` owns one Unix socket. ``request()`` sends a frame and reads frames
until the reply (the lock keeps a caller and the keeper thread from interleaving).
A daemon *keeper* thread sends a heartbeat every interval; when the connection breaks
(the coordinator stopped or crashed) it reconnects with capped exponential backoff and
jitter, says Hello with its old id (``resume_id``) and runs ``on_reconnect`` so the
handle re-registers (producers) or resumes its subscription (consumers).

None of this is on the data path: while the channel is RECONNECTING, producers and
consumers keep exchanging messages through shared memory. Socket errors become
``BrokerUnavailable`` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Literal, cast

from mycelium.backoff import jittered_backoff_s
from mycelium.control.faults import from_error
from mycelium.control.peer import peer_credentials
from mycelium.control.session import ClientState
from mycelium.control.wire import (
    PROTOCOL_VERSION,
    ControlFrameDecoder,
    Error,
    Goodbye,
    Heartbeat,
    Hello,
    Reply,
    Request,
    Welcome,
    encode_frame,
)
from mycelium.errors import (
    BrokerUnavailable,
    ControlProtocolError,
    LimitExceeded,
    MyceliumError,
    PermissionDenied,
)
from mycelium.shm.segment import TRUST

__all__ = ["ControlChannel", "exchange", "raise_for_error"]

log = logging.getLogger("mycelium.client")

HEARTBEAT_INTERVAL_S = 1.0
REQUEST_TIMEOUT_S = 5.0
RECONNECT_WAIT_MIN_S = 0.05
RECONNECT_WAIT_MAX_S = 2.0
#: Each wait is the capped backoff times a random factor in [1 - JITTER, 1].
RECONNECT_JITTER = 0.5
READ_CHUNK_BYTES = 64 * 1024
#: How long close() waits for the Goodbye's Ok.
GOODBYE_TIMEOUT_S = 0.5
#: How long a closed handle keeps reconnecting in the background to say an owed Goodbye.
GOODBYE_RETRY_S = 60.0


def raise_for_error(reply: Reply) -> Reply:
    """Turn an Error reply into the matching MyceliumError; pass anything else through."""
    if isinstance(reply, Error):
        raise from_error(reply)
    return reply


def exchange(sock: socket.socket, decoder: ControlFrameDecoder, request: Request) -> Reply:
    """Send ``request`` and read frames until its reply. Raises OSError (ConnectionError
    when the broker closed the connection without a reply), ControlProtocolError.

    A broker that refuses a connection (uid, max_connections) sends its Error and closes
    without reading what we sent, so our send may fail with EPIPE: the Error is still
    waiting in our receive buffer, and it says why far better than "broken pipe".
    """
    try:
        sock.sendall(encode_frame(request))
    except (BrokenPipeError, ConnectionResetError):
        pass  # read what the broker said before it hung up (EOF if nothing)
    while (reply := decoder.next_message()) is None:
        data = sock.recv(READ_CHUNK_BYTES)
        if not data:
            raise ConnectionResetError("the broker closed the connection")
        decoder.receive_data(data)
    return cast(Reply, reply)  # the decoder was built with expect=Reply


class ControlChannel:
    """One control connection with heartbeats and automatic reconnection."""

    def __init__(
        self,
        socket_path: str,
        role: Literal["producer", "consumer", "admin"],
        *,
        name: str = "",
        wait_for_broker_s: float = 0.0,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        on_reconnect: Callable[[], None] | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.role = role
        self.name = name
        self.heartbeat_interval_s = heartbeat_interval_s
        #: Runs in the keeper thread after each reconnect (re-register, resume).
        self.on_reconnect = on_reconnect
        #: Runs in the keeper thread on every heartbeat tick, connected or not.
        self.on_tick = on_tick
        self.state = ClientState.CONNECTING
        self.welcome: Welcome | None = None
        self.reconnects = 0
        #: Set by close() when the Goodbye could not be said: keep trying until then.
        self._goodbye_by: float | None = None
        self._sock: socket.socket | None = None
        self._decoder = ControlFrameDecoder(expect=Reply)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._connect_with_retry(wait_for_broker_s)
        self._keeper = threading.Thread(
            target=self._keep, name=f"mycelium-control-{role}", daemon=True
        )
        self._keeper.start()

    # -- connecting -----------------------------------------------------------------
    def _connect_with_retry(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        attempt = 0
        while True:
            try:
                self._connect()
                return
            except BrokerUnavailable:
                if time.monotonic() >= deadline or isinstance(self._last_error, PermissionDenied):
                    raise
            attempt += 1
            time.sleep(min(_backoff(attempt), max(0.0, deadline - time.monotonic())))

    _last_error: MyceliumError | None = None

    def _connect(self) -> None:
        """Open the socket and complete the Hello/Welcome exchange. Raises BrokerUnavailable."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(REQUEST_TIMEOUT_S)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            self._last_error = BrokerUnavailable(
                f"no Mycelium broker answers on {self.socket_path} ({exc.strerror or exc})"
            )
            raise self._last_error from exc
        resume = self.welcome.client_id if self.welcome and self.role == "producer" else 0
        hello = Hello(
            version=PROTOCOL_VERSION, pid=os.getpid(), role=self.role, name=self.name,
            resume_id=resume,
        )  # fmt: skip
        decoder = ControlFrameDecoder(expect=Reply)
        try:
            reply = exchange(sock, decoder, hello)
            welcome = raise_for_error(reply)
            broker_uid = peer_credentials(sock)[1]
        except (OSError, MyceliumError) as exc:
            sock.close()
            if isinstance(exc, PermissionDenied | LimitExceeded):  # refused, not unreachable
                self._last_error = exc
                raise
            self._last_error = BrokerUnavailable(f"handshake with {self.socket_path} failed: {exc}")
            raise self._last_error from exc
        if not isinstance(welcome, Welcome):
            sock.close()
            raise BrokerUnavailable(f"expected Welcome, got {type(welcome).__name__}")
        # The kernel vouches for the broker's uid: its segments are the ones we may map.
        TRUST.trust_broker(broker_uid, welcome.segment_mode)
        self._sock = sock
        self._decoder = decoder
        self.welcome = welcome
        self.state = ClientState.CONNECTED

    # -- requests -------------------------------------------------------------------
    def request(self, request: Request) -> Reply:
        """Send one request and return its reply (Error replies raised as MyceliumError).

        Raises BrokerUnavailable if the broker cannot be reached; the keeper thread keeps
        trying to reconnect in the background.
        """
        with self._lock:
            sock = self._sock
            if sock is None or self.state is not ClientState.CONNECTED:
                raise BrokerUnavailable(f"not connected to the broker on {self.socket_path}")
            try:
                reply = exchange(sock, self._decoder, request)
            except (OSError, ControlProtocolError) as exc:
                self._drop()
                raise BrokerUnavailable(f"lost the broker on {self.socket_path}: {exc}") from exc
        return raise_for_error(reply)

    def _drop(self, *, wake: bool = True) -> None:
        """Forget a broken socket (lock held) and let the keeper reconnect.

        The keeper drops without ``wake``: waking itself would skip its own backoff, and
        a resume the broker keeps refusing would then retry in a tight loop.
        """
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        if self.state is not ClientState.CLOSED:
            self.state = ClientState.RECONNECTING
            if wake:
                self._wake.set()

    # -- keeper thread --------------------------------------------------------------
    def _keep(self) -> None:
        attempt = 0
        while not self._closing():
            if self.state is ClientState.RECONNECTING:
                if self._goodbye_by is not None and time.monotonic() >= self._goodbye_by:
                    with self._lock:
                        self._finish()  # gave up; the sweep notices when the process exits
                    return
                attempt += 1
                self._wake.wait(_backoff(attempt))
                self._wake.clear()
                if self._closing():
                    return
                if self._reconnect():
                    attempt = 0
                    if self._goodbye_by is not None:
                        with self._lock:
                            if not self._say_goodbye():
                                self._drop(wake=False)
                continue
            self._wake.wait(self.heartbeat_interval_s)
            self._wake.clear()
            if self._closing():
                return
            self._tick()
            if self.state is ClientState.CONNECTED:
                with contextlib.suppress(MyceliumError):
                    self.request(Heartbeat(pid=os.getpid()))

    def _closing(self) -> bool:
        """Whether close() was called (by another thread: read fresh each time)."""
        return self.state is ClientState.CLOSED

    def _tick(self) -> None:
        if self.on_tick is not None:
            try:
                self.on_tick()
            except Exception:  # the keeper must outlive any callback bug
                log.exception("control tick failed")

    def _reconnect(self) -> bool:
        with self._lock:
            if self.state is ClientState.CLOSED:
                return False
            try:
                self._connect()
            except MyceliumError:  # unreachable, or refused (a limit): retried with backoff
                self.state = ClientState.RECONNECTING
                self._tick()
                return False
        self.reconnects += 1
        log.info("reconnected to the broker on %s", self.socket_path)
        if self.on_reconnect is not None:
            try:
                self.on_reconnect()
            except MyceliumError as exc:
                log.warning("resuming after reconnect failed (%s); will retry", exc)
                with self._lock:
                    self._drop(wake=False)
                return False
        return True

    # -- closing --------------------------------------------------------------------
    def close(self) -> None:
        """Say Goodbye, close the socket and stop the keeper thread.

        If the broker cannot hear the Goodbye now (it is down or restarting), the
        Goodbye is still owed: the keeper thread goes on reconnecting in the background
        for up to ``GOODBYE_RETRY_S``, resumes (so the coordinator knows whose Goodbye
        it is) and says it. Without it a restarted coordinator would keep this closed
        handle of a live process as a live client for as long as the process runs (a
        consumer that never reads again holds fanout producers back).
        """
        with self._lock:
            if self.state is ClientState.CLOSED or self._goodbye_by is not None:
                return
            if not (self.state is ClientState.CONNECTED and self._say_goodbye()):
                self._goodbye_by = time.monotonic() + GOODBYE_RETRY_S
                self._drop()
                return  # the keeper says it; do not wait for that
        if self._keeper.is_alive() and self._keeper is not threading.current_thread():
            self._keeper.join(timeout=2.0)

    def _say_goodbye(self) -> bool:
        """Goodbye and its Ok (lock held), then CLOSED; False if the broker did not answer."""
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.settimeout(GOODBYE_TIMEOUT_S)
            exchange(sock, self._decoder, Goodbye())  # the Ok: the broker has released us
        except (OSError, ControlProtocolError):
            return False
        self._finish()
        return True

    def _finish(self) -> None:
        """CLOSED for good (lock held): the keeper thread ends."""
        self.state = ClientState.CLOSED
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._wake.set()


def _backoff(attempt: int) -> float:
    """Capped exponential backoff with jitter (nats.py style)."""
    return jittered_backoff_s(attempt, RECONNECT_WAIT_MIN_S, RECONNECT_WAIT_MAX_S, RECONNECT_JITTER)
