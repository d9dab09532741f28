"""The consumer handle: read one topic, or several, from every lane that feeds them.

How this works
--------------
``Subscribe`` gives the consumer its own state segment (cursors, heartbeat, sleeping flag)
and doorbell, per topic (several topics: one subscription each, one doorbell shared,
``subscriptions.py``); the registry says which lanes feed it (every lane of a fanout
topic, or the lanes producers keep for this consumer on a queue topic). A lane that existed before we
subscribed is read from its current end (we get what is published after subscribing);
a lane created later is read from its start, so nothing published to it is missed.

``poll()`` is the non-blocking core: one generation check, then the lanes in round-robin
order (the lanes of every topic in one turn: a flooded topic cannot starve another).
Blocking work is split out so an async driver can run it off the event loop:
``fetch`` (decode the topology, map new lanes) and ``apply`` (start reading them).
``Consumer.recv`` is the sync driver: it waits with the consumer's strategy through the
one wait policy (``waiting.py``). A lane whose
producer died stays until we have drained it; the coordinator then retires it and we
let it go. On a queue topic, ``close()`` keeps its cursors in place: the coordinator hands
our lanes to the rest of the group, which reads on from them (``redelivery.py``). A lane
handed to us is read before our own ones (its messages are older), from where its
previous holder stood. The envelope, view and array receives are
``consumer_receives.py``, bases of the classes here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from mycelium.client.consumer_receives import ReceiveCore, Receives
from mycelium.client.control import ControlChannel
from mycelium.client.handle import ClosingHandle
from mycelium.client.redelivery import redelivered, resume_at
from mycelium.client.subscriptions import SharedDoorbell, Subscription, topic_label, topics_of
from mycelium.client.topology import TopologyWatcher
from mycelium.client.waiting import SpinBudget, WaitPlan, wait_sync
from mycelium.control.wire import Subscribe, Subscribed, Unsubscribe
from mycelium.errors import (
    BrokerUnavailable,
    ConfigError,
    MyceliumError,
    ReceiveTimeout,
    UnknownTopic,
)
from mycelium.paths import resolve_socket_path
from mycelium.protocol import Message, parse_message
from mycelium.shm.consumer_state import ConsumerState
from mycelium.shm.reader import LaneReader
from mycelium.shm.segment import Segment
from mycelium.shm.wait import DEFAULT_SPINS, DEFAULT_YIELDS, Sleeper, WaitStrategy
from mycelium.topology import LaneEntry, Topology

__all__ = ["ACK_MODES", "START_MODES", "Consumer", "ConsumerCore", "LaneSnapshot"]

ACK_MODES = ("auto", "manual")
START_MODES = ("latest", "earliest")


@dataclass
class LaneSnapshot:
    """A topology read with the new lanes of our topics already mapped (the blocking part)."""

    gen: int
    topology: Topology
    #: Per subscription (in order): whether its topic is a queue topic, a lossy one.
    queue: list[bool]
    lossy: list[bool]
    #: The lanes we read: lane uid -> index of the subscription it feeds.
    wanted: dict[int, int]
    lanes: dict[int, Segment] = field(default_factory=dict)
    #: Lanes handed over from a departed member: where we start reading each.
    resume: dict[int, tuple[int, int, int]] = field(default_factory=dict)


class ConsumerCore(ReceiveCore):
    """Everything a consumer does except blocking: shared by sync and async handles."""

    def __init__(
        self,
        topic: str | Sequence[str],
        socket_path: str | os.PathLike[str] | None = None,
        group: str | None = None,
        *,
        wait: WaitStrategy | str = WaitStrategy.ADAPTIVE,
        spins: int = DEFAULT_SPINS,
        yields: int = DEFAULT_YIELDS,
        wait_for_broker: float = 0.0,
        name: str | None = None,
        ack: str = "auto",
        durable: str | None = None,
        start: str = "latest",
    ) -> None:
        if ack not in ACK_MODES:
            raise ConfigError(f"ack must be one of {ACK_MODES}, not {ack!r}")
        if start not in START_MODES:
            raise ConfigError(f"start must be one of {START_MODES}, not {start!r}")
        #: Every topic read, in the order given (one subscription each).
        self.topics = topics_of(topic)
        #: A durable consumer's position outlives this process (one live process per name).
        self.durable = durable or ""
        #: "latest": what is published from now on; "earliest": first what the rings hold.
        self.start = start
        #: "auto": a message is acknowledged as it is read (at-most-once for one in flight
        #: at a crash); "manual": only by ``ack()``, the rest is delivered again.
        self.ack_mode = ack
        #: The topic; for several, their names joined by commas (as errors name them).
        self.topic = topic_label(self.topics)
        self.socket_path = resolve_socket_path(socket_path)
        self.wait = WaitStrategy(wait)
        self.spins = spins
        self.yields = yields
        self.spin_budget = SpinBudget()  # what the adaptive wait learned of our gaps
        self._lock = threading.RLock()
        self._closed = False
        self._readers: dict[int, LaneReader] = {}
        self._sub_of: dict[int, Subscription] = {}  # lane uid -> the subscription it feeds
        self._topic_of: dict[LaneReader, str] = {}  # what an envelope says
        self._order: list[LaneReader] = []
        self._handed: list[LaneReader] = []  # lanes taken over: read first (older)
        self._handed_uids: set[int] = set()
        #: Per lane handed over (or kept by a durable name): (start index, index the
        #: previous holder had read to): what we read below the latter is a redelivery.
        self._seen: dict[int, tuple[int, int]] = {}
        self._redelivered_done = 0  # from handed-over lanes already let go
        self._rr = 0
        self.subs: list[Subscription] = []  # one per topic, in order
        self._doorbell_name = ""  # the first subscription's: the later ones share it
        self.channel = ControlChannel(
            self.socket_path,
            "consumer",
            name=name or "",  # shown in status and metrics; the broker names the nameless
            wait_for_broker_s=wait_for_broker,
            on_reconnect=self._resume,
            on_tick=self._beat,
        )
        self._lossy = False
        self._viewing = False  # a recv_view block is open: its frame is held
        try:
            assert self.channel.welcome is not None
            self.watch = TopologyWatcher(self.channel.welcome.registry_name)
            self._check_topics()
            for t in self.topics:
                self._subscribe(t, group)
            #: What a wait arms and blocks on (one doorbell, whatever the topic count).
            states = [sub.state for sub in self.subs]
            self.state: Sleeper = states[0] if len(states) == 1 else SharedDoorbell(states)
            self.refresh()
        except MyceliumError:
            self._abandon()
            raise
        self.id = self.subs[0].id
        self.group = self.subs[0].group

    def _check_topics(self) -> None:
        """Refuse an unknown topic before subscribing to any (nothing to undo). Raises
        UnknownTopic."""
        _, topo = self.watch.read()
        known = tuple(t.name for t in topo.topics)
        for t in self.topics:
            if t not in known:
                raise UnknownTopic(t, known)

    def _subscribe(self, topic: str, group: str | None) -> None:
        """One topic's Subscribe; the later ones share the first one's doorbell."""
        first = self.subs[0] if self.subs else None
        share = first.id if first is not None else 0
        request = Subscribe(topic=topic, group=group, durable=self.durable, doorbell_of=share)
        reply = self.channel.request(request)
        assert isinstance(reply, Subscribed)
        try:
            if first is not None and reply.doorbell_name != self._doorbell_name:
                raise BrokerUnavailable("the broker cannot share a doorbell between topics")
            state = ConsumerState.attach(reply.state_name, reply.doorbell_name)
        except MyceliumError:
            with contextlib.suppress(MyceliumError):
                self.channel.request(Unsubscribe(consumer_id=reply.consumer_id))
            raise
        if first is None:
            self._doorbell_name = reply.doorbell_name
        self.subs.append(Subscription(topic, reply.consumer_id, reply.group, state))

    def _abandon(self) -> None:
        """Undo the subscriptions made when a later step failed (an unopenable segment,
        a refused topic), so that no entry nor anything mapped outlives the constructor."""
        for reader in self._readers.values():
            reader.close()
        for sub in self.subs:
            with contextlib.suppress(MyceliumError):
                self.channel.request(Unsubscribe(consumer_id=sub.id))
        self.channel.close()
        for sub in self.subs:
            sub.state.close()
        watch = getattr(self, "watch", None)
        if watch is not None:
            watch.close()

    # -- reading --------------------------------------------------------------------
    def poll(self) -> bytes | None:
        """The next message, or None if nothing is waiting. Raises CorruptFrame."""
        watch = self.watch
        if watch.generation[0] != watch.gen:  # watch.stale(), inlined
            self.refresh()
        if self._handed:
            for reader in self._handed:
                data = reader.poll()
                if data is not None:
                    return data
        order = self._order
        n = len(order)
        if n == 1:
            return order[0].poll()
        start = self._rr
        for k in range(n):
            i = (start + k) % n
            data = order[i].poll()
            if data is not None:
                self._rr = i + 1
                return data
        return None

    def poll_many(self, max_n: int) -> list[bytes] | None:
        """Up to ``max_n`` waiting messages (one cursor store per lane), or None if none.

        Each call starts at the next lane, so a lane that always has ``max_n`` waiting
        cannot starve the others (and hold their producers back).
        """
        if self.watch.stale():
            self.refresh()
        out: list[bytes] = []
        for reader in self._handed:
            if len(out) < max_n:
                out += reader.poll_many(max_n - len(out))
        order = self._order
        n = len(order)
        start = self._rr
        for k in range(n):
            if len(out) >= max_n:
                break
            out += order[(start + k) % n].poll_many(max_n - len(out))
        self._rr = (start + 1) % n if n else 0
        return out or None

    def plan(self, timeout: float | None) -> WaitPlan:
        """The wait for the next message, by this consumer's strategy (None: no deadline)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return WaitPlan(self.wait, self.spins, self.yields, deadline, self.spin_budget)

    # -- topology (blocking work split from applying it) ----------------------------------
    def needs_fetch(self) -> bool:
        """Whether the topology changed (one 8-byte load): ``poll`` would fetch first."""
        return self.watch.stale()

    def fetch(self) -> LaneSnapshot:
        """The blocking part of a topology change: decode the topology and map the lanes
        that appeared (16 MiB each, pre-faulted). Any thread."""
        gen, topo = self.watch.read()
        snap = LaneSnapshot(gen, topo, [], [], {})
        wanted: dict[int, LaneEntry] = {}
        for k, sub in enumerate(self.subs):
            entry = topo.topic(sub.topic)
            queue = entry is not None and entry.routing == "queue"
            snap.queue.append(queue)
            snap.lossy.append(entry is not None and entry.lossy)
            for lane in topo.lanes:
                mine = lane.consumer == sub.id or (lane.consumer == 0 and not queue)
                if lane.topic == sub.topic and mine:
                    wanted[lane.uid] = lane
                    snap.wanted[lane.uid] = k
                    at = resume_at(lane) if queue else None
                    if at is not None:
                        snap.resume[lane.uid] = at
        try:
            for uid, lane in wanted.items():
                if uid not in self._readers:
                    try:
                        snap.lanes[uid] = Segment.attach_lane(lane.segment)
                    except MyceliumError:
                        continue  # retired between the registry read and now
        except BaseException:
            for seg in snap.lanes.values():
                seg.close()
            raise
        return snap

    def apply(self, snap: LaneSnapshot) -> None:
        """Attach the lanes that appeared, let go of lanes the coordinator retired."""
        with self._lock:
            self.watch.accept(snap.gen, snap.topology)
            for sub, queue, lossy in zip(self.subs, snap.queue, snap.lossy, strict=True):
                sub.queue, sub.lossy = queue, lossy
            self._lossy = any(snap.lossy)
            for uid in list(self._readers):
                if uid not in snap.wanted:
                    gone = self._readers.pop(uid)
                    self._redelivered_done += self._redelivered_on(uid, gone)
                    gone.close(release_slot=True)
                    del self._sub_of[uid], self._topic_of[gone]
            for uid, seg in snap.lanes.items():
                if uid in self._readers:
                    seg.close()
                    continue
                sub = self.subs[snap.wanted[uid]]
                state = sub.state
                at = snap.resume.get(uid)
                held = state.find_slot(uid)
                if held is not None:  # a durable consumer back: on from its own position
                    self._seen[uid] = state.acked_and_read(held)
                    reader = LaneReader(seg, state, slot=held)
                elif at is not None:  # handed over: on from where the previous holder stood
                    pos, count, seen = at
                    slot = state.claim_slot(uid, pos, count)
                    reader = LaneReader(seg, state, slot=slot)
                    self._handed_uids.add(uid)
                    self._seen[uid] = (count, seen)
                else:
                    older = uid < sub.id and self.start == "latest"
                    start = "end" if older else "begin"
                    reader = LaneReader(seg, state, start=start)
                if self.ack_mode == "manual":
                    reader.hold()
                self._readers[uid] = reader
                self._sub_of[uid] = sub
                self._topic_of[reader] = sub.topic
            snap.lanes.clear()
            self._handed_uids &= set(self._readers)
            readers = self._readers.items()
            self._handed = [r for uid, r in readers if uid in self._handed_uids]
            self._order = [r for uid, r in readers if uid not in self._handed_uids]
            self._rr = 0

    def refresh(self) -> None:
        """Fetch and apply in line (the sync driver, and the core's own hot-path check)."""
        self.apply(self.fetch())

    def _resume(self) -> None:
        """After a reconnect: resume each subscription under the same consumer id."""
        for sub in self.subs:
            reply = self.channel.request(Subscribe(topic=sub.topic, group=sub.group if
                                                   sub.queue else None, resume_id=sub.id))  # fmt: skip
            if isinstance(reply, Subscribed) and reply.consumer_id != sub.id:
                # The coordinator lost our entry (its registry is gone): give the new one
                # back at once, so retrying leaks nothing, and keep reading our lanes.
                self.channel.request(Unsubscribe(consumer_id=reply.consumer_id))
                raise BrokerUnavailable(
                    f"the broker no longer knows consumer {sub.id} (it offered {reply.consumer_id})"
                )

    def _beat(self) -> None:
        if not self._closed:
            for sub in self.subs:
                sub.state.beat()

    # -- state ----------------------------------------------------------------------
    @property
    def lanes(self) -> int:
        return len(self._order) + len(self._handed)

    def ack(self) -> None:
        """Acknowledge every message this handle has received so far, on every topic
        (cumulative): they are not delivered again if we die. With ack="auto" every read
        already is."""
        if self.ack_mode == "manual":
            for reader in self._readers.values():
                reader.ack()

    @property
    def redelivered(self) -> int:
        """Messages this handle got that had been delivered (not acknowledged) before."""
        live = sum(self._redelivered_on(uid, r) for uid, r in self._readers.items())
        return self._redelivered_done + live

    def _redelivered_on(self, uid: int, reader: LaneReader) -> int:
        start, seen = self._seen.get(uid, (0, 0))
        return redelivered(start, seen, reader.count)

    @property
    def lost(self) -> int:
        """Messages lost to a lossy topic's overruns (never on a lossless topic)."""
        return sum(sub.state.lost for sub in self.subs)

    @property
    def corrupt(self) -> int:
        """Corrupt frames met (each was reported with CorruptFrame and skipped)."""
        return sum(sub.state.corrupt for sub in self.subs)

    @property
    def backlog(self) -> int:
        """Messages waiting for us across our lanes (lanes that appeared since the last
        read included: it checks the topology first, as ``poll`` does). A property like
        ``lost``, ``corrupt`` and ``lanes``: every counter of the handle is one."""
        if self.watch.stale():
            self.refresh()
        return sum(r.backlog() for r in (*self._handed, *self._order))

    def close(self) -> None:
        """Leave the topics. On a queue topic our unread messages go to the rest of the
        group; a durable consumer's position stays for the next process of its name."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for uid, reader in self._readers.items():
                reader.close(release_slot=not self._keeps(self._sub_of[uid]))
            self._readers.clear()
            self._order = []
            self._handed = []
        for sub in self.subs:
            if self.channel.state.name == "CONNECTED":
                try:
                    self.channel.request(Unsubscribe(consumer_id=sub.id))
                except MyceliumError:
                    pass  # the coordinator's sweep notices when we exit
        self.channel.close()
        for sub in self.subs:
            if self._keeps(sub):
                sub.state.seg.close()
                sub.state.doorbell.close()
            else:
                sub.state.close()
        self.watch.close()

    def _keeps(self, sub: Subscription) -> bool:
        """Whether a subscription's cursors outlive us: an heir (queue) or we (durable)
        read on from them."""
        return sub.queue or bool(self.durable)


class Consumer(ClosingHandle, Receives, ConsumerCore):
    """Synchronous consumer handle of one topic or several (a context manager and an
    iterator)::

    with Consumer("market_data") as c:
        payload = c.recv(timeout=1.0)
    with Consumer(["market_data", "signals"]) as c:
        env = c.recv_envelope(timeout=1.0)  # env.topic says which
    """

    def recv(self, timeout: float | None = None) -> bytes:
        """The next message; raises ReceiveTimeout if none came within ``timeout`` seconds
        (None: wait indefinitely), CorruptFrame for a corrupt frame (skipped, counted)."""
        data = self.poll()
        if data is not None:
            return data
        data = wait_sync(self.poll, self.state, self.plan(timeout))
        if data is None:
            raise ReceiveTimeout(self.topic, timeout)
        return data

    def recv_many(self, max_n: int = 1000, timeout: float | None = 0.0) -> list[bytes]:
        """Up to ``max_n`` messages; waits up to ``timeout`` for the first; may be empty."""
        batch = self.poll_many(max_n)
        if batch is None and timeout != 0.0:
            batch = wait_sync(lambda: self.poll_many(max_n), self.state, self.plan(timeout))
        return batch or []

    def recv_message(self, timeout: float | None = None, verify_checksum: bool = True) -> Message:
        """The next message parsed as Protocol V2 (raises ProtocolError if it is not)."""
        return parse_message(self.recv(timeout), verify_checksum=verify_checksum)

    def __iter__(self) -> Iterator[bytes]:
        """Messages as they come, blocking between them, until the consumer is closed."""
        while not self._closed:
            try:
                yield self.recv(timeout=1.0)
            except TimeoutError:
                continue
