"""The pages: which tables and charts each shows for a view. Every figure is a report's (``tables.run_table``);
charts plot the same rows (``to_json`` values) that the tables print."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal, InvalidOperation
from html import escape

from clickhouse_connect.driver.client import Client

from dashboard import html
from dashboard.tables import TABLES, run_table
from dashboard.views import View
from sinks.reports import ReportResult, data_period, no_data_message, to_cells, to_json

KPIS = (
    ("leads", "Leads"),
    ("customers", "Customers"),
    ("revenue", "Revenue"),
    ("spend", "Spend"),
    ("roas", "ROAS"),
    ("cac", "CAC"),
)
LOWER_IS_BETTER = {"spend", "cac"}


def _records(result: ReportResult) -> list[dict]:
    return json.loads(to_json(result))


def _number(value) -> float:
    return 0.0 if value is None else float(value)


def _bars(result: ReportResult, label: str, columns: Sequence[str]) -> dict:
    """Horizontal bars per row, one series per column, the largest on top; the axis labels are the ``label`` columns
    (names joined by ``+``: ``landing_page+channel``)."""
    records = list(reversed(_records(result)))
    return {
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "legend": {"show": len(columns) > 1, "type": "scroll", "top": 0},
        "grid": {"left": 8, "right": 24, "top": 32 if len(columns) > 1 else 8, "bottom": 8, "containLabel": True},
        "xAxis": {"type": "value"},
        "yAxis": {
            "type": "category",
            "data": [" · ".join(str(r[part]) for part in label.split("+") if r.get(part)) for r in records],
            "axisLabel": {"width": 110, "overflow": "truncate"},
        },
        "series": [
            {"type": "bar", "name": column, "data": [_number(r[column]) for r in records]} for column in columns
        ],
    }


def _lines(result: ReportResult, columns: Sequence[str], kind: str = "line") -> dict:
    records = _records(result)
    return {
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 0},
        "grid": {"left": 8, "right": 16, "top": 32, "bottom": 8, "containLabel": True},
        "xAxis": {"type": "category", "data": [r["first_day"] for r in records]},
        "yAxis": {"type": "value"},
        "series": [
            {"type": kind, "name": column, "data": [_number(r[column]) for r in records], "showSymbol": False}
            for column in columns
        ],
    }


def _height(result: ReportResult) -> int:
    return max(200, 40 + 26 * len(result.rows))


# A page's reports run side by side: ClickHouse answers several queries at once, and a page is as slow as its
# slowest report rather than their sum. Bounded, so one page cannot take every connection.
EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dashboard-report")


def run_tables(client: Client, keys: Sequence[str], view: View) -> dict[str, ReportResult]:
    futures = {key: EXECUTOR.submit(run_table, client, key, view) for key in keys}
    return {key: future.result() for key, future in futures.items()}


def _section(results: dict[str, ReportResult], key: str, view: View, note: str = "") -> tuple[str, ReportResult]:
    table, result = TABLES[key], results[key]
    return html.table(key, table.title, result, view, table.command(view), note), result


# The channels and campaigns the channel report can show for a period: those of its touches (visitors), of its
# conversions' credits, and of its spend. Not the channel report itself: the pickers need names, not figures, and
# that report (by campaign) was the slowest query of every page, 0.8 of the overview's 1.1 s of SQL on 60 demo
# days (bench/dashboard.md); this reads three columns.
CHOICES_SQL = """
SELECT DISTINCT channel, campaign
FROM
(
    SELECT channel, campaign FROM touches WHERE toDate(occurred_at) BETWEEN {from:Date} AND {to:Date}
    UNION ALL
    SELECT channel, campaign FROM credits WHERE toDate(converted_at) BETWEEN {from:Date} AND {to:Date}
    UNION ALL
    SELECT channel, campaign FROM spend WHERE date BETWEEN {from:Date} AND {to:Date}
)
"""


def choices(client: Client, view: View) -> tuple[list[str], list[str]]:
    """The channels and campaigns of the period, for the pickers."""
    rows = client.query(CHOICES_SQL, parameters={"from": view.date_from, "to": view.date_to}).result_rows
    return sorted({str(channel) for channel, _ in rows}), sorted({str(campaign) for _, campaign in rows if campaign})


def empty_notice(client: Client, view: View, *results: ReportResult) -> str:
    if any(r.rows for r in results):
        return ""
    return f'<p class="notice">{escape(no_data_message(view.date_from, view.date_to, data_period(client)))}</p>'


def _change(now, before, key: str) -> tuple[str, str]:
    try:
        a, b = Decimal(str(now)), Decimal(str(before))
    except (InvalidOperation, ValueError):
        return "no previous figure", ""
    if b == 0:
        return ("no change" if a == 0 else "new"), ""
    change = (a - b) / abs(b) * 100
    better = (change < 0) if key in LOWER_IS_BETTER else (change > 0)
    return f"{change:+.1f}% vs previous", ("up" if better else "down") if change else ""


def overview(client: Client, view: View) -> str:
    results = run_tables(client, ("overview", "overview-previous", "trend"), view)
    now, before = results["overview"], results["overview-previous"]
    trend_html, trend = _section(results, "trend", view)
    names, _, cells = to_cells(now)
    shown = dict(zip(names, cells[0], strict=True)) if cells else {}
    values = now.records()[0] if now.rows else {}
    previous = before.records()[0] if before.rows else {}
    cards = []
    for key, label in KPIS:
        text, direction = (
            _change(values.get(key), previous.get(key), key)
            if previous.get(key) is not None
            else ("no previous figure", "")
        )
        cards.append(
            f'<div class="kpi" data-kpi="{key}"><div class="label">{label}</div>'
            f'<div class="value">{escape(shown.get(key, "-"))}</div>'
            f'<div class="change {direction}">{escape(text)}</div></div>'
        )
    prev = view.previous()
    busy = [r for r in trend.records() if r["leads"] or r["customers"] or r["revenue"] or r["spend"]]
    notice = "" if busy else empty_notice(client, view)
    charts = (
        '<div class="charts">'
        + html.chart("Leads and customers per day", _lines(trend, ["leads", "customers"]))
        + html.chart("Revenue and spend per day", _lines(trend, ["revenue", "spend"], kind="bar"))
        + "</div>"
    )
    previous_html, _ = _section(results, "overview-previous", view)
    current_html, _ = _section(results, "overview", view)
    return (
        notice + f'<p class="muted">{view.date_from} .. {view.date_to} against {prev.date_from} .. {prev.date_to} '
        "(the previous period of the same length). Plain counts: every model's credits add up to them.</p>"
        + f'<div class="kpis">{"".join(cards)}</div>'
        + charts
        + current_html
        + previous_html
        + trend_html
    )


def channels(client: Client, view: View) -> str:
    results = run_tables(client, ("channels", "compare-models"), view)
    channels_html, result = _section(results, "channels", view)
    compare_html, compare = _section(results, "compare-models", view)
    label = "campaign" if view.campaign else "channel"
    models = [c for c in compare.columns if c != "channel"]
    charts = (
        '<div class="charts">'
        + html.chart(f"Revenue per {label} · {view.model}", _bars(result, label, ["revenue"]), _height(result))
        + html.chart(f"Leads per {label} · {view.model}", _bars(result, label, ["leads"]), _height(result))
        + "</div>"
        + '<div class="charts">'
        + html.chart(
            "Customer revenue per channel under every model",
            _bars(compare, "channel", models),
            max(260, 60 + 16 * len(models) * len(compare.rows)),
        )
        + "</div>"
    )
    return empty_notice(client, view, result) + charts + channels_html + compare_html


def funnel(client: Client, view: View) -> str:
    note = (
        ""
        if view.model == view.rule_model
        else (
            f"{view.model} is data-driven and credits channels per period only: the funnel and lead quality use "
            "first_touch (plain counts by first touch)."
        )
    )
    results = run_tables(client, ("funnel", "quality"), view)
    funnel_html, result = _section(results, "funnel", view, note)
    quality_html, quality = _section(results, "quality", view, note)
    stages = [c for c in ("leads", "mqls", "sqls", "opportunities", "customers") if c in result.columns]
    charts = (
        '<div class="charts">'
        + html.chart(
            f"Stages per channel · {view.rule_model}",
            _bars(result, "channel", stages),
            max(260, 60 + 12 * len(stages) * len(result.rows)),
        )
        + "</div>"
    )
    return empty_notice(client, view, result, quality) + charts + funnel_html + quality_html


def paths(client: Client, view: View) -> str:
    keys = ("ideal-path", "landing-pages", "content", "payback", "accounts")
    results = run_tables(client, keys, view)
    sections = [_section(results, key, view) for key in keys]
    landing = sections[1][1]
    charts = ""
    if landing.rows and "sessions" in landing.columns:
        top = ReportResult(landing.name, landing.columns, landing.rows[:15], landing.types)
        label = "landing_page+channel"
        charts = (
            '<div class="charts">'
            + html.chart(
                "Sessions of the top landing pages (and channels)", _bars(top, label, ["sessions"]), _height(top)
            )
            + "</div>"
        )
    return empty_notice(client, view, *(r for _, r in sections)) + charts + "".join(s for s, _ in sections)
