"""The contract: event models, JSON Schema files in sync with them, serialization round trips."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from schemas import Envelope, Topics
from schemas.events import CrmStatusChange, Identify, PageView, SpendRow
from schemas.identity import is_junk_identifier, normalize_email
from schemas.jsonschema_gen import OUT_DIR, render
from schemas.serde import dumps, loads

T0 = "2026-03-01T10:00:00Z"


def test_json_schema_files_match_models():
    rendered = render()
    on_disk = {path.name: path.read_text() for path in OUT_DIR.glob("*.json")}
    assert set(on_disk) == set(rendered), "run: python -m schemas.jsonschema_gen"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} drifted from its model: run python -m schemas.jsonschema_gen"


def test_page_view_reads_campaign_fields_from_url():
    view = PageView(
        visitor_id="v1",
        url="https://example.com/pricing?utm_source=LinkedIn&utm_medium=social&utm_campaign=spring&gclid=abc",
        occurred_at=T0,
    )
    assert (view.utm_source, view.utm_medium, view.utm_campaign, view.gclid) == ("LinkedIn", "social", "spring", "abc")
    assert view.path == "/pricing"
    assert view.host == "example.com"


def test_page_view_explicit_fields_win_over_url():
    view = PageView(visitor_id="v1", url="https://example.com/?utm_source=a", utm_source="b", occurred_at=T0)
    assert view.utm_source == "b"


@pytest.mark.parametrize("junk", ["", " ", "null", "undefined", "anonymous", "0", "-1", "NULL"])
def test_junk_visitor_ids_are_rejected(junk):
    with pytest.raises(ValidationError) as error:
        PageView(visitor_id=junk, url="https://example.com/", occurred_at=T0)
    assert error.value.errors()[0]["loc"] == ("visitor_id",)


@pytest.mark.parametrize("value", [None, "", "null", "undefined", "anonymous", "0", "-1", " Null "])
def test_is_junk_identifier(value):
    assert is_junk_identifier(value)


def test_real_identifier_is_not_junk():
    assert not is_junk_identifier("a1b2")


def test_email_is_normalised():
    assert normalize_email("  Ada@Example.COM ") == "ada@example.com"
    identify = Identify(visitor_id="v1", email=" Ada@Example.com", occurred_at=T0)
    assert identify.email == "ada@example.com"


@pytest.mark.parametrize("bad", ["", "null", "ada", "ada@", "@example.com", "a b@example.com"])
def test_bad_email_is_rejected_with_its_value(bad):
    with pytest.raises(ValueError):
        normalize_email(bad)


def test_relative_url_is_rejected():
    with pytest.raises(ValidationError) as error:
        PageView(visitor_id="v1", url="/pricing", occurred_at=T0)
    assert "absolute http(s) URL" in str(error.value)


def test_crm_change_needs_a_person_and_a_currency_with_value():
    with pytest.raises(ValidationError, match="email or crm_contact_id"):
        CrmStatusChange(crm="generic", crm_object_id="d1", stage="customer", occurred_at=T0)
    with pytest.raises(ValidationError, match="needs a currency"):
        CrmStatusChange(
            crm="generic", crm_object_id="d1", email="a@b.co", stage="customer", deal_value="100", occurred_at=T0
        )


def test_crm_lead_key_prefers_email():
    by_email = CrmStatusChange(
        crm="hubspot", crm_object_id="1", email="A@B.co", crm_contact_id="9", stage="mql", occurred_at=T0
    )
    by_contact = CrmStatusChange(crm="hubspot", crm_object_id="1", crm_contact_id="9", stage="mql", occurred_at=T0)
    assert by_email.lead_key == "a@b.co"
    assert by_contact.lead_key == "hubspot:9"


def test_envelope_round_trip_keeps_types_and_utc():
    envelope = Envelope(
        event_id="e1",
        site_id="demo",
        received_at=datetime(2026, 3, 1, 11, 0, 0),
        event=SpendRow(date="2026-03-01", channel="Paid Search", cost="12.50", currency="EUR", occurred_at=T0),
    )
    again = loads(dumps(envelope), Envelope)
    assert again == envelope
    assert again.received_at.tzinfo == timezone.utc
    assert again.event.cost == Decimal("12.50")
    assert again.event.spend_key == "2026-03-01|Paid Search|||"


def test_envelope_rejects_unknown_event_type():
    with pytest.raises(ValidationError) as error:
        Envelope.model_validate({"event_id": "e", "site_id": "s", "received_at": T0, "event": {"type": "click"}})
    assert "union_tag_invalid" in {e["type"] for e in error.value.errors()}


def test_topics_are_prefixed_and_complete():
    topics = Topics("t1")
    names = [spec.name for spec in topics.specs()]
    assert len(names) == len(set(names)) == 17
    assert all(name.startswith("t1.") for name in names)
    assert [spec.name for spec in topics.specs() if spec.compacted] == ["t1.leads", "t1.erased-leads"]
