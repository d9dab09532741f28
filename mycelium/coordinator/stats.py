"""Broker statistics, read from shared memory without disturbing the data plane.

How this works
--------------
Every number here is a load from a segment the coordinator maps read-only: a lane's
message count and write cursor, a consumer slot's cursor and count, a consumer's lost and
corrupt counters. Counts of lanes and consumers already retired are kept by
``BrokerState``. ``RateMeter`` turns successive samples into per-second rates; the
coordinator samples it on its stats interval.
"""

from __future__ import annotations

import time
from typing import Any

import psutil

from mycelium.coordinator.topology import BrokerState
from mycelium.shm.layout import LANE_COUNT_Q, SLOT_COUNT_Q

__all__ = ["RateMeter", "collect_stats"]


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
    """Per-topic publish and delivery rates from the last two samples."""

    def __init__(self) -> None:
        self._last: tuple[float, dict[str, tuple[int, int]]] | None = None
        self.rates: dict[str, tuple[float, float]] = {}

    def sample(self, state: BrokerState) -> None:
        now = time.monotonic()
        totals = _topic_totals(state)
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
        self._last = (now, totals)


def collect_stats(
    state: BrokerState,
    rates: RateMeter,
    *,
    socket_path: str,
    started_s: float,
    connections: int,
) -> dict[str, Any]:
    """The whole stats document served to ``mycelium stats``."""
    lane_counts = {lane.uid: seg.q[LANE_COUNT_Q] for lane, seg in state.lane_segments()}
    lane_bytes = sum(seg.size for _, seg in state.lane_segments())
    consumers = []
    lost_by_topic: dict[str, int] = {}
    for c, view in state.consumer_views():
        lag = 0
        for lane in state.topo.lanes:
            if lane.topic != c.topic or (lane.consumer and lane.consumer != c.id):
                continue
            base = view.find_slot(lane.uid)
            if base is not None:
                lag += max(0, lane_counts.get(lane.uid, 0) - view.q[base + SLOT_COUNT_Q])
            elif lane.uid > c.id:  # created after it subscribed: all of it is owed
                lag += lane_counts.get(lane.uid, 0)
        lost = view.lost
        lost_by_topic[c.topic] = lost_by_topic.get(c.topic, 0) + lost
        consumers.append(
            {
                "id": c.id,
                "topic": c.topic,
                "group": c.group,
                "pid": c.pid,
                "alive": c.alive,
                "received": view.received(),
                "lag": lag,
                "lost": lost,
                "corrupt": view.corrupt,
                "sleeping": view.sleeping,
                "heartbeat_age_s": round(max(0, time.monotonic_ns() - view.heartbeat_ns) / 1e9, 3),
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
                "dropped": lost_by_topic.get(t.name, 0),
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
        "producers": producers,
        "consumers": consumers,
        "segments": {
            "count": 1 + len(lane_counts) + len(consumers),
            "bytes": state.registry.seg.size + lane_bytes + consumer_bytes,
        },
    }
