#!/usr/bin/env python3
"""Leak check: clients come, move messages and go, round after round; nothing may pile up.

    python tools/leak_check.py --rounds 10 --messages 100000 --size 1024

Starts a broker on a private socket (``bench_broker.Broker``, embedded default config)
and two long-lived client processes. Each round, one opens a Consumer on market_data,
the other opens a Producer and publishes M numbered messages of B bytes one at a time,
then both close their handles; the consumer checks every message (stress.SeqCheck).
After each round it prints, for the broker and each client process: RSS, open file
descriptors and mapped Mycelium segments, and the segments in /dev/shm.

It exits 1 if a round loses or reorders a message, if any process's RSS grows by more
than 100 MB over the run (from before the first round to after the last), or if, once
the clients have closed, the broker's open fds, the segments in /dev/shm or any process's
mapped segments do not return to their baseline within a few seconds. Every process it
starts is stopped and nothing is left in /dev/shm, even on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import psutil
from bench_broker import READY_TIMEOUT_S, Broker
from stress import (
    END_SEQ,
    HEAD,
    RECV_BATCH,
    TOPIC,
    Children,
    SeqCheck,
    ignore_sigint,
    open_fds,
    rss,
    run_with_broker,
)

#: The plan's bound on memory growth over the run, in bytes.
GROWTH_LIMIT_BYTES = 100_000_000
#: How long a round may take, and how long fds and segments get to return to baseline.
ROUND_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 10.0
POLL_S = 0.05
MB = 1_000_000
SHM_PREFIX = "/dev/shm/myc-"


def mapped_segments(pid: int) -> int:
    """How many Mycelium shared-memory objects ``pid`` has mapped."""
    try:
        return sum(m.path.startswith(SHM_PREFIX) for m in psutil.Process(pid).memory_maps())
    except psutil.Error:
        return 0


@dataclass(frozen=True)
class Usage:
    """What one process holds at a moment."""

    rss: int
    fds: int
    maps: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        return cls(rss(pid), open_fds(pid), mapped_segments(pid))


def _own_usage() -> Usage:
    """This process's usage once its garbage is collected (retained memory only)."""
    gc.collect()
    return Usage.of(os.getpid())


# -- children -------------------------------------------------------------------------
def round_consumer(sock: str, commands: Any, replies: Any) -> None:
    """Per round: subscribe, say so, read and check M messages and END, close, report."""
    ignore_sigint()
    from mycelium import Consumer

    replies.put(_own_usage())
    while (messages := commands.get(timeout=ROUND_TIMEOUT_S)) is not None:
        check = SeqCheck(1)
        with Consumer(TOPIC, socket_path=sock) as c:
            replies.put("subscribed")
            deadline = time.monotonic() + ROUND_TIMEOUT_S
            while not check.complete and time.monotonic() < deadline:
                check.feed(c.recv_many(RECV_BATCH, timeout=0.1))
        ok = check.complete and check.received == messages and not check.errors
        replies.put((ok, check.examples, _own_usage()))


def round_producer(sock: str, size: int, commands: Any, replies: Any) -> None:
    """Per round: connect, publish M numbered messages one by one and END, close, report."""
    ignore_sigint()
    from mycelium import Producer

    buf = bytearray(size)
    replies.put(_own_usage())
    while (messages := commands.get(timeout=ROUND_TIMEOUT_S)) is not None:
        with Producer(socket_path=sock, name="leak-check") as p:
            publish = p.publish
            for seq in range(messages):
                HEAD.pack_into(buf, 0, 0, seq)
                publish(TOPIC, buf)
            p.publish(TOPIC, HEAD.pack(0, END_SEQ))
        replies.put(_own_usage())


# -- the parent -------------------------------------------------------------------------
def settle(what: str, current: Any, baseline: Any) -> bool:
    """Poll ``current()`` until it equals ``baseline``; False (and a message) if it never does."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while (value := current()) != baseline:
        if time.monotonic() > deadline:
            print(f"FAIL: {what} is {value}, baseline {baseline}, {SETTLE_TIMEOUT_S:g}s after")
            return False
        time.sleep(POLL_S)
    return True


def describe(name: str, now: Usage, base: Usage) -> str:
    return (
        f"{name} RSS {now.rss / MB:6.1f} MB ({(now.rss - base.rss) / MB:+5.1f}) "
        f"fds {now.fds}/{base.fds} maps {now.maps}/{base.maps}"
    )


def check_rounds(args: argparse.Namespace, broker: Broker, children: Children) -> bool:
    from mycelium.shm.segment import broker_id_for, list_segments

    ctx = children.ctx
    c_cmd, c_out, p_cmd, p_out = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Queue()
    children.start(round_consumer, broker.sock, c_cmd, c_out)
    children.start(round_producer, broker.sock, args.size, p_cmd, p_out)
    c_base, p_base = c_out.get(timeout=READY_TIMEOUT_S), p_out.get(timeout=READY_TIMEOUT_S)
    pid = broker.proc.pid
    b_base = Usage.of(pid)
    broker_id = broker_id_for(broker.sock)
    seg_base = list_segments(broker_id)
    print(
        f"leak check: {args.rounds} rounds x {args.messages:,} messages of {args.size} B; "
        f"baseline: {describe('broker', b_base, b_base)}, segments {len(seg_base)}",
        flush=True,
    )
    ok = True
    for r in range(1, args.rounds + 1):
        t0 = time.monotonic()
        c_cmd.put(args.messages)
        if c_out.get(timeout=ROUND_TIMEOUT_S) != "subscribed":
            raise RuntimeError("the consumer did not subscribe")
        p_cmd.put(args.messages)
        p_now = p_out.get(timeout=ROUND_TIMEOUT_S)
        delivered, examples, c_now = c_out.get(timeout=ROUND_TIMEOUT_S)
        elapsed = time.monotonic() - t0
        if not delivered:
            print(f"FAIL: round {r} lost or reordered messages: {examples}")
            ok = False
        ok &= settle(f"round {r}: segments in /dev/shm", lambda: list_segments(broker_id), seg_base)
        ok &= settle(f"round {r}: broker fds", lambda: open_fds(pid), b_base.fds)
        ok &= settle(
            f"round {r}: broker mapped segments", lambda: mapped_segments(pid), b_base.maps
        )
        for name, now, base in (("producer", p_now, p_base), ("consumer", c_now, c_base)):
            if (now.fds, now.maps) != (base.fds, base.maps):
                print(f"FAIL: round {r}: {name} holds {now} after closing, baseline {base}")
                ok = False
        b_now = Usage.of(pid)
        print(
            f"round {r:>3}/{args.rounds}: {args.messages:,} msgs in {elapsed:5.2f}s | "
            f"{describe('broker', b_now, b_base)} | {describe('producer', p_now, p_base)} | "
            f"{describe('consumer', c_now, c_base)} | segments {len(list_segments(broker_id))}",
            flush=True,
        )
    c_cmd.put(None)
    p_cmd.put(None)
    growth = {"broker": b_now.rss - b_base.rss, "producer": p_now.rss - p_base.rss,
              "consumer": c_now.rss - c_base.rss}  # fmt: skip
    print(
        "RSS growth over the run: "
        + ", ".join(f"{name} {g / MB:+.1f} MB" for name, g in growth.items())
        + f" (limit {GROWTH_LIMIT_BYTES / MB:.0f} MB)"
    )
    for name, g in growth.items():
        if g > GROWTH_LIMIT_BYTES:
            print(f"FAIL: {name} RSS grew by {g / MB:.1f} MB")
            ok = False
    print("PASS" if ok else "FAIL")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--messages", type=int, required=True, help="messages per round")
    ap.add_argument("--size", type=int, required=True, help=f"bytes per message (>= {HEAD.size})")
    args = ap.parse_args()
    if args.rounds < 1 or args.messages < 1 or args.size < HEAD.size:
        ap.error(f"need --rounds >= 1, --messages >= 1 and --size >= {HEAD.size}")
    return run_with_broker(
        "myc-leak-", lambda broker, children: check_rounds(args, broker, children)
    )


if __name__ == "__main__":
    sys.exit(main())
