"""Configuration reload under traffic: changes take effect and no message is lost.

Two producers stream on market_data and signals while the config file is rewritten and
reloaded six times, alternately by SIGHUP and by ``mycelium reload``: the first reload
adds a topic, every one changes market_data's buffer (and so its ring size for new
lanes). Each reload must show in the broker's stats while the streams go on; the added
topic must carry messages at once; and both streams must arrive whole and in order.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from integration_env import (
    BrokerProcess,
    Clients,
    Processes,
    broker_config,
    expect_whole_stream,
    mycelium_cli,
    topic_stats,
    wait_for,
)
from integration_workers import ConsumerSpec, ProducerSpec

RELOADS = 6
#: market_data's buffer_size per reload, and the ring each gives (x 128 B, power of two).
BUFFERS = {100_000: 16 << 20, 200_000: 32 << 20}
NEW_TOPIC = "alerts"
#: (topic, producer tag, msg/s) of the streams that run through the reloads.
STREAMS = (("market_data", 1, 3000), ("signals", 2, 1000))


def test_config_reloads_under_traffic_lose_nothing(
    make_broker: Callable[..., BrokerProcess], procs: Processes
) -> None:
    broker = make_broker(broker_config())
    assert broker.config is not None
    clients = Clients(procs)
    consumers = [
        clients.consumer(ConsumerSpec(broker.socket, topic, (tag,)), f"{topic} consumer")
        for topic, tag, _ in STREAMS
    ]
    Clients.wait_ready(*consumers)
    producers = [
        clients.producer(ProducerSpec(broker.socket, topic, tag, rate=rate, deadline_s=120))
        for topic, tag, rate in STREAMS
    ]
    wait_for(lambda: all(c.count >= 300 for c in consumers), 20, "traffic")

    for i in range(RELOADS):
        buffer = list(BUFFERS)[(i + 1) % len(BUFFERS)]
        broker.config.write_text(
            broker_config(market_data={"buffer_size": buffer}, **{NEW_TOPIC: {}})
        )
        if i % 2:
            out = mycelium_cli("reload", "--socket", broker.socket)
            assert out.returncode == 0, out.stderr
        else:
            os.kill(broker.proc.pid, signal.SIGHUP)
        wait_for(
            lambda b=BUFFERS[buffer]: topic_stats(broker, "market_data")["lane_bytes"] == b,
            10,
            f"reload {i + 1} to take effect",
        )
        before = [c.count for c in consumers]
        wait_for(
            lambda before=before: all(
                c.count >= n + 100 for c, n in zip(consumers, before, strict=True)
            ),
            20,
            f"traffic after reload {i + 1}",
        )

    alerts_consumer = clients.consumer(ConsumerSpec(broker.socket, NEW_TOPIC, (3,)))
    Clients.wait_ready(alerts_consumer)
    alerts = clients.producer(ProducerSpec(broker.socket, NEW_TOPIC, 3, count=1000))
    assert alerts.result()["sent"] == 1000
    expect_whole_stream(alerts_consumer.result(), 3, 1000)

    for (_, tag, _), producer, consumer in zip(STREAMS, producers, consumers, strict=True):
        producer.stop()
        expect_whole_stream(consumer.result(), tag, producer.result()["sent"])
