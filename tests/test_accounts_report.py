"""Account reports (B2B buying committees) on a scripted data set, every figure worked out by hand below.

People (March 2024, times 12:00 UTC unless said):
  acme.com  A1 ann@acme.com: Paid Search 03-01, Email 03-10; lead 03-01 13:00; customer 03-20 (1000.00)
            A2 bob@ACME.com: Paid Social 03-05; lead 03-05 13:00; opportunity 03-12; customer 03-25 (500.00)
            A3 cy@acme.com: no touch; lead 03-28 (after the win: not on the committee)
  beta.io   B1 dee@beta.io: Organic Search 03-02; lead 03-02 13:00; opportunity 03-15
  free mail G1 gus@gmail.com: Paid Search 03-03; lead 03-03 13:00; customer 03-04 (99.00): no account
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from harness import unique
from test_report_numbers import _load

from schemas.outputs import Conversion, IdentityLink, Lead, Touch
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.reports import run_report
from sinks.rows import RecordKind
from sinks.settings import SinkSettings

pytestmark = pytest.mark.clickhouse

FROM, TO = date(2024, 3, 1), date(2024, 3, 31)
D = Decimal


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2024, 3, day, hour, tzinfo=timezone.utc)


def utc(day: int) -> datetime:
    """12:00 UTC as clickhouse-connect gives a DateTime64('UTC') back: naive, in UTC."""
    return at(day).replace(tzinfo=None)


PEOPLE = {  # lead: (email, touches [(channel, day)], conversions [(stage, time, revenue)])
    "A1": (
        "ann@acme.com",
        [("Paid Search", 1), ("Email", 10)],
        [("lead", at(1, 13), None), ("customer", at(20), "1000")],
    ),
    "A2": (
        "bob@ACME.com",
        [("Paid Social", 5)],
        [("lead", at(5, 13), None), ("opportunity", at(12), None), ("customer", at(25), "500")],
    ),
    "A3": ("cy@acme.com", [], [("lead", at(28), None)]),
    "B1": ("dee@beta.io", [("Organic Search", 2)], [("lead", at(2, 13), None), ("opportunity", at(15), None)]),
    "G1": ("gus@gmail.com", [("Paid Search", 3)], [("lead", at(3, 13), None), ("customer", at(4), "99")]),
}


def _data() -> dict[RecordKind, list]:
    data: dict[RecordKind, list] = {kind: [] for kind in RecordKind if kind is not RecordKind.SOURCE}
    for lead, (email, touches, conversions) in PEOPLE.items():
        data[RecordKind.LEAD].append(Lead(lead_id=lead, email=email, first_identified_at=conversions[0][1]))
        data[RecordKind.IDENTITY_LINK].append(
            IdentityLink(visitor_id=f"v-{lead}", lead_id=lead, linked_at=conversions[0][1], event_id=f"id-{lead}")
        )
        for n, (channel, day) in enumerate(touches):
            data[RecordKind.TOUCH].append(
                Touch(
                    touch_id=f"{lead}-t{n}",
                    visitor_id=f"v-{lead}",
                    lead_id=lead,
                    site_id="s",
                    occurred_at=at(day),
                    channel=channel,
                    source=channel.lower(),
                    medium="x",
                    event_id=f"pv-{lead}-{n}",
                )
            )
        for stage, when, revenue in conversions:
            data[RecordKind.CONVERSION].append(
                Conversion(
                    conversion_id=f"{lead}-{stage}",
                    lead_id=lead,
                    stage=stage,
                    occurred_at=when,
                    revenue=D(revenue) if revenue else None,
                    currency="EUR" if revenue else None,
                    touch_count=len(touches),
                    event_id=f"ev-{lead}-{stage}",
                )
            )
    return data


@pytest.fixture(scope="module")
def client(clickhouse_http_url):
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('accounts')}")
    migrate_up(settings)
    client = connect(settings)
    data = _data()
    _load(client, data)
    _load(client, data)  # delivered twice
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
    client.close()


def test_accounts_one_row_each(client) -> None:
    rows = run_report(client, "accounts", date_from=FROM, date_to=TO, limit=50).records()
    # acme.com: three people (bob's upper-case domain too), three touches, channels in order of first use;
    # first opportunity A2's, first win A1's; 1500.00 of revenue; committee A1 and A2 (A3 came after the win);
    # 03-01 12:00 -> 03-20 12:00 is 19 days. beta.io: an opportunity, no win.
    assert [tuple(r.values()) for r in rows] == [
        ("acme.com", 3, 3, "Paid Search > Paid Social > Email", utc(1), utc(12), utc(20), D("1500.00"), 2, 19.0),
        ("beta.io", 1, 1, "Organic Search", utc(2), utc(15), None, D("0.00"), None, None),
    ]
    assert "gmail.com" not in {r["account"] for r in rows}


def test_accounts_outside_the_period_are_left_out(client) -> None:
    assert run_report(client, "accounts", date_from=date(2024, 4, 1), date_to=date(2024, 4, 30), limit=50).rows == ()


def test_account_level_attribution_per_channel(client) -> None:
    rows = run_report(client, "account-channels", date_from=FROM, date_to=TO, lookback_days=90).records()
    third = D("0.333333333")
    # acme's first opportunity (03-12) and first win (03-20) each credit its three touches a third; its 1500.00
    # splits 500.00 each; its committee is 2. beta's opportunity credits its one Organic Search touch.
    # G1 (gmail.com) belongs to no account, so Paid Search has one account touched, acme. The shares are split by
    # the largest remainder: equal remainders, so the leftover 1e-9 goes to the first channel by name; each
    # milestone's shares add up to exactly 1.
    assert [tuple(r.values()) for r in rows] == [
        ("Email", 1, third + D("0.000000001"), third + D("0.000000001"), D("500.00"), 2.0),  # the leftover unit
        ("Paid Search", 1, third, third, D("500.00"), 2.0),
        ("Paid Social", 1, third, third, D("500.00"), 2.0),
        ("Organic Search", 1, D("1"), D("0"), D("0.00"), None),
    ]
    assert (sum(r["opportunities"] for r in rows), sum(r["won"] for r in rows)) == (2, 1)


def test_a_short_window_credits_only_recent_touches(client) -> None:
    # 9 days before the win on 03-20: only A1's Email touch (03-10) is in [03-11 12:00, 03-20 12:00]? No: 03-10
    # 12:00 is before 03-11 12:00, so nothing is: the win goes to '(none)'. The opportunity (03-12) window
    # [03-03 12:00, 03-12 12:00] holds Paid Social (03-05) and Email (03-10).
    rows = {
        r["channel"]: r
        for r in run_report(client, "account-channels", date_from=FROM, date_to=TO, lookback_days=9).records()
    }
    assert (rows["(none)"]["won"], rows["(none)"]["revenue"], rows["(none)"]["accounts_touched"]) == (
        D("1"),
        D("1500.00"),
        0,
    )
    assert (rows["Paid Social"]["opportunities"], rows["Email"]["opportunities"]) == (D("0.5"), D("0.5"))
    assert rows["Paid Search"]["opportunities"] == D("0")


def test_a_domain_added_to_free_mail_leaves_the_accounts(client) -> None:
    client.command("INSERT INTO free_mail_domains (domain) VALUES ('beta.io')")
    try:
        rows = run_report(client, "accounts", date_from=FROM, date_to=TO, limit=50).records()
        assert [r["account"] for r in rows] == ["acme.com"]
    finally:
        client.command("DELETE FROM free_mail_domains WHERE domain = 'beta.io'")


def test_the_command(client, clickhouse_http_url) -> None:
    from click.testing import CliRunner

    from closedloop.cli import main

    runner = CliRunner(env={"CLOSEDLOOP_CLICKHOUSE_URL": f"{clickhouse_http_url}/{client.database}"})
    result = runner.invoke(
        main, ["report", "accounts", "--by", "channel", "--from", str(FROM), "--to", str(TO), "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [
        "channel,accounts_touched,opportunities,won,revenue,avg_committee",
        "Email,1,0.333333334,0.333333334,500.00,2.00",
    ]
