"""A departed queue member's unread messages reach its group from shared memory.

The issue's three scenarios (3 000 numbered messages each), plus the coordinator dying
with the member: every message is checked for loss, duplicates and order, and the
broker's counters must reconcile (published == delivered).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from delivery_kit import Clients, Worker
from delivery_workers import ConsumerPlan
from harness import wait_for

N = 3_000
TOPIC = "execution"


def gone(broker: Any, pid: int) -> bool:
    """The coordinator noticed that the consumer in ``pid`` left (or forgot it)."""
    entry = next((c for c in broker.stats()["consumers"] if c["pid"] == pid), None)
    return entry is None or not entry["alive"]


def lag_of(broker: Any, pid: int) -> int | None:
    entry = next((c for c in broker.stats()["consumers"] if c["pid"] == pid), None)
    return None if entry is None else int(entry["lag"])


def expect_exactly_once(parts: list[list[int]], n: int = N) -> None:
    counts = Counter(s for part in parts for s in part)
    missing = [s for s in range(n) if s not in counts]
    assert not missing, f"{len(missing)} of {n} lost, first {missing[:10]}"
    dups = {s: k for s, k in counts.items() if k > 1}
    assert not dups, f"{len(dups)} duplicated, e.g. {list(dups.items())[:5]}"
    assert set(counts) == set(range(n))


def reconciled(broker: Any, n: int = N) -> bool:
    topic = next(t for t in broker.stats()["topics"] if t["name"] == TOPIC)
    return bool(topic["published"] == n and topic["delivered"] == n)


def drain(worker: Worker) -> list[int]:
    worker.tell("stop")
    seqs: list[int] = worker.report("done")["seqs"]
    return seqs


def test_last_member_killed_then_producer_closes_heir_gets_the_backlog(
    broker: Any, clients: Clients
) -> None:
    """One-member group, member SIGKILLed with a backlog, the producer closes before a
    new member joins (was: 2 751 of 3 000 lost): the heir gets the rest, in order."""
    victim = clients.consumer(ConsumerPlan(broker.socket, TOPIC, "victim", take=249))
    producer = clients.producer(broker.socket, TOPIC, N)
    producer.report("published")
    taken = victim.report("took")
    victim.kill()
    wait_for(lambda: gone(broker, victim.proc.pid), what="the coordinator to notice")
    producer.tell("close")
    producer.proc.join(30)
    assert producer.proc.exitcode == 0
    heir = clients.consumer(ConsumerPlan(broker.socket, TOPIC, "heir"))
    wait_for(lambda: heir.count == N - 249, what="the backlog at the heir")
    rest = drain(heir)
    assert taken == list(range(249))
    assert rest == list(range(249, N))
    wait_for(lambda: reconciled(broker), what="published == delivered")


def test_member_killed_while_producer_idle_survivor_takes_over_at_once(
    broker: Any, clients: Clients, record_property: Any
) -> None:
    """Two-member group, member SIGKILLed while the producer is idle (was: the survivor
    got the backlog 5.5 s later, when the producer closed): the survivor has all of it
    within a bound, the producer neither publishing nor closing."""
    survivor = clients.consumer(ConsumerPlan(broker.socket, TOPIC, "survivor"))
    victim = clients.consumer(ConsumerPlan(broker.socket, TOPIC, "victim", take=200))
    producer = clients.producer(broker.socket, TOPIC, N)
    producer.report("published")
    taken = victim.report("took")
    wait_for(lambda: lag_of(broker, survivor.proc.pid) == 0, what="the survivor's share read")
    survivor.tell("mark")
    mark = survivor.report("mark")
    victim.kill()
    wait_for(lambda: gone(broker, victim.proc.pid), what="the coordinator to notice")
    noticed = time.monotonic()
    wait_for(lambda: survivor.count == N - 200, timeout=20.0, what="the backlog at the survivor")
    took_over_s = time.monotonic() - noticed
    record_property("take_over_s", round(took_over_s, 3))
    print(f"take-over after the death was noticed: {took_over_s * 1000:.0f} ms")
    seqs = drain(survivor)
    after = seqs[mark:]
    assert after == sorted(after), "the victim's backlog arrives in order"
    expect_exactly_once([taken, seqs])
    # ~5 ms on a quiet box (printed above); the bug took until the producer closed, which
    # it never does here. 5 s is a loaded 2-core box's margin for draining 2,800 messages.
    assert took_over_s < 5.0
    producer.tell("close")
    wait_for(lambda: reconciled(broker), what="published == delivered")


def test_member_then_idle_producer_killed_heir_gets_everything(
    broker: Any, clients: Clients
) -> None:
    """Member SIGKILLed, then the idle producer SIGKILLed (was: 1 254 of 3 000 lost): a
    new member still gets every unread message."""
    victim = clients.consumer(ConsumerPlan(broker.socket, TOPIC, "victim", take=500))
    producer = clients.producer(broker.socket, TOPIC, N)
    producer.report("published")
    taken = victim.report("took")
    victim.kill()
    wait_for(lambda: gone(broker, victim.proc.pid), what="the coordinator to notice")
    producer.kill()
    wait_for(
        lambda: all(not p["alive"] for p in broker.stats()["producers"]),
        what="the producer noticed dead",
    )
    heir = clients.consumer(ConsumerPlan(broker.socket, TOPIC, "heir"))
    wait_for(lambda: heir.count == N - 500, what="the backlog at the heir")
    rest = drain(heir)
    assert rest == list(range(500, N))
    expect_exactly_once([taken, rest])
    wait_for(lambda: reconciled(broker), what="published == delivered")


def test_coordinator_killed_with_the_member_loses_nothing(broker: Any, clients: Clients) -> None:
    """The coordinator and the member SIGKILLed together: the next coordinator finds the
    member dead in the adopted registry and the survivor gets its backlog."""
    survivor = clients.consumer(ConsumerPlan(broker.socket, TOPIC, "survivor"))
    victim = clients.consumer(ConsumerPlan(broker.socket, TOPIC, "victim", take=300))
    producer = clients.producer(broker.socket, TOPIC, N)
    producer.report("published")
    taken = victim.report("took")
    broker.kill()
    victim.kill()
    broker.start()
    wait_for(lambda: survivor.count == N - 300, what="the backlog at the survivor")
    expect_exactly_once([taken, drain(survivor)])
    producer.tell("close")
    wait_for(lambda: reconciled(broker), what="published == delivered")
