"""Finding and removing shared-memory objects that dead brokers and clients left behind.

How this works
--------------
Every Mycelium object in /dev/shm is named ``myc-<broker id>-<kind><id>.<token>``; only
objects of our own uid are considered (root: all), so cleanup never maps or unlinks
another user's objects, and says how many it skipped. For each broker id found: if its registry names a coordinator that is still alive, the broker is
live and cleans up after its own clients, so nothing is touched. Otherwise the registry's
topology says who used the segments: while any of its producers or consumers still
runs, everything stays (a new coordinator will adopt it and they keep exchanging
messages); when none does, every object of that broker is removed. Objects of a broker
with no readable registry are judged by the pid written in each segment.
"""

from __future__ import annotations

import psutil

from mycelium.errors import SegmentError
from mycelium.shm.lane_header import LaneInfo
from mycelium.shm.layout import CONSUMER_STATIC, CONSUMER_STATIC_OFF, KIND_CONSUMER, KIND_LANE
from mycelium.shm.registry import RegistryView
from mycelium.shm.segment import NAME_PREFIX, Segment, list_segments, owned_by_us, unlink_quietly

__all__ = ["find_orphans", "foreign_objects", "remove_orphans"]


def _broker_of(name: str) -> str:
    base = name.removeprefix("sem:").lstrip("/").removeprefix(NAME_PREFIX)
    return base.split("-", 1)[0]


def _pid_alive(pid: int) -> bool:
    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kind(name: str) -> str:
    """The kind letter of an object name (R, L, C or D)."""
    return name.rsplit("-", 1)[-1][:1]


def _registry_verdict(objs: list[str]) -> bool | None:
    """True: in use; False: abandoned; None: no readable registry among ``objs``."""
    verdicts = [_one_registry(n) for n in objs if _kind(n) == "R" and not n.startswith("sem:")]
    if True in verdicts:
        return True
    return False if False in verdicts else None


def _one_registry(name: str) -> bool | None:
    try:
        view = RegistryView.attach(name)
    except SegmentError:
        return None
    try:
        if _pid_alive(view.coordinator_pid):
            return True
        _, topo = view.read()
    except SegmentError:
        return None
    finally:
        view.close()
    return any(p.alive and _pid_alive(p.pid) for p in topo.producers) or any(
        c.alive and _pid_alive(c.pid) for c in topo.consumers
    )


def _owner_alive(name: str) -> bool:
    """For objects without a registry: is the process recorded in the segment alive?"""
    if name.startswith("sem:"):
        return False  # a doorbell goes with its consumer segment
    kind = _kind(name)
    try:
        if kind == "L":
            seg = Segment.attach(name, KIND_LANE)
            pid = LaneInfo(seg).writer_pid
        elif kind == "C":
            seg = Segment.attach(name, KIND_CONSUMER)
            pid = CONSUMER_STATIC.unpack_from(seg.mm, CONSUMER_STATIC_OFF)[1]
        else:
            return False
    except SegmentError:
        return False
    seg.close()
    return _pid_alive(pid)


def foreign_objects(broker_id: str | None = None) -> list[str]:
    """Mycelium objects of other users, which cleanup leaves alone."""
    return [n for n in list_segments(broker_id) if not owned_by_us(n)]


def find_orphans(broker_id: str | None = None) -> list[str]:
    """Names of our Mycelium objects nobody alive uses (of one broker, or of all)."""
    names = [n for n in list_segments(broker_id) if owned_by_us(n)]
    by_broker: dict[str, list[str]] = {}
    for name in names:
        by_broker.setdefault(_broker_of(name), []).append(name)
    orphans = []
    for objs in by_broker.values():
        verdict = _registry_verdict(objs)
        if verdict is True:
            continue
        if verdict is False:
            orphans += objs
            continue
        live_consumers = {n.rsplit("-C", 1)[-1] for n in objs if "-C" in n and _owner_alive(n)}
        for n in objs:
            if "-D" in n and n.rsplit("-D", 1)[-1] in live_consumers:
                continue
            if not n.startswith("sem:") and _owner_alive(n):
                continue
            orphans.append(n)
    return orphans


def remove_orphans(broker_id: str | None = None) -> list[str]:
    """Remove what ``find_orphans`` finds; returns the names removed."""
    return [name for name in find_orphans(broker_id) if unlink_quietly(name)]
