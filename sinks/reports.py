"""Load and run the report SQL of ``sinks/reports/`` and format the results.

Each report is one parameterised SQL file (ClickHouse server-side parameters such as ``{from:Date}``), so the
same text runs from the CLI, from Python, or by hand with ``clickhouse-client --param_from=...``. The derived
figures (cost per lead, CAC, ROAS, rates) are computed in the SQL too, so a hand-run gives the same table.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from clickhouse_connect.driver.client import Client

from schemas.outputs import AttributionModel

REPORTS_DIR = Path(__file__).parent / "reports"
STAGES = ("lead", "mql", "sql", "opportunity", "customer", "lost", "disqualified")


class ReportError(ValueError):
    """A report cannot run with the given parameters; the message says what to change."""


@dataclass(frozen=True)
class ReportSpec:
    """A report: its SQL file and the parameters it takes (name -> ClickHouse type)."""

    name: str
    file: str
    params: tuple[str, ...]
    description: str
    fixed: dict[str, object] = field(default_factory=dict)  # parameters the report sets itself


REPORTS: dict[str, ReportSpec] = {
    spec.name: spec
    for spec in (
        ReportSpec(
            "channels",
            "channels.sql",
            ("model", "from", "to", "by_campaign", "exact"),
            "per channel: visitors, credited leads/MQLs/SQLs/customers, revenue, spend, CPL, CAC, ROAS",
            {"exact": 1},
        ),
        ReportSpec(
            "channels-rollup",
            "channels.sql",
            ("model", "from", "to", "by_campaign", "exact"),
            "the channel report from the roll-ups (fast; sums not replay-exact)",
            {"exact": 0},
        ),
        ReportSpec("funnel", "funnel.sql", ("model", "from", "to"), "stage to stage by channel"),
        ReportSpec(
            "paths", "paths.sql", ("stage", "from", "to", "limit"), "most common channel paths of converting leads"
        ),
        ReportSpec("page-paths", "page_paths.sql", ("pages", "from", "to", "limit"), "page sequences before the form"),
        ReportSpec(
            "time-to-convert",
            "time_to_convert.sql",
            ("from", "to"),
            "median days first touch -> lead and lead -> customer by channel",
        ),
        ReportSpec(
            "compare-models", "compare_models.sql", ("from", "to"), "customer revenue per channel under every model"
        ),
        ReportSpec(
            "compare-models-data-driven",
            "compare_models_data_driven.sql",
            ("from", "to"),
            "customer revenue per channel under the data-driven models (closedloop attribute)",
        ),
        ReportSpec(
            "data-driven",
            "data_driven.sql",
            ("stage", "from", "to"),
            "Markov and Shapley credits of a stage and period with bootstrap intervals (closedloop attribute)",
        ),
        ReportSpec(
            "quality",
            "quality.sql",
            ("model", "from", "to", "by_campaign"),
            "lead quality per channel: MQL, SQL, win and lost rates, top lost reasons, deal value, sales cycle",
        ),
    )
}


@dataclass(frozen=True)
class ReportResult:
    """Columns and rows of one report run, in the SQL's order."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row, strict=False)) for row in self.rows]


def load_sql(name: str) -> str:
    """The SQL text of report ``name``."""
    return (REPORTS_DIR / _spec(name).file).read_text(encoding="utf-8")


def _spec(name: str) -> ReportSpec:
    if name not in REPORTS:
        raise ReportError(f"unknown report {name!r}; choose one of: {', '.join(REPORTS)}")
    return REPORTS[name]


def check_period(date_from: date, date_to: date) -> None:
    if date_from > date_to:
        raise ReportError(f"--from {date_from} is after --to {date_to}: give the first day, then the last day")


def check_model(model: str) -> str:
    try:
        return AttributionModel(model).value
    except ValueError:
        raise ReportError(
            f"unknown attribution model {model!r}; choose one of: {', '.join(m.value for m in AttributionModel)}"
        ) from None


def run_report(client: Client, name: str, **params) -> ReportResult:
    """Run report ``name`` with its parameters (``date_from``/``date_to`` are passed as ``from``/``to``)."""
    spec = _spec(name)
    params = {**params, **spec.fixed}
    if "date_from" in params:
        params["from"] = params.pop("date_from")
    if "date_to" in params:
        params["to"] = params.pop("date_to")
    missing = [p for p in spec.params if p not in params]
    if missing:
        raise ReportError(f"report {name} needs the parameters {', '.join(missing)}")
    if "from" in params and "to" in params:
        check_period(params["from"], params["to"])
    if "model" in params:
        params["model"] = check_model(params["model"])
    if "stage" in params and params["stage"] not in STAGES:
        raise ReportError(f"unknown stage {params['stage']!r}; choose one of: {', '.join(STAGES)}")
    if "by_campaign" in params:
        params["by_campaign"] = int(bool(params["by_campaign"]))
    values = {key: params[key] for key in spec.params}
    result = client.query(load_sql(name), parameters=values)
    return ReportResult(name=name, columns=tuple(result.column_names), rows=tuple(map(tuple, result.result_rows)))


def channels(
    client: Client, model: str, date_from: date, date_to: date, *, by_campaign: bool = False, source: str = "raw"
) -> ReportResult:
    """The channel report; ``source="rollup"`` reads the roll-ups (fast, not replay-exact for sums)."""
    if source not in ("raw", "rollup"):
        raise ReportError(f"source must be 'raw' or 'rollup', not {source!r}")
    name = "channels" if source == "raw" else "channels-rollup"
    return run_report(client, name, model=model, date_from=date_from, date_to=date_to, by_campaign=by_campaign)


# -- output --------------------------------------------------------------------------------------------------


def _plain(value):
    """A JSON/CSV friendly value: decimals as strings (no float rounding), times as ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _display(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def to_csv(result: ReportResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else _plain(v) for v in row])
    return buffer.getvalue()


def to_json(result: ReportResult) -> str:
    return json.dumps([{k: _plain(v) for k, v in r.items()} for r in result.records()], indent=2)


# Short headers keep the channel table readable in an 80-column terminal; CSV/JSON keep the SQL names.
HEADERS = {
    "customers": "cust.",
    "cost_per_lead": "CPL",
    "cac": "CAC",
    "roas": "ROAS",
    "lead_to_customer": "lead→cust",
    "lost_share": "lost share",
    "visitors": "visitors",
    "mqls": "MQLs",
    "sqls": "SQLs",
    "opportunities": "opps",
}


def to_table(result: ReportResult, title: str | None = None):
    """A rich Table: numbers right-aligned, decimals with two places, missing ratios as '-'.

    A text column that is empty on every row (``campaign`` when not split by campaign) is left out.
    """
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    keep = [i for i in range(len(result.columns)) if not result.rows or any(row[i] != "" for row in result.rows)]
    numeric = {
        i: bool(result.rows) and all(isinstance(row[i], (int, float, Decimal)) or row[i] is None for row in result.rows)
        for i in keep
    }
    for i in keep:
        table.add_column(HEADERS.get(result.columns[i], result.columns[i]), justify="right" if numeric[i] else "left")
    for row in result.rows:
        table.add_row(*(_display(row[i]) for i in keep))
    return table


def render(result: ReportResult, fmt: str, title: str | None = None):
    """``table`` -> a rich Table to print; ``csv`` / ``json`` -> text."""
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return to_json(result)
    if fmt == "table":
        return to_table(result, title)
    raise ReportError(f"unknown format {fmt!r}; choose table, csv or json")
