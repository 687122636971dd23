"""Landing pages, the ideal path and cohort payback on scripted journeys run through the worker's own rules
(``test_report_numbers._stream_records``), each figure worked out by hand below.

Journeys (times 12:00 UTC unless said; the form 1 h after the last touch before it):
  A: Paid Search 2024-01-05 /pricing, Paid Search 01-06 /pricing, Email 01-20 /blog/x; form 01-20 13:00;
     customer 02-10 (600)
  B: Paid Search 01-10 /pricing; form 01-10 13:00; customer 03-15 (150): after the period below
  C: Organic Search 2023-12-20 /blog/x, Paid Search 02-01 /pricing; form 02-01 13:00; customer 02-05 (400)
  E: Organic Search 02-03 /blog/x; form 02-03 13:00; never a customer
  F: Referral 02-15 /demo; form 02-15 13:00; customer 02-20 (90)
  anonymous visitor v-anon: Paid Search 01-12 / ; never identified
Page views: A /pricing 01-05, /blog/x 01-06, /whitepapers/a 01-20; B /pricing 01-10; C /blog/y 2023-12-20,
  /pricing 02-01; E /blog/x 02-03; F /demo 02-15; the anonymous visitor / 01-12.
Spend: Paid Search 01-05 100.00, 01-10 100.00, 02-01 50.00; Email 01-20 20.00; Referral 02-15 10.00.
Period: 2024-01-01 .. 2024-02-29.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from harness import unique
from test_report_numbers import _load, _stream_records

from schemas.events import Envelope, PageView, SpendRow
from schemas.outputs import Touch
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.reports import ReportError, run_report, to_json
from sinks.rows import RecordKind
from sinks.settings import SinkSettings

pytestmark = pytest.mark.clickhouse

FROM, TO = date(2024, 1, 1), date(2024, 2, 29)
D = Decimal


def at(month: int, day: int, hour: int = 12, year: int = 2024) -> datetime:
    return datetime(year, month, day, hour, tzinfo=timezone.utc)


JOURNEYS = {
    "A": (
        [
            ("Paid Search", at(1, 5), "/pricing"),
            ("Paid Search", at(1, 6), "/pricing"),
            ("Email", at(1, 20), "/blog/x"),
        ],
        at(1, 20, 13),
        (at(2, 10), "600"),
    ),
    "B": ([("Paid Search", at(1, 10), "/pricing")], at(1, 10, 13), (at(3, 15), "150")),
    "C": (
        [("Organic Search", at(12, 20, year=2023), "/blog/x"), ("Paid Search", at(2, 1), "/pricing")],
        at(2, 1, 13),
        (at(2, 5), "400"),
    ),
    "E": ([("Organic Search", at(2, 3), "/blog/x")], at(2, 3, 13), None),
    "F": ([("Referral", at(2, 15), "/demo")], at(2, 15, 13), (at(2, 20), "90")),
}
PAGES = [  # (visitor, time, path)
    ("v-A", at(1, 5), "/pricing"),
    ("v-A", at(1, 6), "/blog/x"),
    ("v-A", at(1, 20), "/whitepapers/a"),
    ("v-B", at(1, 10), "/pricing"),
    ("v-C", at(12, 20, year=2023), "/blog/y"),
    ("v-C", at(2, 1), "/pricing"),
    ("v-E", at(2, 3), "/blog/x"),
    ("v-F", at(2, 15), "/demo"),
    ("v-anon", at(1, 12), "/"),
]
SPEND = [  # (day, channel, cost)
    (at(1, 5), "Paid Search", "100.00"),
    (at(1, 10), "Paid Search", "100.00"),
    (at(2, 1), "Paid Search", "50.00"),
    (at(1, 20), "Email", "20.00"),
    (at(2, 15), "Referral", "10.00"),
]


def _data() -> dict[RecordKind, list]:
    data = _stream_records(JOURNEYS, crm_first=set())
    data[RecordKind.TOUCH].append(
        Touch(
            touch_id="anon-t1",
            visitor_id="v-anon",
            site_id="s",
            occurred_at=at(1, 12),
            channel="Paid Search",
            source="google",
            medium="cpc",
            event_id="pv-anon",
            landing_path="/",
        )
    )
    data[RecordKind.SOURCE] = [
        Envelope(
            event_id=f"spend-{n}",
            site_id="ads",
            received_at=when,
            event=SpendRow(occurred_at=when, date=when.date(), channel=channel, cost=D(cost), currency="EUR"),
        )
        for n, (when, channel, cost) in enumerate(SPEND)
    ] + [
        Envelope(
            event_id=f"pv-{visitor}-{n}",
            site_id="s",
            received_at=when,
            event=PageView(occurred_at=when, visitor_id=visitor, url=f"https://ex.com{path}"),
        )
        for n, (visitor, when, path) in enumerate(PAGES)
    ]
    return data


@pytest.fixture(scope="module")
def client(clickhouse_http_url):
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('journeys')}")
    migrate_up(settings)
    client = connect(settings)
    data = _data()
    _load(client, data)
    _load(client, data)  # delivered twice
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
    client.close()


def _rounded(record: dict) -> dict:
    """Credited sums to 6 places: a third is 0.333333333 or ...334 depending on where the rules put the leftover."""
    return {
        k: round(float(v), 6) if isinstance(v, Decimal) and k in ("leads", "customers") else v
        for k, v in record.items()
    }


# -- landing pages -----------------------------------------------------------------------------------------------


def test_landing_pages_by_channel_every_figure(client) -> None:
    rows = run_report(
        client, "landing-pages", model="linear", date_from=FROM, date_to=TO, by_channel=True, limit=100
    ).records()
    order = [(r["landing_page"], r["channel"]) for r in rows]
    got = {(r.pop("landing_page"), r.pop("channel")): _rounded(r) for r in rows}
    # Sessions: touches of the period per page and channel (C's Organic touch of December is outside).
    # Linear credits of the period's conversions: A's lead 1/3 per touch (2/3 on /pricing), A's customer 200.00
    # per touch; B's lead 1 (its customer is in March); C's lead and customer 1/2 per touch (200.00 each), its
    # /blog/x touch credited although it is December's; E's lead 1; F's lead and customer 1 (90.00).
    assert got == {
        ("/pricing", "Paid Search"): {
            "sessions": 4,  # A twice, B, C
            "leads": round(2 / 3 + 1 + 0.5, 6),
            "customers": round(2 / 3 + 0.5, 6),
            "revenue": D("600.00"),
            "lead_rate": round((2 / 3 + 1.5) / 4, 4),
            "customer_rate": round((2 / 3 + 0.5) / 4, 4),
            "revenue_per_session": 150.0,
        },
        ("/blog/x", "Email"): {
            "sessions": 1,
            "leads": round(1 / 3, 6),
            "customers": round(1 / 3, 6),
            "revenue": D("200.00"),
            "lead_rate": 0.3333,
            "customer_rate": 0.3333,
            "revenue_per_session": 200.0,
        },
        ("/blog/x", "Organic Search"): {
            "sessions": 1,  # E; C's was in December
            "leads": 1.5,
            "customers": 0.5,
            "revenue": D("200.00"),
            "lead_rate": 1.5,
            "customer_rate": 0.5,
            "revenue_per_session": 200.0,
        },
        ("/demo", "Referral"): {
            "sessions": 1,
            "leads": 1.0,
            "customers": 1.0,
            "revenue": D("90.00"),
            "lead_rate": 1.0,
            "customer_rate": 1.0,
            "revenue_per_session": 90.0,
        },
        ("/", "Paid Search"): {
            "sessions": 1,  # the anonymous visitor
            "leads": 0.0,
            "customers": 0.0,
            "revenue": D("0.00"),
            "lead_rate": 0.0,
            "customer_rate": 0.0,
            "revenue_per_session": 0.0,
        },
    }
    # by revenue, then credited leads: Organic Search's 200.00 comes with 1.5 leads, Email's with 1/3
    assert order[:3] == [("/pricing", "Paid Search"), ("/blog/x", "Organic Search"), ("/blog/x", "Email")]


def test_landing_pages_over_all_channels_add_up(client) -> None:
    rows = run_report(
        client, "landing-pages", model="first_touch", date_from=FROM, date_to=TO, by_channel=False, limit=100
    ).records()
    got = {
        r["landing_page"]: (r["channel"], r["sessions"], int(r["leads"]), int(r["customers"]), r["revenue"])
        for r in rows
    }
    # first_touch: A -> its 01-05 /pricing touch, B /pricing, C its December /blog/x touch, E /blog/x, F /demo.
    assert got == {
        "/pricing": ("", 4, 2, 1, D("600.00")),  # sessions A x2, B, C (Paid Search) ; leads A, B ; customer A
        "/blog/x": ("", 2, 2, 1, D("400.00")),  # sessions A (Email), E ; leads C, E ; customer C
        "/demo": ("", 1, 1, 1, D("90.00")),
        "/": ("", 1, 0, 0, D("0.00")),
    }


# -- the ideal path ----------------------------------------------------------------------------------------------


def _path_report(client, **params) -> list[dict]:
    defaults = {"stage": "customer", "by": "channel", "order": "common", "min_conversions": 1, "lookback_days": 90}
    return run_report(client, "ideal-path", date_from=FROM, date_to=TO, limit=100, **{**defaults, **params}).records()


def test_ideal_path_by_channel_converting_and_not_side_by_side(client) -> None:
    # Converting in the period: A (Paid Search x2 -> Email, collapsed; 01-05 -> 02-10 = 36 days), C (47 days from
    # its December touch), F (5 days). Not converting: B (its customer is after the period), E, the anonymous
    # visitor (both B and it took "Paid Search").
    assert [tuple(r.values()) for r in _path_report(client)] == [
        ("Organic Search > Paid Search", 1, 1, 0, 1.0, 47.0, D("400.00")),
        ("Paid Search > Email", 1, 1, 0, 1.0, 36.0, D("600.00")),
        ("Referral", 1, 1, 0, 1.0, 5.0, D("90.00")),
        ("Paid Search", 2, 0, 2, 0.0, None, D("0.00")),
        ("Organic Search", 1, 0, 1, 0.0, None, D("0.00")),
    ]
    assert list(_path_report(client)[0]) == [
        "path",
        "journeys",
        "converting",
        "not_converting",
        "conversion_rate",
        "median_days_to_convert",
        "revenue",
    ]


def test_ideal_path_fastest_first_and_by_landing_page(client) -> None:
    assert [r["path"] for r in _path_report(client, order="fastest")] == [
        "Referral",
        "Paid Search > Email",
        "Organic Search > Paid Search",
        "Paid Search",
        "Organic Search",
    ]
    pages = {r["path"]: (r["journeys"], r["converting"]) for r in _path_report(client, by="landing_page")}
    assert pages == {
        "/pricing > /blog/x": (1, 1),  # A: /pricing twice collapses
        "/blog/x > /pricing": (1, 1),
        "/demo": (1, 1),
        "/pricing": (1, 0),  # B
        "/blog/x": (1, 0),  # E
        "/": (1, 0),  # the anonymous visitor
    }


def test_ideal_path_with_a_short_lookback_leaves_old_touches_out(client) -> None:
    # 30 days: C's December touch is outside the window of its 02-05 customer, A's 01-05 and 01-06 touches too.
    paths = {r["path"]: r["median_days_to_convert"] for r in _path_report(client, lookback_days=30)}
    assert paths["Paid Search"] == 4.0  # C: 02-01 -> 02-05
    assert paths["Email"] == 21.0  # A: 01-20 -> 02-10


def test_ideal_path_refuses_unknown_choices(client) -> None:
    with pytest.raises(ReportError, match="unknown path element 'page'; choose one of: channel, landing_page"):
        _path_report(client, by="page")
    with pytest.raises(ReportError, match="unknown order 'slowest'; choose one of: common, fastest"):
        _path_report(client, order="slowest")


# -- cohort payback ----------------------------------------------------------------------------------------------


def test_payback_per_cohort_and_channel(client) -> None:
    rows = run_report(client, "payback", date_from=date(2023, 12, 1), date_to=date(2024, 2, 1)).records()
    got = {(str(r.pop("cohort")), r.pop("channel")): r for r in rows}
    zero = D("0.00")
    assert got == {
        # C: first touched on Organic Search in December, bought in February (two months later); no spend.
        ("2023-12-01", "Organic Search"): {
            "spend": zero,
            "customers": 1,
            "cac": 0.0,
            "revenue_m0": zero,
            "revenue_m1": zero,
            "revenue_m2": D("400.00"),
            "revenue_m3": D("400.00"),
            "revenue_m6": D("400.00"),
            "revenue_m12": D("400.00"),
            "revenue_to_date": D("400.00"),
            "roas_to_date": None,
            "payback_months": None,
        },
        # A (600.00 in February) and B (150.00 in March): 200.00 of January spend is covered in month 1.
        ("2024-01-01", "Paid Search"): {
            "spend": D("200.00"),
            "customers": 2,
            "cac": 100.0,
            "revenue_m0": zero,
            "revenue_m1": D("600.00"),
            "revenue_m2": D("750.00"),
            "revenue_m3": D("750.00"),
            "revenue_m6": D("750.00"),
            "revenue_m12": D("750.00"),
            "revenue_to_date": D("750.00"),
            "roas_to_date": 3.75,
            "payback_months": 1,
        },
        ("2024-01-01", "Email"): {
            "spend": D("20.00"),
            "customers": 0,  # A's first touch was Paid Search
            "cac": None,
            "revenue_m0": zero,
            "revenue_m1": zero,
            "revenue_m2": zero,
            "revenue_m3": zero,
            "revenue_m6": zero,
            "revenue_m12": zero,
            "revenue_to_date": zero,
            "roas_to_date": 0.0,
            "payback_months": None,
        },
        ("2024-02-01", "Paid Search"): {
            "spend": D("50.00"),
            "customers": 0,  # C's Paid Search touch was not its first
            "cac": None,
            "revenue_m0": zero,
            "revenue_m1": zero,
            "revenue_m2": zero,
            "revenue_m3": zero,
            "revenue_m6": zero,
            "revenue_m12": zero,
            "revenue_to_date": zero,
            "roas_to_date": 0.0,
            "payback_months": None,
        },
        # F: 90.00 in the cohort month itself covers 10.00 of spend: payback in month 0.
        ("2024-02-01", "Referral"): {
            "spend": D("10.00"),
            "customers": 1,
            "cac": 10.0,
            "revenue_m0": D("90.00"),
            "revenue_m1": D("90.00"),
            "revenue_m2": D("90.00"),
            "revenue_m3": D("90.00"),
            "revenue_m6": D("90.00"),
            "revenue_m12": D("90.00"),
            "revenue_to_date": D("90.00"),
            "roas_to_date": 9.0,
            "payback_months": 0,
        },
    }
    assert json.loads(to_json(run_report(client, "payback", date_from=date(2024, 1, 1), date_to=date(2024, 1, 31))))[
        0
    ] == {
        "cohort": "2024-01-01",
        "channel": "Paid Search",
        "spend": "200.00",
        "customers": 2,
        "cac": 100.0,
        "revenue_m0": "0.00",
        "revenue_m1": "600.00",
        "revenue_m2": "750.00",
        "revenue_m3": "750.00",
        "revenue_m6": "750.00",
        "revenue_m12": "750.00",
        "revenue_to_date": "750.00",
        "roas_to_date": 3.75,
        "payback_months": 1,
    }


def test_customer_cohorts_view_by_hand(client) -> None:
    rows = client.query(
        "SELECT lead_id, toString(cohort_month), channel, months_since, revenue FROM customer_cohorts ORDER BY lead_id"
    ).result_rows
    assert rows == [
        ("A", "2024-01-01", "Paid Search", 1, D("600.00")),
        ("B", "2024-01-01", "Paid Search", 2, D("150.00")),
        ("C", "2023-12-01", "Organic Search", 2, D("400.00")),
        ("F", "2024-02-01", "Referral", 0, D("90.00")),
    ]


def test_the_commands(client, clickhouse_http_url) -> None:
    from click.testing import CliRunner

    from closedloop.cli import main

    runner = CliRunner(env={"CLOSEDLOOP_CLICKHOUSE_URL": f"{clickhouse_http_url}/{client.database}"})
    period = ["--from", str(FROM), "--to", str(TO)]
    result = runner.invoke(main, ["report", "ideal-path", "--by", "landing-page", "--format", "csv", *period])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [
        "path,journeys,converting,not_converting,conversion_rate,median_days_to_convert,revenue",
        "/blog/x > /pricing,1,1,0,1.0000,47.00,400.00",
    ]
    result = runner.invoke(main, ["report", "landing-pages", "--by", "page", "--format", "table", *period])
    assert result.exit_code == 0, result.output
    assert "channel" not in result.stdout and "/pricing" in result.stdout
    result = runner.invoke(main, ["report", "payback", "--from", "2024-01", "--to", "2024-02", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == (
        "2024-01-01,Paid Search,200.00,2,100.00,0.00,600.00,750.00,750.00,750.00,750.00,750.00,3.7500,1"
    )


# -- content influence --------------------------------------------------------------------------------------------


def test_content_influence_with_page_groups(client) -> None:
    rows = run_report(
        client,
        "content",
        stage="customer",
        date_from=FROM,
        date_to=TO,
        groups=["/blog/*", "/whitepapers/*"],
        lookback_days=90,
        limit=100,
    ).records()
    # Converting journeys (3): A viewed /pricing, /blog/*, /whitepapers/* (a third each, the leftover 1e-9 to the
    # first by name; 200.00 each of 600.00),
    # C /blog/* (December, inside its window) and /pricing (a half each, 200.00 each), F /demo (all, 90.00).
    # Not converting (3): B /pricing, E /blog/*, the anonymous visitor /.
    third, half = D("0.333333333"), D("0.5")
    assert [tuple(r.values()) for r in rows] == [
        ("/demo", 1, 0, 0.3333, 0.0, None, D("1"), D("90.00")),
        ("/blog/*", 2, 1, 0.6667, 0.3333, 2.0, third + half + D("0.000000001"), D("400.00")),  # A's leftover unit
        ("/pricing", 2, 1, 0.6667, 0.3333, 2.0, third + half, D("400.00")),
        ("/whitepapers/*", 1, 0, 0.3333, 0.0, None, third, D("200.00")),
        ("/", 0, 1, 0.0, 0.3333, 0.0, D("0"), D("0.00")),
    ]
    # split by the largest remainder: the page credits add up to the converting journeys and their revenue exactly
    assert sum(r["credited_conversions"] for r in rows) == 3
    assert sum(r["credited_revenue"] for r in rows) == D("1090.00")


def test_content_without_groups_shows_each_page(client) -> None:
    rows = run_report(
        client, "content", stage="customer", date_from=FROM, date_to=TO, groups=[], lookback_days=90, limit=100
    ).records()
    assert {r["page"]: r["converting_journeys"] for r in rows} == {
        "/demo": 1,
        "/pricing": 2,
        "/blog/x": 1,
        "/blog/y": 1,
        "/whitepapers/a": 1,
        "/": 0,
    }
    # A pattern that is no glob matches its page exactly; '_' and '%' are no wildcards.
    rows = run_report(
        client,
        "content",
        stage="customer",
        date_from=FROM,
        date_to=TO,
        groups=["/blog_x", "/demo"],
        lookback_days=90,
        limit=100,
    ).records()
    assert {r["page"] for r in rows} == {"/demo", "/pricing", "/blog/x", "/blog/y", "/whitepapers/a", "/"}
