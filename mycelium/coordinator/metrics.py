"""The Prometheus endpoint: ``/metrics`` over the broker's stats document.

How this works
--------------
``MetricsEndpoint.serve`` starts prometheus-client's HTTP server in a daemon thread, with a
registry of its own holding ``BrokerCollector`` and the standard process collector (RSS,
CPU seconds, open fds). Each scrape asks ``snapshot`` for the stats document, which the
coordinator computes on its event loop from read-only loads of the lanes' and consumers'
shared-memory counters, exactly as ``mycelium status`` does: a scrape never touches a
producer or a consumer, so it costs the data path nothing.

Counters come from those shared-memory counts (plus the retired totals the registry
keeps), which outlive the coordinator, so they never go back across a restart. Names
follow Prometheus conventions: base units, ``_total`` on counters, ``_ratio`` for 0..1.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mycelium.config import parse_listen
from mycelium.errors import BrokerUnavailable

__all__ = ["BrokerCollector", "MetricsEndpoint"]

Snapshot = Callable[[], dict[str, Any] | None]
_CONSUMER_LABELS = ["topic", "consumer", "id", "group"]


def _consumer_labels(c: dict[str, Any]) -> list[str]:
    return [c["topic"], c["name"] or str(c["id"]), str(c["id"]), c["group"]]


class BrokerCollector(Collector):
    """Turns one stats document into metric families at each scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        doc = self.snapshot()
        if doc is None:  # the coordinator is stopping
            return
        topics = doc["topics"]
        yield _per_topic(
            CounterMetricFamily,
            "mycelium_topic_published",
            "Messages published on the topic.",
            topics,
            "published",
        )
        yield _per_topic(
            CounterMetricFamily,
            "mycelium_topic_delivered",
            "Messages delivered to consumers of the topic.",
            topics,
            "delivered",
        )
        yield _per_topic(
            CounterMetricFamily,
            "mycelium_backpressure_timeouts",
            "Publishes refused because a ring stayed full (nothing written).",
            topics,
            "backpressure_timeouts",
        )
        yield _per_topic(
            GaugeMetricFamily,
            "mycelium_producers",
            "Live producers registered on the topic.",
            topics,
            "producers",
        )
        yield _per_topic(
            GaugeMetricFamily,
            "mycelium_consumers",
            "Live consumers subscribed to the topic.",
            topics,
            "consumers",
        )
        consumers = doc["consumers"]
        for family, name, doc_text, key in (
            (GaugeMetricFamily, "mycelium_consumer_lag_messages",
             "Messages published that the consumer has not read.", "lag"),
            (GaugeMetricFamily, "mycelium_consumer_lag_seconds",
             "Age of the oldest message the consumer has not read.", "lag_seconds"),
            (CounterMetricFamily, "mycelium_consumer_lost",
             "Messages a lossy topic overwrote before the consumer read them.", "lost"),
            (CounterMetricFamily, "mycelium_consumer_corrupt",
             "Corrupt frames the consumer met and skipped.", "corrupt"),
        ):  # fmt: skip
            metric = family(name, doc_text, labels=_CONSUMER_LABELS)
            for c in consumers:
                metric.add_metric(_consumer_labels(c), c[key])
            yield metric
        fill = GaugeMetricFamily("mycelium_lane_fill_ratio",
                                 "Share of the lane's ring its slowest reader has not freed.",
                                 labels=["topic", "lane"])  # fmt: skip
        capacity = GaugeMetricFamily("mycelium_lane_capacity_bytes", "Ring bytes of the lane.",
                                     labels=["topic", "lane"])  # fmt: skip
        for lane in doc["lanes"]:
            labels = [lane["topic"], str(lane["uid"])]
            fill.add_metric(labels, lane["fill_ratio"])
            capacity.add_metric(labels, lane["capacity_bytes"])
        yield fill
        yield capacity
        yield GaugeMetricFamily("mycelium_connections", "Open control-socket connections.",
                                value=doc["broker"]["connections"])  # fmt: skip
        yield from _bridge_metrics(doc.get("bridges", []))


def _per_topic(
    family: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc_text: str,
    topics: list[dict[str, Any]],
    key: str,
) -> Metric:
    metric = family(name, doc_text, labels=["topic"])
    for t in topics:
        metric.add_metric([t["name"]], t[key])
    return metric


#: Bridge figures that go up and down; the others only grow (while the bridge runs).
_BRIDGE_GAUGES = frozenset({"in_flight", "acks_pending", "lag", "last_stream_seq"})


def _bridge_metrics(bridges: list[dict[str, Any]]) -> Iterator[Metric]:
    """What each bridge last reported on its control connection (docs/distribution.md):
    ``mycelium_bridge_<export|import>_<figure>{bridge, topic}``."""
    connected = GaugeMetricFamily(
        "mycelium_bridge_connected", "Whether the bridge has a NATS connection.", labels=["bridge"]
    )
    reconnects = CounterMetricFamily(
        "mycelium_bridge_reconnects", "NATS reconnects of the bridge.", labels=["bridge"]
    )
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
    for b in bridges:
        connected.add_metric([b["name"]], int(b["connected"]))
        reconnects.add_metric([b["name"]], b["reconnects"])
        for direction in ("export", "import"):
            for topic, figures in b[direction + "s"].items():
                for key, value in figures.items():
                    name = f"mycelium_bridge_{direction}_{key}"
                    if name not in families:
                        family = GaugeMetricFamily if key in _BRIDGE_GAUGES else CounterMetricFamily
                        text = f"Bridge {direction} figure {key!r} (docs/distribution.md)."
                        families[name] = family(name, text, labels=["bridge", "topic"])
                    families[name].add_metric([b["name"], topic], value)
    yield connected
    yield reconnects
    yield from families.values()


class MetricsEndpoint:
    """A running ``/metrics`` HTTP server; ``close()`` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @classmethod
    def serve(cls, listen: str, snapshot: Snapshot) -> MetricsEndpoint:
        """Serve ``/metrics`` on ``listen`` (HOST:PORT). Raises BrokerUnavailable if the
        address is malformed or cannot be bound."""
        try:
            host, port = parse_listen(listen)
        except ValueError as exc:
            raise BrokerUnavailable(f"metrics: {exc}") from exc
        registry = CollectorRegistry(auto_describe=False)
        registry.register(BrokerCollector(snapshot))
        ProcessCollector(registry=registry)
        try:
            server, thread = start_http_server(port, host, registry)
        except OSError as exc:
            raise BrokerUnavailable(f"metrics: cannot listen on {listen}: {exc}") from exc
        return cls(server, thread)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
