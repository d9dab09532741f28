#!/usr/bin/env python3
"""Instructions per message on one lane, counted by valgrind: an A/B that load cannot move.

How this works
--------------
Wall-clock figures on a shared 2-core machine move by a third from run to run; the number
of instructions the interpreter executes does not. For each mode this runs a small
scenario in one process (a lane, a consumer state, a writer and a reader, no broker)
under ``valgrind --tool=callgrind`` twice, with N messages and with none, and prints the
difference divided by N: the cost of one message, start-up excluded. ``--tree`` points
the scenario at another checkout (``PYTHONPATH``), so two trees compare side by side in
one run. Hash seeds and OpenBLAS threads are pinned: both move the counts otherwise.

Modes: ``pub`` (``publish``), ``pair`` (``publish`` then ``poll``), ``pubts`` (``publish``
on a lane that stamps the publish time), ``batch`` (``publish_many`` of 64 then
``poll_many``, per message).

    python tools/count_instructions.py                       # this tree, every mode
    python tools/count_instructions.py --tree ../old --tree .  # A/B
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("pub", "pair", "pubts", "batch")
BATCH = 64
COLLECTED = re.compile(r"Collected : (\d+)")


def scenario(mode: str, n: int, size: int) -> None:
    """The measured process: ``n`` messages of ``size`` bytes on a fresh lane."""
    from mycelium.shm import (
        ConsumerState,
        ConsumerStateView,
        LaneReader,
        LaneWriter,
        Segment,
        create_consumer_segment,
        create_lane_segment,
        segment_name,
    )
    from mycelium.shm.layout import KIND_LANE
    from mycelium.shm.segment import unlink_quietly

    base = f"ci{os.getpid()}"
    lane_name, state_name = segment_name(base, "L", 1), segment_name(base, "C", 1)
    bell = segment_name(base, "D", 1)
    made = [create_lane_segment(lane_name, 8 << 20, 65536, 1, os.getpid())]
    made.append(create_consumer_segment(state_name, bell, 1, os.getpid()))
    try:
        w = LaneWriter(Segment.attach(lane_name, KIND_LANE, writable=True))
        if mode == "pubts":  # (a tree from before per-topic timestamps has no such field)
            w.timestamps = True
        w.set_readers([ConsumerStateView.attach(state_name, bell)])
        r = LaneReader(Segment.attach(lane_name, KIND_LANE), ConsumerState.attach(state_name, bell))
        data = b"x" * size
        publish, poll = w.publish, r.poll
        if mode == "pair":
            for _ in range(n):
                publish(data)
                poll()
        elif mode == "batch":
            items = [data] * BATCH
            for _ in range(n // BATCH):
                w.publish_many(items)
                r.poll_many(BATCH)
        else:
            for _ in range(n):
                publish(data)
    finally:
        for seg in made:
            seg.unlink()
        unlink_quietly("sem:" + bell)


def count(tree: Path, mode: str, n: int, size: int) -> int:
    """Instructions of one scenario run under callgrind."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory(prefix="myc-cg-") as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
               sys.executable, __file__, "--child", mode, str(n), str(size)]  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    found = COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"{mode} in {tree}: callgrind failed: {proc.stderr[-800:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", type=Path, action="append", help="a checkout (default: this one)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    ap.add_argument("--messages", type=int, default=40_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        scenario(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt install valgrind)", file=sys.stderr)
        return 2
    trees = [t.resolve() for t in args.tree or [ROOT]]
    modes = [m for m in args.modes.split(",") if m]
    if bad := [m for m in modes if m not in MODES]:
        ap.error(f"unknown modes {bad}; known: {list(MODES)}")
    print(f"instructions per message, {args.size} B, {args.messages:,} messages minus none")
    print(f"{'mode':<8}" + "".join(f"{t.name:>16}" for t in trees))
    for mode in modes:
        cells = []
        for tree in trees:
            try:
                per = count(tree, mode, args.messages, args.size) - count(tree, mode, 0, args.size)
                cells.append(f"{per / args.messages:>16,.0f}")
            except RuntimeError as exc:  # the mode does not exist in an older tree
                cells.append(f"{'failed':>16}")
                print(exc, file=sys.stderr)
        print(f"{mode:<8}" + "".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
