"""What the dashboard tests share: a database of scripted journeys (``test_reports_journeys``' script, with spend
and page views), and reading tables and figures back out of the dashboard's HTML."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Iterator

import pytest
from harness import unique
from test_report_numbers import _load
from test_reports_journeys import FROM, TO, _data

from dashboard.settings import DashboardSettings
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.settings import SinkSettings

PERIOD = f"from={FROM}&to={TO}"


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
