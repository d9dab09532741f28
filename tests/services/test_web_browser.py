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


def published_cell(topic: str) -> str:
    """JS: the published count the page shows for ``topic`` (commas stripped), or null."""
    return (f"(c => c && Number(c.textContent.replaceAll(',', '')))(document.querySelector("
            f"'[data-topic={topic}] [data-field=published]'))")  # fmt: skip


def number(element_id: str) -> str:
    return f"Number(document.getElementById('{element_id}').textContent.replaceAll(',', ''))"


def broker_published(socket: str) -> dict[str, int]:
    """The broker's published count per topic, from ``mycelium status --json``."""
    out = subprocess.run([sys.executable, "-m", "mycelium", "status", "--json", "--socket",
                          socket], capture_output=True, check=True, timeout=30).stdout  # fmt: skip
    return {t["name"]: t["published"] for t in json.loads(out)["topics"]}


async def check_page(page: Page, shot: Path) -> dict[str, Any]:
    await page.wait_for(published_cell("market_data"), what="the topic table")
    header = await page.evaluate("document.getElementById('broker').textContent")
    socket = header.split(" on ", 1)[1].split(" · ", 1)[0]

    # The rendered numbers change...
    first = await page.evaluate(published_cell("market_data"))
    await page.wait_for(f"{published_cell('market_data')} > {first}", what="a newer count")

    # ...and agree with the broker: every count shown after a stats sample that began
    # after `before` was taken lies between `before` and `after`.
    before = await asyncio.to_thread(broker_published, socket)
    seq = await page.evaluate(number("stats-seq"))
    await page.wait_for(f"{number('stats-seq')} >= {seq + 2}", what="fresh broker stats")
    shown = {t: await page.evaluate(published_cell(t)) for t in TOPICS}
    after = await asyncio.to_thread(broker_published, socket)
    for t in TOPICS:
        assert before[t] <= shown[t] <= after[t], (t, before, shown, after)

    # The rest of the page is drawn from the same stream: trades, books, signals, PnL.
    for table in ("trades", "books", "signals", "positions"):
        await page.wait_for(f"document.querySelectorAll('#{table} td:not(.empty)').length > 0",
                            what=f"rows in {table}")  # fmt: skip
    await page.wait_for(f"{number('seen-market_data')} > 0", what="the dashboard's counts")
    await page.wait_for("document.getElementById('pnl-usd').textContent.startsWith('$')")
    await page.wait_for("document.querySelectorAll('#topics svg polyline').length === 3",
                        what="three sparklines")  # fmt: skip
    await page.screenshot(shot)
    return {"socket": socket, "shown": shown}


def test_page_in_chromium_agrees_with_broker_stats(tmp_path: Path) -> None:
    demo = Command(tmp_path, "demo", "demo", "--json", "--duration", "600", "--http", "0")
    browser: Chromium | None = None
    try:
        url = demo.url()
        browser = Chromium(tmp_path, url)
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
