"""Load and run the report SQL of ``sinks/reports/`` and format the results.

Each report is one parameterised SQL file (ClickHouse server-side parameters such as ``{from:Date}``), so the
same text runs from the CLI, from Python, or by hand with ``clickhouse-client --param_from=...``. The derived
figures (cost per lead, CAC, ROAS, rates) are computed in the SQL too, so a hand-run gives the same table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from clickhouse_connect.driver.client import Client

from schemas.events import STAGES
from schemas.outputs import DATA_DRIVEN_MODELS, AttributionModel
from sinks.rows import Column

REPORTS_DIR = Path(__file__).parent / "reports"
# The table of migration 0014 the account reports read besides their views (tests/test_migrations.py holds the two
# together).
ACCOUNT_TABLES = {"free_mail_domains": (Column("domain", "String"),)}
PATH_ELEMENTS = ("channel", "landing_page")  # what a step of an ideal path is
PATH_ORDERS = ("common", "fastest")


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
    data_driven: bool = False  # {model} may also name a data-driven model (computed by `closedloop attribute`)


REPORTS: dict[str, ReportSpec] = {
    spec.name: spec
    for spec in (
        ReportSpec(
            "channels",
            "channels.sql",
            ("model", "from", "to", "by_campaign", "exact"),
            "per channel: visitors, credited leads/MQLs/SQLs/customers, revenue, spend, CPL, CAC, ROAS",
            {"exact": 1},
            data_driven=True,
        ),
        ReportSpec(
            "channels-rollup",
            "channels.sql",
            ("model", "from", "to", "by_campaign", "exact"),
            "the channel report from the roll-ups (fast; sums not replay-exact)",
            {"exact": 0},
            data_driven=True,
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
            "compare-models",
            "compare_models.sql",
            ("from", "to"),
            "customer revenue per channel under every model (data-driven ones as closedloop attribute computed them)",
        ),
        ReportSpec(
            "data-driven",
            "data_driven.sql",
            ("stage", "from", "to"),
            "Markov and Shapley credits of a stage and period with bootstrap intervals (closedloop attribute)",
        ),
        ReportSpec(
            "landing-pages",
            "landing_pages.sql",
            ("model", "from", "to", "by_channel", "limit"),
            "per landing page (and channel): sessions, credited leads, customers, revenue, rates per session",
        ),
        ReportSpec(
            "ideal-path",
            "ideal_path.sql",
            ("stage", "from", "to", "by", "order", "min_conversions", "lookback_days", "limit"),
            "paths to a stage: journeys, converting and not side by side, conversion rate, median days to convert",
        ),
        ReportSpec(
            "content",
            "content.sql",
            ("stage", "from", "to", "groups", "lookback_days", "limit"),
            "pages and page groups in converting against non-converting journeys: lift, page-level linear credits",
        ),
        ReportSpec(
            "payback",
            "payback.sql",
            ("from", "to"),
            "cohort CAC and payback: spend per month and channel against its customers' cumulative revenue",
        ),
        ReportSpec(
            "accounts",
            "accounts.sql",
            ("from", "to", "limit"),
            "per account (email domain): people, touches, channels, opportunity, win, revenue, committee size",
        ),
        ReportSpec(
            "account-channels",
            "account_channels.sql",
            ("from", "to", "lookback_days"),
            "account-level attribution per channel: opportunities, won accounts, revenue, average committee",
        ),
        ReportSpec(
            "overview",
            "overview.sql",
            ("from", "to", "daily"),
            "the period's leads, customers, revenue, spend, ROAS and CAC (plain counts, no model)",
            {"daily": 0},
        ),
        ReportSpec(
            "trend",
            "overview.sql",
            ("from", "to", "daily"),
            "the overview's figures for each day of the period",
            {"daily": 1},
        ),
        ReportSpec(
            "quality",
            "quality.sql",
            ("model", "from", "to", "by_campaign"),
            "lead quality per channel: MQL, SQL, win and lost rates, top lost reasons, deal value, sales cycle",
        ),
        ReportSpec(
            "ready-leads",
            "ready_leads.sql",
            ("from", "to", "limit"),
            "sales-ready leads: reason, score and its breakdown, first touch, channels, pages, forms (newest first)",
        ),
        ReportSpec(
            "ads-feedback",
            "ads_feedback.sql",
            ("from", "to"),
            "conversions fed back to ad platforms (files, APIs) per platform, action, stage and status, with values",
        ),
    )
}


@dataclass(frozen=True)
class ReportResult:
    """Columns and rows of one report run, in the SQL's order."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]
    types: tuple[str, ...] = ()  # ClickHouse type names of the columns (they decide how values print)

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


def check_data_driven_run(client: Client, model: str, date_from: date, date_to: date) -> None:
    """A data-driven model is shown only for a period `closedloop attribute` computed it for: say how, else."""
    runs = client.query(
        "SELECT groupUniqArray(toString(stage)) FROM data_driven_credits "
        "WHERE model = {model:String} AND period_from = {from:Date} AND period_to = {to:Date}",
        parameters={"model": model, "from": date_from, "to": date_to},
    ).result_rows[0][0]
    if not runs:
        kind, _, order = model.partition("_")
        how = f"--model markov --order {order}" if kind == "markov" else f"--model {model}"
        raise ReportError(
            f"{model} has not been computed for {date_from} .. {date_to}: run "
            f"`closedloop attribute {how} --stage customer --from {date_from} --to {date_to}` "
            "(and the same with --stage lead for the lead columns) first"
        )


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
        if spec.data_driven and params["model"] in DATA_DRIVEN_MODELS:
            check_data_driven_run(client, params["model"], params["from"], params["to"])
        else:
            params["model"] = check_model(params["model"])
    if "stage" in params and params["stage"] not in STAGES:
        raise ReportError(f"unknown stage {params['stage']!r}; choose one of: {', '.join(STAGES)}")
    if "by" in params and params["by"] not in PATH_ELEMENTS:
        raise ReportError(f"unknown path element {params['by']!r}; choose one of: {', '.join(PATH_ELEMENTS)}")
    if "order" in params and params["order"] not in PATH_ORDERS:
        raise ReportError(f"unknown order {params['order']!r}; choose one of: {', '.join(PATH_ORDERS)}")
    for flag in ("by_campaign", "by_channel"):
        if flag in params:
            params[flag] = int(bool(params[flag]))
    values = {key: params[key] for key in spec.params}
    result = client.query(load_sql(name), parameters=values)
    return ReportResult(
        name=name,
        columns=tuple(result.column_names),
        rows=tuple(map(tuple, result.result_rows)),
        types=tuple(t.name for t in result.column_types),
    )


def data_period(client: Client) -> tuple[date, date] | None:
    """The first and last day with touches or conversions (UTC), or None when there are none: what to suggest when
    a report's period holds no data."""
    row = client.query(
        "SELECT min(day), max(day), count() FROM (SELECT toDate(occurred_at) AS day FROM conversions "
        "UNION ALL SELECT toDate(occurred_at) FROM touches)"
    ).result_rows[0]
    return (row[0], row[1]) if row[2] else None


def no_data_message(date_from: date, date_to: date, period: tuple[date, date] | None) -> str:
    """What to tell a user whose report came back empty: that the period is empty, and which period is not."""
    if period is None:
        return (
            f"No data from {date_from} to {date_to}, nor on any other day: nothing has reached ClickHouse yet. "
            "Run `closedloop demo`, or check that `closedloop worker` and `closedloop sink` are running."
        )
    first, last = period
    return (
        f"No data from {date_from} to {date_to}. The data covers {first} .. {last}: "
        f"run again with --from {first} --to {last}."
    )


def channels(
    client: Client, model: str, date_from: date, date_to: date, *, by_campaign: bool = False, source: str = "raw"
) -> ReportResult:
    """The channel report; ``source="rollup"`` reads the roll-ups (fast, not replay-exact for sums)."""
    if source not in ("raw", "rollup"):
        raise ReportError(f"source must be 'raw' or 'rollup', not {source!r}")
    name = "channels" if source == "raw" else "channels-rollup"
    return run_report(client, name, model=model, date_from=date_from, date_to=date_to, by_campaign=by_campaign)


# -- output --------------------------------------------------------------------------------------------------
#
# One set of rules for every report and every format (docs/CLICKHOUSE.md, "Report output"):
#   counts (integer columns)             integers: 58, never 58.00
#   credited counts (sums of shares)     integers when every value of the column is whole (first_touch), else the
#                                        table shows 2 places and CSV/JSON the exact sum (1.5, 0.333333333)
#   money (2-place decimals)             2 places; JSON strings, so no float rounds a cent
#   rates and shares (floats)            4 places (0.5000); money per unit (cost_per_lead, cac), days and averages 2
#   missing (no leads, no time)          '-' in the table, empty in CSV, null in JSON (never NaN, never 0E-9)
#   headers                              the SQL column names, the same in every format
#   thousands                            ',' in the table only; CSV and JSON carry plain numbers
TWO_PLACES = frozenset({"cost_per_lead", "cac", "avg_touches", "revenue_per_session", "avg_committee", "score"})
COUNT, MONEY, CREDITED, FLOAT, TEXT = "count", "money", "credited", "float", "text"


def _kind(type_name: str | None, values: list) -> str:
    """How a column prints, from its ClickHouse type (or, without one, from its Python values)."""
    if type_name is not None:
        name = type_name
        for wrapper in ("Nullable(", "LowCardinality("):
            if name.startswith(wrapper):
                name = name[len(wrapper) : -1]
        if name.startswith(("Int", "UInt")):
            return COUNT
        if name.startswith("Decimal"):
            return MONEY if name.replace(" ", "").endswith(",2)") else CREDITED
        if name.startswith("Float"):
            return FLOAT
        return TEXT
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return COUNT
    if present and all(isinstance(v, Decimal) for v in present):
        return MONEY if all(v.as_tuple().exponent == -2 for v in present) else CREDITED
    if present and all(isinstance(v, (int, float)) for v in present):
        return FLOAT
    return TEXT


def _places(column: str) -> int:
    return 2 if column in TWO_PLACES or column.startswith(("median_days", "days_")) else 4


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _exact(value: Decimal) -> str:
    """A decimal in plain notation without trailing zeros: 58, 1.5, 0 (not 58.000000000 or 0E-9)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class _Column:
    name: str
    kind: str
    whole: bool  # a credited-count column whose values are all whole numbers

    def table(self, value) -> str:
        if _is_missing(value):
            return "-"
        if self.kind == COUNT:
            return f"{value:,}"
        if self.kind == MONEY:
            return f"{value:,.2f}"
        if self.kind == CREDITED:
            return f"{int(value):,}" if self.whole else f"{value:,.2f}"
        if self.kind == FLOAT:
            return f"{value:,.{_places(self.name)}f}"
        return value.isoformat() if isinstance(value, (date, datetime)) else str(value)

    def csv(self, value) -> str:
        if _is_missing(value):
            return ""
        if self.kind == COUNT:
            return str(int(value))
        if self.kind == MONEY:
            return f"{value:.2f}"
        if self.kind == CREDITED:
            return _exact(Decimal(value))
        if self.kind == FLOAT:
            return f"{value:.{_places(self.name)}f}"
        return value.isoformat() if isinstance(value, (date, datetime)) else str(value)

    def json(self, value):
        if _is_missing(value):
            return None
        if self.kind == COUNT:
            return int(value)
        if self.kind == MONEY:
            return f"{value:.2f}"
        if self.kind == CREDITED:
            text = _exact(Decimal(value))
            return int(text) if "." not in text else float(text)
        if self.kind == FLOAT:
            return round(float(value), _places(self.name))
        if isinstance(value, Decimal):
            return str(value)
        return value.isoformat() if isinstance(value, (date, datetime)) else value


def _columns(result: ReportResult) -> list[_Column]:
    columns = []
    for index, name in enumerate(result.columns):
        values = [row[index] for row in result.rows]
        kind = _kind(result.types[index] if index < len(result.types) else None, values)
        whole = kind == CREDITED and all(_is_missing(v) or Decimal(v) == Decimal(v).to_integral() for v in values)
        columns.append(_Column(name, kind, whole))
    return columns


def to_csv(result: ReportResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(result.columns)
    columns = _columns(result)
    for row in result.rows:
        writer.writerow([column.csv(value) for column, value in zip(columns, row, strict=True)])
    return buffer.getvalue()


def to_json(result: ReportResult) -> str:
    columns = _columns(result)
    records = [{c.name: c.json(value) for c, value in zip(columns, row, strict=True)} for row in result.rows]
    return json.dumps(records, indent=2, allow_nan=False)


def to_table(result: ReportResult, title: str | None = None):
    """A rich Table: numbers right-aligned; a text column empty on every row (``campaign`` when not split by
    campaign) is left out."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    columns = _columns(result)
    keep = [i for i in range(len(result.columns)) if not result.rows or any(row[i] != "" for row in result.rows)]
    for i in keep:
        table.add_column(columns[i].name, justify="left" if columns[i].kind == TEXT else "right")
    for row in result.rows:
        table.add_row(*(columns[i].table(row[i]) for i in keep))
    return table


def to_cells(result: ReportResult) -> tuple[list[str], list[bool], list[list[str]]]:
    """The table as text, formatted as ``to_table`` prints it (for another front end, such as the dashboard):
    the kept column names, whether each is numeric (right-aligned), and the rows' cells."""
    columns = _columns(result)
    keep = [i for i in range(len(result.columns)) if not result.rows or any(row[i] != "" for row in result.rows)]
    return (
        [columns[i].name for i in keep],
        [columns[i].kind != TEXT for i in keep],
        [[columns[i].table(row[i]) for i in keep] for row in result.rows],
    )


def render(result: ReportResult, fmt: str, title: str | None = None):
    """``table`` -> a rich Table to print; ``csv`` / ``json`` -> text."""
    if fmt == "csv":
        return to_csv(result)
    if fmt == "json":
        return to_json(result)
    if fmt == "table":
        return to_table(result, title)
    raise ReportError(f"unknown format {fmt!r}; choose table, csv or json")
