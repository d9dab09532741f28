"""The coordinator daemon: control socket, liveness sweeps, stats, reload, shutdown.

How this works
--------------
One asyncio loop serves the Unix control socket. Each connection is checked (peer
credentials against the allowed uids/gids, ``max_connections``), must say Hello within
``connection_timeout_ms``, and then exchanges typed request/reply frames; the session
table in ``mycelium.control.session`` decides what may come when. A malformed, oversized,
unknown or out-of-order frame, or a wrong protocol version, gets an ``Error`` reply and
the connection is closed; everyone else is unaffected. A request that is merely refused
(unknown topic) gets an ``Error`` and the connection stays open.

The coordinator is never on the data path: producers and consumers exchange messages
through the segments ``BrokerState`` created. A periodic sweep notices dead clients
(pid and process start time) and retires finished lanes. On SIGTERM/SIGINT it stops
serving; if clients are still alive their segments (and the registry) stay, so a new
coordinator adopts them and nothing in flight is lost. SIGHUP reloads the config.

One broker per socket: an exclusive ``flock`` on ``<socket>.lock`` is held for the life
of the process, so a second start is refused clearly and a stale socket file left by a
crashed broker is taken over. The lock file is removed on exit (a starter that locked
the removed file notices the path now names another and tries again).

With ``[metrics] listen`` (or ``--metrics``) a Prometheus endpoint serves the same
figures as ``stats`` (``mycelium.coordinator.metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec

from mycelium.config import BrokerConfig, load_config
from mycelium.control.faults import to_error
from mycelium.control.limits import (
    MAX_CONSUMERS_PER_CONNECTION,
    MAX_ENTRIES_PER_PROCESS,
    MAX_REQUEST_FRAME_BYTES,
    check_name,
    check_report,
)
from mycelium.control.peer import peer_credentials
from mycelium.control.session import ServerSession, SessionState
from mycelium.control.wire import (
    MAX_CONTROL_FRAME_BYTES,
    PROTOCOL_VERSION,
    DeleteDurable,
    Error,
    ErrorCode,
    FrameDecoder,
    Goodbye,
    Heartbeat,
    Hello,
    Ok,
    ProducerRegistered,
    RegisterProducer,
    Reload,
    Reply,
    ReportFigures,
    Request,
    Shutdown,
    StatsReply,
    StatsRequest,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
    encode_frame,
)
from mycelium.coordinator.metrics import MetricsEndpoint
from mycelium.coordinator.naming import client_name
from mycelium.coordinator.state_file import (
    check_runtime_dir,
    forget_registry_name,
    read_registry_name,
    write_registry_name,
)
from mycelium.coordinator.stats import RateMeter, bridge_doc, collect_stats
from mycelium.coordinator.topology import BrokerState
from mycelium.errors import (
    BrokerUnavailable,
    ConfigError,
    ControlProtocolError,
    LimitExceeded,
    MyceliumError,
    SegmentError,
    UnknownTopic,
)
from mycelium.logs import fields
from mycelium.shm.registry import Registry, Topology
from mycelium.shm.segment import TRUST, broker_id_for, fresh_token, segment_name

__all__ = ["Coordinator", "registry_name_for", "run_broker"]

log = logging.getLogger("mycelium.coordinator")
_ENCODER = msgspec.msgpack.Encoder()

SWEEP_INTERVAL_S = 0.1
#: A status reply keeps this much of the frame limit spare for its own envelope.
_STATS_MARGIN_BYTES = 4096
#: A scrape waits this long for the loop to compute the figures.
SNAPSHOT_TIMEOUT_S = 5.0


def registry_name_for(broker_id: str) -> str:
    """A fresh, unpredictable registry name for a broker id (``/myc-<id>-R.<token>``)."""
    return segment_name(broker_id, "R", f".{fresh_token()}")


def bounded_stats_reply(stats: dict[str, Any]) -> StatsReply:
    """The stats as one reply under the frame limit: with thousands of clients the
    per-producer, per-consumer and per-bridge lists are cut (halved until it fits) and
    ``truncated`` says how many there were; the topic and broker totals are always whole."""
    reply = StatsReply(stats=stats)
    limit = MAX_CONTROL_FRAME_BYTES - _STATS_MARGIN_BYTES
    lists = ("producers", "consumers", "bridges")
    totals = {key: len(stats[key]) for key in lists if key in stats}
    keep = max(totals.values(), default=0)
    while len(_ENCODER.encode(reply)) > limit and keep:
        keep //= 2
        cut = {key: stats[key][:keep] for key in totals}
        reply = StatsReply(stats={**stats, **cut, "truncated": totals})
    return reply


class _Connection:
    __slots__ = ("consumer_ids", "figures", "name", "pid", "producer_id", "session", "uid")

    def __init__(self, session: ServerSession, pid: int, uid: int) -> None:
        self.session = session
        self.pid = pid
        self.uid = uid
        self.name = ""  # set by its Hello
        self.producer_id = 0
        self.consumer_ids: set[int] = set()
        self.figures: ReportFigures | None = None  # a bridge's last report


class Coordinator:
    """The broker daemon. ``await run()`` serves until ``stop()`` (or a signal)."""

    def __init__(
        self, config: BrokerConfig, socket_path: str, config_path: str | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.socket_path = os.path.abspath(socket_path)
        self.broker_id = broker_id_for(self.socket_path)
        self.state: BrokerState | None = None
        self._conns: set[_Connection] = set()
        self._next_session = 1
        self._stop = asyncio.Event()
        self._lock_fd: int | None = None
        self._rates = RateMeter()
        self._started_s = time.time()
        self._metrics: MetricsEndpoint | None = None

    # -- lifecycle ------------------------------------------------------------------
    def _take_socket(self) -> None:
        """Hold the per-socket lock and clear a stale socket file; refuse if one is live."""
        path = Path(self.socket_path)
        check_runtime_dir(path.parent)
        while True:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise BrokerUnavailable(
                    f"another broker is already running on {self.socket_path}"
                ) from None
            if _same_file(fd, self._lock_path):
                break
            os.close(fd)  # an exiting broker removed the file we locked: lock the new one
        self._lock_fd = fd
        if path.exists() or path.is_socket():
            log.info("taking over stale socket %s", self.socket_path)
            path.unlink()

    @property
    def _lock_path(self) -> str:
        return f"{self.socket_path}.lock"

    def _allowed(self, uid: int, gid: int) -> bool:
        server = self.config.server
        return uid in (0, os.getuid(), *server.allowed_uids) or gid in server.allowed_gids

    async def run(self) -> None:
        """Serve until stopped. Raises BrokerUnavailable if the socket is taken."""
        self._take_socket()
        TRUST.trust_broker(os.geteuid(), self.config.server.segment_mode)
        registry, adopted = self._open_registry()
        self.state = BrokerState(self.broker_id, self.config, registry, adopted)
        self.state.sweep()
        self.state.publish()
        # A backlog as deep as the connection limit: a burst of connects (a restart, a
        # crowd, a hostile flood) waits to be accepted rather than failing with EAGAIN.
        server = await asyncio.start_unix_server(
            self._serve,
            path=self.socket_path,
            limit=MAX_REQUEST_FRAME_BYTES,
            backlog=self.config.server.max_connections,
        )
        os.chmod(self.socket_path, self.config.server.socket_mode)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_from_signal)
        log.info(
            "broker %s serving on %s (pid %d, %d topics%s)",
            self.broker_id,
            self.socket_path,
            os.getpid(),
            len(self.state.topo.topics),
            ", adopted existing segments" if adopted else "",
            extra=fields("started", pid=os.getpid()),
        )
        sweeper = asyncio.create_task(self._sweep_loop())
        try:
            if self.config.metrics.listen:
                self._metrics = MetricsEndpoint.serve(
                    self.config.metrics.listen, functools.partial(self._snapshot, loop)
                )
            await self._stop.wait()
        finally:
            if self._metrics is not None:
                self._metrics.close()
            sweeper.cancel()
            server.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
            self._shutdown_state()
            if self._lock_fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._lock_path)  # still locked: nobody can hold it meanwhile
                os.close(self._lock_fd)

    def _open_registry(self) -> tuple[Registry, Topology | None]:
        """Adopt the registry our predecessor named in the state file, else create one.

        The name comes only from the broker's own state file, never from recomputing it,
        and the segment must pass the owner and mode checks: a squatted or planted
        registry is refused (logged, counted) and a fresh one is made beside it.
        """
        name = read_registry_name(self.socket_path)
        if name is not None:
            try:
                return Registry.adopt(name)
            except SegmentError as exc:
                log.warning("not adopting registry %s: %s", name, exc)
        registry = Registry.create(
            registry_name_for(self.broker_id), self.config.server.segment_mode
        )
        write_registry_name(self.socket_path, registry.seg.name)
        return registry, None

    def _shutdown_state(self) -> None:
        state = self.state
        if state is None:
            return
        state.sweep()
        alive = state.live_clients()
        if alive:
            state.publish()
            log.info("stopping; %d clients still run, their segments stay for adoption", alive)
        else:
            log.info("stopping; no clients left, removing every segment")
            forget_registry_name(self.socket_path)
        self.state = None  # connection handlers cancelled after this must not touch it
        state.close(unlink=not alive)

    def stop(self) -> None:
        """Ask the coordinator to stop serving (graceful)."""
        self._stop.set()

    def _reload_from_signal(self) -> None:
        with contextlib.suppress(ConfigError):  # reload() logged why
            self.reload()

    def reload(self) -> list[str]:
        """Re-read the config file (the embedded default if none) and log what changed,
        whether SIGHUP or ``mycelium reload`` asked. Raises ConfigError (logged; the
        running config stays)."""
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            raise
        assert self.state is not None
        changes = self.state.apply_config(config) or ["no changes"]
        self.config = config
        self.state.publish()
        for line in changes:
            log.info("reload: %s", line, extra=fields("reload"))
        return changes

    async def _sweep_loop(self) -> None:
        assert self.state is not None
        stats_every = self.config.performance.stats_interval_ms / 1000
        next_stats = 0.0
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                if self.state.sweep():
                    self.state.publish()
                now = time.monotonic()
                if now >= next_stats:
                    self._rates.sample(self.state)
                    next_stats = now + stats_every
            except MyceliumError:
                log.exception("sweep failed; retrying on the next one")

    # -- connections ----------------------------------------------------------------
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
        conn = _Connection(ServerSession(self._next_session), pid, uid)
        self._next_session += 1
        self._conns.add(conn)
        log.debug("connect from pid %d (uid %d)", pid, uid, extra=fields("connect", pid=pid))
        decoder = FrameDecoder(max_frame=MAX_REQUEST_FRAME_BYTES, expect=Request)
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

    def _disconnected(self, conn: _Connection) -> None:
        """A connection closed on a protocol error releases the client's entries; a dropped
        connection from a live process is left for it to resume (the sweep notices if the
        process died)."""
        if conn.session.state is SessionState.CLOSED:
            self._release(conn)

    def _release(self, conn: _Connection) -> None:
        """Forget the connection's producer and consumers now, and publish that.

        On Goodbye this runs before the Ok goes out: a client that saw its Ok may exit at
        once, and a coordinator killed right then must not leave a registry that names it
        (a new coordinator would adopt it as a live client that never comes back).
        """
        state = self.state
        if state is None or not (conn.producer_id or conn.consumer_ids):
            return
        if conn.producer_id:
            state.remove_producer(conn.producer_id)
        for cid in conn.consumer_ids:
            state.remove_consumer(cid)
        conn.producer_id = 0
        conn.consumer_ids.clear()
        state.sweep()
        try:
            state.publish()
        except MyceliumError:
            log.exception("publishing the release of pid %d failed", conn.pid)

    def _answer(self, conn: _Connection, request: Request) -> bytes:
        """The request-handling error boundary: every exception becomes an Error reply.

        A refusal the coordinator meant (unknown topic, a limit, a bad reload) leaves the
        connection open: ``BrokerState.change`` already put everything back. Anything
        else is a bug: logged once with its traceback, the connection's entries released
        and the connection closed, so nothing it held lingers.
        """
        try:
            return encode_frame(self._dispatch(conn, request))
        except (UnknownTopic, LimitExceeded, ConfigError, BrokerUnavailable) as exc:
            log.info("refused %s from pid %d: %s", type(request).__name__, conn.pid, exc)
            return encode_frame(to_error(exc))
        except Exception as exc:
            log.exception("%s from pid %d failed", type(request).__name__, conn.pid)
            conn.session.close()
            self._release(conn)
            return encode_frame(to_error(exc))

    def _dispatch(self, conn: _Connection, request: Request) -> Reply:
        """Act on one accepted request and build its reply (raises; see ``_answer``)."""
        state = self.state
        if state is None:
            raise BrokerUnavailable("the broker is shutting down")
        match request:
            case Hello():
                return self._hello(conn, request)
            case RegisterProducer(topic=topic):
                check_name("topic", topic)
                with state.change():
                    if not conn.producer_id:
                        self._check_entries(conn, consumers=0)
                        conn.producer_id = state.add_producer(conn.pid, conn.name).id
                    state.register_topic(conn.producer_id, topic)
                self._event(conn, "register", f"producer {conn.producer_id}", topic=topic)
                return ProducerRegistered(topic=topic, producer_id=conn.producer_id)
            case Subscribe(topic=topic, group=group, resume_id=resume_id, durable=durable):
                check_name("topic", topic)
                if group is not None:
                    check_name("group", group)
                if durable:
                    check_name("durable", durable)
                self._check_entries(conn, consumers=1)
                with state.change():
                    entry = state.subscribe(conn.pid, topic, group, resume_id, conn.name, durable)
                conn.consumer_ids.add(entry.id)
                self._event(conn, "subscribe", f"consumer {entry.id} in {entry.group}",
                            topic=topic, consumer=entry.id, group=entry.group)  # fmt: skip
                return Subscribed(
                    topic=topic,
                    consumer_id=entry.id,
                    group=entry.group,
                    state_name=entry.segment,
                    doorbell_name=entry.doorbell,
                )
            case Unsubscribe(consumer_id=cid):
                if cid in conn.consumer_ids:
                    conn.consumer_ids.discard(cid)
                    with state.change():
                        gone = state.consumer(cid)
                        state.remove_consumer(cid)
                        self._event(conn, "unsubscribe", f"consumer {cid}", consumer=cid,
                                    topic=gone.topic if gone else None)  # fmt: skip
                        state.sweep()
                return Ok()
            case Heartbeat():
                return Ok()
            case StatsRequest():
                return bounded_stats_reply(self._stats(state))
            case Reload():
                return Ok(detail="; ".join(self.reload()))
            case DeleteDurable(name=name):
                check_name("durable", name)
                with state.change():
                    n = state.delete_durable(name)
                    state.sweep()
                return Ok(detail=f"deleted durable consumer {name} ({n} topic(s))")
            case Shutdown():
                asyncio.get_running_loop().call_soon(self.stop)
                return Ok(detail="shutting down")
            case Goodbye():
                self._release(conn)
                return Ok()
            case ReportFigures():
                check_report(request)
                conn.figures = request
                return Ok()
        return Error(code=ErrorCode.UNKNOWN_MESSAGE, message=type(request).__name__)

    def _check_entries(self, conn: _Connection, consumers: int) -> None:
        """Refuse an entry over the per-connection or per-process limit. Raises LimitExceeded."""
        if len(conn.consumer_ids) + consumers > MAX_CONSUMERS_PER_CONNECTION:
            raise LimitExceeded(
                f"a connection holds at most {MAX_CONSUMERS_PER_CONNECTION} subscriptions",
                limit="consumers_per_connection",
                maximum=MAX_CONSUMERS_PER_CONNECTION,
            )
        assert self.state is not None
        topo = self.state.topo
        held = sum(p.alive and p.pid == conn.pid for p in topo.producers) + sum(
            c.alive and c.pid == conn.pid for c in topo.consumers
        )
        if held + 1 > MAX_ENTRIES_PER_PROCESS:
            raise LimitExceeded(
                f"process {conn.pid} holds {held} entries, the most one process may",
                limit="entries_per_process",
                maximum=MAX_ENTRIES_PER_PROCESS,
            )

    def _stats(self, state: BrokerState) -> dict[str, Any]:
        stats = collect_stats(
            state,
            self._rates,
            socket_path=self.socket_path,
            started_s=self._started_s,
            connections=len(self._conns),
        )
        stats["broker"]["refused_segments"] = TRUST.refused
        stats["bridges"] = [bridge_doc(c.figures, c.pid) for c in self._conns if c.figures]
        return stats

    async def _stats_now(self) -> dict[str, Any] | None:
        return None if self.state is None else self._stats(self.state)

    def _snapshot(self, loop: asyncio.AbstractEventLoop) -> dict[str, Any] | None:
        """The stats document for a scrape, from the metrics thread: computed on the loop
        (the only thread that touches the state), from read-only loads of shared memory."""
        future = asyncio.run_coroutine_threadsafe(self._stats_now(), loop)
        return future.result(SNAPSHOT_TIMEOUT_S)

    def _event(self, conn: _Connection, event: str, what: str, **extra: Any) -> None:
        """One line per control-plane event (INFO; DEBUG for admin commands such as
        `status`), with the client's name and pid."""
        log.log(
            logging.DEBUG if conn.session.role == "admin" else logging.INFO,
            "%s (pid %d): %s %s",
            conn.name,
            conn.pid,
            event,
            what,
            extra=fields(event, client=conn.name, pid=conn.pid, **extra),
        )

    def _hello(self, conn: _Connection, hello: Hello) -> Welcome:
        check_name("client", hello.name, allow_empty=True)
        state = self.state
        assert state is not None  # _dispatch checked
        conn.name = client_name(hello.name, conn.pid)
        self._event(conn, "hello", f"{hello.role} (version {hello.version})")
        if hello.role == "producer":
            with state.change():
                resumed = state.producer(hello.resume_id) if hello.resume_id else None
                if resumed is None or resumed.pid != conn.pid:
                    self._check_entries(conn, consumers=0)
                entry = state.add_producer(conn.pid, conn.name, hello.resume_id)
            conn.producer_id = entry.id
            client_id = entry.id
        else:
            client_id = conn.session.client_id
        return Welcome(
            version=PROTOCOL_VERSION,
            broker_id=self.broker_id,
            registry_name=state.registry.seg.name,
            segment_mode=self.config.server.segment_mode,
            client_id=client_id,
            broker_pid=os.getpid(),
        )


def _same_file(fd: int, path: str) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one removed since we opened it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fs = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fs.st_dev, fs.st_ino)


def run_broker(config: BrokerConfig, socket_path: str, config_path: str | None = None) -> None:
    """Run a coordinator in the foreground until SIGTERM/SIGINT or a Shutdown request."""
    asyncio.run(Coordinator(config, socket_path, config_path).run())
