"""Request dispatch: each accepted control request becomes a change and a reply.

``_answer`` is the error boundary: a refusal the coordinator meant leaves the connection
open, anything else is a bug (logged, the connection's entries released, closed).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import msgspec

from mycelium.config import BrokerConfig, load_config
from mycelium.control.faults import to_error
from mycelium.control.limits import (
    MAX_CONSUMERS_PER_CONNECTION,
    MAX_ENTRIES_PER_PROCESS,
    check_name,
    check_report,
)
from mycelium.control.session import ServerSession
from mycelium.control.wire import (
    MAX_CONTROL_FRAME_BYTES,
    PROTOCOL_VERSION,
    DeleteDurable,
    Error,
    ErrorCode,
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
from mycelium.coordinator.naming import client_name
from mycelium.coordinator.stats import RateMeter, bridge_doc, collect_stats
from mycelium.coordinator.topology import BrokerState
from mycelium.errors import (
    BrokerUnavailable,
    ConfigError,
    LimitExceeded,
    MyceliumError,
    UnknownTopic,
)
from mycelium.logs import fields
from mycelium.shm.segment import TRUST

__all__ = ["ClientConnection", "RequestHandler", "bounded_stats_reply"]

log = logging.getLogger("mycelium.coordinator")
_ENCODER = msgspec.msgpack.Encoder()

#: A status reply keeps this much of the frame limit spare for its own envelope.
_STATS_MARGIN_BYTES = 4096


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


class ClientConnection:
    """One control connection and the entries its client holds."""

    __slots__ = ("consumer_ids", "figures", "name", "pid", "producer_id", "session", "uid")

    def __init__(self, session: ServerSession, pid: int, uid: int) -> None:
        self.session = session
        self.pid = pid
        self.uid = uid
        self.name = ""  # set by its Hello
        self.producer_id = 0
        self.consumer_ids: set[int] = set()
        self.figures: ReportFigures | None = None  # a bridge's last report


class RequestHandler:
    """Answers requests against the broker state; the coordinator's request half."""

    config: BrokerConfig
    config_path: str | None
    socket_path: str
    broker_id: str
    state: BrokerState | None
    _conns: set[ClientConnection]
    _stop: asyncio.Event
    _rates: RateMeter
    _started_s: float

    def stop(self) -> None:
        """Ask the coordinator to stop serving (graceful)."""
        self._stop.set()

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

    def _release(self, conn: ClientConnection) -> None:
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

    def _answer(self, conn: ClientConnection, request: Request) -> bytes:
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

    def _dispatch(self, conn: ClientConnection, request: Request) -> Reply:
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
                bell = self._shared_doorbell(conn, request.doorbell_of)
                with state.change():
                    entry = state.subscribe(
                        conn.pid, topic, group, resume_id, conn.name, durable, bell
                    )
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

    def _shared_doorbell(self, conn: ClientConnection, cid: int) -> str:
        """The doorbell of this connection's subscription ``cid`` ("" for 0): only a
        client's own subscriptions share one. Raises ConfigError."""
        if not cid:
            return ""
        assert self.state is not None
        entry = self.state.consumer(cid) if cid in conn.consumer_ids else None
        if entry is None:
            raise ConfigError(
                f"consumer {cid} is no subscription of this connection", "doorbell_of"
            )
        return entry.doorbell

    def _check_entries(self, conn: ClientConnection, consumers: int) -> None:
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

    def _event(self, conn: ClientConnection, event: str, what: str, **extra: Any) -> None:
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

    def _hello(self, conn: ClientConnection, hello: Hello) -> Welcome:
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
