"""How report values print, one test per rule (sinks/reports.py, "output"); no ClickHouse: the results are built
here with the column types ClickHouse gives the report SQL."""

from __future__ import annotations

import csv
import io
import json
import math
from decimal import Decimal

from rich.console import Console

from sinks.reports import ReportResult, no_data_message, to_csv, to_json, to_table

D = Decimal

CHANNELS = ReportResult(
    "channels",
    ("channel", "visitors", "leads", "customers", "revenue", "cost_per_lead", "lead_to_customer", "lost_share"),
    (
        ("Paid Search", 12345, D("58.000000000"), D("1.500000000"), D("1234567.50"), 113.33, 0.5, 0.0),
        ("Email", 7, D("0E-9"), D("0.333333333"), D("0.00"), None, None, math.nan),
    ),
    (
        "LowCardinality(String)",
        "UInt64",
        "Decimal(38, 9)",
        "Decimal(38, 9)",
        "Decimal(38, 2)",
        "Nullable(Float64)",
        "Nullable(Float64)",
        "Nullable(Float64)",
    ),
)
FIRST_TOUCH = ReportResult(
    "channels",
    ("channel", "leads"),
    (("Paid Search", D("58.000000000")), ("Email", D("0E-9"))),
    ("String", "Decimal(38, 9)"),
)
TTC = ReportResult(
    "time-to-convert",
    ("channel", "leads", "median_days_touch_to_lead", "customers", "median_days_lead_to_customer"),
    (("Organic Search", 1, 2.25, 0, None), ("(none)", 1, None, 0, math.nan)),
    ("String", "UInt64", "Nullable(Float64)", "UInt64", "Nullable(Float64)"),
)


def table_lines(result: ReportResult) -> list[str]:
    console = Console(width=200, record=True)
    console.print(to_table(result))
    return console.export_text().splitlines()


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("│┃").replace("┃", "│").split("│")]


def csv_rows(result: ReportResult) -> list[dict]:
    return list(csv.DictReader(io.StringIO(to_csv(result))))


def test_counts_print_as_integers():
    assert [r["visitors"] for r in json.loads(to_json(CHANNELS))] == [12345, 7]
    assert [r["visitors"] for r in csv_rows(CHANNELS)] == ["12345", "7"]
    # Credited counts of first_touch are whole: integers everywhere, never 58.00 or 58.000000000.
    assert [r["leads"] for r in json.loads(to_json(FIRST_TOUCH))] == [58, 0]
    assert [r["leads"] for r in csv_rows(FIRST_TOUCH)] == ["58", "0"]
    assert [cells(line)[1] for line in table_lines(FIRST_TOUCH)[3:5]] == ["58", "0"]
    assert [r["leads"] for r in json.loads(to_json(TTC))] == [1, 1]


def test_fractional_credited_counts_keep_their_exact_sum_and_the_table_two_places():
    assert [r["customers"] for r in json.loads(to_json(CHANNELS))] == [1.5, 0.333333333]
    assert [r["customers"] for r in csv_rows(CHANNELS)] == ["1.5", "0.333333333"]
    # One column, one look: leads are whole on every row (integers), customers are not (two places on every row).
    assert [cells(line)[2:4] for line in table_lines(CHANNELS)[3:5]] == [["58", "1.50"], ["0", "0.33"]]


def test_decimal_zero_is_never_scientific():
    for text in (to_json(CHANNELS), to_csv(CHANNELS), "\n".join(table_lines(CHANNELS))):
        assert "E-" not in text and "e-" not in text


def test_rates_and_shares_have_four_places_money_two():
    rows = csv_rows(CHANNELS)
    assert [(r["lead_to_customer"], r["lost_share"], r["cost_per_lead"]) for r in rows] == [
        ("0.5000", "0.0000", "113.33"),
        ("", "", ""),
    ]
    assert [r["revenue"] for r in rows] == ["1234567.50", "0.00"]
    paid = cells(table_lines(CHANNELS)[3])
    assert paid[5:8] == ["113.33", "0.5000", "0.0000"]
    assert [r["median_days_touch_to_lead"] for r in csv_rows(TTC)] == ["2.25", ""]


def test_missing_values_are_null_never_nan():
    text = to_json(TTC) + to_json(CHANNELS)
    assert "NaN" not in text and "nan" not in text.lower().replace("channel", "")
    assert [r["median_days_lead_to_customer"] for r in json.loads(to_json(TTC))] == [None, None]
    assert [r["lost_share"] for r in json.loads(to_json(CHANNELS))] == [0.0, None]
    assert cells(table_lines(TTC)[4])[4] == "-"


def test_headers_are_the_column_names_in_every_format():
    header = list(CHANNELS.columns)
    assert next(csv.reader(io.StringIO(to_csv(CHANNELS)))) == header
    assert list(json.loads(to_json(CHANNELS))[0]) == header
    assert cells(table_lines(CHANNELS)[1]) == header


def test_thousands_are_separated_with_a_comma_in_the_table_only():
    paid = cells(table_lines(CHANNELS)[3])
    assert (paid[1], paid[4]) == ("12,345", "1,234,567.50")
    assert (csv_rows(CHANNELS)[0]["visitors"], csv_rows(CHANNELS)[0]["revenue"]) == ("12345", "1234567.50")
    assert json.loads(to_json(CHANNELS))[0]["revenue"] == "1234567.50"


def test_an_empty_period_names_the_period_that_has_data():
    from datetime import date

    assert no_data_message(date(2026, 11, 6), date(2026, 12, 5), (date(2026, 9, 1), date(2026, 9, 30))) == (
        "No data from 2026-11-06 to 2026-12-05. The data covers 2026-09-01 .. 2026-09-30: "
        "run again with --from 2026-09-01 --to 2026-09-30."
    )
    assert "nor on any other day" in no_data_message(date(2026, 11, 6), date(2026, 12, 5), None)


def test_the_demo_table_follows_the_same_rules():
    from closedloop.commands.demo import _count, _money, _ratio

    assert (_count(D("58.000000000")), _count(D("1234.5")), _count(None)) == ("58", "1,234.50", "-")
    assert (_money(D("1234567.5")), _money(D("0E-9"))) == ("1,234,567.50", "0.00")
    assert (_ratio(0.5), _ratio(12.34567)) == ("0.5000", "12.3457")
