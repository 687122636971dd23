"""Property-based: malformed bodies at every endpoint never produce a 5xx, and every rejection explains itself
(a JSON body with a reason and a message; per-event rejections carry field paths and messages)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from collector_support import CRM_SECRET, SERVER_KEY, basic_auth, collector_settings, hubspot_headers, offline_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.webhooks.generic import sign as sign_generic

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
EVENT_FIELDS = [
    "type",
    "visitor_id",
    "url",
    "email",
    "occurred_at",
    "event_id",
    "sent_at",
    "title",
    "utm_source",
    "crm",
    "crm_object_id",
    "stage",
    "deal_value",
    "currency",
    "date",
    "channel",
    "cost",
    "fields",
]
TYPES = st.sampled_from(["page_view", "identify", "crm_status", "spend", "x", ""])
near_events = st.dictionaries(st.sampled_from(EVENT_FIELDS), json_values | TYPES, max_size=8)
HS_FIELDS = [
    "eventId",
    "portalId",
    "subscriptionType",
    "objectId",
    "occurredAt",
    "propertyName",
    "propertyValue",
    "contactId",
    "amount",
    "currency",
    "email",
]
near_hubspot = st.lists(
    st.dictionaries(
        st.sampled_from(HS_FIELDS),
        json_values
        | st.sampled_from(
            ["deal.propertyChange", "contact.propertyChange", "dealstage", "lifecyclestage", "closedwon", "lead"]
        ),
        max_size=9,
    ),
    max_size=4,
)
near_pipedrive = st.fixed_dictionaries(
    {
        "meta": st.dictionaries(
            st.sampled_from(["action", "entity", "entity_id", "id", "version", "timestamp", "company_id"]),
            json_values | st.sampled_from(["create", "change", "deal", "person", "lead", "2.0"]),
            max_size=7,
        ),
        "data": st.dictionaries(
            st.sampled_from(["id", "status", "value", "currency", "person_id", "emails", "label_ids", "stage_id"]),
            json_values | st.sampled_from(["won", "lost"]),
            max_size=6,
        )
        | json_values,
        "previous": st.dictionaries(st.sampled_from(["status", "label_ids", "stage_id"]), json_values, max_size=3)
        | json_values,
    }
)
near_generic = st.dictionaries(
    st.sampled_from(["id", "stage", "occurred_at", "email", "contact_id", "object_id", "value", "currency"]),
    json_values,
    max_size=8,
)


def bodies(structured: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(orjson.dumps),
        structured.map(orjson.dumps),
        st.lists(structured, max_size=5).map(orjson.dumps),
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    settings_ = collector_settings(
        Path(tmp_path_factory.mktemp("hypothesis")), pipedrive_label_ids={"1": "mql"}, pipedrive_stage_ids={"2": "sql"}
    )
    with offline_client(settings_) as client:
        yield client


def explains_itself(response) -> None:
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["message"], str) and body["message"]
        for error in body.get("errors", []):
            assert isinstance(error["loc"], str) and error["msg"]
    for rejected in body.get("rejected", []):
        assert isinstance(rejected["index"], int)
        assert rejected["errors"], rejected
        for error in rejected["errors"]:
            assert isinstance(error["loc"], str) and isinstance(error["msg"], str) and error["msg"]
    for ignored in body.get("ignored", []):
        assert ignored["reason"]


common = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@common
@given(body=bodies(near_events), server=st.booleans())
def test_events_endpoint(client, body: bytes, server: bool) -> None:
    key = SERVER_KEY if server else "demo-write-key"
    explains_itself(client.post("/v1/events", content=body, headers={"X-Closedloop-Key": key}))


@common
@given(body=bodies(near_hubspot), signed=st.booleans())
def test_hubspot_endpoint(client, body: bytes, signed: bool) -> None:
    headers = hubspot_headers(body, "http://testserver/v1/webhooks/hubspot") if signed else {}
    explains_itself(client.post("/v1/webhooks/hubspot", content=body, headers=headers))


@common
@given(body=bodies(near_pipedrive), authed=st.booleans())
def test_pipedrive_endpoint(client, body: bytes, authed: bool) -> None:
    explains_itself(client.post("/v1/webhooks/pipedrive", content=body, headers=basic_auth() if authed else {}))


@common
@given(
    body=st.one_of(
        bodies(near_generic),
        st.fixed_dictionaries({"source": json_values, "events": st.lists(near_generic, max_size=4)}).map(orjson.dumps),
    ),
    signed=st.booleans(),
)
def test_generic_endpoint(client, body: bytes, signed: bool) -> None:
    headers = {"X-Closedloop-Signature": sign_generic(CRM_SECRET, body)} if signed else {}
    explains_itself(client.post("/v1/webhooks/crm", content=body, headers=headers))
