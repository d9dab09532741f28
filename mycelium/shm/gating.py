"""Gating: the readers a lane's writer must not overrun, and waiting for them.

How this works
--------------
A lossless lane's writer gates on every consumer the topology gives it: it may write up
to one ring past the lowest cursor among them (the *floor*). Each reader's cursor lives in
its own consumer segment, mapped read-only here; a reader that has not claimed its slot
for our lane yet is gated at the position where we first saw it, so it loses nothing
published from then on. The writer caches the floor as its limit and rescans only when a
write would cross it (``LaneWriter._claim``); then, if the ring is full, ``wait_for_space``
waits (bounded) by the project's one backpressure policy (``mycelium/backoff.py``: spin,
yield, sleep with backoff), dropping readers whose process died.

Doorbells: a reader about to block raises its "sleeping" flag, and the writer rings the
doorbell of each reader it sees asleep. With up to ``WAKE_SCAN_EACH_UP_TO`` readers the
writer loads their flags after every publish (``every_publish``), as it always did. With
more, loading every flag on every publish would make the producer pay per consumer per
message, so it scans them only every *k* publishes (``ring_sleepers``; every batch, too),
and *k* follows what the scans see: it doubles up to ``WAKE_SCAN_MAX`` while scans find
nobody asleep and the publishes since the last one came less than ``WAKE_GAP_S`` apart on
average (streaming: about 1/64 of a flag load per reader per message), and drops to 1
when a scan finds a sleeper or the publishes came slower than that (a paced writer, or
readers that keep falling asleep, are checked after every publish, so a lone message
wakes its readers at once). The bound on a late wake-up: a
reader that fell asleep is rung within ``WAKE_SCAN_MAX`` publishes; if the writer stops
before that, the reader's own ``BLOCK_SAFETY_S`` timeout wakes it (as for the
store-buffer race, ``ordering.py``): a late ring costs latency, never a message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from mycelium.backoff import Backpressure, pause_sync
from mycelium.errors import BackpressureTimeout
from mycelium.shm.consumer_state import ConsumerStateView
from mycelium.shm.layout import CONSUMER_SLEEPING_Q, SLOT_CURSOR_Q, SLOT_LANE_Q
from mycelium.shm.ordering import full_fence

__all__ = ["WAKE_GAP_S", "WAKE_SCAN_EACH_UP_TO", "WAKE_SCAN_MAX", "Gating"]

#: Lanes with at most this many doorbells have every flag loaded after every publish.
WAKE_SCAN_EACH_UP_TO = 2
#: Most publishes between two scans of the readers' "sleeping" flags (larger lanes).
WAKE_SCAN_MAX = 64
#: Publishes closer together than this on average mean the writer streams: scan less
#: often. Slower (above 100,000 msg/s no more) means it is paced: scan after each one.
WAKE_GAP_S = 10e-6


class _Gate:
    """One reader a writer must not overrun: its consumer state and the slot for our lane."""

    __slots__ = ("base", "floor", "view")

    def __init__(self, view: ConsumerStateView, floor: int) -> None:
        self.view = view
        self.base: int | None = None
        #: Until the reader claims its slot we gate at the position where we first saw it.
        self.floor: int | None = floor


class Gating:
    """The set of readers one lane's writer waits on, and their doorbells."""

    def __init__(self, lane_uid: int) -> None:
        self.lane_uid = lane_uid
        self._gates: list[_Gate] = []
        #: (consumer words, sleeping-flag index, doorbell) of every reader with a doorbell.
        self.bells: tuple[tuple[memoryview, int, Any], ...] = ()
        #: The bells the writer checks after every publish (all of them on a small lane).
        self.every_publish: tuple[tuple[memoryview, int, Any], ...] = ()
        self._scan_every = 1
        self._scanned_at = 0.0

    def set_readers(self, views: Iterable[ConsumerStateView], pos: int) -> None:
        """Gate on exactly these consumers (keeping what we know of ones seen before);
        one not seen before is gated at ``pos`` until it claims its slot."""
        old = {id(g.view): g for g in self._gates}
        self._gates = [old.get(id(v)) or _Gate(v, pos) for v in views]
        self.bells = tuple(
            (g.view.q, CONSUMER_SLEEPING_Q, g.view.doorbell)
            for g in self._gates
            if g.view.doorbell is not None
        )
        self.every_publish = self.bells if len(self.bells) <= WAKE_SCAN_EACH_UP_TO else ()

    @property
    def readers(self) -> list[ConsumerStateView]:
        return [g.view for g in self._gates]

    def ring_sleepers(self) -> int:
        """Ring every reader whose "sleeping" flag is up; returns how many publishes may
        go by before the next scan (the rule in the module docstring)."""
        if self.every_publish or not self.bells:
            return WAKE_SCAN_MAX  # the writer checks these after every publish itself
        asleep = False
        for q, i, bell in self.bells:
            if q[i]:
                bell.release()
                asleep = True
        now = time.perf_counter()
        if asleep or now - self._scanned_at >= WAKE_GAP_S * self._scan_every:
            self._scan_every = 1
        else:
            self._scan_every = min(self._scan_every * 2, WAKE_SCAN_MAX)
        self._scanned_at = now
        return self._scan_every

    def floor(self, pos: int) -> int:
        """The lowest position some gated reader still needs (``pos`` if none)."""
        lo = pos
        uid = self.lane_uid
        for g in self._gates:
            q = g.view.q
            base = g.base
            if base is None or q[base + SLOT_LANE_Q] != uid:
                base = g.base = g.view.find_slot(uid)
                if base is None:
                    if g.floor is not None and g.floor < lo:
                        lo = g.floor
                    continue
                g.floor = None  # claimed a slot: from now on its cursor speaks
            cursor = q[base + SLOT_CURSOR_Q]
            if q[base + SLOT_LANE_Q] == uid and cursor < lo:
                lo = cursor
        return lo

    def drop_dead(self, pos: int) -> bool:
        """Stop gating on readers whose process is gone; True if any was dropped."""
        live = [g for g in self._gates if g.view.holds()]
        if len(live) == len(self._gates):
            return False
        self.set_readers((g.view for g in live), pos)
        return True

    def wait_for_space(
        self,
        pos: int,
        need_end: int,
        cap: int,
        timeout_s: float,
        on_wait: Callable[[], None] | None,
        lane_name: str,
    ) -> int:
        """Wait (bounded by ``timeout_s``) until every gated reader is within ``cap`` bytes
        of ``need_end``; returns the lowest reader position. ``timeout_s <= 0`` raises at
        once (the caller waits its own way). Raises BackpressureTimeout."""
        # Our cursor store is visible before we load the readers' slots: a reader that
        # joins concurrently either is seen here or sees our cursor (ordering.py).
        full_fence()
        floor = self.floor(pos)
        if need_end <= floor + cap:
            return floor
        if timeout_s <= 0:
            raise BackpressureTimeout(
                f"lane {lane_name}: ring full; nothing written", needed=need_end - cap - floor
            )
        bp = Backpressure(timeout_s, f"lane {lane_name}")
        while True:
            try:
                pause_sync(bp)
            except BackpressureTimeout:  # the lane's own words: how far behind, in bytes
                short = need_end - cap - floor
                raise BackpressureTimeout(
                    f"lane {lane_name}: ring full for {timeout_s}s"
                    f" (a reader is {short} bytes too far behind); nothing written",
                    waited_s=timeout_s,
                    needed=short,
                ) from None
            if bp.liveness_due():
                self.drop_dead(pos)
                if on_wait is not None:
                    on_wait()
            floor = self.floor(pos)
            if need_end <= floor + cap:
                return floor
