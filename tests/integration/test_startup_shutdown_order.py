"""Start-up and shutdown orders: services and the broker come and go in any order.

* Clients started before the broker wait for it (``wait_for_broker``), connect when it
  comes up, and exchange every message.
* The broker stopped while clients run: the data keeps flowing, a new client is refused
  clearly, and the running clients then leave while it is down, each closing cleanly.
  What they leave in /dev/shm is taken away either by the next broker on that socket or
  by ``mycelium cleanup``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from integration_env import (
    BrokerProcess,
    Clients,
    Processes,
    expect_whole_stream,
    mycelium_cli,
    wait_for,
)
from integration_workers import ConsumerSpec, ProducerSpec

from mycelium import Producer
from mycelium.errors import BrokerUnavailable

#: How long clients started before the broker are prepared to wait for it.
WAIT_FOR_BROKER_S = 30.0
MESSAGES = 5000


def test_clients_started_before_the_broker_wait_and_connect(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    broker = make_broker(start=False)
    clients = Clients(procs)
    consumer = clients.consumer(
        ConsumerSpec(broker.socket, "market_data", (1,), wait_for_broker=WAIT_FOR_BROKER_S)
    )
    producer = clients.producer(
        ProducerSpec(
            broker.socket, "market_data", 1, count=MESSAGES, wait_for_broker=WAIT_FOR_BROKER_S
        ),
        go=False,
    )
    wait_for(lambda: consumer.started and producer.started, 30, "the clients to start")
    assert not consumer.ready and not producer.ready

    broker.start()
    Clients.wait_ready(consumer, producer)
    producer.go()
    assert producer.result()["sent"] == MESSAGES
    expect_whole_stream(consumer.result(), 1, MESSAGES)


@pytest.mark.parametrize("recovery", ["next_broker", "cleanup_command"])
def test_clients_run_on_and_leave_while_the_broker_is_down(
    broker: BrokerProcess, procs: Processes, recovery: str
) -> None:
    clients = Clients(procs)
    consumer = clients.consumer(ConsumerSpec(broker.socket, "market_data", (1,)))
    Clients.wait_ready(consumer)
    producer = clients.producer(ProducerSpec(broker.socket, "market_data", 1, rate=2000))
    wait_for(lambda: consumer.count >= 500, 20, "traffic")

    assert broker.stop() == 0
    received_at_stop = consumer.count
    wait_for(lambda: consumer.count >= received_at_stop + 1000, 20, "traffic while down")
    with pytest.raises(BrokerUnavailable):
        Producer(socket_path=broker.socket)

    producer.stop()  # both leave while the broker is down
    sent = producer.result()["sent"]
    expect_whole_stream(consumer.result(), 1, sent)
    assert producer.proc.exitcode == 0 and consumer.proc.exitcode == 0
    left = broker.leftovers()
    registry = f"/myc-{broker.broker_id}-R."
    assert any(n.startswith(registry) for n in left) and len(left) > 1

    if recovery == "next_broker":
        broker.start()
        wait_for(
            lambda: [n[: len(registry)] for n in broker.leftovers()] == [registry],
            20,
            "the next broker to remove what the departed clients left",
        )
    else:
        out = mycelium_cli("cleanup", "--socket", broker.socket)
        assert out.returncode == 0, out.stderr
        assert broker.leftovers() == []
        assert all(name in out.stdout for name in left), out.stdout
