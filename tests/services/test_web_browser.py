"""The dashboard's web page in a real browser: ``mycelium demo --http`` runs, headless
Chromium loads the page, and the numbers it renders change and agree with the broker's
own stats (``mycelium status --json``). The screenshot goes to the test's temp dir."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from web_helpers import Chromium, Command, Page

from mycelium.shm.segment import broker_id_for, list_segments

TOPICS = ("market_data", "signals", "execution")
TABLES = ("trades", "books", "signals", "positions")

#: What the page shows, read in one evaluation (a loaded machine makes each one slow).
READ = """(() => {
  const num = (el) => (el ? Number(el.textContent.replaceAll(",", "")) : null);
  const published = {};
  for (const row of document.querySelectorAll("#topics tr[data-topic]")) {
    published[row.dataset.topic] = num(row.querySelector("[data-field=published]"));
  }
  const rows = {};
  for (const id of %s) rows[id] = document.querySelectorAll(`#${id} td:not(.empty)`).length;
  return {
    broker: document.getElementById("broker")?.textContent ?? "",
    published, rows,
    stats_seq: num(document.getElementById("stats-seq")),
    seen: num(document.getElementById("seen-market_data")),
    pnl: document.getElementById("pnl-usd")?.textContent ?? "",
    sparklines: document.querySelectorAll("#topics svg polyline").length,
  };
})()""" % json.dumps(TABLES)  # noqa: UP031 (the JS is full of braces)


def broker_published(socket: str) -> dict[str, int]:
    """The broker's published count per topic, from ``mycelium status --json``."""
    out = subprocess.run([sys.executable, "-m", "mycelium", "status", "--json", "--socket",
                          socket], capture_output=True, check=True, timeout=60).stdout  # fmt: skip
    return {t["name"]: t["published"] for t in json.loads(out)["topics"]}


async def check_page(page: Page, shot: Path) -> dict[str, Any]:
    first = await page.poll(READ, lambda r: r["published"].get("market_data"), "the topics")
    socket = first["broker"].split(" on ", 1)[1].split(" · ", 1)[0]

    # The rendered numbers change...
    count = first["published"]["market_data"]
    await page.poll(READ, lambda r: r["published"]["market_data"] > count, "a newer count")

    # ...and agree with the broker: counts drawn from a stats sample that began after
    # `before` was taken lie between `before` and `after`.
    before = await asyncio.to_thread(broker_published, socket)
    seq = (await page.evaluate(READ))["stats_seq"]
    shown = await page.poll(READ, lambda r: r["stats_seq"] >= seq + 2, "fresh broker stats")
    after = await asyncio.to_thread(broker_published, socket)
    for t in TOPICS:
        assert before[t] <= shown["published"][t] <= after[t], (t, before, shown, after)

    # The rest of the page comes from the same stream: trades, books, signals, positions,
    # the dashboard's own counts, the PnL and the sparklines.
    await page.poll(READ, lambda r: all(r["rows"].values()) and r["seen"] > 0
                    and r["pnl"].startswith("$") and r["sparklines"] == 3,
                    "every panel filled")  # fmt: skip
    await page.screenshot(shot)
    return {"socket": socket, "shown": shown["published"]}


def test_page_in_chromium_agrees_with_broker_stats(tmp_path: Path) -> None:
    demo = Command(tmp_path, "demo", "demo", "--json", "--duration", "600", "--http", "0")
    browser: Chromium | None = None
    try:
        browser = Chromium(tmp_path, demo.url())
        port = browser.devtools_port()

        async def drive() -> dict[str, Any]:
            async with Page.open(port) as page:
                return await check_page(page, tmp_path / "dashboard.png")

        seen = asyncio.run(drive())
    finally:
        if browser is not None:
            browser.kill()
        code = demo.stop(signal.SIGINT)
    assert code == 0, demo.stderr()
    shot = (tmp_path / "dashboard.png").read_bytes()
    assert shot.startswith(b"\x89PNG\r\n\x1a\n") and len(shot) > 20_000
    result = json.loads(demo.out.read_text())
    assert result["broker"]["socket"] == seen["socket"]
    assert result["topics"]["market_data"]["published"] >= seen["shown"]["market_data"]
    assert list_segments(broker_id_for(seen["socket"])) == []
