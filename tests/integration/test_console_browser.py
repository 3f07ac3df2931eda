"""`hotline demo --web` in a real headless browser: Debian's chromium driven by Playwright.

The demo runs as a user would start it (two gateway processes, mutual TLS, SQLite journals);
the page must show every event both watch floors printed, the encounter on the map (by the
markers' data attributes), a deadline counting down, the ESCALATION and the REALERT; and an
acknowledgement given on the page must reach the other party's journal. Screenshots are saved
in the test's folder and checked not to be blank.

Why Playwright rather than `chromium --headless --screenshot/--dump-dom`: the test must wait
for live events, read attributes and click a form; one-shot dumps cannot. Playwright drives
the system chromium (`executable_path`); its own browser download is never used.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
import signal
import sys
import zlib
from pathlib import Path

import pytest

from client.operator import ACKNOWLEDGED, OperatorClient
from hotline.v1 import bodies_pb2
from tests.cli.test_cli import clean_env

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLOOR_LINE = re.compile(
    r"^\[(JP|TW)\] \S+ (SENT|RECEIVED|DELIVERED|ACKNOWLEDGED|REJECTED|ESCALATION|REALERT"
    r"|LINK UP|LINK DOWN|SECURITY REFUSAL)\s+(?:\S+\s+\[\w+\]\s+\S+\s+…([0-9a-f]{8}))?"
)
PAGE_ANSWER = "Answered from the console page"


def not_blank(png: bytes) -> bool:
    """Whether a PNG shows something: a blank page's scanlines hold a handful of byte values,
    a drawn one hundreds."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data, offset = b"", 8
    while offset < len(png):
        length = int.from_bytes(png[offset : offset + 4], "big")
        kind = png[offset + 4 : offset + 8]
        if kind == b"IDAT":
            data += png[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return len(set(zlib.decompress(data))) > 64


async def read_until(stream: asyncio.StreamReader, lines: list[str], pattern: str) -> re.Match[str]:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError("the demo ended early:\n" + "".join(lines[-30:]))
        line = raw.decode(errors="replace")
        lines.append(line)
        match = re.search(pattern, line)
        if match:
            return match


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed")
async def test_the_demo_in_the_browser_shows_both_floors_the_map_and_takes_an_acknowledgement(
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright

    workdir = tmp_path / "demo"
    summary = tmp_path / "summary.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hotline.cli",
        "demo",
        "--web",
        "--web-listen",
        "127.0.0.1:0",
        "--web-wait",
        "60",
        "--plain",
        "--dir",
        str(workdir),
        "--summary-json",
        str(summary),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_env(tmp_path / "home"),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    reader: asyncio.Task[re.Match[str]] | None = None
    try:
        async with asyncio.timeout(60):
            tw_address = (await read_until(proc.stdout, lines, r"TW gateway: (127\.0\.0\.1:\d+)"))[
                1
            ]
            url = (await read_until(proc.stdout, lines, r"console: (http://\S+)"))[1]
        # The rest of the output is read while the browser works (the demo must not block).
        reader = asyncio.create_task(read_until(proc.stdout, lines, r"^Verdict: "))
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 860})
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                await page.goto(url)
                await page.wait_for_selector('#stream[data-state="live"]', timeout=20_000)

                # A deadline counts down: the FLASH report JP's busy watch does not answer.
                flash = '.card[data-party="JP"][data-kind="RECEIVED"][data-precedence="FLASH"]'
                countdown = await page.wait_for_selector(f"{flash} .countdown", timeout=60_000)
                assert countdown is not None
                first = await countdown.text_content() or ""
                assert first.startswith("ack due in"), first
                await page.wait_for_function(
                    """([selector, first]) => {
                        const text = document.querySelector(selector).textContent;
                        return text.startsWith("OVERDUE") || parseFloat(text.slice(11)) < first;
                    }""",
                    arg=[f"{flash} .countdown", float(first.split()[3])],
                    timeout=10_000,
                )

                # The missed deadline stands out on both floors.
                await page.wait_for_selector(
                    '.card[data-party="TW"][data-kind="ESCALATION"]', timeout=30_000
                )
                realert = await page.wait_for_selector(
                    '.card[data-party="JP"][data-kind="REALERT"]', timeout=30_000
                )
                assert realert is not None
                flash_id = await realert.get_attribute("data-message-id")
                assert flash_id

                # The map: both vessels with vectors, the CPA, the keep-clear circle, the
                # aircraft, the coastline and both ADIZ lines.
                for role in (
                    "reporting",
                    "reporting-vector",
                    "contact",
                    "cpa",
                    "keep-clear",
                    "manoeuvring",
                    "aircraft",
                    "aircraft-vector",
                ):
                    assert await page.locator(f'#map [data-feature="{role}"]').count() >= 1, role
                for party in ("JP", "TW"):
                    assert await page.locator(f'#map [data-adiz="{party}"]').count() == 1
                assert await page.locator("#map .leaflet-overlay-pane path").count() > 20
                links = page.locator('#links .dir[data-up="true"]')
                assert await links.count() == 4  # both directions, as each gateway sees them

                shot = await page.screenshot(path=str(tmp_path / "console-escalation.png"))
                assert not_blank(shot)

                # Acknowledge the re-alerted FLASH report from the page, as JP's watch.
                button = await realert.query_selector(".ackbtn")
                assert button is not None
                await button.click()
                form = page.locator(f'form.ack[data-party="JP"][data-message-id="{flash_id}"]')
                await form.locator('input[value="WILCO"]').check()
                await form.locator('input[name="text"]').fill(PAGE_ANSWER)
                await form.locator('button[type="submit"]').click()
                await page.wait_for_selector('.ack-result[data-ok="true"]', timeout=15_000)

                async with asyncio.timeout(60):
                    await reader
                floor_events = collections.Counter(
                    (m[1], m[2], m[3]) for line in lines if (m := FLOOR_LINE.match(line))
                )
                assert floor_events[("TW", "ESCALATION", flash_id[-8:])] == 1
                await page.wait_for_selector(
                    f'.card[data-party="TW"][data-kind="ACKNOWLEDGED"][data-message-id="{flash_id}"]',
                    timeout=15_000,
                )
                cards = await page.eval_on_selector_all(
                    ".card",
                    """cards => cards.map(c => [c.dataset.party, c.dataset.kind,
                        c.dataset.messageId ? c.dataset.messageId.slice(-8) : null,
                        c.dataset.cursor])""",
                )
                on_page = collections.Counter((p, k, m) for p, k, m, _ in cards)
                missing = floor_events - on_page
                assert not missing, f"events the floors printed but the page lacks: {missing}"
                cursors = [(p, c) for p, _, _, c in cards]
                assert len(cursors) == len(set(cursors))  # no event shown twice
                assert errors == []
                shot = await page.screenshot(path=str(tmp_path / "console-end.png"))
                assert not_blank(shot)
            finally:
                await browser.close()

        # The page's answer is in the other party's journal.
        async with OperatorClient.from_pki(workdir / "pki", "TW", address=tw_address) as tw:
            record = await tw.wait_for(flash_id, ACKNOWLEDGED, timeout=15)
        assert record.acknowledgement.level == bodies_pb2.ACKNOWLEDGEMENT_LEVEL_WILCO
        assert record.acknowledgement.remarks.variants[0].text == PAGE_ANSWER
        assert any("Verdict: PASS" in line for line in lines), "".join(lines[-40:])
    finally:
        if reader is not None:
            reader.cancel()
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0
    assert '"answer": "WILCO"' in summary.read_text(encoding="utf-8")
