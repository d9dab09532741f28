"""Connection handling: peer checks, the Hello deadline, frames in and replies out.

Each connection is checked (peer credentials against the allowed uids/gids,
``max_connections``), must say Hello within ``connection_timeout_ms``, and then
exchanges typed request/reply frames; the session table in ``mycelium.control.session``
decides what may come when. A malformed, oversized, unknown or out-of-order frame gets
an ``Error`` reply and the connection is closed; everyone else is unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from mycelium.control.limits import MAX_REQUEST_FRAME_BYTES
from mycelium.control.peer import peer_credentials
from mycelium.control.session import ServerSession, SessionState
from mycelium.control.wire import ControlFrameDecoder, Error, ErrorCode, Request, encode_frame
from mycelium.coordinator.requests import ClientConnection, RequestHandler
from mycelium.errors import ControlProtocolError
from mycelium.logs import fields

__all__ = ["ConnectionServer"]

log = logging.getLogger("mycelium.coordinator")


class ConnectionServer(RequestHandler):
    """Serves one control connection from accept to close."""

    _next_session: int

    def _allowed(self, uid: int, gid: int) -> bool:
        server = self.config.server
        return uid in (0, os.getuid(), *server.allowed_uids) or gid in server.allowed_gids

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, from accept to close; nothing it does escapes as a traceback."""
        try:
            await self._serve_checked(reader, writer)
        except asyncio.CancelledError:
            pass  # the coordinator is stopping: the connection was closed quietly
        finally:
            writer.close()

    async def _serve_checked(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        accepted = time.monotonic()
        sock = writer.get_extra_info("socket")
        pid, uid, gid = peer_credentials(sock)
        if not self._allowed(uid, gid):
            log.warning("refused pid %d: uid %d / gid %d not allowed", pid, uid, gid)
            await self._close_with(writer, ErrorCode.NOT_ALLOWED, f"uid {uid} is not allowed")
            return
        if len(self._conns) >= self.config.server.max_connections:
            await self._close_with(
                writer,
                ErrorCode.TOO_MANY_CONNECTIONS,
                f"max_connections ({self.config.server.max_connections}) reached",
            )
            return
        conn = ClientConnection(ServerSession(self._next_session), pid, uid)
        self._next_session += 1
        self._conns.add(conn)
        log.debug("connect from pid %d (uid %d)", pid, uid, extra=fields("connect", pid=pid))
        decoder = ControlFrameDecoder(max_frame=MAX_REQUEST_FRAME_BYTES, expect=Request)
        timeout_s = self.config.server.connection_timeout_ms / 1000
        frame_started = accepted
        try:
            while conn.session.state is not SessionState.CLOSED:
                # Absolute deadlines: Hello within timeout_s of accept, and any frame once
                # begun within timeout_s; a dribbling peer cannot extend either.
                if conn.session.state is SessionState.AWAIT_HELLO:
                    wait_s: float | None = accepted + timeout_s - time.monotonic()
                elif decoder.buffered:
                    wait_s = frame_started + timeout_s - time.monotonic()
                else:
                    wait_s = None
                async with asyncio.timeout(None if wait_s is None else max(0.0, wait_s)):
                    data = await reader.read(MAX_REQUEST_FRAME_BYTES)
                if not data:
                    break
                if not decoder.buffered:
                    frame_started = time.monotonic()
                decoder.receive_data(data)
                while (request := decoder.next_message()) is not None:
                    conn.session.receive(request)
                    writer.write(self._answer(conn, request))
                    if conn.session.closed:
                        break
                await writer.drain()
        except ControlProtocolError as exc:
            log.warning("pid %d broke the control protocol: %s", pid, exc)
            conn.session.close()
            await self._close_with(writer, exc.code, str(exc))
        except TimeoutError:
            conn.session.close()
            what = "Hello" if conn.session.hello is None else "whole request frame"
            await self._close_with(
                writer, ErrorCode.TIMEOUT, f"no {what} within {timeout_s * 1000:.0f} ms"
            )
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.discard(conn)
            self._disconnected(conn)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _close_with(self, writer: asyncio.StreamWriter, code: str, message: str) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(encode_frame(Error(code=str(code), message=message)))
            await writer.drain()
        writer.close()

    def _disconnected(self, conn: ClientConnection) -> None:
        """A connection closed on a protocol error releases the client's entries; a dropped
        connection from a live process is left for it to resume (the sweep notices if the
        process died)."""
        if conn.session.state is SessionState.CLOSED:
            self._release(conn)
