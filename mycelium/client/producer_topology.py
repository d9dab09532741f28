"""The producer's topology sync: which lanes we write and whom each waits for, rebuilt as
routes from each registry generation.

``TopologySync`` is a base of ``ProducerCore``: ``fetch`` (any thread: register a topic,
read the topology, map new lanes and consumer states) returns a ``Snapshot``, ``apply``
(on the publishing thread) turns it into writers and routes. Kept out of ``producer.py``
so that file stays the hot path; ``refresh`` and ``open``, which it calls, stay there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mycelium.client.control import ControlChannel
from mycelium.client.redelivery import gate_ids, takes_messages
from mycelium.client.routes import FanoutRoute, Payload, QueueRoute, Route
from mycelium.client.topology import TopologyWatcher
from mycelium.control.wire import RegisterProducer
from mycelium.errors import MyceliumError, UnknownTopic
from mycelium.shm.consumer_state import ConsumerStateView
from mycelium.shm.segment import Segment
from mycelium.shm.writer import LaneWriter
from mycelium.topology import ConsumerEntry, LaneEntry, TopicEntry, Topology

__all__ = ["Snapshot", "TopologySync"]


@dataclass
class Snapshot:
    """A topology read with the segments it needs already mapped (the blocking part)."""

    gen: int
    topology: Topology
    lanes: dict[int, Segment] = field(default_factory=dict)
    views: dict[int, ConsumerStateView] = field(default_factory=dict)


class TopologySync:
    """Mixin of ``ProducerCore``: the blocking topology work split from applying it."""

    id: int
    channel: ControlChannel
    watch: TopologyWatcher
    _lock: threading.RLock
    _routes: dict[str, Route]
    _fanout: dict[str, Callable[[Payload], None]]
    _limits: dict[str, int]
    _registered: list[str]
    _writers: dict[int, LaneWriter]
    _views: dict[int, ConsumerStateView]

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
