"""The data-driven attribution job: read a period's journeys from ClickHouse, run a model, write its credits.

The journeys are defined in ``reports/data_driven_journeys.sql``; the models are the pure functions of
``sinks/datadriven.py``; the results go to ``data_driven_credits`` (migration 0011), one row per channel, all rows
of a run with the same ``computed_at`` so a re-run replaces the earlier one for readers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from clickhouse_connect.driver.client import Client

from schemas.events import STAGES
from sinks.datadriven import Attribution, Journey, attribute
from sinks.migrate import MigrationError
from sinks.rows import LC, TIME, Column

JOURNEYS_SQL = Path(__file__).parent / "reports" / "data_driven_journeys.sql"
TABLE = "data_driven_credits"
# The table as migration 0011 declares it (tests/test_migrations.py holds the two together).
DECLARED: dict[str, tuple[Column, ...]] = {
    TABLE: tuple(
        Column(name, type_)
        for name, type_ in (
            ("model", LC),
            ("stage", LC),
            ("period_from", "Date"),
            ("period_to", "Date"),
            ("channel", LC),
            ("share", "Float64"),
            ("conversions", "Float64"),
            ("revenue", "Decimal(18, 2)"),
            ("removal_effect", "Float64"),
            ("ci_low", "Float64"),
            ("ci_high", "Float64"),
            ("bootstrap", "UInt32"),
            ("journeys", "UInt64"),
            ("converting_journeys", "UInt64"),
            ("conversion_probability", "Float64"),
            ("computed_at", TIME),
        )
    )
}
COLUMNS = tuple(column.name for column in DECLARED[TABLE])


@dataclass(frozen=True)
class Run:
    """What one job run did: the model's result, how many converting journeys had no touch, and its timings."""

    name: str  # markov_1 .. markov_3, shapley
    attribution: Attribution
    touchless_conversions: int
    read_seconds: float
    compute_seconds: float
    computed_at: datetime


def model_name(model: str, order: int) -> str:
    return f"markov_{order}" if model == "markov" else model


def check_run(model: str, order: int, stage: str, date_from: date, date_to: date, bootstrap: int) -> None:
    """Raise ValueError saying what to change when the run's parameters cannot work."""
    if model not in ("markov", "shapley"):
        raise ValueError(f"unknown data-driven model {model!r}; choose markov or shapley")
    if order not in (1, 2, 3):
        raise ValueError(f"--order must be 1, 2 or 3, not {order}")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)}")
    if date_from > date_to:
        raise ValueError(f"--from {date_from} is after --to {date_to}: give the first day, then the last day")
    if bootstrap < 0:
        raise ValueError(f"--bootstrap must be 0 or more, not {bootstrap}")


def read_journeys(
    client: Client, stage: str, date_from: date, date_to: date, lookback_days: int = 90
) -> Iterator[tuple[list[str], bool, float]]:
    """Every journey of the period as (channels, converted, revenue), streamed block by block."""
    parameters = {"stage": stage, "from": date_from, "to": date_to, "lookback_days": lookback_days}
    with client.query_row_block_stream(JOURNEYS_SQL.read_text(encoding="utf-8"), parameters=parameters) as stream:
        for block in stream:
            for channels, converted, revenue in block:
                yield list(channels), bool(converted), float(revenue)


def run(
    client: Client,
    model: str,
    *,
    stage: str,
    date_from: date,
    date_to: date,
    order: int = 1,
    bootstrap: int = 100,
    seed: int = 0,
    lookback_days: int = 90,
    write: bool = True,
) -> Run:
    """Read the period's journeys, run ``model`` and (unless ``write`` is false) store its credits."""
    check_run(model, order, stage, date_from, date_to, bootstrap)
    if write and client.query(f"EXISTS TABLE {TABLE}").result_rows != [(1,)]:
        raise MigrationError(
            f"table {TABLE} does not exist in database {client.database!r}: apply migration 0011 with "
            "`closedloop migrate` (or run with --dry-run to compute without writing)"
        )
    if client.query("EXISTS TABLE journeys").result_rows != [(1,)]:
        raise MigrationError(
            f"the view journeys does not exist in database {client.database!r}: apply migration 0013 with "
            "`closedloop migrate`"
        )
    started = time.perf_counter()
    journeys: list[Journey] = []
    touchless = 0
    for channels, converted, revenue in read_journeys(client, stage, date_from, date_to, lookback_days):
        if not channels:
            touchless += converted
            continue
        journeys.append(Journey(tuple(channels), converted, revenue))
    read = time.perf_counter() - started
    started = time.perf_counter()
    attribution = attribute(journeys, model, order=order, bootstrap=bootstrap, seed=seed)
    compute = time.perf_counter() - started
    now = datetime.now(timezone.utc)
    result = Run(model_name(model, order), attribution, touchless, read, compute, now)
    if write:
        client.insert(TABLE, rows(result, stage, date_from, date_to, bootstrap), column_names=list(COLUMNS))
    return result


def _cents(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def rows(result: Run, stage: str, date_from: date, date_to: date, bootstrap: int) -> list[list[object]]:
    """The table rows of a run, in ``COLUMNS`` order."""
    a = result.attribution
    return [
        [
            result.name,
            stage,
            date_from,
            date_to,
            credit.channel,
            credit.share,
            credit.conversions,
            _cents(credit.revenue),
            credit.removal_effect,
            credit.ci_low,
            credit.ci_high,
            bootstrap,
            a.journeys,
            a.conversions,
            a.conversion_probability,
            result.computed_at,
        ]
        for credit in a.credits
    ]
