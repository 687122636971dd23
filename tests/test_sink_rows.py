"""Unit tests of sinks.rows: records -> rows, redaction, tombstones, and reasons for records that do not fit."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import orjson
import pytest

from schemas import serde
from schemas.events import CrmStatusChange, Envelope, Identify, PageView, SpendRow
from schemas.outputs import Conversion, Credit, Lead, Touch
from schemas.topics import Topics
from sinks.rows import TABLES, Erasure, Provenance, RecordError, RecordKind, insert_columns, rows_for, topic_kinds

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
WHERE = Provenance("p.events", 3, 42)


def _envelope(event) -> bytes:
    return serde.dumps(Envelope(event_id="e1", site_id="site", received_at=T0, event=event))


def _row(table: str, row: tuple) -> dict:
    names, _ = insert_columns(table)
    assert len(row) == len(names)
    return dict(zip(names, row))


def test_page_view_row_reads_utm_and_click_id_from_url():
    value = _envelope(PageView(occurred_at=T0, visitor_id="v1",
                               url="https://ex.com/p?utm_source=google&utm_medium=cpc&gclid=abc"))
    [(table, row)] = rows_for(RecordKind.SOURCE, value, WHERE)
    got = _row(table, row)
    assert table == "events"
    assert got["event_type"] == "page_view" and got["visitor_id"] == "v1" and got["path"] == "/p"
    assert (got["utm_source"], got["utm_medium"], got["click_id"]) == ("google", "cpc", "gclid")
    assert (got["kafka_topic"], got["kafka_partition"], got["kafka_offset"]) == ("p.events", 3, 42)
    assert got["occurred_at"] == T0 and got["amount"] is None


def test_identify_row_keeps_no_email_and_no_form_values():
    value = _envelope(Identify(occurred_at=T0, visitor_id="v1", email="Ann@Example.com", form_id="demo",
                               fields={"phone": "+49 123"}))
    [(_, row)] = rows_for(RecordKind.SOURCE, value, WHERE)
    got = _row("events", row)
    stored = orjson.loads(got["event"])
    assert stored["email"] is None and stored["fields"] == {"phone": ""}
    assert "ann@example.com" not in got["event"] and "+49" not in got["event"]
    assert got["form_id"] == "demo"


def test_crm_row_carries_stage_and_deal_value():
    value = _envelope(CrmStatusChange(occurred_at=T0, crm="hubspot", crm_object_id="d1", email="a@b.co",
                                      stage="customer", deal_value=Decimal("1200.50"), currency="EUR"))
    [(_, row)] = rows_for(RecordKind.SOURCE, value, WHERE)
    got = _row("events", row)
    assert (got["crm"], got["stage"], got["amount"], got["currency"]) == ("hubspot", "customer", Decimal("1200.50"), "EUR")
    assert "a@b.co" not in got["event"]


def test_spend_event_becomes_an_event_row_and_a_spend_row():
    value = _envelope(SpendRow(occurred_at=T0, date=date(2024, 3, 1), channel="Paid Search", source="google",
                               medium="cpc", campaign="spring", cost=Decimal("99.90"), currency="EUR"))
    rows = rows_for(RecordKind.SOURCE, value, WHERE)
    assert [t for t, _ in rows] == ["events", "spend"]
    assert _row("spend", rows[1][1]) == {
        "date": date(2024, 3, 1), "channel": "Paid Search", "source": "google", "medium": "cpc",
        "campaign": "spring", "cost": Decimal("99.90"), "currency": "EUR", "received_at": T0, "event_id": "e1",
    }


def test_touch_lead_known_is_the_version():
    base = dict(touch_id="t1", visitor_id="v1", site_id="s", occurred_at=T0, channel="Direct", source="(direct)",
                medium="(none)", event_id="e1")
    [(_, anonymous)] = rows_for(RecordKind.TOUCH, serde.dumps(Touch(**base)), WHERE)
    [(_, known)] = rows_for(RecordKind.TOUCH, serde.dumps(Touch(**base, lead_id="L1")), WHERE)
    assert (_row("touches", anonymous)["lead_id"], _row("touches", anonymous)["lead_known"]) == ("", 0)
    assert (_row("touches", known)["lead_id"], _row("touches", known)["lead_known"]) == ("L1", 1)


def test_credit_and_conversion_rows():
    credit = Credit(conversion_id="c1", lead_id="L1", stage="customer", model="linear", touch_id="(none)",
                    touch_index=0, touch_at=None, converted_at=T0, channel="(none)", source="", medium="",
                    campaign="", credit=Decimal("1"), revenue=Decimal("10.00"), currency="EUR", version=2)
    [(table, row)] = rows_for(RecordKind.CREDIT, serde.dumps(credit), WHERE)
    got = _row(table, row)
    assert (table, got["model"], got["touch_at"], got["credit"], got["version"]) == (
        "credits", "linear", None, Decimal("1"), 2)
    conversion = Conversion(conversion_id="c1", lead_id="L1", stage="lead", occurred_at=T0, touch_count=0,
                            event_id="e9")
    [(table, row)] = rows_for(RecordKind.CONVERSION, serde.dumps(conversion), WHERE)
    assert _row(table, row)["revenue"] is None and _row(table, row)["currency"] == ""


def test_leads_tombstone_is_an_erasure_elsewhere_an_error():
    assert rows_for(RecordKind.LEAD, None, WHERE, key="L1") == Erasure("L1")
    lead = Lead(lead_id="L1", email="a@b.co", first_identified_at=T0)
    assert rows_for(RecordKind.LEAD, serde.dumps(lead), WHERE) == [("leads", ("L1", "a@b.co", T0))]
    with pytest.raises(RecordError, match="only the leads topic takes tombstones"):
        rows_for(RecordKind.TOUCH, None, WHERE, key="v1")


@pytest.mark.parametrize(
    "kind, value, reason",
    [
        (RecordKind.TOUCH, b"not json", "not a valid touch record: (record): Invalid JSON"),
        (RecordKind.CREDIT, b'{"conversion_id": "c1"}', "not a valid credit record: lead_id: Field required"),
        (RecordKind.SOURCE, b'{"event_id": "e", "site_id": "s", "received_at": "2024-01-01T00:00:00Z",'
                            b' "event": {"type": "nope"}}', "not a valid source record: event:"),
    ],
)
def test_records_that_do_not_fit_say_why(kind, value, reason):
    with pytest.raises(RecordError) as info:
        rows_for(kind, value, WHERE)
    assert str(info.value).startswith(reason)


def test_every_topic_the_sink_reads_has_a_kind_and_every_table_columns():
    topics = Topics("p")
    assert set(topic_kinds(topics)) == set(topics.source_topics()) | set(topics.output_topics())
    assert set(TABLES) == {"events", "touches", "identity_links", "leads", "conversions", "credits", "spend"}
