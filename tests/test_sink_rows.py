"""Unit tests of sinks.rows: records -> rows, redaction, tombstones, and reasons for records that do not fit."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from page_view_strategies import EDGES, mostly, page_views, times, values
from pydantic import ValidationError

from schemas import serde
from schemas.events import CrmStatusChange, Envelope, Identify, PageView, SpendRow
from schemas.outputs import Conversion, Credit, CreditedTouch, IdentityLink, Lead, Touch, TouchCredit
from schemas.topics import Topics
from sinks import canonical_rows
from sinks.rows import (
    TABLES,
    Erasure,
    Provenance,
    RecordError,
    RecordKind,
    encode,
    insert_columns,
    model_rows,
    partition_blocks,
    rows_for,
    topic_kinds,
)

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
WHERE = Provenance("p.events", 3, 42)


def _envelope(event) -> bytes:
    return serde.dumps(Envelope(event_id="e1", site_id="site", received_at=T0, event=event))


T0_SENT = "2024-03-01T12:00:00Z"  # T0 as the row sends it to ClickHouse


def _row(table: str, row: tuple) -> dict:
    """Column name -> the value ClickHouse receives (times and decimals as ISO 8601 and plain-digit strings)."""
    names = insert_columns(table)
    assert len(row) == len(names)
    return {name: column[0] for name, column in zip(names, orjson.loads(encode([row])), strict=False)}


def _sent(rows: list[tuple[str, tuple]]) -> list[tuple[str, bytes]]:
    return [(table, encode([row])) for table, row in rows]


def test_page_view_row_reads_utm_and_click_id_from_url():
    value = _envelope(
        PageView(occurred_at=T0, visitor_id="v1", url="https://ex.com/p?utm_source=google&utm_medium=cpc&gclid=abc")
    )
    [(table, row)] = rows_for(RecordKind.SOURCE, value, WHERE)
    got = _row(table, row)
    assert table == "events"
    assert got["event_type"] == "page_view" and got["visitor_id"] == "v1" and got["path"] == "/p"
    assert (got["utm_source"], got["utm_medium"], got["click_id"]) == ("google", "cpc", "gclid")
    assert (got["kafka_topic"], got["kafka_partition"], got["kafka_offset"]) == ("p.events", 3, 42)
    assert got["occurred_at"] == T0_SENT and got["amount"] is None


def test_identify_row_keeps_no_email_and_no_form_values():
    value = _envelope(
        Identify(occurred_at=T0, visitor_id="v1", email="Ann@Example.com", form_id="demo", fields={"phone": "+49 123"})
    )
    [(_, row)] = rows_for(RecordKind.SOURCE, value, WHERE)
    got = _row("events", row)
    stored = orjson.loads(got["event"])
    assert stored["email"] is None and stored["fields"] == {"phone": ""}
    assert "ann@example.com" not in got["event"] and "+49" not in got["event"]
    assert got["form_id"] == "demo"


def test_crm_row_carries_stage_and_deal_value():
    value = _envelope(
        CrmStatusChange(
            occurred_at=T0,
            crm="hubspot",
            crm_object_id="d1",
            email="a@b.co",
            stage="customer",
            deal_value=Decimal("1200.50"),
            currency="EUR",
        )
    )
    [(_, row)] = rows_for(RecordKind.SOURCE, value, WHERE)
    got = _row("events", row)
    assert (got["crm"], got["stage"], got["amount"], got["currency"]) == ("hubspot", "customer", "1200.50", "EUR")
    assert "a@b.co" not in got["event"]


def test_spend_event_becomes_an_event_row_and_a_spend_row():
    value = _envelope(
        SpendRow(
            occurred_at=T0,
            date=date(2024, 3, 1),
            channel="Paid Search",
            source="google",
            medium="cpc",
            campaign="spring",
            cost=Decimal("99.90"),
            currency="EUR",
        )
    )
    rows = rows_for(RecordKind.SOURCE, value, WHERE)
    assert [t for t, _ in rows] == ["events", "spend"]
    assert _row("spend", rows[1][1]) == {
        "date": "2024-03-01",
        "channel": "Paid Search",
        "source": "google",
        "medium": "cpc",
        "campaign": "spring",
        "cost": "99.90",
        "currency": "EUR",
        "received_at": T0_SENT,
        "event_id": "e1",
    }


def test_touch_lead_known_is_the_version():
    base = dict(
        touch_id="t1",
        visitor_id="v1",
        site_id="s",
        occurred_at=T0,
        channel="Direct",
        source="(direct)",
        medium="(none)",
        event_id="e1",
    )
    [(_, anonymous)] = rows_for(RecordKind.TOUCH, serde.dumps(Touch(**base)), WHERE)
    [(_, known)] = rows_for(RecordKind.TOUCH, serde.dumps(Touch(**base, lead_id="L1")), WHERE)
    assert (_row("touches", anonymous)["lead_id"], _row("touches", anonymous)["lead_known"]) == ("", 0)
    assert (_row("touches", known)["lead_id"], _row("touches", known)["lead_known"]) == ("L1", 1)


def test_credit_and_conversion_rows():
    credit = Credit(
        conversion_id="c1",
        lead_id="L1",
        stage="customer",
        model="linear",
        touch_id="(none)",
        touch_index=0,
        touch_at=None,
        converted_at=T0,
        channel="(none)",
        source="",
        medium="",
        campaign="",
        credit=Decimal("1"),
        revenue=Decimal("10.00"),
        currency="EUR",
        version=2,
    )
    [(table, row)] = rows_for(RecordKind.CREDIT, serde.dumps(credit), WHERE)
    got = _row(table, row)
    assert (table, got["model"], got["touch_at"], got["credit"], got["version"]) == ("credits", "linear", None, "1", 2)
    conversion = Conversion(
        conversion_id="c1", lead_id="L1", stage="lead", occurred_at=T0, touch_count=0, event_id="e9"
    )
    [(table, row)] = rows_for(RecordKind.CONVERSION, serde.dumps(conversion), WHERE)
    assert _row(table, row)["revenue"] is None and _row(table, row)["currency"] == ""


def test_leads_tombstone_is_an_erasure_elsewhere_an_error():
    assert rows_for(RecordKind.LEAD, None, WHERE, key="L1") == Erasure("L1")
    lead = Lead(lead_id="L1", email="a@b.co", first_identified_at=T0)
    [(table, row)] = rows_for(RecordKind.LEAD, serde.dumps(lead), WHERE)
    assert (table, _row(table, row)) == ("leads", {"lead_id": "L1", "email": "a@b.co", "first_identified_at": T0_SENT})
    with pytest.raises(RecordError, match="only the leads topic takes tombstones"):
        rows_for(RecordKind.TOUCH, None, WHERE, key="v1")


@pytest.mark.parametrize(
    "kind, value, reason",
    [
        (RecordKind.TOUCH, b"not json", "not a valid touch record: (record): Invalid JSON"),
        (RecordKind.CREDIT, b'{"conversion_id": "c1"}', "not a valid credit record: lead_id: Field required"),
        (
            RecordKind.SOURCE,
            b'{"event_id": "e", "site_id": "s", "received_at": "2024-01-01T00:00:00Z", "event": {"type": "nope"}}',
            "not a valid source record: event:",
        ),
    ],
)
def test_records_that_do_not_fit_say_why(kind, value, reason):
    with pytest.raises(RecordError) as info:
        rows_for(kind, value, WHERE)
    assert str(info.value).startswith(reason)


def test_every_topic_the_sink_reads_has_a_kind_and_every_table_columns():
    topics = Topics("p")
    assert set(topic_kinds(topics)) == set(topics.source_topics()) | set(topics.output_topics()) | {
        topics.deliveries,
        topics.ad_feedback,
    }
    assert set(TABLES) == {
        "events",
        "touches",
        "identity_links",
        "leads",
        "conversions",
        "credits",
        "spend",
        "lead_scores",
        "sales_ready_leads",
        "deliveries",
        "ad_feedback",
    }


# -- the fast path (sinks/canonical_rows.py) gives exactly the model path's rows, and leaves the rest to the model --


def test_touch_carries_the_visitor_number_and_0_from_an_older_worker():
    base = dict(
        touch_id="t1",
        visitor_id="v1",
        site_id="s",
        occurred_at=T0,
        channel="Direct",
        source="(direct)",
        medium="(none)",
        event_id="e1",
    )
    [(_, numbered)] = rows_for(RecordKind.TOUCH, serde.dumps(Touch(**base, visitor_number=2**64 - 1)), WHERE)
    older = orjson.loads(serde.dumps(Touch(**base)))
    del older["visitor_number"]
    [(_, unnumbered)] = rows_for(RecordKind.TOUCH, orjson.dumps(older), WHERE)
    assert (_row("touches", numbered)["visitor_number"], _row("touches", unnumbered)["visitor_number"]) == (
        2**64 - 1,
        0,
    )


def _fast_and_model(kind: RecordKind, value: bytes) -> tuple:
    """What each path sends to ClickHouse for the record: (table, encoded row) pairs."""
    return _sent(rows_for(kind, value, WHERE)), _sent(model_rows(kind, value, WHERE))


def _reversed(value: bytes) -> bytes:
    """The record with its fields (and an envelope's event its fields) in reverse order."""
    data = orjson.loads(value)
    if type(data.get("event")) is dict:
        data["event"] = dict(reversed(data["event"].items()))
    return orjson.dumps(dict(reversed(data.items())))


_ATTRIBUTED = Conversion(
    conversion_id="c1",
    lead_id="L1",
    stage="customer",
    occurred_at=T0,
    revenue=Decimal("100.00"),
    currency="EUR",
    touch_count=2,
    first_channel="Paid Search",
    last_channel="Email",
    event_id="e9",
    version=3,
    touches=(
        CreditedTouch(
            touch_id="t1",
            occurred_at=T0.replace(day=1, microsecond=5),
            channel="Paid Search",
            source="google",
            medium="cpc",
            campaign="spring",
        ),
        CreditedTouch(touch_id="t2", occurred_at=T0, channel="Email", source="nl", medium="email"),
    ),
    credits=(
        TouchCredit(model="linear", touch_index=0, credit=Decimal("0.5"), revenue=Decimal("50.00")),
        TouchCredit(model="linear", touch_index=1, credit=Decimal("0.5"), revenue=Decimal("50.00")),
        TouchCredit(model="first_touch", touch_index=0, credit=Decimal("1"), revenue=Decimal("100.00")),
        TouchCredit(model="first_touch", touch_index=1, credit=Decimal("0"), revenue=Decimal("0.00")),
    ),
)
# A conversion with no touch in its window: every model credits the pseudo touch (none), with no time.
_UNTOUCHED = Conversion(
    conversion_id="c2",
    lead_id="L2",
    stage="lead",
    occurred_at=T0,
    touch_count=0,
    event_id="e8",
    touches=(CreditedTouch(touch_id="(none)", occurred_at=None, channel="(none)", source="(none)", medium="(none)"),),
    credits=(TouchCredit(model="w_shaped", touch_index=0, credit=Decimal("1.000000000")),),
)


def test_an_attributed_conversion_is_its_conversion_row_and_one_credit_row_per_credit():
    rows = rows_for(RecordKind.CONVERSION, serde.dumps(_ATTRIBUTED), WHERE)
    assert [table for table, _ in rows] == ["conversions"] + ["credits"] * 4
    # Exactly the rows the credits topic's records made: Credit records of the same values.
    expected = [
        Credit(
            conversion_id="c1",
            lead_id="L1",
            stage="customer",
            model=model,
            touch_id=touch_id,
            touch_index=index,
            touch_at=at,
            converted_at=T0,
            channel=channel,
            source=source,
            medium=medium,
            campaign=campaign,
            credit=Decimal(credit),
            revenue=Decimal(revenue),
            currency="EUR",
            version=3,
        )
        for model, index, credit, revenue in (
            ("linear", 0, "0.5", "50.00"),
            ("linear", 1, "0.5", "50.00"),
            ("first_touch", 0, "1", "100.00"),
            ("first_touch", 1, "0", "0.00"),
        )
        for touch_id, at, channel, source, medium, campaign in [
            (
                ("t1", T0.replace(day=1, microsecond=5), "Paid Search", "google", "cpc", "spring"),
                ("t2", T0, "Email", "nl", "email", ""),
            )[index]
        ]
    ]
    credit_rows = [rows_for(RecordKind.CREDIT, serde.dumps(credit), WHERE)[0] for credit in expected]
    assert _sent(rows[1:]) == _sent(credit_rows)
    assert _row(*rows[0])["version"] == 3 and _row(*rows[0])["touch_count"] == 2
    [(_, untouched)] = rows_for(RecordKind.CONVERSION, serde.dumps(_UNTOUCHED), WHERE)[1:]
    got = _row("credits", untouched)
    assert (got["touch_id"], got["touch_at"], got["channel"], got["credit"], got["revenue"], got["currency"]) == (
        "(none)",
        None,
        "(none)",
        "1.000000000",
        "0.00",
        "",
    )


def test_a_credit_that_names_no_touch_is_rejected_with_the_reason():
    value = _edit(serde.dumps(_ATTRIBUTED), ("credits", 3, "touch_index"), 2)
    with pytest.raises(RecordError, match="credits.3.touch_index 2 names no touch: the record has 2 touches"):
        rows_for(RecordKind.CONVERSION, value, WHERE)


def _canonical_records() -> list[tuple[RecordKind, bytes]]:
    touch = Touch(
        touch_id="t1",
        visitor_id="v1",
        visitor_number=(3 << 40) + 9,
        lead_id="L1",
        site_id="s",
        occurred_at=T0.replace(microsecond=5),
        channel="Paid Search",
        source="google",
        medium="cpc",
        campaign="spring",
        click_id="gclid",
        event_id="e1",
    )
    credit = Credit(
        conversion_id="c1",
        lead_id="L1",
        stage="customer",
        model="w_shaped",
        touch_id="t1",
        touch_index=2,
        touch_at=T0,
        converted_at=T0,
        channel="Email",
        source="nl",
        medium="email",
        campaign="",
        credit=Decimal("0.333333334"),
        revenue=Decimal("-12.50"),
        currency="EUR",
        version=3,
    )
    return [
        (
            RecordKind.SOURCE,
            _envelope(
                PageView(
                    occurred_at=T0,
                    visitor_id="v1",
                    title="Pricing",
                    referrer="https://www.bing.com/",
                    url="https://ex.com/p?utm_source=bing&msclkid=x&fbclid=y",
                )
            ),
        ),
        (
            RecordKind.SOURCE,
            serde.dumps(
                Envelope(
                    event_id="e2",
                    site_id="s",
                    received_at=T0,
                    sent_at=T0,
                    event=PageView(occurred_at=T0, visitor_id="v2", url="http://ex.com"),
                )
            ),
        ),
        # a percent-encoded query (most real campaign URLs): the model filled the fields, nothing is left to fill
        (
            RecordKind.SOURCE,
            _envelope(
                PageView(
                    occurred_at=T0,
                    visitor_id="v3",
                    url="https://ex.com/p?utm_campaign=spring%20sale&utm_term=a+b&q=%C3%A9&gclid=x%2Fy&utm_source=%20",
                )
            ),
        ),
        # the same fields in another order: the event JSON is still written in the model's order
        (
            RecordKind.SOURCE,
            _reversed(
                _envelope(
                    PageView(
                        occurred_at=T0,
                        visitor_id="v4",
                        session_id="s4",
                        url="https://ex.com/é?utm_source=a",
                        user_agent="UA \u2028",
                    )
                )
            ),
        ),
        (RecordKind.TOUCH, serde.dumps(touch)),
        (RecordKind.TOUCH, serde.dumps(touch.model_copy(update={"lead_id": None}))),
        (RecordKind.TOUCH, _reversed(serde.dumps(touch))),
        (RecordKind.CREDIT, serde.dumps(credit)),
        (
            RecordKind.CREDIT,
            serde.dumps(
                credit.model_copy(
                    update={"touch_at": None, "currency": None, "credit": Decimal("1"), "revenue": Decimal("0")}
                )
            ),
        ),
        (
            RecordKind.CONVERSION,
            serde.dumps(
                Conversion(
                    conversion_id="c1",
                    lead_id="L1",
                    stage="customer",
                    occurred_at=T0,
                    revenue=Decimal("1200.50"),
                    currency="USD",
                    touch_count=4,
                    event_id="e9",
                    version=2,
                )
            ),
        ),
        (RecordKind.CONVERSION, serde.dumps(_ATTRIBUTED)),
        (RecordKind.CONVERSION, _reversed(serde.dumps(_ATTRIBUTED))),
        (RecordKind.CONVERSION, serde.dumps(_UNTOUCHED)),
        (
            RecordKind.IDENTITY_LINK,
            serde.dumps(IdentityLink(visitor_id="v1", lead_id="L1", linked_at=T0, event_id="e2", form_id="demo")),
        ),
        (RecordKind.LEAD, serde.dumps(Lead(lead_id="L1", email="a@b.co", first_identified_at=T0))),
    ]


@pytest.mark.parametrize("kind, value", _canonical_records())
def test_canonical_records_take_the_fast_path_with_the_model_paths_rows(kind, value):
    if kind is RecordKind.SOURCE:
        fast = canonical_rows.page_view_rows(value, *WHERE)
    elif kind is RecordKind.CONVERSION:
        fast = canonical_rows.conversion_rows(value)
    else:
        fast = [(None, _FAST_ROW[kind](value))]
    fast_rows, model = _fast_and_model(kind, value)
    assert fast_rows == model
    assert [encode([row]) for _, row in fast] == [row for _, row in model]


_FAST_ROW = {
    RecordKind.TOUCH: canonical_rows.touch_row,
    RecordKind.CREDIT: canonical_rows.credit_row,
    RecordKind.IDENTITY_LINK: canonical_rows.identity_link_row,
    RecordKind.LEAD: canonical_rows.lead_row,
}


def _edit(value: bytes, path: tuple, new) -> bytes:
    data = orjson.loads(value)
    target = data
    for step in path[:-1]:
        target = target[step]
    if new is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return orjson.dumps(data)


_DROP = object()
_PAGE = _envelope(PageView(occurred_at=T0, visitor_id="v1", url="https://ex.com/p?utm_source=google"))
_TOUCH = serde.dumps(
    Touch(
        touch_id="t1",
        visitor_id="v1",
        site_id="s",
        occurred_at=T0,
        channel="Direct",
        source="(direct)",
        medium="(none)",
        event_id="e1",
    )
)
_CREDIT = next(value for kind, value in _canonical_records() if kind is RecordKind.CREDIT)


@pytest.mark.parametrize(
    "kind, value",
    [
        # Not canonical but valid: the model fills, strips, coerces; the rows must be the model's.
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "url"), "https://ex.com/p?utm_source=google&utm_term=%20shoes")),
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "url"), "https://ex.com/p?gclid=abc")),
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "url"), "https://ex.com/p?utm_source=google&utm%5Fterm=shoes")),
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "path"), None)),
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "title"), "  Pricing  ")),
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "occurred_at"), "2024-03-01T13:00:00+01:00")),
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "screen"), _DROP)),
        # the model writes a time without microseconds as ...00Z, and its event JSON says so
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "occurred_at"), "2024-03-01T12:00:00.000000Z")),
        (RecordKind.SOURCE, _edit(_PAGE, ("received_at",), "2024-03-01T12:00:00.000000Z")),
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "occurred_at"), "2024-03-01 12:00:00Z")),
        (RecordKind.SOURCE, _edit(_PAGE, ("schema_version",), 1.0)),
        (RecordKind.TOUCH, _edit(_TOUCH, ("campaign",), _DROP)),
        (RecordKind.TOUCH, _edit(_TOUCH, ("visitor_number",), _DROP)),  # from a worker before visitor numbers
        (RecordKind.TOUCH, _edit(_TOUCH, ("occurred_at",), "2024-03-01 12:00:00")),
        (RecordKind.CREDIT, _edit(_CREDIT, ("credit",), 0.5)),
        (RecordKind.CREDIT, _edit(_CREDIT, ("revenue",), "1E+2")),
        # a conversion from a worker before 2026-12-06 (its credits on their own topic): the conversion row alone
        (RecordKind.CONVERSION, _edit(_edit(serde.dumps(_ATTRIBUTED), ("touches",), _DROP), ("credits",), _DROP)),
        (RecordKind.CONVERSION, _edit(serde.dumps(_ATTRIBUTED), ("credits", 0, "credit"), 0.5)),
    ],
)
def test_other_valid_records_get_the_models_rows(kind, value):
    fast, model = _fast_and_model(kind, value)
    assert fast == model


@pytest.mark.parametrize(
    "kind, value, reason",
    [
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "visitor_id"), "undefined"), "not a valid source record: event"),
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "url"), "/relative"), "not a valid source record: event"),
        (RecordKind.SOURCE, _edit(_PAGE, ("event", "title"), "x" * 513), "not a valid source record: event"),
        (RecordKind.SOURCE, _edit(_PAGE, ("event_id",), ""), "not a valid source record: event_id"),
        (RecordKind.TOUCH, _edit(_TOUCH, ("extra",), 1), "not a valid touch record: extra"),
        (RecordKind.TOUCH, _edit(_TOUCH, ("visitor_number",), -1), "not a valid touch record: visitor_number"),
        (
            RecordKind.TOUCH,
            _TOUCH.replace(b'"visitor_number":0', b'"visitor_number":18446744073709551616'),
            "not a valid touch record: visitor_number",
        ),
        (RecordKind.TOUCH, _edit(_TOUCH, ("occurred_at",), "2024-02-30T00:00:00Z"), "not a valid touch record"),
        (RecordKind.CREDIT, _edit(_CREDIT, ("credit",), "1.5"), "not a valid credit record: credit"),
        (RecordKind.CREDIT, _edit(_CREDIT, ("model",), "nope"), "not a valid credit record: model"),
        (RecordKind.CREDIT, _edit(_CREDIT, ("currency",), "eur"), "not a valid credit record: currency"),
        (RecordKind.CREDIT, _edit(_CREDIT, ("version",), 0), "not a valid credit record: version"),
        (RecordKind.CREDIT, _edit(_CREDIT, ("version",), 2**32), "credit version or touch_index exceeds UInt32"),
    ],
)
def test_invalid_records_are_rejected_with_the_models_reason(kind, value, reason):
    with pytest.raises(RecordError) as info:
        rows_for(kind, value, WHERE)
    assert str(info.value).startswith(reason)


# -- the page-view fast path against the model, on generated records ---------------------------------------------


def test_the_event_json_is_written_as_the_model_path_writes_it_for_every_character():
    # The fast path writes the event JSON with msgspec, the model path with orjson: every code point the same.
    for start in range(0, 0x110000, 4096):
        text = "".join(chr(c) for c in range(start, min(start + 4096, 0x110000)) if not 0xD800 <= c <= 0xDFFF)
        assert msgspec.json.encode(text) == orjson.dumps(text), hex(start)


def test_the_fast_path_knows_every_page_view_and_envelope_field():
    # A field added to PageView or Envelope must be taught to sinks/canonical_rows.py (its decoder refuses to build).
    with pytest.raises(RuntimeError, match=r"\['colour'\] of PageViewRecord"):
        canonical_rows._record_struct(
            "PageViewRecord",
            (*canonical_rows.PAGE_VIEW_FIELDS, "colour"),
            {"occurred_at": str, "type": str, **canonical_rows._CONSENT},
            canonical_rows._PAGE_VIEW_TEXT,
        )
    assert set(canonical_rows.PAGE_VIEW_FIELDS) - set(canonical_rows._PAGE_VIEW_TEXT) == {
        "occurred_at",
        "type",
        *canonical_rows._CONSENT,
    }
    assert canonical_rows.ENVELOPE_FIELDS == (
        "event_id",
        "site_id",
        "sent_at",
        "received_at",
        "schema_version",
        "event",
    )
    decorators = PageView.__pydantic_decorators__
    assert sorted(decorators.field_validators) + sorted(decorators.model_validators) == [
        "_absolute_url",
        "_occurred_at_utc",
        "_fill_from_url",
    ]


@st.composite
def page_view_records(draw) -> bytes:
    """A page-view envelope's bytes: generated fields, often in the model's canonical form, sometimes reordered."""
    item = dict(draw(page_views))
    envelope = {
        "event_id": item.pop("event_id", "e1"),
        "site_id": draw(mostly(st.just("site"), values, 10)),
        "sent_at": item.pop("sent_at", None),
        "received_at": draw(times),
        "schema_version": draw(mostly(st.just(1), st.sampled_from([0, 65535, 65536, -1, 1.0, "1", True]), 8)),
    }
    item.setdefault("occurred_at", draw(times))
    item.setdefault("path", draw(mostly(st.sampled_from(["/", "/p", "/é"]), values, 6)))  # the model fills a null
    event = {name: item.pop(name, None) for name in PageView.model_fields}
    event.update(item)  # what is left is a field PageView does not have
    envelope["event"] = event
    value = orjson.dumps(envelope)
    if draw(st.integers(1, 4)) < 4:  # as this pipeline's collector writes it
        try:
            value = serde.dumps(Envelope.model_validate_json(value))
        except ValidationError:
            pass
    if draw(st.integers(1, 3)) == 1:  # one text wrapped in characters the model may strip
        data = orjson.loads(value)
        texts = [name for name, text in data.get("event", {}).items() if type(text) is str and name != "type"]
        if texts:
            edge = draw(st.sampled_from(EDGES))
            name = draw(st.sampled_from(texts))
            data["event"][name] = edge + data["event"][name] + draw(st.sampled_from(["", edge]))
            value = orjson.dumps(data)
    if draw(st.integers(1, 4)) == 1:
        value = _reversed(value)
    return value


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page_view_records())
def test_any_page_view_record_gets_the_models_rows_or_is_left_to_the_model(value: bytes):
    try:
        fast = canonical_rows.page_view_rows(value, *WHERE)
    except (canonical_rows.NotCanonical, canonical_rows.DecodeError, ValueError):
        return  # left to the model
    assert _sent(fast) == _sent(model_rows(RecordKind.SOURCE, value, WHERE))  # raises RecordError if it rejects


_ODD = [
    None,
    0,
    -1,
    1.0,
    True,
    2**32 - 1,
    2**32,
    2**64 - 1,
    "",
    " x ",
    "x",
    "0.5",
    "1E+2",
    "1.0000000000",
    "12.345",
    "-0",
    "EUR",
    "eur",
    "first_touch",
    "customer",
    "2024-03-01T12:00:00.000000Z",
    "2024-03-01 12:00:00Z",
    "2024-03-01T12:00:00+01:00",
    "2024-02-30T00:00:00Z",
    [],
    {},
]


def _output_variants():
    """Every canonical output record with each field (and one extra) replaced by each odd value or dropped, in
    the model's field order and reversed."""
    for kind, value in _canonical_records():
        if kind is RecordKind.SOURCE:
            continue
        data = orjson.loads(value)
        for name in [*data, "extra"]:
            for new in [*_ODD, _DROP]:
                variant = {k: v for k, v in data.items() if not (k == name and new is _DROP)}
                if new is not _DROP:
                    variant[name] = new
                yield kind, orjson.dumps(variant)
                yield kind, _reversed(orjson.dumps(variant))


def test_any_output_record_gets_the_models_rows_or_is_left_to_the_model():
    taken = 0
    for kind, value in _output_variants():
        try:
            if kind is RecordKind.CONVERSION:
                fast = canonical_rows.conversion_rows(value)
            else:
                fast = [(None, _FAST_ROW[kind](value))]
        except (canonical_rows.NotCanonical, canonical_rows.DecodeError, ValueError):
            continue  # left to the model
        model = model_rows(kind, value, WHERE)
        if kind is not RecordKind.CONVERSION:
            model = [(None, row) for _, row in model]
        assert _sent(fast) == _sent(model), value
        taken += 1
    assert taken > 1000  # the variants the fast path takes (same type, other value) are compared too


# -- insert blocks and what ClickHouse's answers mean --------------------------------------------------------


def _event_row(occurred_at) -> tuple:
    row = [""] * len(insert_columns("events"))
    row[insert_columns("events").index("occurred_at")] = occurred_at
    return tuple(row)


def test_rows_of_many_months_go_in_blocks_of_at_most_100_partitions():
    months = [f"{1990 + i // 12:04d}-{1 + i % 12:02d}-15T12:00:00Z" for i in range(250)]
    rows = [_event_row(m) for m in months] + [_event_row(months[0])]  # a second row in the first month
    blocks = partition_blocks("events", rows)
    assert [len({rows[p][3][:7] for p in block}) for block in blocks] == [100, 100, 50]
    assert sorted(p for block in blocks for p in block) == list(range(251))
    assert blocks[0][:2] == [0, 250]  # the first month's rows together, in their order
    # A datetime and its canonical string are the same month; naive = UTC, aware converted to UTC.
    same = [_event_row(datetime(2024, 3, 31, 23, tzinfo=timezone.utc)), _event_row("2024-03-01T00:00:00Z")]
    assert partition_blocks("events", same, limit=1) is None
    assert partition_blocks("events", rows[:100]) is None  # up to 100 months: one insert, as before
    assert partition_blocks("leads", [("L", "e", "2024-03-01T00:00:00Z")] * 3, limit=1) is None  # unpartitioned


def test_clickhouse_errors_are_told_apart():
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    from sinks.writer import Failure, classify

    def said(text: str) -> Failure:
        return classify(DatabaseError(f"HTTPDriver for http://ch:8123 received ClickHouse error code {text}"))

    assert classify(OperationalError("Error HTTPConnectionPool: Connection refused")) is Failure.UNREACHABLE
    assert classify(DatabaseError("HTTP driver received HTTP status 502")) is Failure.UNREACHABLE  # a proxy
    assert (
        said(
            "252\n Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). "
            "(TOO_MANY_PARTS)"
        )
        is Failure.REJECTED
    )
    assert (
        said(
            "252\n Code: 252. DB::Exception: Too many parts (3001). Merges are processing significantly "
            "slower than inserts. (TOO_MANY_PARTS)"
        )
        is Failure.REFUSED
    )
    assert said("60\n Code: 60. DB::Exception: Table db.touches does not exist. (UNKNOWN_TABLE)") is Failure.REFUSED
    assert said("241\n Code: 241. DB::Exception: Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)") is Failure.REFUSED
    assert (
        said("27\n Code: 27. DB::Exception: Cannot parse input. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)")
        is Failure.REJECTED
    )
    assert said("117\n Code: 117. DB::Exception: Unknown field found. (INCORRECT_DATA)") is Failure.REJECTED
