"""``closedloop export ads`` (issue 25, item 2; docs/ADS.md): the platforms' offline conversion files.

Scripted journeys, one per kind of click id and consent case, go through the stream worker's own rules
(``stream_jobs.rules.sessions`` and ``lifecycle``) into ClickHouse through the sink's row conversion; the files
are compared whole: exactly the documented columns, one row per eligible conversion, none outside the click
window or without consent, and a lost deal after an upload gives its retraction row.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from click.testing import CliRunner
from harness import unique

from closedloop.cli import main
from schemas import serde
from schemas.events import CrmStatusChange, Envelope, PageView
from schemas.outputs import Conversion, IdentityLink
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.reports import run_report
from sinks.rows import Provenance, RecordKind, insert, rows_for
from sinks.settings import SinkSettings
from stream_jobs.rules import lifecycle, sessions
from stream_jobs.rules.channels import ChannelRules

pytestmark = pytest.mark.clickhouse


def at(month: int, day: int, hour: int = 12, year: int = 2024) -> datetime:
    return datetime(year, month, day, hour, tzinfo=timezone.utc)


# lead: (landing query, click time, consent at the form, [(stage, time, value)])
JOURNEYS = {
    "g1": ("?gclid=G-1", at(3, 1, 10), "granted", [("sql", at(3, 5), None), ("customer", at(3, 20), "1200.00")]),
    "g2": ("?gclid=G-5", at(3, 2, 10), "granted", [("sql", at(3, 10), None)]),
    "m1": ("?msclkid=M-1", at(3, 2, 10), "granted", [("sql", at(3, 6), None), ("customer", at(3, 21), "300.50")]),
    "no-consent": ("?gclid=G-2", at(3, 2, 10), None, [("sql", at(3, 6), None)]),
    "denied": ("?gclid=G-3&msclkid=M-3", at(3, 2, 10), "denied", [("sql", at(3, 7), None)]),
    "old-click": ("?gclid=G-4", at(12, 1, 10, year=2023), "granted", [("sql", at(3, 6), None)]),  # 96 days
    "gbraid": ("?gbraid=GB-1", at(3, 3, 10), "granted", [("sql", at(3, 7), None)]),
    "meta": ("?fbclid=F-1", at(3, 3, 10), "granted", [("sql", at(3, 8), None)]),
    "linkedin": ("?li_fat_id=L-1", at(3, 3, 10), "granted", [("sql", at(3, 8), None)]),
    "april": ("?gclid=G-6", at(3, 30, 10), "granted", [("sql", at(4, 2), None)]),  # after the period
}  # fmt: skip
LOST = ("g2", at(3, 18), "price")  # lost after its SQL was uploaded


def crm(lead: str, stage: str, when: datetime, value: str | None = None, reason: str | None = None):
    return CrmStatusChange(
        occurred_at=when,
        crm="hubspot",
        crm_object_id=f"deal-{lead}",
        email=f"{lead}@acme.test",
        stage=stage,
        deal_value=Decimal(value) if value else None,
        currency="EUR" if value else None,
        reason=reason,
    )


def conversions() -> tuple[list[Conversion], list[Conversion]]:
    """(every conversion of the journeys, as the worker emits them; the lost deal's conversions, inserted later)."""
    out: list[Conversion] = []
    states = {}
    for lead, (query, clicked_at, consent, changes) in JOURNEYS.items():
        page_view = PageView(occurred_at=clicked_at, visitor_id=f"v-{lead}", url=f"https://acme.test/{query}")
        envelope = Envelope(event_id=f"pv-{lead}", site_id="s", received_at=clicked_at, event=page_view)
        _, touch = sessions.next_touch(None, envelope, ChannelRules())
        assert touch is not None
        link = IdentityLink(
            visitor_id=f"v-{lead}",
            lead_id=lead,
            linked_at=clicked_at + timedelta(minutes=5),
            event_id=f"id-{lead}",
            ads_consent=consent,
        )
        lookback = timedelta(days=120)  # longer than the platforms' 90 days: the export checks the click's age
        state, emitted = lifecycle.apply_link(None, link, [touch.model_copy(update={"lead_id": lead})])
        out += emitted
        for n, (stage, when, value) in enumerate(changes):
            state, emitted = lifecycle.apply_crm(
                state, crm(lead, stage, when, value), lead_id=lead, event_id=f"crm-{lead}-{n}", lookback=lookback
            )
            out += emitted
        states[lead] = state
    lead, when, reason = LOST
    _, lost = lifecycle.apply_crm(states[lead], crm(lead, "lost", when, reason=reason), lead_id=lead, event_id="lost")
    return out, lost


def write(client, records) -> None:
    table_rows: dict[str, list] = {}
    for offset, record in enumerate(records):
        for table, row in rows_for(RecordKind.CONVERSION, serde.dumps(record), Provenance("test", 0, offset)):
            table_rows.setdefault(table, []).append(row)
    for table, batch in table_rows.items():
        insert(client, table, batch)


@pytest.fixture(scope="module")
def database(clickhouse_http_url):
    url = f"{clickhouse_http_url}/{unique('ads')}"
    settings = SinkSettings(clickhouse_url=url)
    migrate_up(settings)
    client = connect(settings)
    before, lost = conversions()
    write(client, before)
    yield url, client, lost
    client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
    client.close()


def export(url, *args: str):
    runner = CliRunner(env={"CLOSEDLOOP_CLICKHOUSE_URL": url})
    result = runner.invoke(main, ["export", "ads", "--from", "2024-03-01", "--to", "2024-03-31", *args])
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


GOOGLE_HEADER = "Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency"
MICROSOFT_HEADER = "Microsoft Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency"
ADJUSTMENT_HEADER = (
    "Google Click ID,Conversion Name,Conversion Time,Adjustment Type,Adjustment Time,Adjusted Value,"
    "Adjusted Value Currency"
)


def feedback(client) -> list[tuple]:
    return [
        tuple(row)
        for row in client.query(
            "SELECT feedback_id, platform, route, action, click_kind, click_id, toString(converted_at), value, "
            "currency, status FROM ad_feedback FINAL ORDER BY feedback_id"
        ).result_rows
    ]


def test_files_uploads_adjustments_and_audit(database) -> None:
    url, client, lost = database

    text, summary = export(url, "--platform", "google", "--stage", "sql", "--conversion-name", "Qualified lead")
    assert text == (
        "Parameters:TimeZone=+0000\n"
        f"{GOOGLE_HEADER}\n"
        "G-1,Qualified lead,2024-03-05 12:00:00,,\n"
        "G-5,Qualified lead,2024-03-10 12:00:00,,\n"
    )
    assert summary.strip() == (
        "2 conversions written; left out: 1 click older than 90 days, "
        "1 gbraid/wbraid only (no column in the file template), 2 no consent, 3 no gclid"
    )

    text, _ = export(url, "--platform", "google", "--stage", "customer", "--timezone", "Europe/Berlin")
    assert text == (
        f"Parameters:TimeZone=Europe/Berlin\n{GOOGLE_HEADER}\nG-1,customer,2024-03-20 13:00:00,1200.00,EUR\n"
    )

    text, summary = export(url, "--platform", "microsoft", "--stage", "customer", "--conversion-name", "Won")
    assert text == f"Parameters:TimeZone=+0000\n{MICROSOFT_HEADER}\nM-1,Won,2024-03-21 12:00:00,300.50,EUR\n"
    assert summary.strip() == "1 conversions written; left out: 1 no msclkid"

    # nothing to adjust yet
    text, summary = export(url, "--platform", "google", "--stage", "sql", "--adjustments")
    assert text == f"Parameters:TimeZone=+0000\n{ADJUSTMENT_HEADER}\n"

    write(client, lost)  # g2's deal is lost after its SQL went to Google
    text, summary = export(url, "--platform", "google", "--stage", "sql", "--adjustments")
    assert text == (
        f"Parameters:TimeZone=+0000\n{ADJUSTMENT_HEADER}\n"
        "G-5,Qualified lead,2024-03-10 12:00:00,RETRACT,2024-03-18 12:00:00,,\n"
    )
    assert summary.strip() == "1 adjustments written; left out: none"
    text, _ = export(url, "--platform", "google", "--stage", "sql", "--adjustments")
    assert text == f"Parameters:TimeZone=+0000\n{ADJUSTMENT_HEADER}\n"  # retracted once

    text, summary = export(url, "--platform", "google", "--stage", "sql", "--conversion-name", "Qualified lead")
    assert text == f"Parameters:TimeZone=+0000\n{GOOGLE_HEADER}\nG-1,Qualified lead,2024-03-05 12:00:00,,\n"
    assert "1 lost or disqualified since" in summary

    g1_sql, g1_customer = lifecycle.conversion_id_for("g1", "sql"), lifecycle.conversion_id_for("g1", "customer")
    g2_sql, m1_customer = lifecycle.conversion_id_for("g2", "sql"), lifecycle.conversion_id_for("m1", "customer")
    assert feedback(client) == sorted(
        [
            (f"google:retract:{g2_sql}", "google", "file", "retract", "gclid", "G-5", "2024-03-10 12:00:00.000",
             None, "", "exported"),
            (f"google:upload:{g1_customer}", "google", "file", "upload", "gclid", "G-1", "2024-03-20 12:00:00.000",
             Decimal("1200.00"), "EUR", "exported"),
            (f"google:upload:{g1_sql}", "google", "file", "upload", "gclid", "G-1", "2024-03-05 12:00:00.000",
             None, "", "exported"),
            (f"google:upload:{g2_sql}", "google", "file", "upload", "gclid", "G-5", "2024-03-10 12:00:00.000",
             None, "", "exported"),
            (f"microsoft:upload:{m1_customer}", "microsoft", "file", "upload", "msclkid", "M-1",
             "2024-03-21 12:00:00.000", Decimal("300.50"), "EUR", "exported"),
        ]
    )  # fmt: skip


def test_bad_options_are_clear_errors(database) -> None:
    url, _, _ = database
    runner = CliRunner(env={"CLOSEDLOOP_CLICKHOUSE_URL": url})
    result = runner.invoke(main, ["export", "ads", "--platform", "microsoft", "--stage", "sql", "--adjustments"])
    assert result.exit_code == 2
    assert "--adjustments writes Google's adjustments template" in result.stderr
    result = runner.invoke(
        main, ["export", "ads", "--platform", "google", "--stage", "sql", "--timezone", "Mars/Olympus"]
    )
    assert result.exit_code == 2
    assert "is not a time zone" in result.stderr
    result = runner.invoke(main, ["export", "ads", "--platform", "yahoo", "--stage", "sql"])
    assert result.exit_code == 2


def test_report_ads_feedback_summarises_the_audit_trail(database) -> None:
    url, client, _ = database
    feedback(client)  # the export test ran first (module order): its rows are the trail
    today = datetime.now(timezone.utc).date()
    records = run_report(client, "ads-feedback", date_from=today, date_to=today).records()
    assert [
        (r["platform"], r["route"], r["action"], r["stage"], r["status"], r["currency"], r["conversions"],
         r["with_click_id"], r["value"])
        for r in records
    ] == [
        ("google", "file", "retract", "sql", "exported", "", 1, 1, Decimal("0.00")),
        ("google", "file", "upload", "customer", "exported", "EUR", 1, 1, Decimal("1200.00")),
        ("google", "file", "upload", "sql", "exported", "", 2, 2, Decimal("0.00")),
        ("microsoft", "file", "upload", "customer", "exported", "EUR", 1, 1, Decimal("300.50")),
    ]  # fmt: skip
    runner = CliRunner(env={"CLOSEDLOOP_CLICKHOUSE_URL": url})
    result = runner.invoke(
        main, ["report", "ads-feedback", "--from", str(today), "--to", str(today), "--format", "csv"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("platform,route,action,stage,status,currency,conversions,with_click_id,value,last_recorded_at")
    assert [line.rsplit(",", 1)[0] for line in lines[1:]] == [
        "google,file,retract,sql,exported,,1,1,0.00",
        "google,file,upload,customer,exported,EUR,1,1,1200.00",
        "google,file,upload,sql,exported,,2,2,0.00",
        "microsoft,file,upload,customer,exported,EUR,1,1,300.50",
    ]


def test_ready_counts_per_platform_what_the_demo_prints(database) -> None:
    from sinks.ad_export import ready_counts

    _, client, lost = database
    write(client, lost)  # as after the export test (module order); a repeated row collapses
    # g1 (sql, customer) for Google; m1 (sql, customer) for Microsoft; the fbclid and li_fat_id leads' SQLs for
    # Meta and LinkedIn; g2 is lost, the others lack consent, a recent click or the platform's click
    assert ready_counts(client, date(2024, 3, 1), date(2024, 3, 31)) == {
        "google": 2,
        "microsoft": 2,
        "meta": 1,
        "linkedin": 1,
    }
