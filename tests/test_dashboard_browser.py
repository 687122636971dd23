"""Headless Chromium (Debian's, never a downloaded one) opens every dashboard page on the demo's traffic (its first
two weeks, ``dashboard_support.demo_settings``): each loads and renders its charts, the figures shown are those of
``closedloop report ... --format json`` for the same period and model, switching the model changes them, the live
page updates without a reload, and a bad date gives a readable message. Screenshots at 1280 px and at a phone's
390 px go to ``CLOSEDLOOP_SCREENSHOT_DIR`` (``docs/dashboard`` refreshes the README's; default: the test's temporary
folder). How fast the pages load is measured by ``bench/dashboard.py``, not here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import dashboard_support
import pytest
from dashboard_support import DEMO_FROM, DEMO_PERIOD, DEMO_TO, chromium_browser, same_figure, serving

from dashboard.app import create_app, read_only_client
from dashboard.settings import DashboardSettings
from sinks.reports import run_report, to_json

pytestmark = [pytest.mark.browser, pytest.mark.clickhouse]
demo_settings = dashboard_support.demo_settings

PAGES = {  # name: (path, charts on the page)
    "overview": (f"/?{DEMO_PERIOD}", 2),
    "channels": (f"/channels?{DEMO_PERIOD}&model=w_shaped", 3),
    "funnel": (f"/funnel?{DEMO_PERIOD}&model=first_touch", 1),
    "paths": (f"/paths?{DEMO_PERIOD}", 1),
}
WIDTHS = {"desktop": 1280, "phone": 390}
# How long a page may take to draw here: a bound on waiting, not a speed target. The 1 s per page is
# measured by bench/dashboard.py (speed targets are met in benchmarks: on this shared 2-core machine, at load
# averages of 15, the paths page's five reports took 6 s).
DRAWN_WITHIN_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium_browser() as browser:
        yield browser


@pytest.fixture(scope="module")
def dashboard_url(demo_settings: DashboardSettings, browser: Any) -> Iterator[str]:
    polls = {"count": 0}

    async def counters(window: str) -> dict[str, Any]:
        # A worker whose Email revenue grows with every poll: the live page must show each new figure.
        polls["count"] += 1
        return {
            "window": window,
            "window_start": "2024-02-29T12:00:00+00:00",
            "time": "processing",
            "dead_letters": 0,
            "rows": [
                {"model": "last_touch", "channel": "Email", "stage": "lead", "conversions": 4, "revenue": "0"},
                {
                    "model": "last_touch",
                    "channel": "Email",
                    "stage": "customer",
                    "conversions": polls["count"],
                    "revenue": f"{100 * polls['count']}.00",
                },
                {"model": "last_touch", "channel": "Paid Search", "stage": "lead", "conversions": 7, "revenue": "0"},
                {"model": "last_touch", "channel": "Paid Search", "stage": "mql", "conversions": 3, "revenue": "0"},
            ],
        }

    settings = demo_settings.model_copy(
        update={"dashboard_live_interval_seconds": 0.5, "dashboard_live_max_seconds": 30.0}
    )
    with serving(create_app(settings, fetch_counters=counters)) as url:
        yield url


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("CLOSEDLOOP_SCREENSHOT_DIR") or tmp_path_factory.mktemp("dashboard-screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open(browser, width: int):
    context = browser.new_context(viewport={"width": width, "height": 900 if width > 600 else 844})
    return context, context.new_page()


@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_page_loads_and_renders_its_charts(browser, dashboard_url, screenshots, width):
    context, page = _open(browser, WIDTHS[width])
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        for name, (path, charts) in PAGES.items():
            page.goto(f"{dashboard_url}{path}", wait_until="load")
            page.wait_for_function(
                f"document.querySelectorAll('.chart[data-rendered]').length === {charts}", timeout=DRAWN_WITHIN_MS
            )
            assert page.locator(".chart svg").count() == charts, name
            assert page.locator("table[data-table] tbody tr").count() > 0, name
            page.screenshot(path=str(screenshots / f"{name}-{WIDTHS[width]}.png"), full_page=True)
        assert errors == []
        assert all(url.startswith(dashboard_url) for url in requests), "a request left the dashboard (a CDN?)"
    finally:
        context.close()


@pytest.fixture(scope="module")
def reports(demo_settings: DashboardSettings) -> Iterator[Any]:
    client = read_only_client(demo_settings)
    yield client
    client.close()


def _report_json(client, name: str, **params) -> list[dict]:
    """What ``closedloop report NAME ... --format json`` prints, parsed."""
    return json.loads(to_json(run_report(client, name, date_from=DEMO_FROM, date_to=DEMO_TO, **params)))


def _shown_table(page, key: str) -> tuple[list[str], list[list[str]]]:
    table = page.locator(f"table[data-table={key}]")
    head = [cell.strip() for cell in table.locator("thead th").all_inner_texts()]
    rows = [[cell.strip() for cell in row.locator("td").all_inner_texts()] for row in table.locator("tbody tr").all()]
    return head, rows


def _assert_shown_as_reported(head: list[str], rows: list[list[str]], records: list[dict]) -> None:
    assert len(rows) == len(records) > 0
    for row, record in zip(rows, records, strict=True):
        for name, cell in zip(head, row, strict=True):
            assert same_figure(cell, record[name]), (name, cell, record[name], record)


def test_the_figures_shown_are_the_reports(browser, dashboard_url, reports):
    context, page = _open(browser, 1280)
    try:
        page.goto(f"{dashboard_url}/?{DEMO_PERIOD}")
        (overview,) = _report_json(reports, "overview")
        assert overview["customers"] > 0 and overview["spend"] != "0.00"  # the comparison is not of zeros
        for key in ("leads", "customers", "revenue", "spend", "roas", "cac"):
            shown = page.locator(f'[data-kpi="{key}"] .value').inner_text()
            assert same_figure(shown, overview[key]), (key, shown, overview[key])
        _assert_shown_as_reported(*_shown_table(page, "trend"), _report_json(reports, "trend"))
        revenue = {}
        for model in ("first_touch", "last_touch", "linear"):
            page.goto(f"{dashboard_url}/channels?{DEMO_PERIOD}")
            page.select_option("select[name=model]", model)  # the picker, as a marketer would
            page.click("form.pickers button")
            page.wait_for_url(f"**model={model}**")
            head, rows = _shown_table(page, "channels")
            _assert_shown_as_reported(head, rows, _report_json(reports, "channels", model=model, by_campaign=False))
            revenue[model] = {row[0]: row[head.index("revenue")] for row in rows}
        # Switching the model moves revenue between channels (the demo's customers touched several channels).
        assert revenue["first_touch"] != revenue["last_touch"] != revenue["linear"] != revenue["first_touch"]
        _assert_shown_as_reported(*_shown_table(page, "compare-models"), _report_json(reports, "compare-models"))
    finally:
        context.close()


def test_the_live_page_updates_without_a_reload(browser, dashboard_url, screenshots):
    context, page = _open(browser, 1280)
    try:
        page.goto(f"{dashboard_url}/live")
        page.wait_for_function("Number(document.getElementById('live').dataset.updates) >= 1", timeout=5_000)
        first = page.locator("#live-table tbody tr").first.locator("td").last.inner_text()
        page.wait_for_function("Number(document.getElementById('live').dataset.updates) >= 3", timeout=5_000)
        later = page.locator("#live-table tbody tr").first.locator("td").last.inner_text()
        assert first != later  # Email's revenue grew, the page was not reloaded
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        assert page.locator("#live-chart svg").count() == 1
        page.screenshot(path=str(screenshots / "live-1280.png"), full_page=True)
    finally:
        context.close()
    context, page = _open(browser, 390)
    try:
        page.goto(f"{dashboard_url}/live")
        page.wait_for_function("Number(document.getElementById('live').dataset.updates) >= 1", timeout=5_000)
        page.screenshot(path=str(screenshots / "live-390.png"), full_page=True)
    finally:
        context.close()


def test_a_bad_date_in_the_url_gives_a_readable_message(browser, dashboard_url, screenshots):
    context, page = _open(browser, 1280)
    try:
        response = page.goto(f"{dashboard_url}/channels?from=2024-02-31&to=2024-03-10")
        assert response is not None and response.status == 400
        text = page.locator("main").inner_text()
        assert "'2024-02-31' is not a date" in text
        assert "the URL parameter 'from'" in text and "YYYY-MM-DD" in text
        page.screenshot(path=str(screenshots / "bad-date-1280.png"))
    finally:
        context.close()
