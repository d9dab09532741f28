"""Plain-text rendering of the stats document for ``mycelium status``."""

from __future__ import annotations

from typing import Any

__all__ = ["render_stats"]


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def render_stats(doc: dict[str, Any]) -> str:
    """Human-readable broker status: broker line, topics, consumers, producers, lanes
    (ring size and fill), segments."""
    b = doc["broker"]
    out = [
        f"broker {b['id']} pid {b['pid']} on {b['socket']}: up {b['uptime_s']:.0f}s, "
        f"{b['connections']} connections, RSS {_mib(b['rss_bytes'])}, CPU {b['cpu_percent']}%",
        "",
        _table(
            ["topic", "routing", "lanes", "prod", "cons", "published", "delivered",
             "pub/s", "dlv/s", "dropped", "timeouts"],
            [
                [t["name"], t["routing"] + (" lossy" if t["lossy"] else ""), t["lanes"],
                 t["producers"], t["consumers"], t["published"], t["delivered"],
                 f"{t['publish_rate']:.0f}", f"{t['deliver_rate']:.0f}", t["dropped"],
                 t["backpressure_timeouts"]]
                for t in doc["topics"]
            ],
        ),
    ]  # fmt: skip
    if doc["consumers"]:
        out += [
            "",
            _table(
                ["consumer", "name", "topic", "group", "pid", "alive", "durable", "received",
                 "lag", "lag s", "lost", "corrupt"],
                [
                    [c["id"], c["name"] or "-", c["topic"], c["group"], c["pid"], c["alive"],
                     c.get("durable") or "-", c["received"], c["lag"],
                     f"{c['lag_seconds']:.1f}", c["lost"], c["corrupt"]]
                    for c in doc["consumers"]
                ],
            ),
        ]  # fmt: skip
    if doc["producers"]:
        out += [
            "",
            _table(
                ["producer", "name", "pid", "alive", "topics", "published"],
                [
                    [p["id"], p["name"] or "-", p["pid"], p["alive"], ",".join(p["topics"]),
                     p["published"]]
                    for p in doc["producers"]
                ],
            ),
        ]  # fmt: skip
    if doc.get("bridges"):
        out += ["", _bridges_table(doc["bridges"])]
    if doc["lanes"]:
        out += [
            "",
            _table(
                ["lane", "topic", "producer", "for", "published", "ring", "fill", "timeouts"],
                [
                    [lane["uid"], lane["topic"], lane["producer_name"] or lane["producer"],
                     lane["consumer"] or "all", lane["published"],
                     _mib(lane["capacity_bytes"]), f"{lane['fill_ratio']:.1%}",
                     lane["backpressure_timeouts"]]
                    for lane in doc["lanes"]
                ],
            ),
        ]  # fmt: skip
    seg = doc["segments"]
    out += ["", f"segments: {seg['count']} ({_mib(seg['bytes'])})"]
    return "\n".join(out)


def _bridges_table(bridges: list[dict[str, Any]]) -> str:
    """One row per bridged topic: the figures its bridge last reported."""
    rows = []
    for b in bridges:
        link = f"{b['server'] or '-'}{'' if b['connected'] else ' (down)'}"
        for t, f in b["exports"].items():
            rows.append([b["name"], b["pid"], link, b["reconnects"], "export", t,
                         f.get("exported", 0), f.get("in_flight", 0), "-", f.get("duplicates", 0),
                         "-"])  # fmt: skip
        for t, f in b["imports"].items():
            rows.append([b["name"], b["pid"], link, b["reconnects"], "import", t,
                         f.get("imported", 0), "-", f.get("acks_pending", 0),
                         f.get("duplicates_dropped", 0), f.get("lag", 0)])  # fmt: skip
    headers = ["bridge", "pid", "nats", "reconnects", "way", "topic", "messages", "in flight",
               "acks pending", "duplicates", "lag"]  # fmt: skip
    return _table(headers, rows)
