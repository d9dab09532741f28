"""Durable consumers: the entry and position stay while the process is away.

Until it returns, is deleted, or its topic's ``durable_ttl_s`` runs out (docs/delivery.md).
"""

from __future__ import annotations

import logging
import time

import msgspec

from mycelium.coordinator.handover import HandOver
from mycelium.coordinator.model import DEFAULT_GROUP, process_started
from mycelium.errors import ConfigError, LimitExceeded
from mycelium.logs import fields
from mycelium.shm.layout import LANE_COUNT_Q, SLOT_COUNT_Q
from mycelium.topology import ConsumerEntry, TopicEntry

__all__ = ["Durables"]

log = logging.getLogger("mycelium.coordinator")


class Durables(HandOver):
    """A durable consumer returns, is deleted, or expires; what it had not read is counted."""

    def _durable_returns(
        self, t: TopicEntry, back: ConsumerEntry, pid: int, group: str | None, name: str
    ) -> ConsumerEntry:
        """A process takes up an absent durable consumer: same id, segment and position."""
        if back.alive:
            raise LimitExceeded(
                f"durable consumer {back.durable!r} on {t.name!r} is in use by pid {back.pid}",
                limit="durable_processes",
                maximum=1,
            )
        if t.routing == "queue" and (group or DEFAULT_GROUP) != back.group:
            raise ConfigError(
                f"durable consumer {back.durable!r} belongs to group {back.group!r}", "group"
            )
        entry = msgspec.structs.replace(
            back, pid=pid, started=process_started(pid), alive=True, away_since=0.0,
            name=name or back.name,
        )  # fmt: skip
        self.topo.consumers = [entry if x.id == back.id else x for x in self.topo.consumers]
        if t.routing == "queue":  # producers that registered while it was away
            for p in self.topo.producers:
                fed = any(x.producer == p.id and x.consumer == back.id for x in self.topo.lanes)
                if p.alive and t.name in p.topics and not fed:
                    self._add_lane(t, p, entry)
        log.info(
            "durable consumer %s of %s is back (pid %d)",
            back.durable,
            t.name,
            pid,
            extra=fields("durable_back", consumer=back.id, topic=t.name, pid=pid),
        )
        return entry

    def delete_durable(self, name: str) -> int:
        """``mycelium consumer delete NAME``: drop an absent durable consumer now; returns
        how many entries went (one per topic). Raises ConfigError if there is none,
        LimitExceeded if its process is connected."""
        found = [c for c in self.topo.consumers if c.durable == name]
        if not found:
            raise ConfigError(f"no durable consumer {name!r}", "durable")
        for c in found:
            if c.alive:
                raise LimitExceeded(
                    f"durable consumer {name!r} is in use by pid {c.pid}; stop it first",
                    limit="durable_processes",
                    maximum=1,
                )
        for c in found:
            self._drop_durable(c, "deleted")
        return len(found)

    def _expire_durables(self) -> bool:
        """Drop durable consumers absent longer than their topic's ``durable_ttl_s``."""
        ttl = {t.name: t.durable_ttl_s for t in self.config.topics}
        now = time.time()
        expired = [
            c
            for c in self.topo.consumers
            if c.durable and not c.alive and now - c.away_since > ttl.get(c.topic, 300)
        ]
        for c in expired:
            self._drop_durable(c, f"absent for more than {ttl.get(c.topic, 300)} s")
        return bool(expired)

    def _drop_durable(self, c: ConsumerEntry, why: str) -> None:
        """Forget a durable consumer's position: producers stop holding for it. On a fanout
        topic what it had not read is lost (counted); on a queue topic it goes to the group."""
        lost = self.unread(c) if self.topic(c.topic).routing != "queue" else 0
        self.topo.retired_lost[c.topic] = self.topo.retired_lost.get(c.topic, 0) + lost
        log.warning(
            "dropped durable consumer %s of %s (%s): %d unread messages lost",
            c.durable,
            c.topic,
            why,
            lost,
            extra=fields("durable_dropped", consumer=c.id, topic=c.topic),
        )
        plain = msgspec.structs.replace(c, durable="")
        self.topo.consumers = [plain if x.id == c.id else x for x in self.topo.consumers]
        self._hand_over_lanes(plain)

    def unread(self, c: ConsumerEntry) -> int:
        """Messages on the lanes ``c`` reads that it has not consumed (acknowledged)."""
        view = self._consumers.get(c.id)
        total = 0
        for lane in self.topo.lanes:
            seg = self._lanes.get(lane.uid)
            if seg is None or view is None or lane.topic != c.topic:
                continue
            if lane.consumer not in (0, c.id):
                continue
            base = view.find_slot(lane.uid)
            if base is not None:
                total += max(0, seg.q[LANE_COUNT_Q] - view.q[base + SLOT_COUNT_Q])
            elif lane.uid > c.id:
                total += seg.q[LANE_COUNT_Q]
        return total
