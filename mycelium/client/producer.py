"""The producer: a core that routes and never waits, and the sync driver over it.

How this works
--------------
``ProducerCore`` holds a control channel (to register topics), a topology watcher and
one route per topic (``routes.py``). ``offer`` writes a message and returns True, or
False ("full": nothing written); it never sleeps or blocks. Blocking work is split out
so that an async driver can run it off the event loop: ``fetch`` (register a topic,
decode the topology, map new lanes and consumer states) returns a ``Snapshot`` and
``apply`` (on the thread that publishes: lane writers are single-writer) rebuilds the
routes from it. ``Producer`` drives the core synchronously: ``fetch`` and ``apply`` in
line, and the one backpressure policy (``mycelium/backoff.py``) with ``time.sleep`` when
an offer comes back full.

When a queue consumer leaves or dies, the coordinator hands its lanes to the rest of its
group (``redelivery.py``): we keep gating them on its last cursor and write no more to them.
Topics are registered lazily on first publish; the hot path is a generation check, a
dict lookup and a ring write.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mycelium.backoff import Backpressure, pause_sync
from mycelium.client.control import ControlChannel
from mycelium.client.handle import ClosingHandle
from mycelium.client.publisher import TopicPublisher
from mycelium.client.redelivery import gate_ids, takes_messages
from mycelium.client.routes import FanoutRoute, Payload, QueueRoute, Route
from mycelium.client.topology import TopologyWatcher
from mycelium.control.wire import RegisterProducer
from mycelium.errors import (
    BackpressureTimeout,
    MessageTooLarge,
    MyceliumError,
    NonContiguousPayload,
    UnknownTopic,
)
from mycelium.paths import resolve_socket_path
from mycelium.protocol import (
    HEADER_SIZE,
    MAGIC,
    InvalidMagic,
    InvalidRelayDomain,
    MessageTooSmall,
    RelayDomain,
)
from mycelium.shm.consumer_state import ConsumerStateView
from mycelium.shm.registry import RegistryView
from mycelium.shm.segment import Segment
from mycelium.shm.writer import LaneWriter
from mycelium.topology import ConsumerEntry, LaneEntry, TopicEntry, Topology

__all__ = ["Payload", "Producer", "ProducerCore", "Snapshot", "topic_of_message"]

log = logging.getLogger("mycelium.client")

#: Relay domain byte of a Protocol V2 header -> topic (API.md).
DOMAIN_TOPICS = {1: "market_data", 2: "signals", 3: "execution"}
RELAY_DOMAIN_OFFSET = 4


def record_rows(records: np.ndarray) -> np.ndarray:
    """A 1-D array's records as the rows of a (k, itemsize) uint8 array (no copy).

    Raises NonContiguousPayload for a strided array, ValueError for another shape.
    """
    if not isinstance(records, np.ndarray) or records.ndim != 1:
        raise ValueError("publish_array takes a 1-D numpy array, one record per message")
    if not records.flags.c_contiguous:
        raise NonContiguousPayload(
            "publish_array needs a C-contiguous array (np.ascontiguousarray)"
        )
    return records.view(np.uint8).reshape(len(records), records.dtype.itemsize)


def topic_of_message(message: Payload) -> str:
    """The topic of a Protocol V2 message's relay domain (only the header is checked).

    Raises ProtocolError subclasses for a message that is not Protocol V2, and
    UnknownTopic for a valid domain without a topic (SYSTEM).
    """
    if len(message) < HEADER_SIZE:
        raise MessageTooSmall(HEADER_SIZE, len(message))
    magic = int.from_bytes(message[0:4], "little")
    if magic != MAGIC:
        raise InvalidMagic(MAGIC, magic)
    domain = message[RELAY_DOMAIN_OFFSET]
    topic = DOMAIN_TOPICS.get(domain)
    if topic is None:
        if domain in RelayDomain._value2member_map_:
            raise UnknownTopic(f"<relay domain {RelayDomain(domain).name}>")
        raise InvalidRelayDomain(domain)
    return topic


@dataclass
class Snapshot:
    """A topology read with the segments it needs already mapped (the blocking part)."""

    gen: int
    topology: Topology
    lanes: dict[int, Segment] = field(default_factory=dict)
    views: dict[int, ConsumerStateView] = field(default_factory=dict)


class ProducerCore:
    """Everything a producer does, without waiting: shared by the sync and async drivers."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        name: str = "",
        wait_for_broker: float = 0.0,
        backpressure_timeout: float | None = None,
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        self.backpressure_timeout = backpressure_timeout
        self._lock = threading.RLock()  # the control thread's resume vs. the caller
        self._routes: dict[str, Route] = {}
        self._fanout: dict[str, Callable[[Payload], None]] = {}  # topic -> its lane's publish
        self._limits: dict[str, int] = {}
        self._registered: list[str] = []
        self._writers: dict[int, LaneWriter] = {}
        self._views: dict[int, ConsumerStateView] = {}
        self._closed = False
        self.channel = ControlChannel(
            self.socket_path,
            "producer",
            name=name,
            wait_for_broker_s=wait_for_broker,
            on_reconnect=self._resume,
        )
        assert self.channel.welcome is not None
        self.id = self.channel.welcome.client_id
        self.watch = TopologyWatcher(self.channel.welcome.registry_name)

    # -- offering (never waits) ---------------------------------------------------------
    def offer(self, topic: str, data: Payload) -> bool:
        """Write one message: True, or the driver's answer to "full" (``_full``): False
        here (nothing written; wait and offer again), a wait in ``Producer``. Raises
        UnknownTopic, MessageTooLarge (nothing written), BrokerUnavailable (a new topic
        while the broker is down)."""
        watch = self.watch
        if watch.generation[0] != watch.gen:  # watch.stale(), inlined
            self.refresh()
        publish = self._fanout.get(topic)
        if publish is not None:  # the hot path: the fanout lane's own publish, unwrapped
            try:
                publish(data)  # the lane checks max_message_size before writing
                return True
            except BackpressureTimeout:  # the ring is full: nothing written
                return self._full(topic, data)
        route = self._routes.get(topic)
        if route is None:
            route = self.open(topic)
        return route.offer(data) or self._full(topic, data)

    def _full(self, topic: str, data: Payload) -> bool:
        """What ``offer`` answers when there is no room: the core reports it (False);
        the sync driver waits here instead."""
        return False

    def offer_many(self, topic: str, items: Sequence[Payload]) -> int:
        """Write what fits of a batch now (one cursor store per lane); returns how many
        went. Raises as ``offer``; MessageTooLarge before anything is written."""
        if self.watch.stale():
            self.refresh()
        if topic not in self._routes:
            self.open(topic)
        limit = self._limits[topic]
        if items and (largest := max(map(len, items))) > limit:
            raise MessageTooLarge(largest, limit, topic)
        return self._routes[topic].offer_many(items)

    def offer_array(self, topic: str, rows: np.ndarray) -> int:
        """``offer_many`` for the rows of a (k, n) uint8 array (one message per row),
        vectorised. Raises as ``offer_many``."""
        if self.watch.stale():
            self.refresh()
        if topic not in self._routes:
            self.open(topic)
        limit = self._limits[topic]
        if rows.shape[1] > limit:
            raise MessageTooLarge(rows.shape[1], limit, topic)
        return self._routes[topic].offer_rows(rows)

    def backpressure(self, topic: str, timeout: float | None = None) -> Backpressure:
        """The wait of one full publish on ``topic``, bounded by ``timeout``, else the
        producer's ``backpressure_timeout``, else the topic's."""
        if timeout is None:
            timeout = self.backpressure_timeout
        if timeout is None:
            entry = self.watch.topology.topic(topic)
            timeout = entry.backpressure_timeout_ms / 1000 if entry else 0.0
        route = self._routes.get(topic)
        return Backpressure(timeout, topic, route.count_timeout if route else None)

    @property
    def registry(self) -> RegistryView:
        """The broker's registry, mapped read-only (tools read the topology from it)."""
        return self.watch.registry

    def fanout_publish(self, topic: str) -> Callable[[Payload], None] | None:
        """The publish of ``topic``'s one fanout lane (None for a queue topic or none yet)."""
        return self._fanout.get(topic)

    @property
    def routes(self) -> dict[str, Route]:
        """The route of every topic opened so far (per-topic publisher handles bind one)."""
        return self._routes

    def drop_dead_readers(self) -> None:
        """While waiting: stop gating on readers whose process is gone."""
        for route in self._routes.values():
            route.drop_dead_readers()

    # -- topology (blocking work split from applying it) ----------------------------------
    def needs_fetch(self, topic: str | None = None) -> bool:
        """Whether ``offer`` would first do blocking work (topology changed, new topic)."""
        return self.watch.stale() or (topic is not None and topic not in self._routes)

    def fetch(self, topic: str | None = None) -> Snapshot:
        """The blocking part of a topology change: register ``topic`` if new, read the
        topology, map the lanes and consumer states not mapped yet. Any thread."""
        if topic is not None:
            self._register(topic)
        gen, topo = self.watch.read()
        snap = Snapshot(gen, topo)
        try:
            for lane in topo.lanes:
                if lane.producer == self.id and lane.uid not in self._writers:
                    snap.lanes[lane.uid] = Segment.attach_lane(lane.segment, writable=True)
            topics = {*self._registered, topic}
            for c in topo.consumers:
                if c.topic in topics and c.id not in self._views:
                    try:
                        snap.views[c.id] = ConsumerStateView.attach(c.segment, c.doorbell)
                    except MyceliumError:
                        pass  # already gone: nothing to gate on
        except BaseException:
            self._discard(snap)
            raise
        return snap

    def apply(self, snap: Snapshot) -> None:
        """Rebuild every route from ``snap``, on the thread that publishes."""
        topo = snap.topology
        self.watch.accept(snap.gen, topo)
        me = next((p.name for p in topo.producers if p.id == self.id), self.channel.name)
        for uid, seg in snap.lanes.items():
            if uid not in self._writers:
                # No wait of its own: a full ring comes back to the route as "full".
                self._writers[uid] = LaneWriter(seg, backpressure_timeout_s=0.0, producer_name=me)
        for cid, view in snap.views.items():
            if cid not in self._views:
                self._views[cid] = view
        snap.lanes.clear()
        snap.views.clear()
        self._discard(snap)
        consumers = {c.id: c for c in topo.consumers}
        mine = {lane.uid: lane for lane in topo.lanes if lane.producer == self.id}
        for uid in list(self._writers):
            if uid not in mine:
                self._writers.pop(uid).close(final=False)
        for topic in self._registered:
            entry = topo.topic(topic)
            if entry is None:
                continue
            self._limits[topic] = entry.max_message_size
            lanes = [lane for lane in mine.values() if lane.topic == topic]
            if entry.routing == "queue":
                self._route_queue(entry, lanes, consumers)
            else:
                self._route_fanout(entry, lanes, consumers)
        self._forget_views(consumers)

    def refresh(self) -> None:
        """Fetch and apply in line (the sync driver, and the core's own hot-path check)."""
        self.apply(self.fetch())

    def open(self, topic: str) -> Route:
        """Register ``topic`` with the coordinator (first publish on it)."""
        self.apply(self.fetch(topic))
        return self._routes[topic]

    def _register(self, topic: str) -> None:
        """Ask the coordinator for our lane(s) of ``topic`` (again, if it has none live)."""
        with self._lock:  # against the control thread's resume
            if self.watch.topology.topic(topic) is None:
                _, topo = self.watch.read()
                if topo.topic(topic) is None:
                    raise UnknownTopic(topic, tuple(t.name for t in topo.topics))
            self.channel.request(RegisterProducer(topic=topic))
            if topic not in self._registered:
                self._registered.append(topic)

    def _discard(self, snap: Snapshot) -> None:
        for seg in snap.lanes.values():
            seg.close()
        for view in snap.views.values():
            view.close()

    def _resume(self) -> None:
        """After a reconnect: register our topics again (the coordinator keeps our lanes)."""
        with self._lock:
            for topic in self._registered:
                self.channel.request(RegisterProducer(topic=topic))

    def _route_fanout(
        self, entry: TopicEntry, lanes: list[LaneEntry], consumers: dict[int, ConsumerEntry]
    ) -> None:
        live = [lane for lane in lanes if not lane.draining]
        if not live:  # no lane to write now: the next publish registers the topic again
            self._routes.pop(entry.name, None)
            self._fanout.pop(entry.name, None)  # its writer may be closed: never call it
            return
        writer = self._writers[live[0].uid]
        writer.timestamps = entry.timestamps
        readers = []
        for c in consumers.values():
            view = self._views.get(c.id)
            if c.topic == entry.name and view is not None and (c.alive or c.durable):
                view.durable = bool(c.durable)  # away or not, its position is kept
                readers.append(view)
        writer.set_readers(readers)
        route = self._routes.get(entry.name)
        if not isinstance(route, FanoutRoute) or route.writer is not writer:
            self._routes[entry.name] = FanoutRoute(entry.name, writer)
            self._fanout[entry.name] = writer.publish

    def _route_queue(
        self, entry: TopicEntry, lanes: list[LaneEntry], consumers: dict[int, ConsumerEntry]
    ) -> None:
        route = QueueRoute(entry.name, entry.max_message_size)
        for lane in sorted(lanes, key=lambda x: x.uid):
            writer = self._writers[lane.uid]
            writer.timestamps = entry.timestamps
            views = self._views
            writer.set_readers(views[cid] for cid in gate_ids(lane) if cid in views)
            if writer.closed_by_us:
                continue
            holder = consumers.get(lane.consumer)
            if holder is not None and lane.consumer in views:
                views[lane.consumer].durable = bool(holder.durable)
            if takes_messages(lane, holder) and lane.consumer in views:
                route.groups.setdefault(lane.group, []).append(writer)
            else:  # its holder left: the lane is read on by an heir, from shared memory
                writer.mark_closed()
        for c in consumers.values():  # groups whose lanes are not there yet still exist
            if c.topic == entry.name and (c.alive or c.durable):
                route.groups.setdefault(c.group, [])
        self._routes[entry.name] = route
        self._fanout.pop(entry.name, None)

    def _forget_views(self, consumers: dict[int, ConsumerEntry]) -> None:
        in_use = {id(v) for w in self._writers.values() for v in w.readers}
        for cid in list(self._views):
            if cid not in consumers and id(self._views[cid]) not in in_use:
                self._views.pop(cid).close()

    # -- state ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.channel.state.name == "CONNECTED"

    def close(self) -> None:
        """Close our lanes (consumers drain them) and leave the broker."""
        if self._closed:
            return
        self._closed = True
        for writer in self._writers.values():
            writer.close(final=True)
        self._writers.clear()
        for view in self._views.values():
            view.close()
        self._views.clear()
        self.channel.close()
        self.watch.close()


class Producer(ClosingHandle, ProducerCore):
    """Synchronous producer handle (a context manager)::

    with Producer() as p:
        p.publish("market_data", b"...")
    """

    #: Publish one message; returns (True) when it is in the ring(s). Raises UnknownTopic,
    #: MessageTooLarge (nothing written), BackpressureTimeout (nothing written),
    #: BrokerUnavailable (a new topic while the broker is down). The core's ``offer``
    #: itself, so the hot path is one call; a full ring waits in ``_full``.
    publish = ProducerCore.offer

    _waiting = False

    def _full(self, topic: str, data: Payload) -> bool:
        if self._waiting:
            return False  # a retry from inside the wait below: it goes on
        self._waiting = True
        try:
            self._wait(topic, lambda: self.offer(topic, data))
        finally:
            self._waiting = False
        return True

    def publish_many(self, topic: str, items: Sequence[Payload]) -> int:
        """Publish a batch with one cursor store per lane; returns the count published.
        BackpressureTimeout says in ``published`` how many went before it."""
        done = self.offer_many(topic, items)
        k = len(items)
        if done < k:
            bp = self.backpressure(topic)
            while done < k:
                try:
                    self._pause(bp)
                except BackpressureTimeout as exc:
                    exc.published = done
                    raise
                done += self.offer_many(topic, items[done:])
        return k

    def publish_array(self, topic: str, records: np.ndarray) -> int:
        """Publish each record of a 1-D numpy array (e.g. a structured array, or a
        Protocol V2 batch from ``mycelium.protocol.batch``) as one message of
        ``dtype.itemsize`` bytes, vectorised; returns the count. Raises as
        ``publish_many``; NonContiguousPayload for an array that is not C-contiguous."""
        done = self.offer_array(topic, rows := record_rows(records))
        k = len(rows)
        if done < k:
            bp = self.backpressure(topic)
            while done < k:
                try:
                    self._pause(bp)
                except BackpressureTimeout as exc:
                    exc.published = done
                    raise
                done += self.offer_array(topic, rows[done:])
        return k

    def topic(self, topic: str) -> TopicPublisher:
        """A publisher handle bound to ``topic`` (``TopicPublisher``): ``publish`` without
        the topic lookup, every check kept. Raises UnknownTopic now, not on first use."""
        return TopicPublisher(self, topic)

    def publish_message(self, message: Payload) -> None:
        """Publish a Protocol V2 message on the topic of its relay domain.

        Only the header is checked here (length, magic, domain); consumers parse fully.
        Raises ProtocolError subclasses for a message that is not Protocol V2, and
        UnknownTopic for a valid domain without a topic (SYSTEM).
        """
        self.publish(topic_of_message(message), message)

    def _wait(self, topic: str, attempt: Callable[[], bool]) -> None:
        bp = self.backpressure(topic)
        while True:
            self._pause(bp)
            if attempt():
                return

    def _pause(self, bp: Backpressure) -> None:
        pause_sync(bp)
        if bp.liveness_due():
            self.drop_dead_readers()
        if self.watch.stale():
            self.refresh()
