"""Report tests on a small known data set, every figure computed by hand below.

The data set is inserted twice (a replay) and carries a re-attributed conversion (version 1 credited to
'(none)', version 2 to a real touch), so the exact reports must see through both; the roll-up report shows
which of its figures stay exact (visitors) and which do not (sums), as migrations/0006_rollups.sql documents.
Every test runs three times: with every visitor numbered by the stream worker (visitors counted from the bitmaps
of channel_visitors), with none numbered (visitors first seen before numbers: visitor_days), and mixed; the
figures must not change (migrations/0009_channel_visitors.sql).

Journeys (March 2024):
  v1 -> L1: t1 Paid Search/spring (03-01), t2 Email (03-05); lead 03-05, mql 03-06, customer 03-20 (1000.00)
  v2 -> L2: t3 Organic Search (03-02); lead 03-02, lost 03-15
  v3:       t4 Paid Search/spring (03-03), never converts
  v4 -> L4: t5 Paid Search/brand (03-10); lead 03-10, sql 03-12, customer 03-25 (300.00):
            customer credits v1 -> '(none)' (the touch arrived late), v2 -> t5
  v5:       t6 Paid Search/spring on 04-02: outside the period
Spend: Paid Search/spring 03-01 100.00 then corrected to 120.00; Paid Search/brand 03-10 50.00;
       Email 03-05 10.00; Paid Search/spring 04-01 999.00 (outside).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from harness import unique

from schemas import serde
from schemas.events import Envelope, Identify, PageView, SpendRow
from schemas.outputs import Conversion, Credit, IdentityLink, Touch
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.reports import REPORTS, ReportError, channels, run_report, to_csv, to_json
from sinks.rows import Provenance, RecordKind, insert, rows_for
from sinks.settings import SinkSettings

pytestmark = pytest.mark.clickhouse

FROM, TO = date(2024, 3, 1), date(2024, 3, 31)
D = Decimal


def at(day: int, month: int = 3, hour: int = 12) -> datetime:
    return datetime(2024, month, day, hour, tzinfo=timezone.utc)


TOUCHES = {  # touch_id: (visitor, day, month, channel, source, medium, campaign)
    "t1": ("v1", 1, 3, "Paid Search", "google", "cpc", "spring"),
    "t2": ("v1", 5, 3, "Email", "newsletter", "email", ""),
    "t3": ("v2", 2, 3, "Organic Search", "google", "organic", ""),
    "t4": ("v3", 3, 3, "Paid Search", "google", "cpc", "spring"),
    "t5": ("v4", 10, 3, "Paid Search", "google", "cpc", "brand"),
    "t6": ("v5", 2, 4, "Paid Search", "google", "cpc", "spring"),
}


# Visitor numbers as the stream worker gives them: (partition << 40) + offset of the visitor's first event + 1.
NUMBERS = {"v1": (1 << 40) + 1, "v2": 5, "v3": (3 << 40) + 8, "v4": 6, "v5": (1 << 40) + 2}
NUMBERED = {"numbered": set(NUMBERS), "before numbers": set(), "mixed": {"v1", "v4"}}


def _touch(touch_id: str, numbered: set[str] = frozenset()) -> Touch:
    visitor, day, month, channel, source, medium, campaign = TOUCHES[touch_id]
    return Touch(
        touch_id=touch_id,
        visitor_id=visitor,
        visitor_number=NUMBERS[visitor] if visitor in numbered else 0,
        site_id="s",
        occurred_at=at(day, month),
        channel=channel,
        source=source,
        medium=medium,
        campaign=campaign,
        event_id=f"pv-{touch_id}",
    )


def _credits(conversion_id, lead, stage, when, model, shares, revenue=None, version=1) -> list[Credit]:
    """``shares``: [(touch_id, credit, revenue)]; touch '(none)' for a conversion without touches."""
    out = []
    for index, (touch_id, share, money) in enumerate(shares):
        if touch_id == "(none)":
            channel = source = medium = campaign = "(none)"
            touch_at = None
        else:
            touch = _touch(touch_id)
            channel, source, medium, campaign = touch.channel, touch.source, touch.medium, touch.campaign
            touch_at = touch.occurred_at
        out.append(
            Credit(
                conversion_id=conversion_id,
                lead_id=lead,
                stage=stage,
                model=model,
                touch_id=touch_id,
                touch_index=index,
                touch_at=touch_at,
                converted_at=when,
                channel=channel,
                source=source,
                medium=medium,
                campaign=campaign,
                credit=D(share),
                revenue=D(money or "0"),
                currency="EUR" if revenue else None,
                version=version,
            )
        )
    return out


def _data_set(numbered: set[str]) -> dict[RecordKind, list]:
    conversions, credits = [], []

    def convert(cid, lead, stage, when, journeys: dict, revenue=None, version=1):
        conversions.append(
            Conversion(
                conversion_id=cid,
                lead_id=lead,
                stage=stage,
                occurred_at=when,
                revenue=D(revenue) if revenue else None,
                currency="EUR" if revenue else None,
                touch_count=len(journeys["linear"]),
                event_id=f"ev-{cid}",
                version=version,
            )
        )
        for model, shares in journeys.items():
            credits.extend(_credits(cid, lead, stage, when, model, shares, revenue, version))

    both = lambda shares: {"linear": shares, "first_touch": shares}  # noqa: E731 - one-touch journeys
    convert(
        "c-l1-lead",
        "L1",
        "lead",
        at(5, hour=13),
        {"linear": [("t1", "0.5", None), ("t2", "0.5", None)], "first_touch": [("t1", "1", None)]},
    )
    convert(
        "c-l1-mql",
        "L1",
        "mql",
        at(6),
        {"linear": [("t1", "0.5", None), ("t2", "0.5", None)], "first_touch": [("t1", "1", None)]},
    )
    convert(
        "c-l1-cust",
        "L1",
        "customer",
        at(20),
        {"linear": [("t1", "0.5", "500.00"), ("t2", "0.5", "500.00")], "first_touch": [("t1", "1", "1000.00")]},
        revenue="1000.00",
    )
    convert("c-l2-lead", "L2", "lead", at(2, hour=14), both([("t3", "1", None)]))
    convert("c-l2-lost", "L2", "lost", at(15), both([("t3", "1", None)]))
    convert("c-l4-lead", "L4", "lead", at(10, hour=15), both([("t5", "1", None)]))
    convert("c-l4-sql", "L4", "sql", at(12), both([("t5", "1", None)]))
    convert("c-l4-cust", "L4", "customer", at(25), both([("(none)", "1", "300.00")]), revenue="300.00", version=1)
    convert("c-l4-cust", "L4", "customer", at(25), both([("t5", "1", "300.00")]), revenue="300.00", version=2)

    def spend(event_id, day, month, channel, campaign, cost, received_hour):
        return Envelope(
            event_id=event_id,
            site_id="ads",
            received_at=at(day, month, received_hour),
            event=SpendRow(
                occurred_at=at(day, month),
                date=date(2024, month, day),
                channel=channel,
                campaign=campaign,
                cost=D(cost),
                currency="EUR",
            ),
        )

    pages = []
    for visitor, paths, identified_day in (("v1", ["/", "/blog", "/pricing"], 5), ("v2", ["/pricing"], 2)):
        for minute, path in enumerate(paths):
            pages.append(
                Envelope(
                    event_id=f"pv-{visitor}-{minute}",
                    site_id="s",
                    received_at=at(identified_day),
                    event=PageView(
                        occurred_at=at(identified_day) + timedelta(minutes=minute),
                        visitor_id=visitor,
                        url=f"https://ex.com{path}",
                    ),
                )
            )
        pages.append(
            Envelope(
                event_id=f"id-{visitor}",
                site_id="s",
                received_at=at(identified_day),
                event=Identify(
                    occurred_at=at(identified_day) + timedelta(minutes=10),
                    visitor_id=visitor,
                    email=f"{visitor}@ex.com",
                ),
            )
        )
    return {
        RecordKind.TOUCH: [_touch(t, numbered) for t in TOUCHES],
        RecordKind.IDENTITY_LINK: [
            IdentityLink(visitor_id=v, lead_id=lead, linked_at=at(day), event_id=f"id-{v}")
            for v, lead, day in (("v1", "L1", 5), ("v2", "L2", 2), ("v4", "L4", 10))
        ],
        RecordKind.CONVERSION: conversions,
        RecordKind.CREDIT: credits,
        RecordKind.SOURCE: pages
        + [
            spend("sp1", 1, 3, "Paid Search", "spring", "100.00", 13),
            spend("sp1b", 1, 3, "Paid Search", "spring", "120.00", 18),  # a correction: newest wins
            spend("sp2", 10, 3, "Paid Search", "brand", "50.00", 13),
            spend("sp3", 5, 3, "Email", "", "10.00", 13),
            spend("sp4", 1, 4, "Paid Search", "spring", "999.00", 13),
        ],
    }


def _load(client, data: dict[RecordKind, list]) -> None:
    """Insert through the sink's own row conversion, one insert per table (like one sink batch)."""
    tables: dict[str, list] = {}
    for kind, records in data.items():
        for offset, record in enumerate(records):
            for table, row in rows_for(kind, serde.dumps(record), Provenance("test", 0, offset)):
                tables.setdefault(table, []).append(row)
    for table, rows in tables.items():
        insert(client, table, rows)


@pytest.fixture(scope="module", params=list(NUMBERED))
def numbered(request) -> set[str]:
    """The visitors the stream worker numbered in this run of the module (see NUMBERED)."""
    return NUMBERED[request.param]


@pytest.fixture(scope="module")
def client(numbered, clickhouse_http_url):
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('rep')}")
    migrate_up(settings)
    client = connect(settings)
    data = _data_set(numbered)
    _load(client, data)
    _load(client, data)  # the same batch delivered twice
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
    client.close()


def _by_channel(result) -> dict:
    return {(r["channel"], r["campaign"]) if "campaign" in r else r["channel"]: r for r in result.records()}


def _figures(row: dict) -> tuple:
    return tuple(
        row[c]
        for c in (
            "visitors",
            "leads",
            "mqls",
            "sqls",
            "customers",
            "lost",
            "revenue",
            "spend",
            "cost_per_lead",
            "cac",
            "roas",
            "lead_to_customer",
            "lost_share",
        )
    )


def test_channels_linear_every_figure(client):
    rows = _by_channel(channels(client, "linear", FROM, TO))
    assert set(rows) == {("Paid Search", ""), ("Email", ""), ("Organic Search", "")}  # no '(none)': v2 won
    # Paid Search: visitors v1 v3 v4; leads 0.5 (L1) + 1 (L4); mql 0.5; sql 1; customers 0.5 + 1;
    # revenue 500 + 300; spend 120 (corrected) + 50; CPL 170/1.5; CAC 170/1.5; ROAS 800/170.
    assert _figures(rows[("Paid Search", "")]) == (
        3,
        D("1.5"),
        D("0.5"),
        D("1"),
        D("1.5"),
        D("0"),
        D("800.00"),
        D("170.00"),
        113.33,
        113.33,
        4.7059,
        1.0,
        0.0,
    )
    # Email: visitor v1; half of L1's lead, mql and customer; revenue 500; spend 10.
    assert _figures(rows[("Email", "")]) == (
        1,
        D("0.5"),
        D("0.5"),
        D("0"),
        D("0.5"),
        D("0"),
        D("500.00"),
        D("10.00"),
        20.0,
        20.0,
        50.0,
        1.0,
        0.0,
    )
    # Organic Search: visitor v2; L2 lead then lost; no spend, so no CAC and no ROAS; CPL 0/1 = 0.
    assert _figures(rows[("Organic Search", "")]) == (
        1,
        D("1"),
        D("0"),
        D("0"),
        D("0"),
        D("1"),
        D("0.00"),
        D("0.00"),
        0.0,
        None,
        None,
        0.0,
        1.0,
    )


def test_channels_first_touch_every_figure(client):
    rows = _by_channel(channels(client, "first_touch", FROM, TO))
    # Paid Search has every first touch of L1 and L4: leads 2, mql 1, sql 1, customers 2, revenue 1000 + 300.
    assert _figures(rows[("Paid Search", "")]) == (
        3,
        D("2"),
        D("1"),
        D("1"),
        D("2"),
        D("0"),
        D("1300.00"),
        D("170.00"),
        85.0,
        85.0,
        7.6471,
        1.0,
        0.0,
    )
    # Email only ever came second: a visitor and spend, nothing credited; ROAS 0/10 = 0.
    assert _figures(rows[("Email", "")]) == (
        1,
        D("0"),
        D("0"),
        D("0"),
        D("0"),
        D("0"),
        D("0.00"),
        D("10.00"),
        None,
        None,
        0.0,
        None,
        None,
    )
    assert _figures(rows[("Organic Search", "")]) == (
        1,
        D("1"),
        D("0"),
        D("0"),
        D("0"),
        D("1"),
        D("0.00"),
        D("0.00"),
        0.0,
        None,
        None,
        0.0,
        1.0,
    )


def test_channels_by_campaign(client):
    rows = _by_channel(channels(client, "linear", FROM, TO, by_campaign=True))
    assert set(rows) == {("Paid Search", "spring"), ("Paid Search", "brand"), ("Email", ""), ("Organic Search", "")}
    # spring: visitors v1 v3; half of L1; spend 120. brand: v4, all of L4; spend 50.
    assert _figures(rows[("Paid Search", "spring")]) == (
        2,
        D("0.5"),
        D("0.5"),
        D("0"),
        D("0.5"),
        D("0"),
        D("500.00"),
        D("120.00"),
        240.0,
        240.0,
        4.1667,
        1.0,
        0.0,
    )
    assert _figures(rows[("Paid Search", "brand")]) == (
        1,
        D("1"),
        D("0"),
        D("1"),
        D("1"),
        D("0"),
        D("300.00"),
        D("50.00"),
        50.0,
        50.0,
        6.0,
        1.0,
        0.0,
    )


def test_visitors_count_only_touches_inside_the_period(client):
    # 2..5 March: v2 (Organic, day 2), v3 (Paid Search spring, day 3), v1 (Email, day 5); v1's Paid Search touch
    # (day 1) and v4's (day 10) fall outside. April: only v5 (Paid Search spring).
    visitors = {
        k: r["visitors"] for k, r in _by_channel(channels(client, "linear", date(2024, 3, 2), date(2024, 3, 5))).items()
    }
    assert visitors == {("Paid Search", ""): 1, ("Email", ""): 1, ("Organic Search", ""): 1}
    # The same count by hand, from the parameterized view the reports read:
    assert client.query(
        "SELECT channel, campaign, visitors FROM channel_visitor_counts(from = '2024-03-02', "
        "to = '2024-03-05', by_campaign = 1) ORDER BY channel"
    ).result_rows == [("Email", "", 1), ("Organic Search", "", 1), ("Paid Search", "spring", 1)]
    april = _by_channel(channels(client, "linear", date(2024, 4, 1), date(2024, 4, 30), by_campaign=True))
    assert {k: r["visitors"] for k, r in april.items()} == {("Paid Search", "spring"): 1}
    # A whole month with days on both sides (bitmaps: March's month bitmap, days of February and April):
    # 20 Feb .. 2 Apr takes every touch, v1 once on Paid Search although it has its month and day rows.
    wide = _by_channel(channels(client, "linear", date(2024, 2, 20), date(2024, 4, 2)))
    assert {k: r["visitors"] for k, r in wide.items()} == {
        ("Paid Search", ""): 4,
        ("Email", ""): 1,
        ("Organic Search", ""): 1,
    }
    # Days only, across a month's end: 2 Mar .. 1 Apr has v3 (03-03) and v4 (03-10) on Paid Search, not v1 (03-01)
    # nor v5 (04-02).
    edges = _by_channel(channels(client, "linear", date(2024, 3, 2), date(2024, 4, 1)))
    assert {k: r["visitors"] for k, r in edges.items()} == {
        ("Paid Search", ""): 2,
        ("Email", ""): 1,
        ("Organic Search", ""): 1,
    }
    for source in ("raw", "rollup"):
        march = _by_channel(channels(client, "linear", FROM, TO, by_campaign=True, source=source))
        # (The roll-up path also shows '(none)', with no visitors, from L4's superseded credit.)
        assert {k: r["visitors"] for k, r in march.items() if k[0] != "(none)"} == {
            ("Paid Search", "spring"): 2,
            ("Paid Search", "brand"): 1,
            ("Email", ""): 1,
            ("Organic Search", ""): 1,
        }


def test_each_visitor_is_in_exactly_one_visitor_roll_up(client, numbered):
    """Numbered visitors are in channel_visitors' bitmaps, the others in visitor_days: never both, never lost."""
    in_bitmaps = client.query(
        "SELECT arraySort(bitmapToArray(groupBitmapMergeState(visitors))) FROM channel_visitors "
        "WHERE grouping = 'channel'"
    ).result_rows[0][0]
    in_days = client.query("SELECT DISTINCT visitor_id FROM visitor_days ORDER BY visitor_id").result_rows
    assert in_bitmaps == sorted(NUMBERS[v] for v in numbered)
    assert [row[0] for row in in_days] == sorted(set(NUMBERS) - numbered)


def test_rollup_visitors_exact_but_sums_count_replays_and_old_versions(client):
    rows = _by_channel(channels(client, "linear", FROM, TO, source="rollup"))
    paid = rows[("Paid Search", "")]
    assert paid["visitors"] == 3  # distinct-count states: exact after the replay
    assert paid["spend"] == D("170.00")  # read from the spend table with FINAL
    # Sums: every block counted, i.e. twice (replay); L4's superseded version-1 credit shows up under '(none)'.
    assert (paid["leads"], paid["revenue"]) == (D("3"), D("1600.00"))
    assert rows[("(none)", "")]["revenue"] == D("600.00")


def test_funnel_first_touch(client):
    rows = _by_channel(run_report(client, "funnel", model="first_touch", date_from=FROM, date_to=TO))
    paid = rows["Paid Search"]
    assert (
        paid["leads"],
        paid["mqls"],
        paid["sqls"],
        paid["customers"],
        paid["lead_to_mql"],
        paid["mql_to_sql"],
        paid["lead_to_customer"],
    ) == (D("2"), D("1"), D("1"), D("2"), 0.5, 1.0, 1.0)
    assert rows["Organic Search"]["lost"] == D("1")


def test_paths_compare_models_and_time_to_convert(client):
    paths = run_report(client, "paths", stage="customer", date_from=FROM, date_to=TO, limit=10)
    assert [(r["path"], r["conversions"]) for r in paths.records()] == [("Paid Search", 1), ("Paid Search > Email", 1)]
    pages = run_report(client, "page-paths", pages=5, date_from=FROM, date_to=TO, limit=10)
    assert [(r["pages_before_form"], r["visitors"]) for r in pages.records()] == [
        ("/ > /blog > /pricing", 1),
        ("/pricing", 1),
    ]
    compare = _by_channel(run_report(client, "compare-models", date_from=FROM, date_to=TO))
    assert (compare["Paid Search"]["linear"], compare["Paid Search"]["first_touch"]) == (D("800.00"), D("1300.00"))
    assert (compare["Email"]["linear"], compare["Email"]["first_touch"], compare["Email"]["w_shaped"]) == (
        D("500.00"),
        D("0.00"),
        D("0.00"),
    )
    ttc = _by_channel(run_report(client, "time-to-convert", date_from=FROM, date_to=TO))
    # Paid Search: L1 03-01 12:00 -> 03-05 13:00 (4.04 d), L4 03-10 12:00 -> 15:00 (0.125 d): median 2.08;
    # lead -> customer: L1 15 d minus 1 h (14.96), L4 15 d minus 3 h (14.875): median 14.92.
    assert (
        ttc["Paid Search"]["leads"],
        ttc["Paid Search"]["median_days_touch_to_lead"],
        ttc["Paid Search"]["customers"],
        ttc["Paid Search"]["median_days_lead_to_customer"],
    ) == (2, 2.08, 2, 14.92)
    assert (ttc["Organic Search"]["leads"], ttc["Organic Search"]["median_days_touch_to_lead"]) == (1, 0.08)


def test_bad_parameters_say_what_to_do(client):
    with pytest.raises(ReportError, match="unknown attribution model 'markov'; choose one of: first_touch"):
        channels(client, "markov", FROM, TO)
    with pytest.raises(ReportError, match="--from 2024-03-31 is after --to 2024-03-01"):
        channels(client, "linear", TO, FROM)
    assert set(REPORTS) >= {"channels", "funnel", "paths", "time-to-convert", "compare-models"}


def test_csv_and_json_keep_exact_decimals(client):
    result = channels(client, "linear", FROM, TO)
    assert to_csv(result).splitlines()[0].startswith("channel,campaign,visitors,leads,")
    assert '"revenue": "800.00"' in to_json(result)


def test_cli_report_sql_and_migrate_list(client, clickhouse_http_url, monkeypatch):
    import json

    from click.testing import CliRunner

    from closedloop.cli import main

    url = f"{clickhouse_http_url}/{client.database}"
    monkeypatch.setenv("CLOSEDLOOP_CLICKHOUSE_URL", url)
    runner = CliRunner()
    out = runner.invoke(
        main,
        [
            "report",
            "channels",
            "--model",
            "first_touch",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-31",
            "--format",
            "json",
        ],
    )
    assert out.exit_code == 0, out.output
    paid = {r["channel"]: r for r in json.loads(out.output)}["Paid Search"]
    assert (paid["revenue"], paid["spend"], paid["cost_per_lead"]) == ("1300.00", "170.00", 85.0)
    out = runner.invoke(main, ["report", "channels", "--by", "campaign", "--from", "2024-03-01", "--to", "2024-03-31"])
    assert out.exit_code == 0 and "spring" in out.output and "113.33" not in out.output, out.output
    out = runner.invoke(main, ["sql", "SELECT count() AS n FROM touches FINAL", "--format", "csv"])
    assert (out.exit_code, out.output) == (0, "n\n6\n")
    out = runner.invoke(main, ["migrate", "--list"])
    assert out.exit_code == 0 and "0006" in out.output and "pending" not in out.output, out.output
    out = runner.invoke(main, ["report", "channels", "--from", "2024-03-31", "--to", "2024-03-01"])
    assert out.exit_code == 2 and "is after --to" in out.output
    out = runner.invoke(main, ["sql", "SELEC 1"])
    assert out.exit_code == 1 and "Error:" in out.output
