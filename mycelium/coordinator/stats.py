"""Broker statistics, read from shared memory without disturbing the data plane.

How this works
--------------
Every number here is a load from a segment the coordinator maps read-only: a lane's
message count and write cursor, a consumer slot's cursor and count, a consumer's lost and
corrupt counters, a lane's backpressure-timeout count. Counts of lanes and consumers
already retired are kept in the topology (in the registry segment), so every total only
grows, across coordinator restarts too. ``RateMeter`` turns successive samples into
per-second rates and keeps a minute of them per topic; the coordinator samples it on its
stats interval.

Lag in seconds is the age of the oldest message a consumer has not read, to within one
stats interval: the meter remembers when each lane's count passed each sampled value,
so the first sample whose count exceeds the consumer's position dates that message.
A lane's fill is the share of its ring its slowest reader has not freed (the writer
waits, and then refuses with BackpressureTimeout, when it reaches 1).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import psutil

from mycelium.control.wire import ReportFigures
from mycelium.coordinator.topology import BrokerState
from mycelium.shm.consumer_state import ConsumerStateView
from mycelium.shm.layout import (
    LANE_COUNT_Q,
    LANE_STATIC_OFF,
    LANE_TIMEOUTS_Q,
    LANE_WRITE_Q,
    SLOT_COUNT_Q,
    SLOT_CURSOR_Q,
)
from mycelium.topology import ConsumerEntry, LaneEntry

__all__ = ["HISTORY_S", "RateMeter", "bridge_doc", "collect_stats"]

#: How far back the rate history (top's sparklines) and the lag-in-time samples reach.
HISTORY_S = 60.0
_CAPACITY_Q = LANE_STATIC_OFF // 8  # first word of a lane's static line


def _consumer_lanes(
    state: BrokerState, c: ConsumerEntry, view: ConsumerStateView
) -> Iterator[tuple[LaneEntry, int | None]]:
    """The lanes consumer ``c`` reads, each with its slot's Q index (None: not attached)."""
    for lane in state.topo.lanes:
        if lane.topic == c.topic and lane.consumer in (0, c.id):
            yield lane, view.find_slot(lane.uid)


def _topic_totals(state: BrokerState) -> dict[str, tuple[int, int]]:
    """(frames published, messages delivered) per topic, retired lanes/consumers included."""
    published = dict(state.retired_published)
    delivered = dict(state.retired_delivered)
    for lane, seg in state.lane_segments():
        published[lane.topic] = published.get(lane.topic, 0) + seg.q[LANE_COUNT_Q]
    for c, view in state.consumer_views():
        delivered[c.topic] = delivered.get(c.topic, 0) + view.received()
    return {t.name: (published.get(t.name, 0), delivered.get(t.name, 0)) for t in state.topo.topics}


class RateMeter:
    """Per-topic publish and delivery rates from the last two samples, the publish rates
    of the last minute, and when each lane's count was what (for lag in seconds)."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, tuple[int, int]]] | None = None
        self.rates: dict[str, tuple[float, float]] = {}
        self.history: dict[str, deque[float]] = {}
        self._counts: dict[int, deque[tuple[float, int]]] = {}

    def sample(self, state: BrokerState) -> None:
        now = time.monotonic()
        totals = _topic_totals(state)
        lanes = {lane.uid: seg.q[LANE_COUNT_Q] for lane, seg in state.lane_segments()}
        self._counts = {uid: self._counts.get(uid, deque()) for uid in lanes}
        for uid, count in lanes.items():
            samples = self._counts[uid]
            if not samples or samples[-1][1] != count:
                samples.append((now, count))
            while len(samples) > 1 and samples[1][0] < now - HISTORY_S:
                samples.popleft()
        if self._last is not None:
            then, before = self._last
            dt = max(now - then, 1e-6)
            self.rates = {
                name: (
                    max(0, pub - before.get(name, (0, 0))[0]) / dt,
                    max(0, dlv - before.get(name, (0, 0))[1]) / dt,
                )
                for name, (pub, dlv) in totals.items()
            }
            for name, (pub_rate, _) in self.rates.items():
                span = max(1, round(HISTORY_S / dt))
                history = self.history.get(name)
                if history is None or history.maxlen != span:
                    history = self.history[name] = deque(history or (), maxlen=span)
                history.append(pub_rate)
        self._last = (now, totals)

    def unread_since(self, lane_uid: int, position: int) -> float | None:
        """When the lane's count first exceeded ``position`` among our samples (monotonic
        seconds), or None if no sample has: the oldest unread message is at least that old."""
        for when, count in self._counts.get(lane_uid, ()):
            if count > position:
                return when
        return None


def collect_stats(
    state: BrokerState,
    rates: RateMeter,
    *,
    socket_path: str,
    started_s: float,
    connections: int,
) -> dict[str, Any]:
    """The whole stats document served to ``mycelium stats`` (and the metrics endpoint)."""
    lane_counts = {lane.uid: seg.q[LANE_COUNT_Q] for lane, seg in state.lane_segments()}
    lane_bytes = sum(seg.size for _, seg in state.lane_segments())
    now = time.monotonic()
    consumers = []
    lost_by_topic: dict[str, int] = {}
    floors: dict[int, int] = {}  # lane uid -> the slowest attached reader's byte position
    for c, view in state.consumer_views():
        lag = 0
        oldest: float | None = None
        for lane, base in _consumer_lanes(state, c, view):
            if base is not None:
                read = view.q[base + SLOT_COUNT_Q]
                cursor = view.q[base + SLOT_CURSOR_Q]
                floors[lane.uid] = min(floors.get(lane.uid, cursor), cursor)
            elif lane.uid > c.id:  # created after it subscribed: all of it is owed
                read = 0
            else:
                continue
            behind = max(0, lane_counts.get(lane.uid, 0) - read)
            if behind:
                lag += behind
                since = rates.unread_since(lane.uid, read)
                if since is not None:
                    oldest = since if oldest is None else min(oldest, since)
        lost = view.lost
        lost_by_topic[c.topic] = lost_by_topic.get(c.topic, 0) + lost
        consumers.append(
            {
                "id": c.id,
                "name": c.name,
                "topic": c.topic,
                "group": c.group,
                "pid": c.pid,
                "alive": c.alive,
                "durable": c.durable,
                "received": view.received(),
                "lag": lag,
                "lag_seconds": round(now - oldest, 3) if oldest is not None else 0.0,
                "lost": lost,
                "corrupt": view.corrupt,
                "sleeping": view.sleeping,
                "heartbeat_age_s": round(max(0, time.monotonic_ns() - view.heartbeat_ns) / 1e9, 3),
            }
        )
    lanes = []
    timeouts = dict(state.topo.retired_timeouts)
    names = {p.id: p.name for p in state.topo.producers}
    for lane, seg in state.lane_segments():
        capacity = seg.q[_CAPACITY_Q]
        write = seg.q[LANE_WRITE_Q]
        used = max(0, write - floors.get(lane.uid, write))
        timeouts[lane.topic] = timeouts.get(lane.topic, 0) + seg.q[LANE_TIMEOUTS_Q]
        lanes.append(
            {
                "uid": lane.uid,
                "topic": lane.topic,
                "producer": lane.producer,
                "producer_name": names.get(lane.producer, ""),
                "consumer": lane.consumer,
                "draining": lane.draining,
                "published": lane_counts[lane.uid],
                "capacity_bytes": capacity,
                "used_bytes": used,
                "fill_ratio": round(min(1.0, used / capacity), 4) if capacity else 0.0,
                "backpressure_timeouts": seg.q[LANE_TIMEOUTS_Q],
            }
        )
    topics = []
    totals = _topic_totals(state)
    for t in state.topo.topics:
        pub, dlv = totals[t.name]
        pub_rate, dlv_rate = rates.rates.get(t.name, (0.0, 0.0))
        topics.append(
            {
                "name": t.name,
                "routing": t.routing,
                "lossy": t.lossy,
                "max_message_size": t.max_message_size,
                "lane_bytes": t.lane_bytes,
                "lanes": sum(1 for lane in state.topo.lanes if lane.topic == t.name),
                "producers": sum(1 for p in state.topo.producers if p.alive and t.name in p.topics),
                "consumers": sum(1 for c in state.topo.consumers if c.alive and c.topic == t.name),
                "published": pub,
                "delivered": dlv,
                "publish_rate": round(pub_rate, 1),
                "deliver_rate": round(dlv_rate, 1),
                "dropped": lost_by_topic.get(t.name, 0) + state.topo.retired_lost.get(t.name, 0),
                "backpressure_timeouts": timeouts.get(t.name, 0),
                "publish_rate_history": [round(r, 1) for r in rates.history.get(t.name, ())],
            }
        )
    producers = [
        {
            "id": p.id,
            "pid": p.pid,
            "name": p.name,
            "alive": p.alive,
            "topics": list(p.topics),
            "published": sum(
                lane_counts.get(lane.uid, 0) for lane in state.topo.lanes if lane.producer == p.id
            ),
        }
        for p in state.topo.producers
    ]
    proc = psutil.Process()
    consumer_bytes = sum(view.seg.size for _, view in state.consumer_views())
    return {
        "broker": {
            "id": state.broker_id,
            "pid": proc.pid,
            "socket": socket_path,
            "uptime_s": round(time.time() - started_s, 3),
            "generation": state.registry.generation,
            "connections": connections,
            "rss_bytes": proc.memory_info().rss,
            "cpu_percent": proc.cpu_percent(interval=None),
        },
        "topics": topics,
        "lanes": lanes,
        "producers": producers,
        "consumers": consumers,
        "segments": {
            "count": 1 + len(lane_counts) + len(consumers),
            "bytes": state.registry.seg.size + lane_bytes + consumer_bytes,
        },
    }


def bridge_doc(report: ReportFigures, pid: int) -> dict[str, Any]:
    """A bridge's last report as the stats document shows it (the shape of its own
    status file): its link, then the counters per exported and imported topic."""
    doc: dict[str, Any] = {
        "name": report.name,
        "pid": pid,
        "connected": report.connected,
        "server": report.server,
        "reconnects": report.reconnects,
        "exports": {},
        "imports": {},
    }
    for entry in report.topics:
        doc[entry.direction + "s"][entry.topic] = dict(entry.figures)
    return doc
