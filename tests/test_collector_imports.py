"""CSV imports: rows become the same records as the webhooks / spend model; bad rows are reported by line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from collector_support import collector_settings, create_source_topics, read_topic

from collector import imports
from schemas.identity import lead_id_for
from schemas.settings import DEV_LEAD_ID_KEY
from schemas.topics import Topics

CRM_CSV = """Email,Stage,Value,Currency,Date
ann@acme.test,Closed Won,1200.50,eur,2024-05-01

bob@acme.test,weird,,,2024-05-02
,lead,,,2024-05-03
Carol@Acme.test,MQL,,,2024-05-03T10:30:00+02:00
dan@acme.test,customer,12x,EUR,2024-05-04
"""
SPEND_CSV = """date,channel,source,medium,campaign,cost,currency
2024-05-01,Paid Social,linkedin,cpc,spring,99.90,EUR
2024-05-01,,linkedin,cpc,spring,5,EUR
2024-05-02,Paid Search,google,cpc,spring,-3,EUR
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_crm_rows_parse_and_rejections_carry_line_numbers(tmp_path: Path) -> None:
    summary = imports.ImportSummary()
    records = list(imports.parse_file(write(tmp_path, "crm.csv", CRM_CSV), "crm", Topics("t"), summary))
    assert (summary.rows, summary.accepted) == (5, 2)
    assert [(line, [e["loc"] for e in errors]) for line, errors in summary.rejected] == [
        (4, ["stage"]),
        (5, ["email"]),
        (7, ["value"]),
    ]
    assert [(r.topic, r.key) for r in records] == [("t.crm", b"ann@acme.test"), ("t.crm", b"carol@acme.test")]
    won = orjson.loads(records[0].value)
    assert won["event"] | {} == {
        **won["event"],
        "crm": "spreadsheet",
        "stage": "customer",
        "deal_value": "1200.50",
        "currency": "EUR",
        "occurred_at": "2024-05-01T23:59:59.999999Z",  # a date alone: the end of that day (UTC by default)
        "crm_object_id": lead_id_for("ann@acme.test", DEV_LEAD_ID_KEY.encode()),
    }
    assert orjson.loads(records[1].value)["event"]["occurred_at"] == "2024-05-03T08:30:00Z"
    # the same rows give the same event ids: a re-import is recognisable downstream
    again = list(imports.parse_file(tmp_path / "crm.csv", "crm", Topics("t"), imports.ImportSummary()))
    assert [orjson.loads(r.value)["event_id"] for r in again] == [orjson.loads(r.value)["event_id"] for r in records]


def test_a_date_without_a_time_is_the_end_of_that_day_in_the_configured_zone(tmp_path: Path) -> None:
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    received = datetime(2024, 5, 3, 12, 0, tzinfo=timezone.utc)
    row = {"email": "ann@acme.test", "stage": "customer", "value": "5", "currency": "EUR"}
    berlin = ZoneInfo("Europe/Berlin")
    times = {
        day: imports.crm_envelope({**row, "date": day}, received, day_ends_in=berlin).event.occurred_at
        for day in ("2024-01-15", "2024-05-01", "2024-05-03")
    }
    assert times == {
        "2024-01-15": datetime(2024, 1, 15, 22, 59, 59, 999999, tzinfo=timezone.utc),  # CET, UTC+1
        "2024-05-01": datetime(2024, 5, 1, 21, 59, 59, 999999, tzinfo=timezone.utc),  # CEST, UTC+2
        "2024-05-03": received,  # today: not in the future, the import's time
    }
    later = datetime(2024, 5, 3, 18, 0, tzinfo=timezone.utc)
    ids = {
        imports.crm_envelope({**row, "date": "2024-05-03"}, t, day_ends_in=berlin).event_id for t in (received, later)
    }
    assert len(ids) == 1  # a sheet imported again later the same day keeps its event ids
    spend = imports.spend_envelope(
        {"date": "2024-05-01", "channel": "Paid Search", "cost": "1", "currency": "EUR"}, received
    )
    assert (spend.event.date.isoformat(), spend.event.occurred_at) == (
        "2024-05-01",
        datetime(2024, 5, 1, tzinfo=timezone.utc),
    )


def test_an_unknown_import_time_zone_is_refused_naming_it(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown time zone 'Europe/Atlantis'; use an IANA name"):
        collector_settings(tmp_path, import_time_zone="Europe/Atlantis")


def test_spend_rows(tmp_path: Path) -> None:
    summary = imports.ImportSummary()
    records = list(imports.parse_file(write(tmp_path, "spend.csv", SPEND_CSV), "spend", Topics("t"), summary))
    assert [(r.topic, r.key) for r in records] == [("t.spend", b"2024-05-01|Paid Social|linkedin|cpc|spring")]
    assert [(line, errors[0]["loc"]) for line, errors in summary.rejected] == [(3, "channel"), (4, "cost")]


def test_missing_columns_are_named(tmp_path: Path) -> None:
    assert imports.missing_columns(write(tmp_path, "x.csv", "name,stage\n"), "crm") == ["date", "email (or contact_id)"]
    assert imports.missing_columns(write(tmp_path, "y.csv", "date,channel\n"), "spend") == ["cost", "currency"]


def test_cli_dry_run_reports_lines_and_exit_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from closedloop.commands.import_ import command

    monkeypatch.setenv("CLOSEDLOOP_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(command, ["crm", "--dry-run", str(write(tmp_path, "crm.csv", CRM_CSV))])
    assert result.exit_code == 1
    assert "crm.csv:4: rejected: stage: unknown stage 'weird'" in " ".join(result.output.split())
    assert "5 rows: 2 valid, 3 rejected" in result.output


@pytest.mark.kafka
def test_import_publishes_to_the_broker(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from closedloop.commands.import_ import command

    settings = collector_settings(tmp_path, bootstrap=kafka_bootstrap, prefix=unique_name)
    create_source_topics(kafka_bootstrap, settings)
    monkeypatch.setenv("CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("CLOSEDLOOP_TOPIC_PREFIX", unique_name)
    crm = CliRunner().invoke(command, ["crm", str(write(tmp_path, "crm.csv", CRM_CSV))])
    spend = CliRunner().invoke(command, ["spend", str(write(tmp_path, "spend.csv", SPEND_CSV))])
    assert "5 rows: 2 published, 3 rejected" in crm.output
    assert "3 rows: 1 published, 2 rejected" in spend.output
    assert sorted(k for k, _ in read_topic(kafka_bootstrap, settings.topics.crm, 2)) == [
        "ann@acme.test",
        "carol@acme.test",
    ]
    assert [k for k, _ in read_topic(kafka_bootstrap, settings.topics.spend, 1)] == [
        "2024-05-01|Paid Social|linkedin|cpc|spring"
    ]


def test_a_date_out_of_range_in_utc_is_a_rejected_row(tmp_path: Path) -> None:
    # 0001-01-01 at +01:00 is the year 0 in UTC: once an OverflowError that stopped the whole import.
    text = "email,stage,date\nann@acme.test,lead,0001-01-01T00:00:00+01:00\nbob@acme.test,lead,2024-05-01\n"
    summary = imports.ImportSummary()
    records = list(imports.parse_file(write(tmp_path, "crm.csv", text), "crm", Topics("t"), summary))
    assert [r.key for r in records] == [b"bob@acme.test"]
    assert [(line, [e["loc"] for e in errors]) for line, errors in summary.rejected] == [(2, ["date"])]


def test_dates_outside_the_accepted_times_are_rejected_rows_with_their_line(tmp_path: Path) -> None:
    # Imports carry history: twenty years back by default (a ten-year monthly spend sheet goes in whole), but not
    # the year 1 or 9999 (a typo), nor more than a day ahead.
    from datetime import date, timedelta

    ten_years_ago = date.today() - timedelta(days=3653)
    in_three_days = date.today() + timedelta(days=3)
    text = (
        "date,channel,cost,currency\n0001-01-01,Paid Search,5,EUR\n9999-12-31,Paid Search,5,EUR\n"
        f"{ten_years_ago.isoformat()},Paid Search,5,EUR\n{in_three_days.isoformat()},Paid Search,5,EUR\n"
    )
    summary = imports.ImportSummary()
    records = list(imports.parse_file(write(tmp_path, "spend.csv", text), "spend", Topics("t"), summary))
    assert len(records) == 1
    assert [(line, [e["loc"] for e in errors]) for line, errors in summary.rejected] == [
        (2, ["date"]),
        (3, ["date"]),
        (5, ["date"]),
    ]
    assert "outside the accepted times" in summary.rejected[0][1][0]["msg"]
    assert "CLOSEDLOOP_IMPORT_ACCEPT_PAST_DAYS" in summary.rejected[0][1][0]["msg"]


@pytest.mark.parametrize(
    "kind, text",
    [
        (
            "crm",
            b"email,stage,date\nann@acme.test,lead,2024-05-01\nb\xf6b@acme.test,lead,2024-05-02\n"
            b"carol@acme.test,mql,2024-05-03\n",
        ),
        (
            "spend",
            b"date,channel,cost,currency\n2024-05-01,Paid Search,5,EUR\n2024-05-02,Caf\xe9 ads,5,EUR\n"
            b"2024-05-03,Paid Social,7,EUR\n",
        ),
    ],
)
def test_a_row_that_is_not_utf8_is_rejected_with_its_line_and_the_others_go_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, text: bytes
) -> None:
    # A Latin-1 byte used to end the import in a UnicodeDecodeError traceback, with nothing imported.
    from closedloop.commands.import_ import command

    path = tmp_path / f"{kind}.csv"
    path.write_bytes(text)
    summary = imports.ImportSummary()
    records = list(imports.parse_file(path, kind, Topics("t"), summary))  # type: ignore[arg-type]
    assert len(records) == 2
    [(line, errors)] = summary.rejected
    assert line == 3
    assert "not valid UTF-8 (byte 0x" in errors[0]["msg"] and "CSV UTF-8" in errors[0]["msg"]
    monkeypatch.setenv("CLOSEDLOOP_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(command, [kind, "--dry-run", str(path)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{kind}.csv:3: rejected: " in " ".join(result.output.split())
    assert "3 rows: 2 valid, 1 rejected" in result.output


def test_a_header_that_is_not_utf8_or_a_line_the_reader_refuses_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from closedloop.commands.import_ import command

    monkeypatch.setenv("CLOSEDLOOP_DATA_DIR", str(tmp_path))
    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes("email,stage,date\nann@acme.test,lead,2024-05-01\n".encode("utf-16"))
    result = CliRunner().invoke(command, ["crm", "--dry-run", str(utf16)])
    assert result.exit_code == 2
    assert "header line is not valid UTF-8" in " ".join(result.output.split())
    # A field over the csv module's size limit is one rejected line; the lines after it are read.
    huge = tmp_path / "huge.csv"
    huge.write_text("email,stage,date\n" + "x" * 200_000 + ",lead,2024-05-01\nann@acme.test,lead,2024-05-01\n")
    summary = imports.ImportSummary()
    records = list(imports.parse_file(huge, "crm", Topics("t"), summary))
    assert len(records) == 1
    assert [(line, errors[0]["msg"][:30]) for line, errors in summary.rejected] == [
        (2, "cannot read this line as CSV: ")
    ]
