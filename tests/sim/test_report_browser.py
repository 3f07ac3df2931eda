"""The HTML report in a real headless browser (Debian's chromium driven by Playwright, never
Playwright's own download): the per-precedence charts and the time series are drawn, the
per-message table sorts and filters offline, and a screenshot shows a drawn page."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sim.report import html_report
from tests.integration.test_console_browser import CHROMIUM, not_blank
from tests.sim.test_report_answers import rich_result

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed")
async def test_the_report_renders_its_charts_and_a_working_message_table(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    path = tmp_path / "report.html"
    path.write_text(html_report([rich_result()], command="hotline sim run x"), encoding="utf-8")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--no-proxy-server"],
        )
        try:
            context = await browser.new_context(offline=True)  # nothing from the network
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(path.as_uri())
            for chart in ("precedence-delivered", "precedence-ack_system", "throughput", "backlog"):
                box = await page.locator(f'svg[data-chart="{chart}"]').first.bounding_box()
                assert box is not None, chart
                assert box["width"] > 500, chart
                assert box["height"] > 100, chart
            # one line per precedence in the per-precedence chart, and shaded periods
            lines = page.locator('svg[data-chart="precedence-delivered"] polyline')
            assert await lines.count() == 2
            assert await page.locator('svg[data-chart="throughput"] rect.period').count() >= 2
            table = page.locator("table.messages").first
            rows = table.locator("tbody tr")
            assert await rows.count() == 300
            assert await rows.first.is_visible()

            # sort by "delivered ms", largest first on the second click
            heading = table.locator("th", has_text="delivered ms")
            await heading.click()
            await heading.click()
            slowest = await rows.first.locator("td").nth(9).inner_text()
            assert float(slowest) == 509.0

            # filter: only the FLASH messages stay visible
            await page.fill("input.msg-filter", "FLASH")
            assert await table.locator("tbody tr:visible").count() == 30
            await page.fill("input.msg-filter", "overdue")
            assert await table.locator("tbody tr:visible").count() == 1
            await page.fill("input.msg-filter", "")

            png = await page.screenshot(full_page=True)
            assert not_blank(png)
            (tmp_path / "report.png").write_bytes(png)
            assert errors == []
        finally:
            await browser.close()
