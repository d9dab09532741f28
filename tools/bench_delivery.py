"""Delivery-guarantee targets (issue 9): what manual acknowledgement costs a receiver,
and how soon a restarted durable consumer gets its first backlog message.

    python tools/bench_delivery.py            # full counts (run on a quiet machine)
    python tools/bench_delivery.py --quick    # smaller counts, a smoke run

Receive throughput: a ring is filled with N messages of 64 B, then a durable consumer
drains it with ``recv`` one message at a time, with ack="auto" and with ack="manual"
and ``ack()`` every 100 messages (each case on a fresh durable name, best of 3 runs).
Restart latency: a durable consumer leaves, 10 000 messages are published, and the time
from the start of ``Consumer(...)`` to its first ``recv`` is measured (median of 5).
Targets: manual ack costs <= 10% of auto throughput; first backlog message <= 50 ms.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mycelium import Consumer, Producer
from mycelium.client.admin import admin_request
from mycelium.control.wire import StatsRequest
from mycelium.errors import MyceliumError

TOPIC = "market_data"
PAYLOAD = bytes(64)
READY_TIMEOUT_S = 15.0


def start_broker(sock: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mycelium", "broker", "--socket", sock, "--log-level", "WARNING"]
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            admin_request(StatsRequest(), sock)
            return proc
        except MyceliumError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("broker did not start") from None
            time.sleep(0.02)


def drain_rate(sock: str, name: str, n: int, manual: bool) -> float:
    """Messages per second received by a durable consumer draining ``n`` waiting ones."""
    Consumer(TOPIC, socket_path=sock, durable=name).close()
    with Producer(socket_path=sock) as p:
        for start in range(0, n, 1000):
            p.publish_many(TOPIC, [PAYLOAD] * min(1000, n - start))
    ack = "manual" if manual else "auto"
    with Consumer(TOPIC, socket_path=sock, durable=name, ack=ack) as c:
        recv, acknowledge = c.recv, c.ack
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            recv(1.0)
            if manual and i % 100 == 0:
                acknowledge()
        rate = n / (time.perf_counter() - t0)
    admin_delete(sock, name)
    return rate


def admin_delete(sock: str, name: str) -> None:
    from mycelium.control.wire import DeleteDurable

    admin_request(DeleteDurable(name=name), sock)


def first_backlog_ms(sock: str, name: str) -> float:
    Consumer(TOPIC, socket_path=sock, durable=name).close()
    with Producer(socket_path=sock) as p:
        p.publish_many(TOPIC, [PAYLOAD] * 10_000)
        t0 = time.perf_counter()
        with Consumer(TOPIC, socket_path=sock, durable=name) as c:
            c.recv(1.0)
            took = (time.perf_counter() - t0) * 1000
    admin_delete(sock, name)
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    args = ap.parse_args(argv)
    # The backlog waits in one 16 MiB market_data ring (88-byte frames: a 24-byte header
    # and 64 bytes): 150k fit, 200k do not.
    n = 100_000 if args.quick else 150_000
    with tempfile.TemporaryDirectory() as tmp:
        sock = str(Path(tmp) / "bench.sock")
        broker = start_broker(sock)
        try:
            auto = max(drain_rate(sock, f"auto{k}", n, False) for k in range(3))
            manual = max(drain_rate(sock, f"manual{k}", n, True) for k in range(3))
            latency = statistics.median(first_backlog_ms(sock, f"r{k}") for k in range(5))
        finally:
            broker.send_signal(signal.SIGTERM)
            broker.wait(15)
    cost = 1 - manual / auto
    print(
        f"mycelium delivery bench ({n} messages of {len(PAYLOAD)} B{', quick' if args.quick else ''})"
    )
    print(f"recv, ack=auto                     {auto / 1e6:6.2f} M msg/s")
    print(f"recv, ack=manual, ack() every 100  {manual / 1e6:6.2f} M msg/s  (cost {cost:.1%})")
    print(f"restarted durable, first backlog   {latency:6.1f} ms (median of 5)")
    print(f"target manual ack cost <= 10%        {'met' if cost <= 0.10 else 'NOT met'}")
    print(f"target first backlog <= 50 ms        {'met' if latency <= 50 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
