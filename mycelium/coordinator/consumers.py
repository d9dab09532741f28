"""Consumers join and leave their topic's groups (a fanout consumer is a group of one)."""

from __future__ import annotations

import time

import msgspec

from mycelium.control.limits import LANES_PER_CONSUMER
from mycelium.coordinator.durables import Durables
from mycelium.coordinator.model import DEFAULT_GROUP, holds, process_started
from mycelium.errors import ConfigError, LimitExceeded
from mycelium.shm.consumer_state import ConsumerStateView, create_consumer_segment
from mycelium.shm.segment import fresh_token
from mycelium.topology import ConsumerEntry

__all__ = ["Consumers"]


class Consumers(Durables):
    """Subscribe (new, resumed or a durable returning) and leave."""

    def subscribe(
        self,
        pid: int,
        topic: str,
        group: str | None,
        resume_id: int = 0,
        name: str = "",
        durable: str = "",
        doorbell: str = "",
    ) -> ConsumerEntry:
        """A consumer joins ``topic`` (in ``group`` for queue topics), ringing the existing
        ``doorbell`` if one is named (a multi-topic consumer's first subscription's; the
        last entry naming it unlinks it). Raises UnknownTopic; LimitExceeded if its durable
        name is held by a live process; ConfigError if a returning durable consumer has
        another doorbell than the one it should share."""
        t = self.topic(topic)
        old = self.consumer(resume_id) if resume_id else None
        if old is not None and old.pid == pid and old.alive and old.topic == topic:
            return old
        if durable:
            back = next(
                (c for c in self.topo.consumers if (c.durable, c.topic) == (durable, topic)), None
            )
            if back is not None:
                if doorbell and back.doorbell != doorbell:
                    raise ConfigError(
                        f"durable consumer {durable!r} on {topic!r} was subscribed apart from"
                        " the other topics: take it up alone, or delete it", "doorbell_of"
                    )  # fmt: skip
                return self._durable_returns(t, back, pid, group, name)
        if t.routing == "queue":
            producers = sum(1 for p in self.topo.producers if p.alive and topic in p.topics)
            if producers > LANES_PER_CONSUMER:
                raise LimitExceeded(
                    f"topic {topic!r} has {producers} producers, more than a consumer can read",
                    limit="lanes_per_topic",
                    maximum=LANES_PER_CONSUMER,
                )
        uid = self._new_id()
        group = (group or DEFAULT_GROUP) if t.routing == "queue" else f"@{uid}"
        token = fresh_token()  # one for both: cleanup pairs a doorbell with its segment
        entry = ConsumerEntry(
            id=uid,
            pid=pid,
            topic=topic,
            group=group,
            segment=self._name("C", uid, token),
            doorbell=doorbell or self._name("D", uid, token),
            started=process_started(pid),
            name=name,
            durable=durable,
        )
        create_consumer_segment(
            entry.segment, entry.doorbell, uid, pid, self.mode, new_doorbell=not doorbell
        ).close()
        self._created.append(("consumer", f"{entry.segment} {entry.doorbell}"))
        self._consumers[uid] = ConsumerStateView.attach(entry.segment)
        self.topo.consumers.append(entry)
        if t.routing == "queue":
            for p in self.topo.producers:
                if p.alive and topic in p.topics:
                    self._add_lane(t, p, entry)
            for lane in self.topo.lanes:  # what departed members of the group left unread
                holder = self.consumer(lane.consumer)
                orphan = holder is None or not holds(holder)  # an absent durable keeps its own
                if orphan and lane.topic == topic and lane.group == group:
                    self._hand_over(lane, entry)
        return entry

    def remove_consumer(self, cid: int) -> None:
        """The consumer left. Durable: its entry and position stay (producers keep gating
        on it) until it returns or its TTL runs out. Fanout: it is forgotten now. Queue: each
        of its lanes goes to the surviving member with the fewest lanes, read from our last
        stored cursor; with no survivor it stays (gated, in shared memory) until one joins."""
        c = self.consumer(cid)
        if c is None or not c.alive:
            return
        away = time.time() if c.durable else 0.0
        self.topo.consumers = [
            msgspec.structs.replace(x, alive=False, away_since=away) if x.id == cid else x
            for x in self.topo.consumers
        ]
        if not c.durable:
            self._hand_over_lanes(c)
