"""Retry loops back off, and an earlier broker's leftovers never block a new one."""

from __future__ import annotations

import time
from collections.abc import Callable

from broker_helpers import BrokerProcess, wait_for

from mycelium import Consumer, Producer
from mycelium.client.control import RECONNECT_JITTER, RECONNECT_WAIT_MAX_S
from mycelium.coordinator.state_file import state_path
from mycelium.shm.segment import unlink_quietly

#: Resumes counted in the window below; capped backoff spaces them at least this far.
RESUMES = 3
MIN_GAP_S = RECONNECT_WAIT_MAX_S * (1 - RECONNECT_JITTER)


def test_registry_lost_consumers_back_off(make_broker: Callable[..., BrokerProcess]) -> None:
    b = make_broker()
    c = Consumer("signals", socket_path=b.socket)
    try:
        b.kill()
        for name in b.leftovers():
            if "-R." in name:
                unlink_quietly(name)  # the registry is lost: the next broker forgets us
        state_path(b.socket).unlink()
        b.start()
        # A leftover consumer segment of the first broker does not block a new Subscribe.
        # (Another topic: the new broker's ids restart, and an entry of this pid on the
        # same topic would be taken for the old consumer's resume.)
        with (
            Consumer("market_data", socket_path=b.socket) as fresh,
            Producer(socket_path=b.socket) as p,
        ):
            p.publish("market_data", b"new broker")
            assert fresh.recv(timeout=5.0) == b"new broker"
        # The old consumer's resume is refused over and over: it must back off.
        wait_for(lambda: c.channel.reconnects >= 6, 60.0, "the backoff to reach its cap")
        first, started = c.channel.reconnects, time.monotonic()
        wait_for(lambda: c.channel.reconnects >= first + RESUMES, 60.0, "more resumes")
        assert time.monotonic() - started >= RESUMES * MIN_GAP_S * 0.9
    finally:
        c.close()
        b.stop()
        for name in b.leftovers():  # the first broker's consumer objects, ours to remove
            unlink_quietly(name)
