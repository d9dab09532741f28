"""The coordinator's model of the broker: topics, producers, consumers and their lanes.

How this works
--------------
``BrokerState`` owns the registry segment (it is its only writer) and every segment it
creates: one lane per topic and producer (fanout), or per topic, producer and consumer
(queue: the producer dispatches each message to one consumer of each group), and one
state segment plus doorbell per consumer. Each change goes into a ``Topology`` that is
published to the registry as the next generation; clients map what it names.
Its parts, one file each: ``model`` (the shared state and ``change()``), ``lanes``
(producers), ``handover`` (queue groups), ``durables``, ``consumers`` and ``sweep``.

It never touches a lane's data or a consumer's cursors: it maps both read-only to see
whether a lane is drained, to notice a producer's "closed" flag and to serve stats.
``sweep()`` runs periodically: it marks clients whose process is gone as dead, retires
lanes once nothing is left to deliver from them, and unlinks what nobody needs.

A departed queue member's lanes are handed over in the registry to a member of its group
(``_hand_over``: the heir reads on from the departed slot's cursor; see
``client/redelivery.py``). A durable consumer's entry stays while it is away, until it
returns, is deleted, or its topic's ``durable_ttl_s`` runs out (docs/delivery.md).

A restarted coordinator builds its state from the topology it finds in the registry
(``adopted``), so lanes, cursors and clients carry on as if nothing happened.
"""

from __future__ import annotations

import logging

import msgspec

from mycelium.config import BrokerConfig
from mycelium.coordinator.model import process_started, topic_entry
from mycelium.coordinator.sweep import Sweeper
from mycelium.errors import SegmentError
from mycelium.logs import fields
from mycelium.shm.consumer_state import ConsumerStateView, remove_consumer_objects
from mycelium.shm.registry import Registry
from mycelium.shm.segment import Segment, unlink_quietly
from mycelium.topology import Topology

__all__ = ["BrokerState", "process_started", "topic_entry"]

log = logging.getLogger("mycelium.coordinator")


class BrokerState(Sweeper):
    """Topology bookkeeping plus the segments behind it. Single-threaded by design."""

    def __init__(
        self, broker_id: str, config: BrokerConfig, registry: Registry, adopted: Topology | None
    ) -> None:
        self.broker_id = broker_id
        self.config = config
        self.registry = registry
        self.mode = config.server.segment_mode
        self.topo = adopted or Topology(broker_id=broker_id)
        self.topo.broker_id = broker_id
        self._lanes: dict[int, Segment] = {}
        self._consumers: dict[int, ConsumerStateView] = {}
        #: Messages counted on lanes that have since been removed, per topic (for stats);
        #: they live in the topology, so an adopting coordinator keeps counting on.
        self.retired_published = self.topo.retired_published
        self.retired_delivered = self.topo.retired_delivered
        #: Segments created since the current ``change()`` began: its rollback unlinks them.
        self._created: list[tuple[str, str]] = []
        if adopted is not None:
            self._adopt()
        self.apply_config(config)

    def apply_config(self, config: BrokerConfig) -> list[str]:
        """Merge a (re)loaded config: new topics appear, changed limits apply to new lanes.

        Topics missing from the new config stay while they have clients (their lanes carry
        messages nobody may lose); ``sweep`` removes them once the clients are gone.
        Returns a line per change, for the log and the reply.
        """
        self.config = config
        self.mode = config.server.segment_mode
        changes = []
        perf = config.performance
        by_name = {t.name: i for i, t in enumerate(self.topo.topics)}
        for cfg in config.topics:
            entry = topic_entry(cfg, cfg.lane_bytes_effective(perf))
            if cfg.name not in by_name:
                self.topo.topics.append(entry)
                changes.append(f"added topic {cfg.name} ({entry.routing})")
            elif self.topo.topics[by_name[cfg.name]] != entry:
                old = self.topo.topics[by_name[cfg.name]]
                if old.routing != entry.routing and self._has_clients(cfg.name):
                    changes.append(f"kept routing of {cfg.name}: it has clients")
                    entry = msgspec.structs.replace(entry, routing=old.routing)
                self.topo.topics[by_name[cfg.name]] = entry
                changes.append(f"updated topic {cfg.name} (applies to new lanes)")
        changes += [f"removed topic {name}" for name in self._drop_unconfigured_topics()]
        changes += [
            f"kept topic {t.name} until its clients leave"
            for t in self.topo.topics
            if self._unconfigured(t.name)
        ]
        return changes

    def _adopt(self) -> None:
        """Map what an earlier coordinator left; forget entries whose segments are gone."""
        kept = []
        for lane in self.topo.lanes:
            try:
                self._lanes[lane.uid] = Segment.attach_lane(lane.segment)
                kept.append(lane)
            except SegmentError:
                log.warning("adopted topology names lane %s, which is gone", lane.segment)
        self.topo.lanes = kept
        consumers = []
        for c in self.topo.consumers:
            try:
                self._consumers[c.id] = ConsumerStateView.attach(c.segment)
                consumers.append(c)
            except SegmentError:
                log.warning("adopted topology names consumer %s, which is gone", c.segment)
        self.topo.consumers = consumers
        log.info(
            "adopted %d producers, %d consumers, %d lanes",
            len(self.topo.producers),
            len(consumers),
            len(kept),
            extra=fields("adopted"),
        )

    def close(self, *, unlink: bool) -> None:
        """Unmap everything; with ``unlink`` also remove every segment (no client is left)."""
        for seg in self._lanes.values():
            seg.close()
        for view in self._consumers.values():
            view.close()
        if unlink:
            for lane in self.topo.lanes:
                unlink_quietly(lane.segment)
            for c in self.topo.consumers:
                remove_consumer_objects(c.segment, c.doorbell)
            self.registry.seg.unlink()
        self._lanes.clear()
        self._consumers.clear()
        self.registry.close()
