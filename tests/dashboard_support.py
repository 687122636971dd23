"""What the dashboard tests share: a database of scripted journeys (``test_reports_journeys``' script, with spend
and page views, figures worked out by hand), a database of the demo's traffic (``closedloop demo``'s simulation,
run through the collector's parsers and the worker's rules by ``simulator.offline``), and reading tables and
figures back out of the dashboard's HTML."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import date, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator

import pytest
import uvicorn
from harness import free_port, unique, wait_for
from test_report_numbers import _load
from test_reports_journeys import FROM, TO, _data

from dashboard.settings import DashboardSettings
from simulator.model import SimulatedDays, SimulationConfig
from simulator.offline import Record, pipeline_records
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.rows import Provenance, insert, rows_for, topic_kinds
from sinks.settings import SinkSettings

PERIOD = f"from={FROM}&to={TO}"

# The demo's simulation (``closedloop demo``: seed 42, 150 new visitors a weekday), its first two weeks: the first
# customers are won in the second week. A fixed start, so that the screenshots show the same days on every run.
DEMO = SimulationConfig(seed=42, epoch=date(2026, 9, 7), visitors_per_day=150)
DEMO_DAYS = 14
DEMO_FROM, DEMO_TO = DEMO.epoch, DEMO.epoch + timedelta(days=DEMO_DAYS - 1)
DEMO_PERIOD = f"from={DEMO_FROM}&to={DEMO_TO}"


@pytest.fixture(scope="module")
def dashboard_settings(clickhouse_http_url: str) -> Iterator[DashboardSettings]:
    url = f"{clickhouse_http_url}/{unique('dash')}"
    sink = SinkSettings(clickhouse_url=url)
    migrate_up(sink)
    client = connect(sink)
    data = _data()
    _load(client, data)
    _load(client, data)  # delivered twice: the figures must not double
    yield DashboardSettings(clickhouse_url=url, dashboard_live_interval_seconds=0.2, dashboard_live_max_seconds=0.4)
    client.command(f"DROP DATABASE IF EXISTS `{sink.clickhouse_database}`")
    client.close()


CHROMIUM = "/usr/bin/chromium"  # Debian's, never a downloaded browser
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-component-update",
]


@contextmanager
def chromium_browser() -> Iterator[Any]:
    """Headless Chromium driven by Playwright; the test is skipped, saying so, where Debian's is not installed."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the server to start", interval=0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def load_records(client, records: list[Record], settings: SinkSettings) -> dict[str, int]:
    """Insert ``records`` (topic, key, value) as the sink would: the sink's ``rows_for``, per table; returns the
    rows per table."""
    kinds = topic_kinds(settings.topics)
    tables: dict[str, list] = {}
    for offset, (topic, _key, value) in enumerate(records):
        for table, row in rows_for(kinds[topic], value, Provenance(topic, 0, offset)):
            tables.setdefault(table, []).append(row)
    for table, rows in tables.items():
        insert(client, table, rows)
    return {table: len(rows) for table, rows in tables.items()}


@pytest.fixture(scope="module")
def demo_settings(clickhouse_http_url: str) -> Iterator[DashboardSettings]:
    """A database of the demo's first two weeks (about 7,000 page views, 240 conversions, 3,800 credits)."""
    url = f"{clickhouse_http_url}/{unique('demo')}"
    sink = SinkSettings(clickhouse_url=url)
    migrate_up(sink)
    client = connect(sink)
    loaded = load_records(client, pipeline_records(SimulatedDays(DEMO, 0, DEMO_DAYS)), sink)
    assert loaded["conversions"] > 200 and loaded["credits"] > 3000, loaded
    yield DashboardSettings(clickhouse_url=url, dashboard_live_interval_seconds=0.2, dashboard_live_max_seconds=0.4)
    client.command(f"DROP DATABASE IF EXISTS `{sink.clickhouse_database}`")
    client.close()


def same_figure(shown: str, value: Any) -> bool:
    """Whether a figure the page shows (``1,090.00``, ``3.8929``, ``-``) is a JSON report value (``"1090.00"``,
    3.892857..., null) at the places the page shows."""
    if value is None:
        return shown in ("-", "")
    if isinstance(value, str) and not value.replace(".", "", 1).lstrip("-").isdigit():
        return shown == value
    text = shown.replace(",", "")
    places = len(text.split(".")[1]) if "." in text else 0
    return abs(Decimal(text) - Decimal(str(value))) <= Decimal(5).scaleb(-places - 1)  # rounded to what is shown


class _Tables(HTMLParser):
    """Every ``<table data-table=KEY>``: its header and body cells as text; and the KPI cards' values."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, list]] = {}
        self.kpis: dict[str, str] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._kpi: str | None = None
        self._kpi_value = False
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table" and "data-table" in a:
            self._table = a["data-table"]
            self.tables[self._table] = {"head": [], "rows": []}
        elif self._table and tag == "thead":
            self._in_head = True
        elif self._table and tag == "tr":
            self._row = []
        elif self._table and tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "div" and "data-kpi" in a:
            self._kpi = a["data-kpi"]
        elif tag == "div" and self._kpi and a.get("class") == "value":
            self._kpi_value = True
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._table and self._row is not None:
            cells = self._row
            self._row = None
            target = self.tables[self._table]
            if self._in_head:
                target["head"] = cells
            elif not (len(cells) == 1 and cells[0] == "no rows for this view"):
                target["rows"].append(cells)
        elif tag == "thead":
            self._in_head = False
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._kpi_value and self._cell is not None and self._kpi:
            self.kpis[self._kpi] = "".join(self._cell)
            self._kpi_value, self._kpi, self._cell = False, None, None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse_page(text: str) -> _Tables:
    parser = _Tables()
    parser.feed(text)
    return parser
