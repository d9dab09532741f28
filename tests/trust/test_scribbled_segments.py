"""Random words of the registry and of a consumer's state segment scribbled while a
producer process publishes through a real broker. Forbidden outcomes: a message that was
never published (torn, invented, replayed out of order), an error that is not a
MyceliumError (in the consumer, the producer process or ``Consumer.close()``), a hang (every
loop has a deadline), a consumer that never delivers again once the coordinator has
published a sane topology, a segment left behind."""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable

import pytest
import trust_workers
from harness import Processes, wait_for
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from trust_workers import check_numbered, numbered

from mycelium import Consumer, Producer
from mycelium.errors import MyceliumError, SegmentError
from mycelium.shm.layout import (
    CONSUMER_SLOTS_OFF,
    KIND_CONSUMER,
    KIND_REGISTRY,
    REGISTRY_BUFFER_BYTES,
    REGISTRY_BUFFER_OFF,
    REGISTRY_GENERATION_Q,
    slot_q,
)
from mycelium.shm.registry import Registry, RegistryView, Topology
from mycelium.shm.segment import Segment

CONFIG = """
[[topics]]
name = "ticks"
max_message_size = 256
lane_bytes = 65536
backpressure_timeout_ms = 200

[[topics]]
name = "churn"
"""
N = 2_000
DEADLINE_S = 45.0
REPORT_WAIT_S = 60.0
AFTER_HEAL = 20
WORDS_AT_BUFFER_START = 64
#: The segment identity (magic, version, kind, size) fills the first cache line.
IDENTITY_WORDS = 8

# Where a scribble lands, as (segment, 8-byte word index): the registry's header page
# past its identity line (generation, coordinator pid) or the first words of either
# topology buffer (its length and the msgpack document), a consumer's header (identity,
# uid, pid, heartbeat, flags, counters) or a word of one of its first lane slots (lane
# uid, cursors, counts). The registry's identity line is left alone: scribbled, it makes
# every later attach a SegmentError by design (tests/shm/test_segment.py), and this test
# attaches new clients after the scribbles to prove the consumer still delivers.
registry_word = st.one_of(
    st.integers(IDENTITY_WORDS, REGISTRY_BUFFER_OFF // 8 - 1),
    st.tuples(st.integers(0, 1), st.integers(0, WORDS_AT_BUFFER_START - 1)).map(
        lambda bw: (REGISTRY_BUFFER_OFF + bw[0] * REGISTRY_BUFFER_BYTES) // 8 + bw[1]
    ),
).map(lambda q: ("registry", q))
consumer_word = st.one_of(
    st.integers(0, CONSUMER_SLOTS_OFF // 8 - 1),
    st.tuples(st.integers(0, 3), st.integers(0, 7)).map(lambda sw: slot_q(sw[0]) + sw[1]),
).map(lambda q: ("consumer", q))
value = st.one_of(
    st.integers(0, 255), st.integers(0, (1 << 64) - 1), st.sampled_from([(1 << 64) - 1, 1 << 63])
)


def _recv_some(c: Consumer, got: list[int], errors: list[str]) -> None:
    """One bounded receive; a MyceliumError is counted, anything else fails the test."""
    try:
        got.extend(check_numbered(d) for d in c.recv_many(256, timeout=0.02))
    except MyceliumError as exc:
        errors.append(type(exc).__name__)


def _heal(socket_path: str, errors: list[str]) -> None:
    """Make the coordinator publish a fresh topology (a consumer comes and goes)."""
    try:
        with Consumer("churn", socket_path=socket_path):
            pass
    except MyceliumError as exc:
        errors.append(type(exc).__name__)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # each example is a broker: no shrink
)
@given(
    scribbles=st.lists(
        st.tuples(st.floats(0.0, 0.8), st.one_of(registry_word, consumer_word), value),
        min_size=1,
        max_size=12,
    )
)
def test_scribbled_registry_and_consumer_state_while_traffic_flows(
    make_broker: Callable[..., object], procs: Processes, scribbles: list
) -> None:
    broker = make_broker(CONFIG)
    socket_path: str = broker.socket  # type: ignore[attr-defined]
    c = Consumer("ticks", socket_path=socket_path, wait="block")
    segs = {
        "registry": Segment.attach(c.watch.registry.seg.name, KIND_REGISTRY, writable=True),
        "consumer": Segment.attach(c.state.seg.name, KIND_CONSUMER, writable=True),
    }
    out = procs.queue()
    proc = procs.start(trust_workers.publish_numbered, socket_path, "ticks", N, out)
    got: list[int] = []
    errors: list[str] = []
    try:
        todo = sorted(scribbles, key=lambda s: s[0])
        deadline = time.monotonic() + DEADLINE_S
        report = None
        while report is None and time.monotonic() < deadline:
            while todo and todo[0][0] * N <= len(got):
                _, (kind, q), word = todo.pop(0)
                segs[kind].q[q] = word
            _recv_some(c, got, errors)
            try:
                report = out.get_nowait()
            except queue.Empty:
                pass
        if report is None:
            report = out.get(timeout=REPORT_WAIT_S)
        assert report[0] == "done", f"the producer raised a raw exception:\n{report[1]}"
        assert procs.join(proc) == 0
        _, sent, _producer_errors = report
        assert all(seq < sent for seq in got), "a message beyond what was published"
        assert got == sorted(set(got)), "a message delivered twice or out of order"

        # Liveness: once a sane topology is out, the consumer delivers new messages.
        _heal(socket_path, errors)
        with Producer(socket_path) as p:
            fresh = list(range(N, N + AFTER_HEAL))
            for seq in fresh:
                p.publish("ticks", numbered(seq))
            after: list[int] = []
            deadline = time.monotonic() + DEADLINE_S
            while fresh[-1] not in after and time.monotonic() < deadline:
                _recv_some(c, after, errors)
            assert fresh[-1] in after, f"no delivery after healing (errors: {errors})"
            assert all(seq < N + AFTER_HEAL for seq in after)
    finally:
        for seg in segs.values():
            seg.close()
        try:
            c.close()
        except MyceliumError:
            pass
        broker.stop()  # type: ignore[attr-defined]


def _two_generations(name: str) -> Registry:
    reg = Registry.create(name)
    reg.publish(Topology(broker_id="old"))
    reg.publish(Topology(broker_id="new"))
    return reg


@pytest.mark.parametrize(
    "scribble",
    [
        lambda q, gen: (REGISTRY_GENERATION_Q, gen - 1),  # points at the stale buffer
        lambda q, gen: (REGISTRY_GENERATION_Q, gen + 2),  # the right buffer, the wrong stamp
        lambda q, gen: (_live_q(gen) + 3, q[_live_q(gen) + 3] ^ 1),  # the document itself
        lambda q, gen: (_live_q(gen), (1 << 64) - 1),  # its length
    ],
    ids=["generation_back", "generation_ahead", "document", "length"],
)
def test_a_scribbled_registry_is_refused_not_misread(scribble: Callable) -> None:
    """Never the previous topology, never an altered one: SegmentError until the
    coordinator, which notices (``intact``), publishes again."""
    name = f"/myc-test-R.{os.getpid()}"
    reg = _two_generations(name)
    view = RegistryView.attach(name)
    try:
        gen = reg.generation
        assert reg.intact() and view.read()[1].broker_id == "new"
        q, word = scribble(reg.q, gen)
        reg.q[q] = word
        with pytest.raises(SegmentError, match="unreadable topology"):
            view.read()
        assert not reg.intact()
        reg.publish(Topology(broker_id="repaired"))
        assert reg.intact() and view.read()[1].broker_id == "repaired"
    finally:
        view.close()
        reg.close()
        reg.seg.unlink()


def _live_q(gen: int) -> int:
    return (REGISTRY_BUFFER_OFF + (gen & 1) * REGISTRY_BUFFER_BYTES) // 8


def test_the_coordinator_repairs_a_scribbled_registry(
    make_broker: Callable[..., object],
) -> None:
    broker = make_broker(CONFIG)
    socket_path: str = broker.socket  # type: ignore[attr-defined]
    with Consumer("ticks", socket_path=socket_path) as c:
        raw = Segment.attach(c.watch.registry.seg.name, KIND_REGISTRY, writable=True)
        try:
            raw.q[REGISTRY_GENERATION_Q] -= 1  # readers would see the previous topology

            def sane() -> bool:
                try:
                    return c.watch.registry.read()[1].topic("ticks") is not None
                except SegmentError:
                    return False

            wait_for(sane, 10.0, "the coordinator to publish the registry again")
        finally:
            raw.close()
