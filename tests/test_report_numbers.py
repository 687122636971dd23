"""Reports on scripted journeys run through the worker's own rules (``lifecycle.apply``, ``credits_for``), so the
credits carry what the stream writes: a row per touch in every model (zero shares included) and re-emitted
versions. Every expected figure is computed in this file from the script, independently of the rules and the SQL.

Journeys (April 2024; times UTC):
  A: Paid Search 04-01 08:00, Email 04-02 10:00, Direct 04-03 09:00; form 04-03 09:30; customer 04-10 12:00 (1000)
  B: Organic Search 04-02 00:00, Paid Search 04-04 00:00; form 04-04 06:00
  C: the CRM says customer 04-06 12:00 (500) before the form: credited to (none) first; then the form
     04-05 18:00 with the visitor's Referral touch 04-05 12:00 re-attributes it (version 2)
  D: Paid Search 04-03 00:00; form 04-08 00:00; customer 04-09 00:00 (250)
  E: a form with no touch at all: (none)
"""

from __future__ import annotations

import json
import statistics
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from harness import unique

from schemas import serde
from schemas.events import CrmStatusChange
from schemas.outputs import IdentityLink, Touch
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.reports import channels, run_report, to_json
from sinks.rows import Provenance, RecordKind, insert, rows_for
from sinks.settings import SinkSettings
from stream_jobs.rules import lifecycle

pytestmark = pytest.mark.clickhouse

FROM, TO = date(2024, 4, 1), date(2024, 4, 30)
DAY = 86400.0


def at(day: int, hour: float = 0) -> datetime:
    return datetime(2024, 4, day, tzinfo=timezone.utc) + timedelta(hours=hour)


# lead: (touches [(channel, time)], form time or None, customer (time, revenue) or None, CRM before the form)
JOURNEYS = {
    "A": ([("Paid Search", at(1, 8)), ("Email", at(2, 10)), ("Direct", at(3, 9))], at(3, 9.5), (at(10, 12), "1000")),
    "B": ([("Organic Search", at(2)), ("Paid Search", at(4))], at(4, 6), None),
    "C": ([("Referral", at(5, 12))], at(5, 18), (at(6, 12), "500")),
    "D": ([("Paid Search", at(3))], at(8), (at(9), "250")),
    "E": ([], at(7), None),
}
CRM_FIRST = {"C"}


def _touch(lead: str, index: int, channel: str, when: datetime, landing_path: str = "/") -> Touch:
    return Touch(
        touch_id=f"{lead}-t{9 - index}",  # later touches sort first by id, as hashed ids may
        visitor_id=f"v-{lead}",
        visitor_number=ord(lead),
        lead_id=lead,
        site_id="s",
        occurred_at=when,
        channel=channel,
        source="(direct)" if channel == "Direct" else channel.lower(),
        medium="(none)" if channel == "Direct" else "x",
        event_id=f"pv-{lead}-{index}",
        landing_path=landing_path,
    )


def _stream_records(journeys: dict = JOURNEYS, crm_first: set[str] = CRM_FIRST) -> dict[RecordKind, list]:
    """What the worker would write for ``journeys`` (lead: (touches [(channel, time[, landing path])], form time,
    customer (time, revenue) or None)): the touches, identity links, every emitted conversion and its credits."""
    out: dict[RecordKind, list] = {
        RecordKind.TOUCH: [],
        RecordKind.IDENTITY_LINK: [],
        RecordKind.CONVERSION: [],
        RecordKind.CREDIT: [],
    }
    for lead, (touches, form_at, customer) in journeys.items():
        journey = [_touch(lead, i, *touch) for i, touch in enumerate(touches)]
        out[RecordKind.TOUCH].extend(journey)
        link = IdentityLink(visitor_id=f"v-{lead}", lead_id=lead, linked_at=form_at, event_id=f"id-{lead}")
        out[RecordKind.IDENTITY_LINK].append(link)
        crm = None
        if customer is not None:
            crm = CrmStatusChange(
                occurred_at=customer[0],
                crm="generic",
                crm_object_id=f"deal-{lead}",
                email=f"{lead.lower()}@example.com",
                stage="customer",
                deal_value=Decimal(customer[1]),
                currency="EUR",
            )
        steps = [("link", link)] + ([("crm", crm)] if crm else [])
        if lead in crm_first:
            steps.reverse()
        state = None
        for kind, record in steps:
            if kind == "link":
                state, conversions = lifecycle.apply_link(state, record, journey)
            else:
                state, conversions = lifecycle.apply_crm(state, record, lead_id=lead, event_id=f"won-{lead}")
            for conversion in conversions:
                out[RecordKind.CONVERSION].append(conversion)
                out[RecordKind.CREDIT].extend(lifecycle.credits_for(state, conversion))
    return out


def _load(client, data: dict[RecordKind, list]) -> None:
    tables: dict[str, list] = {}
    for kind, records in data.items():
        for offset, record in enumerate(records):
            for table, row in rows_for(kind, serde.dumps(record), Provenance("test", 0, offset)):
                tables.setdefault(table, []).append(row)
    for table, rows in tables.items():
        insert(client, table, rows)


@pytest.fixture(scope="module")
def client(clickhouse_http_url):
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('num')}")
    migrate_up(settings)
    client = connect(settings)
    data = _stream_records()
    assert {c.version for c in data[RecordKind.CONVERSION] if c.lead_id == "C" and c.stage == "customer"} == {1, 2}
    _load(client, data)
    _load(client, data)  # delivered twice
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
    client.close()


def _expected_time_to_convert() -> dict[str, dict]:
    """By the first touch of each conversion (the earliest touch of the script, (none) without one): leads and
    customers, and the median days first touch -> lead and lead -> customer (None when there is no such time)."""
    leads: dict[str, list[float | None]] = {}
    customers: dict[str, list[float]] = {}
    for touches, form_at, customer in JOURNEYS.values():
        first = min(touches, key=lambda t: t[1]) if touches else None
        channel = first[0] if first else "(none)"
        leads.setdefault(channel, []).append((form_at - first[1]).total_seconds() / DAY if first else None)
        if customer is not None:
            before = [t for t in touches if t[1] <= customer[0]]
            customer_channel = min(before, key=lambda t: t[1])[0] if before else "(none)"
            customers.setdefault(customer_channel, []).append((customer[0] - form_at).total_seconds() / DAY)

    def median(values):
        known = [v for v in values if v is not None]
        return round(statistics.median(known), 2) if known else None

    return {
        channel: {
            "leads": len(leads.get(channel, [])),
            "median_days_touch_to_lead": median(leads.get(channel, [])),
            "customers": len(customers.get(channel, [])),
            "median_days_lead_to_customer": median(customers.get(channel, [])),
        }
        for channel in sorted(set(leads) | set(customers))
    }


def test_time_to_convert_by_first_touch_channel(client):
    expected = _expected_time_to_convert()
    # The script, worked by hand: Paid Search has A (2.0625 d) and D (5 d) -> 3.53; A -> customer 7.104 d,
    # D 1 d -> 4.05. Referral: C 0.25 d, customer 0.75 d. Organic Search: B 2.25 d. (none): E, no touch time.
    assert expected == {
        "(none)": {
            "leads": 1,
            "median_days_touch_to_lead": None,
            "customers": 0,
            "median_days_lead_to_customer": None,
        },
        "Organic Search": {
            "leads": 1,
            "median_days_touch_to_lead": 2.25,
            "customers": 0,
            "median_days_lead_to_customer": None,
        },
        "Paid Search": {
            "leads": 2,
            "median_days_touch_to_lead": 3.53,
            "customers": 2,
            "median_days_lead_to_customer": 4.05,
        },
        "Referral": {
            "leads": 1,
            "median_days_touch_to_lead": 0.25,
            "customers": 1,
            "median_days_lead_to_customer": 0.75,
        },
    }
    result = run_report(client, "time-to-convert", date_from=FROM, date_to=TO)
    got = {r.pop("channel"): r for r in result.records()}
    assert got == expected
    text = to_json(result)
    assert "NaN" not in text and "nan" not in text
    assert {r["channel"]: r["median_days_lead_to_customer"] for r in json.loads(text)}["Organic Search"] is None


def test_time_to_convert_agrees_with_the_first_touch_channel_report(client):
    ttc = {r["channel"]: r for r in run_report(client, "time-to-convert", date_from=FROM, date_to=TO).records()}
    report = {r["channel"]: r for r in channels(client, "first_touch", FROM, TO).records()}
    assert {c: (r["leads"], r["customers"]) for c, r in ttc.items()} == {
        c: (int(r["leads"]), int(r["customers"])) for c, r in report.items() if r["leads"] or r["customers"]
    }


# -- the output rules on every report, through the CLI (sinks/reports.py, "output") ----------------------------

COMMANDS = {
    "channels first_touch": ["channels", "--model", "first_touch"],
    "channels linear": ["channels", "--model", "linear"],
    "funnel": ["funnel"],
    "paths": ["paths"],
    "time-to-convert": ["time-to-convert"],
    "compare-models": ["compare-models"],
    "quality": ["quality"],
    "landing-pages": ["landing-pages"],
    "ideal-path": ["ideal-path"],
    "payback": ["payback"],
}
COUNTS = {"visitors", "leads", "mqls", "sqls", "opportunities", "customers", "lost", "conversions"}
COUNTS |= {"sessions", "journeys", "converting", "not_converting", "payback_months"}
RATES = {"roas", "lead_to_customer", "lost_share", "lead_to_mql", "mql_to_sql", "sql_to_opportunity"}
RATES |= {"opportunity_to_customer", "mql_rate", "sql_rate", "win_rate", "lost_rate"}
RATES |= {"lead_rate", "customer_rate", "conversion_rate", "roas_to_date"}
TWO_PLACES = {"revenue", "spend", "cost_per_lead", "cac", "avg_touches", "median_days_touch_to_lead"}
TWO_PLACES |= {"median_days_lead_to_customer", "first_touch", "last_touch", "linear", "time_decay", "u_shaped"}
TWO_PLACES |= {"w_shaped", "full_path", "avg_deal_value", "revenue_per_session", "median_days_to_convert"}
TWO_PLACES |= {"revenue_m0", "revenue_m1", "revenue_m2", "revenue_m3", "revenue_m6", "revenue_m12", "revenue_to_date"}


@pytest.fixture(scope="module")
def cli(client, clickhouse_http_url):
    from click.testing import CliRunner

    from closedloop.cli import main

    runner = CliRunner(env={"CLOSEDLOOP_CLICKHOUSE_URL": f"{clickhouse_http_url}/{client.database}"})

    def run(args: list[str], fmt: str, period: tuple[str, str] = (str(FROM), str(TO))):
        result = runner.invoke(main, ["report", *args, "--from", period[0], "--to", period[1], "--format", fmt])
        assert result.exit_code == 0, result.output
        return result

    return run


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_report_follows_the_output_rules_in_every_format(cli, command):
    import csv
    import io
    import re

    args = COMMANDS[command]
    whole = command not in ("channels linear", "landing-pages")  # linear credits fractions of a conversion
    count_text = r"\d+" if whole else r"\d+(\.\d*[1-9])?"
    csv_text = cli(args, "csv").stdout
    json_text = cli(args, "json").stdout
    table_text = cli(args, "table").stdout
    for text in (csv_text, json_text, table_text):
        assert not re.search(r"\dE-?\d|NaN|\bnan\b", text), text
    tables = [list(csv.reader(io.StringIO(part))) for part in csv_text.split("\n\n") if part.strip()]
    records = _strict_json(json_text)
    if command == "paths":  # two reports: one JSON object keyed by report
        assert set(records) == {"paths", "page-paths"}, records
        records = [row for rows in records.values() for row in rows]
    assert tables and all(rows[1:] for rows in tables), csv_text
    for rows in tables:
        header = rows[0]
        for row in rows[1:]:
            for name, value in zip(header, row, strict=True):
                if value == "":
                    continue
                if name in COUNTS:
                    assert re.fullmatch(count_text, value), (name, value)
                elif name in RATES:
                    assert re.fullmatch(r"\d+\.\d{4}", value), (name, value)
                elif name in TWO_PLACES:
                    assert re.fullmatch(r"-?\d+\.\d{2}", value), (name, value)
        # One header style: the table shows the CSV's column names (campaign left out when empty).
        # (and a text column empty on every row, as top_lost_reasons without any reason, is left out too)
        blank = {h for i, h in enumerate(header) if h == "top_lost_reasons" and all(r[i] == "" for r in rows[1:])}
        shown = [h for h in header if h != "campaign" and h not in blank]
        assert any([c.strip() for c in line.strip("│┃ ").split("┃")] == shown for line in table_text.splitlines()), (
            shown,
            table_text,
        )
    if records is not None:
        for record in records:
            for name, value in record.items():
                if name in COUNTS and whole and value is not None:  # payback_months: null until paid back
                    assert isinstance(value, int), (name, value)
                if name in ("revenue", "linear", "first_touch"):
                    assert isinstance(value, str) and "," not in value, (name, value)
    if command in ("channels first_touch", "compare-models"):
        assert "1,000.00" in table_text or "1,250.00" in table_text, table_text  # A's 1000 (+ D's 250)


def test_an_empty_period_says_so_and_names_the_period_with_data(cli):
    result = cli(["channels"], "table", ("2025-01-01", "2025-01-31"))
    assert "No data from 2025-01-01 to 2025-01-31. The data covers 2024-04-01 .. 2024-04-10: " in result.stderr
    assert "run again with --from 2024-04-01 --to 2024-04-10." in result.stderr
    result = cli(["channels"], "json", ("2025-01-01", "2025-01-31"))
    assert (json.loads(result.stdout), "The data covers 2024-04-01" in result.stderr) == ([], True)
    result = cli(["channels"], "csv")
    assert result.stderr == ""


def test_linear_leftover_cents_go_to_the_latest_touch_and_the_documented_query_gives_the_exact_split(client):
    # A's 1000.00 over three touches: 333.33 each and the leftover cent to the latest (Direct); D's 250.00 is
    # all Paid Search's; C's 500.00 all Referral's. Exact: a third of 1000.00 each.
    report = {r["channel"]: r["revenue"] for r in channels(client, "linear", FROM, TO).records()}
    assert {c: v for c, v in report.items() if v} == {
        "Paid Search": Decimal("583.33"),
        "Referral": Decimal("500.00"),
        "Email": Decimal("333.33"),
        "Direct": Decimal("333.34"),
    }
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ATTRIBUTION.md").read_text(encoding="utf-8")
    query = doc.split("```sql\n")[-1].split("```")[0].replace("2024-04-01", str(FROM)).replace("2024-04-30", str(TO))
    exact = dict(client.query(query).result_rows)
    assert exact == {
        "Paid Search": Decimal("583.33"),
        "Referral": Decimal("500.00"),
        "Email": Decimal("333.33"),
        "Direct": Decimal("333.33"),
    }
