"""The producer handle: publish into this process's lanes, routed per topic.

How this works
--------------
A ``Producer`` holds a control channel (to register topics) and maps the registry
read-only. Each ``publish`` first compares the registry generation with the one it last
read (one 8-byte load); only when it changed does it re-read the topology and rebuild its
routes. A route is what a topic does with a message:

* fanout: the producer's one lane of that topic; every consumer of the topic gates it;
* queue: one lane per consumer; per consumer group, the message goes to the next lane in
  round-robin order that has room. Another group gets its own copy. A message is written
  only when every group has a lane with room; until then the publish waits (bounded)
  for room in *any* lane of the group, re-reading the topology as it goes, so a group
  with one stuck member still takes messages, and a refused publish writes nothing.

When a queue consumer leaves or dies, its lane's unread frames (from its last stored
cursor) are handed to the rest of its group, then the lane is closed; if the group is
empty they wait in this process for the next consumer of the group. Nothing is lost:
a queue lane's writer never waits on its reader, so it never stops gating on a dead
one and overwrites the frames still to be handed back.

Topics are registered lazily on first publish; the route table maps a topic to a bound
``publish`` callable, so the hot path is a dict lookup and a ring write.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from mycelium.client.control import ControlChannel
from mycelium.client.handle import ClosingHandle
from mycelium.control.wire import RegisterProducer
from mycelium.errors import BackpressureTimeout, MessageTooLarge, MyceliumError, UnknownTopic
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
from mycelium.shm.layout import KIND_LANE, REGISTRY_GENERATION_Q, SLOT_CURSOR_Q, frame_bytes
from mycelium.shm.recovery import unread_frames
from mycelium.shm.registry import ConsumerEntry, LaneEntry, RegistryView, TopicEntry, Topology
from mycelium.shm.segment import Segment
from mycelium.shm.writer import LaneWriter

__all__ = ["Producer", "ProducerCore"]

log = logging.getLogger("mycelium.client")

Payload = bytes | bytearray | memoryview

#: Relay domain byte of a Protocol V2 header -> topic (API.md).
DOMAIN_TOPICS = {1: "market_data", 2: "signals", 3: "execution"}
RELAY_DOMAIN_OFFSET = 4
#: Backoff of a publish waiting for room in every group's lane of a queue topic.
REROUTE_WAIT_MIN_S = 20e-6
REROUTE_WAIT_MAX_S = 1e-3


class _Reroute(Exception):
    """Nothing of this message was written where its route sent it: publish it again
    through the current routes. ``published`` counts the items of a batch that did go."""

    def __init__(self, published: int = 0) -> None:
        super().__init__()
        self.published = published


def _room_for(size: int) -> int:
    """Ring bytes in which a ``size``-byte message surely fits without waiting: its frame
    plus the most a wrap can skip before it."""
    return 2 * frame_bytes(size)


class _QueueRoute:
    """Producer-side dispatch of a queue topic: one copy per group, one consumer each."""

    def __init__(self, topic: str, max_message_size: int) -> None:
        self.topic = topic
        self.max_message_size = max_message_size
        self.groups: dict[str, list[LaneWriter]] = {}
        self._next: dict[str, int] = {}

    def publish(self, data: Payload) -> None:
        """One copy per group, all or none. Raises MessageTooLarge, or _Reroute (nothing
        written) when some group has no lane with room now."""
        n = len(data)
        # Checked here, not left to the lanes: with no group to deliver to there is no
        # lane, and an oversize publish must be refused all the same.
        if n > self.max_message_size:
            raise MessageTooLarge(n, self.max_message_size, self.topic)
        need = _room_for(n)
        targets = [self.pick(group, need) for group, ws in self.groups.items() if ws]
        if None in targets:
            raise _Reroute
        for w in targets:
            w.publish(data)  # type: ignore[union-attr]

    def publish_to(self, group: str, data: Payload) -> None:
        """One message for ``group`` only (a departed member's); raises _Reroute."""
        w = self.pick(group, _room_for(len(data)))
        if w is None:
            raise _Reroute
        w.publish(data)

    def publish_many(self, items: Sequence[Payload]) -> int:
        """A batch with one cursor store, when one group has a lane with room for all of
        it; else message by message. Raises _Reroute with ``published`` set."""
        groups = [group for group, ws in self.groups.items() if ws]
        if len(groups) == 1 and items:
            need = sum(frame_bytes(len(x)) for x in items) + _room_for(max(map(len, items)))
            w = self.pick(groups[0], need)
            if w is not None:
                return w.publish_many(items)
        for i, item in enumerate(items):
            try:
                self.publish(item)
            except _Reroute as exc:
                exc.published = i
                raise
        return len(items)

    def pick(self, group: str, need: int) -> LaneWriter | None:
        """The next lane of ``group``, round-robin, with ``need`` ring bytes free now;
        None if it has none."""
        writers = self.groups.get(group) or []
        start = self._next.get(group, 0)
        n = len(writers)
        for k in range(n):
            w = writers[(start + k) % n]
            if w.has_room(need):
                self._next[group] = (start + k + 1) % n
                return w
        return None


class ProducerCore:
    """Everything a producer does, without blocking policy: shared by sync and async."""

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
        self._routes: dict[str, Callable[[Payload], None]] = {}
        self._many: dict[str, Callable[[Sequence[Payload]], int]] = {}
        self._limits: dict[str, int] = {}
        self._registered: list[str] = []
        self._writers: dict[int, LaneWriter] = {}
        self._views: dict[int, ConsumerStateView] = {}
        self._orphans: dict[tuple[str, str], list[bytes]] = {}
        self._queue_routes: dict[str, _QueueRoute] = {}
        self._closed = False
        self._topo = Topology()
        self.channel = ControlChannel(
            self.socket_path,
            "producer",
            name=name,
            wait_for_broker_s=wait_for_broker,
            on_reconnect=self._resume,
        )
        assert self.channel.welcome is not None
        self.id = self.channel.welcome.client_id
        self.registry = RegistryView.attach(self.channel.welcome.registry_name)
        self._gen_q = self.registry.q
        self._gen = -1

    # -- publishing -----------------------------------------------------------------
    def publish(self, topic: str, data: Payload) -> None:
        """Publish one message; returns when it is in the ring(s).

        Raises UnknownTopic, MessageTooLarge (nothing written), BackpressureTimeout
        (nothing written), BrokerUnavailable (a new topic while the broker is down).
        """
        if self._gen_q[REGISTRY_GENERATION_Q] != self._gen:
            self._refresh()
        if self._orphans:
            self._deliver_all_orphans()
        route = self._routes.get(topic)
        if route is None:
            route = self._open(topic)
        try:
            route(data)  # the lane checks max_message_size before writing anything
        except _Reroute:
            self._publish_rerouted(topic, data)

    def publish_many(self, topic: str, items: Sequence[Payload]) -> int:
        """Publish a batch with one cursor store per lane; returns the count published."""
        if self._gen_q[REGISTRY_GENERATION_Q] != self._gen:
            self._refresh()
        if topic not in self._many:
            self._open(topic)
        limit = self._limits[topic]
        if items and (largest := max(map(len, items))) > limit:
            raise MessageTooLarge(largest, limit, topic)
        if self._orphans:
            self._deliver_all_orphans()
        try:
            return self._many[topic](items)
        except _Reroute as exc:
            done = exc.published
        for i in range(done, len(items)):
            try:
                self._publish_rerouted(topic, items[i])
            except BackpressureTimeout as exc:
                exc.published = i  # type: ignore[attr-defined]
                raise
        return len(items)

    def _publish_rerouted(self, topic: str, data: Payload, group: str | None = None) -> None:
        """The slow path of a queue topic: some group had no lane with room. Retry
        through the current routes (to ``group`` only, for a departed member's message)
        until it goes; BackpressureTimeout (nothing written) after the topic's bound."""
        timeout = self.backpressure_timeout
        if timeout is None:
            entry = self._topo.topic(topic)
            timeout = entry.backpressure_timeout_ms / 1000 if entry else 0.0
        deadline = time.monotonic() + timeout
        delay = REROUTE_WAIT_MIN_S
        while True:
            if self._gen_q[REGISTRY_GENERATION_Q] != self._gen:
                self._refresh()
            if self._orphans and group is None:
                self._deliver_all_orphans()  # older than this message: they go first
            try:
                if group is None:
                    self._routes[topic](data)
                else:
                    self._queue_routes[topic].publish_to(group, data)
                return
            except _Reroute:
                pass
            if time.monotonic() >= deadline:
                raise BackpressureTimeout(
                    f"topic {topic!r}: a group had no lane with room for {timeout}s;"
                    " nothing written",
                    waited_s=timeout,
                )
            time.sleep(delay)
            delay = min(delay * 2, REROUTE_WAIT_MAX_S)

    def publish_message(self, message: Payload) -> None:
        """Publish a Protocol V2 message on the topic of its relay domain.

        Only the header is checked here (length, magic, domain); consumers parse fully.
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
        self.publish(topic, message)

    # -- topology -------------------------------------------------------------------
    def _open(self, topic: str) -> Callable[[Payload], None]:
        """Register ``topic`` with the coordinator (first publish on it)."""
        with self._lock:
            if self._topo.topic(topic) is None:
                self._refresh()
                if self._topo.topic(topic) is None:
                    raise UnknownTopic(topic, tuple(t.name for t in self._topo.topics))
            self.channel.request(RegisterProducer(topic=topic))
            if topic not in self._registered:
                self._registered.append(topic)
            self._refresh()
            return self._routes[topic]

    def _resume(self) -> None:
        """After a reconnect: register our topics again (the coordinator keeps our lanes)."""
        with self._lock:
            for topic in self._registered:
                self.channel.request(RegisterProducer(topic=topic))

    def _refresh(self) -> None:
        """Re-read the topology and rebuild every route from it."""
        with self._lock:
            gen, topo = self.registry.read()
            self._topo = topo
            self._gen = gen
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
                    self._route_fanout(entry, lanes, consumers, topo)
            self._forget_views(consumers)

    def _writer(self, lane: LaneEntry, entry: TopicEntry) -> LaneWriter:
        writer = self._writers.get(lane.uid)
        if writer is None:
            timeout = self.backpressure_timeout
            writer = LaneWriter(
                Segment.attach(lane.segment, KIND_LANE, writable=True),
                backpressure_timeout_s=(
                    timeout if timeout is not None else entry.backpressure_timeout_ms / 1000
                ),
                on_wait=self._on_wait,
            )
            self._writers[lane.uid] = writer
        return writer

    def _view(self, c: ConsumerEntry) -> ConsumerStateView | None:
        view = self._views.get(c.id)
        if view is None:
            try:
                view = self._views[c.id] = ConsumerStateView.attach(c.segment, c.doorbell)
            except MyceliumError:
                return None  # already gone: nothing to gate on
        return view

    def _route_fanout(
        self,
        entry: TopicEntry,
        lanes: list[LaneEntry],
        consumers: dict[int, ConsumerEntry],
        topo: Topology,
    ) -> None:
        live = [lane for lane in lanes if not lane.draining]
        if not live:
            return
        writer = self._writer(live[0], entry)
        views = [
            v
            for c in consumers.values()
            if c.topic == entry.name and c.alive and (v := self._view(c)) is not None
        ]
        writer.set_readers(views)
        self._routes[entry.name] = writer.publish
        self._many[entry.name] = writer.publish_many

    def _route_queue(
        self, entry: TopicEntry, lanes: list[LaneEntry], consumers: dict[int, ConsumerEntry]
    ) -> None:
        route = _QueueRoute(entry.name, entry.max_message_size)
        leftovers: list[tuple[str, list[bytes]]] = []
        for lane in sorted(lanes, key=lambda x: x.uid):
            writer = self._writer(lane, entry)
            c = consumers.get(lane.consumer)
            view = self._view(c) if c is not None else self._views.get(lane.consumer)
            if c is not None and c.alive and view is not None:
                writer.set_readers([view])
                route.groups.setdefault(lane.group, []).append(writer)
            elif not writer.info.lossy and not writer.closed_by_us:
                leftovers.append((lane.group, self._take_back(writer, lane, view)))
        for c in consumers.values():  # groups whose lanes are not there yet still exist
            if c.topic == entry.name and c.alive:
                route.groups.setdefault(c.group, [])
        self._routes[entry.name] = route.publish
        self._many[entry.name] = route.publish_many
        self._queue_routes[entry.name] = route
        for group, frames in leftovers:
            self._orphans.setdefault((entry.name, group), []).extend(frames)

    def _take_back(
        self, writer: LaneWriter, lane: LaneEntry, view: ConsumerStateView | None
    ) -> list[bytes]:
        """A queue consumer left: the frames it did not read come back to us, the lane closes."""
        start = 0
        if view is not None:
            base = view.find_slot(lane.uid)
            if base is not None:
                start = view.q[base + SLOT_CURSOR_Q]
        try:
            frames = unread_frames(writer.seg, start)
        except MyceliumError as exc:
            log.error("could not recover unread messages of lane %s: %s", lane.segment, exc)
            frames = []
        if frames:
            log.info(
                "re-dispatching %d unread messages of consumer %d on %s",
                len(frames),
                lane.consumer,
                lane.topic,
            )
        writer.mark_closed()
        return frames

    def _deliver_all_orphans(self, *, wait: bool = False) -> None:
        """Hand departed queue consumers' messages to their groups' members.

        Without ``wait`` (every publish while some are pending) only what fits now goes;
        the rest stays for the next try. With ``wait`` (closing), each waits its bound.
        """
        for (topic, group), frames in list(self._orphans.items()):
            route = self._queue_routes.get(topic)
            if route is None or not route.groups.get(group):
                continue  # the group has no member yet
            sent = 0
            try:
                for frame in frames:
                    try:  # the current route each time: a wait may have rebuilt it
                        self._queue_routes[topic].publish_to(group, frame)
                    except _Reroute:
                        if not wait:
                            break
                        self._publish_rerouted(topic, frame, group)
                    sent += 1
            except BackpressureTimeout:
                pass  # the rest is reported at close
            finally:
                del frames[:sent]
                if not frames:
                    del self._orphans[(topic, group)]

    def _forget_views(self, consumers: dict[int, ConsumerEntry]) -> None:
        in_use = {id(v) for w in self._writers.values() for v in w.readers}
        for cid in list(self._views):
            if cid not in consumers and id(self._views[cid]) not in in_use:
                self._views.pop(cid).close()

    def _on_wait(self) -> None:
        """While a ring is full: pick up topology changes (e.g. a dead consumer removed)."""
        if self._gen_q[REGISTRY_GENERATION_Q] != self._gen:
            self._refresh()

    # -- state ----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.channel.state.name == "CONNECTED"

    @property
    def pending_orphans(self) -> int:
        """Messages of departed queue consumers waiting for a consumer of their group."""
        return sum(len(v) for v in self._orphans.values())

    def close(self) -> None:
        """Close our lanes (consumers drain them) and leave the broker."""
        if self._closed:
            return
        if self._gen_q[REGISTRY_GENERATION_Q] != self._gen:
            try:
                self._refresh()  # hand departed queue consumers' messages on first
            except MyceliumError as exc:
                log.warning("final topology refresh failed: %s", exc)
        if self._orphans:
            self._deliver_all_orphans(wait=True)
        self._closed = True
        if self._orphans:
            log.warning(
                "closing with %d undelivered messages of departed queue consumers",
                self.pending_orphans,
            )
        for writer in self._writers.values():
            writer.close(final=True)
        self._writers.clear()
        for view in self._views.values():
            view.close()
        self._views.clear()
        self.channel.close()
        self.registry.close()


class Producer(ClosingHandle, ProducerCore):
    """Synchronous producer handle (a context manager)::

    with Producer() as p:
        p.publish("market_data", b"...")
    """
