"""Every table the dashboard shows: which report it runs with which parameters for a view.

The page and its CSV download both go through ``run_table``, so the CSV is ``to_csv`` of exactly the rows shown;
the figures come from ``sinks.reports.run_report``, the same SQL as ``closedloop report``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from clickhouse_connect.driver.client import Client

from dashboard.views import View
from sinks.reports import ReportResult, run_report


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    report: str
    params: Callable[[View], dict]
    command: Callable[[View], str]  # the CLI command that prints the same table


def _period(view: View) -> dict:
    return {"date_from": view.date_from, "date_to": view.date_to}


def _span(view: View) -> str:
    return f"--from {view.date_from} --to {view.date_to}"


TABLES: dict[str, Table] = {
    t.key: t
    for t in (
        Table("overview", "The period", "overview", _period, lambda v: f"closedloop report overview {_span(v)}"),
        Table(
            "overview-previous",
            "The previous period",
            "overview",
            lambda v: _period(v.previous()),
            lambda v: f"closedloop report overview {_span(v.previous())}",
        ),
        Table("trend", "Day by day", "trend", _period, lambda v: f"closedloop report overview --daily {_span(v)}"),
        Table(
            "channels",
            "Channels",
            "channels",
            lambda v: {"model": v.model, "by_campaign": bool(v.campaign), **_period(v)},
            lambda v: (
                f"closedloop report channels --model {v.model}{' --by campaign' if v.campaign else ''} {_span(v)}"
            ),
        ),
        Table(
            "compare-models",
            "Customer revenue under every model",
            "compare-models",
            _period,
            lambda v: f"closedloop report compare-models {_span(v)}",
        ),
        Table(
            "funnel",
            "Funnel by channel",
            "funnel",
            lambda v: {"model": v.rule_model, **_period(v)},
            lambda v: f"closedloop report funnel --model {v.rule_model} {_span(v)}",
        ),
        Table(
            "quality",
            "Lead quality by channel",
            "quality",
            lambda v: {"model": v.rule_model, "by_campaign": bool(v.campaign), **_period(v)},
            lambda v: (
                f"closedloop report quality --model {v.rule_model}{' --by campaign' if v.campaign else ''} {_span(v)}"
            ),
        ),
        Table(
            "ideal-path",
            "Paths to customer",
            "ideal-path",
            lambda v: {
                "stage": "customer",
                "by": "channel",
                "order": "common",
                "min_conversions": 1,
                "lookback_days": 90,
                "limit": 20,
                **_period(v),
            },
            lambda v: f"closedloop report ideal-path {_span(v)}",
        ),
        Table(
            "landing-pages",
            "Landing pages",
            "landing-pages",
            lambda v: {"model": v.rule_model, "by_channel": True, "limit": 50, **_period(v)},
            lambda v: f"closedloop report landing-pages --model {v.rule_model} {_span(v)}",
        ),
        Table(
            "content",
            "Content in converting journeys",
            "content",
            lambda v: {"stage": "customer", "groups": [], "lookback_days": 90, "limit": 50, **_period(v)},
            lambda v: f"closedloop report content {_span(v)}",
        ),
        Table(
            "payback",
            "Payback by cohort",
            "payback",
            _period,
            lambda v: f"closedloop report payback --from {v.date_from:%Y-%m} --to {v.date_to:%Y-%m}",
        ),
        Table(
            "accounts",
            "Accounts",
            "accounts",
            lambda v: {"limit": 50, **_period(v)},
            lambda v: f"closedloop report accounts {_span(v)}",
        ),
    )
}


def run_table(client: Client, key: str, view: View) -> ReportResult:
    """The report of table ``key`` for ``view``, its rows narrowed to the view's channel and campaign (a filter of
    rows, no arithmetic: the figures are the report's)."""
    table = TABLES[key]
    result = run_report(client, table.report, **table.params(view))
    rows = result.rows
    for column, wanted in (("channel", view.channel), ("campaign", view.campaign)):
        if wanted and column in result.columns:
            index = result.columns.index(column)
            rows = tuple(row for row in rows if row[index] == wanted)
    return ReportResult(result.name, result.columns, rows, result.types)
