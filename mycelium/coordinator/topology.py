"""The coordinator's model of the broker: topics, producers, consumers and their lanes.

How this works
--------------
``BrokerState`` owns the registry segment (it is its only writer) and every segment it
creates: one lane per topic and producer (fanout), or per topic, producer and consumer
(queue: the producer dispatches each message to one consumer of each group), and one
state segment plus doorbell per consumer. Each change goes into a ``Topology`` that is
published to the registry as the next generation; clients map what it names.

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

import contextlib
import logging
import time
from collections.abc import Iterator

import msgspec
import psutil

from mycelium.config import BrokerConfig, TopicConfig
from mycelium.control.limits import LANES_PER_CONSUMER
from mycelium.errors import ConfigError, LimitExceeded, SegmentError, UnknownTopic
from mycelium.logs import fields
from mycelium.shm.consumer_state import (
    ConsumerStateView,
    create_consumer_segment,
    remove_consumer_objects,
)
from mycelium.shm.lane_header import create_lane_segment
from mycelium.shm.layout import (
    KIND_LANE,
    LANE_CLOSED_Q,
    LANE_COUNT_Q,
    LANE_TIMEOUTS_Q,
    LANE_WRITE_Q,
    SLOT_COUNT_Q,
    SLOT_CURSOR_Q,
    SLOT_READ_COUNT_Q,
)
from mycelium.shm.registry import (
    ConsumerEntry,
    LaneEntry,
    ProducerEntry,
    Registry,
    TopicEntry,
    Topology,
)
from mycelium.shm.segment import Segment, fresh_token, segment_name, unlink_quietly

__all__ = ["BrokerState", "process_started", "topic_entry"]

log = logging.getLogger("mycelium.coordinator")

DEFAULT_GROUP = "default"


def topic_entry(cfg: TopicConfig, lane_bytes: int) -> TopicEntry:
    """The registry's view of a configured topic."""
    return TopicEntry(
        name=cfg.name,
        routing=str(cfg.routing),
        max_message_size=cfg.max_message_size,
        lane_bytes=lane_bytes,
        lossy=cfg.lossy,
        backpressure_timeout_ms=cfg.backpressure_timeout_ms,
        timestamps=cfg.timestamps,
    )


def process_started(pid: int) -> float:
    """The create time of ``pid`` (0.0 if it does not exist): liveness proof against reuse."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def holds(c: ConsumerEntry) -> bool:
    """Whether producers must keep ``c``'s position: it is alive, or durable and away."""
    return c.alive or bool(c.durable)


def _alive(pid: int, started: float) -> bool:
    try:
        proc = psutil.Process(pid)
        if started and abs(proc.create_time() - started) > 0.01:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class BrokerState:
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

    # -- config ---------------------------------------------------------------------
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

    def _unconfigured(self, topic: str) -> bool:
        return all(t.name != topic for t in self.config.topics)

    def _drop_unconfigured_topics(self) -> list[str]:
        """Remove topics the config no longer names once nothing uses them; their names."""
        gone = [
            t.name
            for t in self.topo.topics
            if self._unconfigured(t.name)
            and not self._has_clients(t.name)
            and not any(lane.topic == t.name for lane in self.topo.lanes)
        ]
        self.topo.topics = [t for t in self.topo.topics if t.name not in gone]
        return gone

    def _has_clients(self, topic: str) -> bool:
        return any(c.topic == topic for c in self.topo.consumers) or any(
            topic in p.topics for p in self.topo.producers
        )

    def topic(self, name: str) -> TopicEntry:
        """The topic called ``name``; raises UnknownTopic."""
        entry = self.topo.topic(name)
        if entry is None:
            raise UnknownTopic(name, tuple(t.name for t in self.topo.topics))
        return entry

    def publish(self) -> int:
        """Publish the current topology to the registry; returns the generation.

        Raises LimitExceeded if it no longer fits the registry buffer.
        """
        self.topo.coordinator_pid = psutil.Process().pid
        return self.registry.publish(self.topo)

    @contextlib.contextmanager
    def change(self) -> Iterator[None]:
        """Apply one client request all or nothing, then publish it.

        If anything inside (or the publish: a topology too large for the registry)
        raises, the topology is put back as it was and every segment created meanwhile
        is unmapped and unlinked: a refused request leaves no entry and no segment.
        """
        topo = self.topo
        saved = (topo.next_id, list(topo.producers), list(topo.consumers), list(topo.lanes))
        self._created = []
        try:
            yield
            self.publish()
        except BaseException:
            topo.next_id, topo.producers, topo.consumers, topo.lanes = saved
            for kind, name in self._created:
                self._forget_created(kind, name)
            raise
        finally:
            self._created = []

    def _forget_created(self, kind: str, name: str) -> None:
        """Roll back one segment a failed change created."""
        if kind == "lane":
            for uid, seg in list(self._lanes.items()):
                if seg.name == name:
                    seg.close()
                    del self._lanes[uid]
            unlink_quietly(name)
            return
        for cid, view in list(self._consumers.items()):
            if view.seg.name == name:
                view.close()
                del self._consumers[cid]
        segment, doorbell = name.split(" ", 1)
        remove_consumer_objects(segment, doorbell)

    # -- ids and names --------------------------------------------------------------
    def _new_id(self) -> int:
        uid = self.topo.next_id
        self.topo.next_id += 1
        return uid

    def _name(self, kind: str, uid: int, token: str) -> str:
        """An unpredictable name: the id for people, the token against squatters."""
        return segment_name(self.broker_id, kind, f"{uid}.{token}")

    # -- producers ------------------------------------------------------------------
    def producer(self, pid: int) -> ProducerEntry | None:
        for p in self.topo.producers:
            if p.id == pid:
                return p
        return None

    def add_producer(self, pid: int, name: str, resume_id: int = 0) -> ProducerEntry:
        """A producer connects (or reconnects: ``resume_id`` names its old entry)."""
        old = self.producer(resume_id) if resume_id else None
        if old is not None and old.pid == pid and old.alive:
            return old
        entry = ProducerEntry(id=self._new_id(), pid=pid, started=process_started(pid), name=name)
        self.topo.producers.append(entry)
        return entry

    def register_topic(self, producer_id: int, topic: str) -> None:
        """The producer will publish on ``topic``: create its lanes. Raises UnknownTopic."""
        t = self.topic(topic)
        p = self.producer(producer_id)
        if p is None or not p.alive:
            raise SegmentError(f"producer {producer_id} is not registered")
        if topic in p.topics:
            return
        readers = [c for c in self.topo.consumers if c.topic == topic and holds(c)]
        if t.routing == "queue":
            for c in readers:
                self._check_lane_room(topic, c.id)
        else:
            self._check_lane_room(topic, 0)
        self._replace_producer(msgspec.structs.replace(p, topics=(*p.topics, topic)))
        if t.routing == "queue":
            for c in readers:
                self._add_lane(t, p, c)
        else:
            self._add_lane(t, p, None)

    def _check_lane_room(self, topic: str, consumer: int) -> None:
        """Refuse a lane that a consumer could not read: it has LANES_PER_CONSUMER slots.

        Fanout (``consumer`` 0): every consumer reads every lane of the topic, draining
        ones included. Queue: the consumer reads one lane per producer. Raises
        LimitExceeded before anything is created, so no consumer is affected.
        """
        lanes = sum(1 for x in self.topo.lanes if x.topic == topic and x.consumer == consumer)
        if lanes >= LANES_PER_CONSUMER:
            raise LimitExceeded(
                f"topic {topic!r} already has {lanes} lanes (producers) per consumer, "
                f"the most a consumer can read",
                limit="lanes_per_topic",
                maximum=LANES_PER_CONSUMER,
            )

    def _replace_producer(self, entry: ProducerEntry) -> None:
        self.topo.producers = [entry if p.id == entry.id else p for p in self.topo.producers]

    def _add_lane(self, t: TopicEntry, p: ProducerEntry, c: ConsumerEntry | None) -> None:
        uid = self._new_id()
        name = self._name("L", uid, fresh_token())
        seg = create_lane_segment(
            name,
            t.lane_bytes,
            t.max_message_size,
            uid,
            p.pid,
            lossy=t.lossy,
            mode=self.mode,
        )
        self._created.append(("lane", name))
        seg.close()
        self._lanes[uid] = Segment.attach(name, KIND_LANE)
        log.debug(
            "created lane %d of %s for producer %d %s",
            uid,
            t.name,
            p.id,
            p.name,
            extra=fields("lane_created", lane=uid, topic=t.name, producer=p.id, client=p.name,
                         pid=p.pid),
        )  # fmt: skip
        self.topo.lanes.append(
            LaneEntry(
                uid=uid,
                topic=t.name,
                producer=p.id,
                segment=name,
                consumer=c.id if c else 0,
                group=c.group if c else "",
            )
        )

    def remove_producer(self, producer_id: int) -> None:
        """The producer left (cleanly or not): its lanes drain, then go."""
        p = self.producer(producer_id)
        if p is None or not p.alive:
            return
        self._replace_producer(msgspec.structs.replace(p, alive=False))
        self.topo.lanes = [
            msgspec.structs.replace(lane, draining=True) if lane.producer == producer_id else lane
            for lane in self.topo.lanes
        ]

    # -- consumers ------------------------------------------------------------------
    def consumer(self, cid: int) -> ConsumerEntry | None:
        for c in self.topo.consumers:
            if c.id == cid:
                return c
        return None

    def subscribe(
        self,
        pid: int,
        topic: str,
        group: str | None,
        resume_id: int = 0,
        name: str = "",
        durable: str = "",
    ) -> ConsumerEntry:
        """A consumer joins ``topic`` (in ``group`` for queue topics). Raises UnknownTopic;
        LimitExceeded if its durable name is held by a live process."""
        t = self.topic(topic)
        old = self.consumer(resume_id) if resume_id else None
        if old is not None and old.pid == pid and old.alive and old.topic == topic:
            return old
        if durable:
            back = next(
                (c for c in self.topo.consumers if (c.durable, c.topic) == (durable, topic)), None
            )
            if back is not None:
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
            doorbell=self._name("D", uid, token),
            started=process_started(pid),
            name=name,
            durable=durable,
        )
        create_consumer_segment(entry.segment, entry.doorbell, uid, pid, self.mode).close()
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

    def _hand_over_lanes(self, c: ConsumerEntry) -> None:
        cid = c.id
        heirs = [
            x for x in self.topo.consumers if x.alive and (x.topic, x.group) == (c.topic, c.group)
        ]
        for lane in [x for x in self.topo.lanes if x.consumer == cid and heirs]:
            held = {h.id: 0 for h in heirs}
            for x in self.topo.lanes:
                if x.consumer in held:
                    held[x.consumer] += 1
            heir = min(heirs, key=lambda h: (held[h.id], h.id))
            self._hand_over(lane, heir)

    def _hand_over(self, lane: LaneEntry, heir: ConsumerEntry) -> None:
        """Give ``lane`` to ``heir``: it reads on from where the departed holder's slot
        stands (or, if that holder never claimed one, from where its predecessor's does).
        The lane takes no new messages (its producer closes it); it is removed once read."""
        view = self._consumers.get(lane.consumer)
        base = view.find_slot(lane.uid) if view is not None else None
        if view is not None and base is not None:
            q = view.q
            prev, pos, count = lane.consumer, q[base + SLOT_CURSOR_Q], q[base + SLOT_COUNT_Q]
            seen = max(count, q[base + SLOT_READ_COUNT_Q])
        elif lane.previous:
            prev, pos, count = lane.previous, lane.resume_pos, lane.resume_count
            seen = lane.resume_seen
        else:  # never attached: the lane was made for it, so everything in it is unread
            prev, pos, count, seen = lane.consumer, 0, 0, 0
        moved = msgspec.structs.replace(
            lane,
            consumer=heir.id,
            draining=True,
            previous=prev,
            resume_pos=pos,
            resume_count=count,
            resume_seen=seen,
        )
        self.topo.lanes = [moved if x.uid == lane.uid else x for x in self.topo.lanes]
        log.info(
            "handed lane %d of %s from consumer %d to %d at message %d",
            lane.uid,
            lane.topic,
            lane.consumer,
            heir.id,
            count,
            extra=fields("lane_handed_over", lane=lane.uid, topic=lane.topic, consumer=heir.id),
        )

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

    def _settle_hand_overs(self) -> bool:
        """Stop naming a lane's previous holder once the new one has claimed its slot."""
        changed = False
        for lane in list(self.topo.lanes):
            view = self._consumers.get(lane.consumer)
            if lane.previous and view is not None and view.find_slot(lane.uid) is not None:
                settled = msgspec.structs.replace(lane, previous=0)
                self.topo.lanes = [settled if x.uid == lane.uid else x for x in self.topo.lanes]
                changed = True
        return changed

    # -- liveness and garbage collection --------------------------------------------
    def sweep(self) -> bool:
        """Mark dead clients, retire finished lanes, unlink orphans. True if anything changed."""
        changed = False
        for p in list(self.topo.producers):
            if p.alive and not _alive(p.pid, p.started):
                log.warning(
                    "producer %d %s (pid %d) died; draining its lanes",
                    p.id,
                    p.name,
                    p.pid,
                    extra=fields("producer_dead", producer=p.id, client=p.name, pid=p.pid),
                )
                self.remove_producer(p.id)
                changed = True
        for c in list(self.topo.consumers):
            if c.alive and not _alive(c.pid, c.started):
                log.warning(
                    "consumer %d %s (pid %d) on %s died",
                    c.id,
                    c.name,
                    c.pid,
                    c.topic,
                    extra=fields(
                        "consumer_dead", consumer=c.id, client=c.name, pid=c.pid, topic=c.topic
                    ),
                )
                self.remove_consumer(c.id)
                changed = True
        changed |= self._settle_hand_overs()
        changed |= self._expire_durables()
        for lane in list(self.topo.lanes):
            if self._lane_finished(lane):
                self._retire_lane(lane)
                changed = True
        changed |= self._forget_finished_clients()
        for name in self._drop_unconfigured_topics():
            log.info("removed topic %s: no longer configured and its clients left", name)
            changed = True
        return changed

    def _lane_finished(self, lane: LaneEntry) -> bool:
        seg = self._lanes.get(lane.uid)
        if seg is None:
            return True
        if lane.consumer:  # queue lane: finished when nothing more comes and all is read
            producer = self.producer(lane.producer)
            if not seg.q[LANE_CLOSED_Q] and producer is not None and producer.alive:
                return False
            view = self._consumers.get(lane.consumer)
            base = view.find_slot(lane.uid) if view is not None else None
            read = lane.resume_pos if view is None or base is None else view.q[base + SLOT_CURSOR_Q]
            return read >= seg.q[LANE_WRITE_Q]
        if not lane.draining:
            return False
        return all(
            self._drained_by(lane, seg, c)
            for c in self.topo.consumers
            if c.topic == lane.topic and holds(c)
        )

    def _drained_by(self, lane: LaneEntry, seg: Segment, c: ConsumerEntry) -> bool:
        view = self._consumers.get(c.id)
        if view is None:
            return True
        base = view.find_slot(lane.uid)
        if base is None:
            # Not attached yet: a lane older than the consumer is read from its end (nothing
            # to drain); a newer one from its start.
            return lane.uid < c.id or seg.q[LANE_COUNT_Q] == 0
        return view.q[base + SLOT_CURSOR_Q] >= seg.q[LANE_WRITE_Q]

    def _retire_lane(self, lane: LaneEntry) -> None:
        seg = self._lanes.pop(lane.uid, None)
        if seg is not None:
            self.retired_published[lane.topic] = (
                self.retired_published.get(lane.topic, 0) + seg.q[LANE_COUNT_Q]
            )
            timeouts = self.topo.retired_timeouts
            timeouts[lane.topic] = timeouts.get(lane.topic, 0) + seg.q[LANE_TIMEOUTS_Q]
            seg.close()
        unlink_quietly(lane.segment)
        self.topo.lanes = [x for x in self.topo.lanes if x.uid != lane.uid]
        log.info(
            "retired lane %d of %s",
            lane.uid,
            lane.topic,
            extra=fields("lane_retired", lane=lane.uid, topic=lane.topic, producer=lane.producer),
        )

    def _forget_finished_clients(self) -> bool:
        """Drop dead consumers and producers that no lane refers to any more."""
        in_use_c = {c for lane in self.topo.lanes for c in (lane.consumer, lane.previous)}
        in_use_p = {lane.producer for lane in self.topo.lanes}
        changed = False
        for c in list(self.topo.consumers):
            if not holds(c) and c.id not in in_use_c:
                view = self._consumers.pop(c.id, None)
                if view is not None:
                    self.retired_delivered[c.topic] = (
                        self.retired_delivered.get(c.topic, 0) + view.received()
                    )
                    view.close()
                remove_consumer_objects(c.segment, c.doorbell)
                self.topo.consumers = [x for x in self.topo.consumers if x.id != c.id]
                changed = True
        for p in list(self.topo.producers):
            if not p.alive and p.id not in in_use_p:
                self.topo.producers = [x for x in self.topo.producers if x.id != p.id]
                changed = True
        return changed

    # -- adoption, shutdown, inspection --------------------------------------------
    def _adopt(self) -> None:
        """Map what an earlier coordinator left; forget entries whose segments are gone."""
        kept = []
        for lane in self.topo.lanes:
            try:
                self._lanes[lane.uid] = Segment.attach(lane.segment, KIND_LANE)
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

    def live_clients(self) -> int:
        return sum(p.alive for p in self.topo.producers) + sum(c.alive for c in self.topo.consumers)

    def lane_segments(self) -> Iterator[tuple[LaneEntry, Segment]]:
        for lane in self.topo.lanes:
            seg = self._lanes.get(lane.uid)
            if seg is not None:
                yield lane, seg

    def consumer_views(self) -> Iterator[tuple[ConsumerEntry, ConsumerStateView]]:
        for c in self.topo.consumers:
            view = self._consumers.get(c.id)
            if view is not None:
                yield c, view

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
