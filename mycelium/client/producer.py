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
dict lookup and a ring write. The topology sync (``fetch``, ``apply``) is
``producer_topology.py``, batch and array publishing ``producer_batches.py``: bases of
the classes here, so every name stays importable from this module.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from mycelium.backoff import Backpressure, pause_sync
from mycelium.client.control import ControlChannel
from mycelium.client.handle import ClosingHandle
from mycelium.client.producer_batches import BatchOffers, BatchPublishes, record_rows
from mycelium.client.producer_topology import Snapshot, TopologySync
from mycelium.client.publisher import TopicPublisher
from mycelium.client.routes import Payload, Route
from mycelium.client.topology import TopologyWatcher
from mycelium.errors import (
    BackpressureTimeout,
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
from mycelium.shm.writer import LaneWriter

__all__ = [
    "Payload",
    "Producer",
    "ProducerCore",
    "Snapshot",
    "record_rows",
    "topic_of_message",
]

log = logging.getLogger("mycelium.client")

#: Relay domain byte of a Protocol V2 header -> topic (API.md).
DOMAIN_TOPICS = {1: "market_data", 2: "signals", 3: "execution"}
RELAY_DOMAIN_OFFSET = 4


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


class ProducerCore(TopologySync, BatchOffers):
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
    def refresh(self) -> None:
        """Fetch and apply in line (the sync driver, and the core's own hot-path check)."""
        self.apply(self.fetch())

    def open(self, topic: str) -> Route:
        """Register ``topic`` with the coordinator (first publish on it)."""
        self.apply(self.fetch(topic))
        return self._routes[topic]

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


class Producer(ClosingHandle, BatchPublishes, ProducerCore):
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
