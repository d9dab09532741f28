"""Helpers for the data-plane tests: private broker ids, a kit of segments, child processes.

``ShmKit`` is bound to a broker id no other test or broker uses: it makes lanes and
consumer states, maps writers and readers on them, and ``teardown`` closes everything and
unlinks every object of its broker id. Every id handed out is remembered in ``BROKER_IDS``
for the session-level leak check in conftest.py. Child processes and ``wait_for`` come
from tests/harness.py, shared with the broker tests. (A module of its own, not
conftest.py, so test modules import it by a name no other directory uses.)
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from mycelium.shm import (
    ConsumerState,
    ConsumerStateView,
    LaneReader,
    LaneWriter,
    Segment,
    create_consumer_segment,
    create_lane_segment,
    list_segments,
    segment_name,
)
from mycelium.shm.layout import KIND_LANE
from mycelium.shm.segment import unlink_quietly

#: Every broker id handed out this session; none may leave anything in /dev/shm.
BROKER_IDS: list[str] = []


def new_broker_id() -> str:
    """A broker id unique to one test (``t`` + 8 hex digits), remembered for the leak check."""
    bid = "t" + secrets.token_hex(4)
    BROKER_IDS.append(bid)
    return bid


class ShmKit:
    """Segments of one private broker id, and the writers/readers mapped on them."""

    def __init__(self, broker_id: str) -> None:
        self.broker_id = broker_id
        self._serial = 0
        self._open: list[Any] = []

    def _next(self) -> int:
        self._serial += 1
        return self._serial

    def lane(self, capacity: int = 1 << 16, max_message: int = 1024, *, lossy: bool = False,
             mode: int = 0o600) -> str:  # fmt: skip
        """Create a lane segment; returns its name."""
        uid = self._next()
        name = segment_name(self.broker_id, "L", uid)
        create_lane_segment(name, capacity, max_message, uid, os.getpid(), lossy=lossy,
                            mode=mode).close()  # fmt: skip
        return name

    def raw_lane(self, name: str) -> Segment:
        """The lane mapped writable, for tests that scribble on it."""
        return self._track(Segment.attach(name, KIND_LANE, writable=True))

    def consumer_names(self) -> tuple[str, str]:
        """Fresh (segment, doorbell) names for a consumer, not created yet."""
        n = self._next()
        return segment_name(self.broker_id, "C", n), segment_name(self.broker_id, "D", n)

    def consumer(self, pid: int | None = None, names: tuple[str, str] | None = None
                 ) -> tuple[str, str]:  # fmt: skip
        """Create a consumer state segment and doorbell (of process ``pid``, default ours);
        returns their names."""
        name, bell = names or self.consumer_names()
        create_consumer_segment(name, bell, self._next(), pid or os.getpid()).close()
        return name, bell

    def state(self, consumer: tuple[str, str]) -> ConsumerState:
        return self._track(ConsumerState.attach(*consumer))

    def view(self, consumer: tuple[str, str]) -> ConsumerStateView:
        return self._track(ConsumerStateView.attach(*consumer))

    def writer(self, lane: str, readers: tuple[tuple[str, str], ...] = (), **kw: Any) -> LaneWriter:
        w = self._track(LaneWriter(Segment.attach(lane, KIND_LANE, writable=True), **kw))
        w.set_readers([self.view(c) for c in readers])
        return w

    def reader(self, lane: str, state: ConsumerState, **kw: Any) -> LaneReader:
        return self._track(LaneReader(Segment.attach(lane, KIND_LANE), state, **kw))

    def _track(self, obj: Any) -> Any:
        self._open.append(obj)
        return obj

    def leftovers(self) -> list[str]:
        return list_segments(self.broker_id)

    def teardown(self) -> list[str]:
        """Close everything (newest first), unlink everything; returns what was left."""
        for obj in reversed(self._open):
            try:
                obj.close()
            except Exception:  # already closed by the test, or its mapping is gone
                pass
        left = self.leftovers()
        for name in left:
            unlink_quietly(name)
        return left
