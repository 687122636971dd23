"""The collector against the embedded broker: every endpoint's events arrive in the right topic with the right key."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from collector_support import (
    CRM_SECRET,
    SERVER_KEY,
    basic_auth,
    collector_settings,
    create_source_topics,
    dumps,
    hubspot_headers,
    read_topic,
)
from starlette.testclient import TestClient

from collector.app import create_app
from collector.webhooks.generic import sign as sign_generic

pytestmark = pytest.mark.kafka

KEY = {"X-Closedloop-Key": "demo-write-key"}
HS_URL = "http://testserver/v1/webhooks/hubspot"


@pytest.fixture
def settings(kafka_bootstrap: str, unique_name: str, tmp_path: Path):
    settings = collector_settings(tmp_path, bootstrap=kafka_bootstrap, prefix=unique_name)
    create_source_topics(kafka_bootstrap, settings)
    return settings


def test_events_reach_their_topics_keyed(settings) -> None:
    with TestClient(create_app(settings)) as client:
        browser = client.post(
            "/v1/events",
            headers=KEY,
            json=[
                {
                    "type": "page_view",
                    "visitor_id": "vis-a",
                    "event_id": "pv-1",
                    "url": "https://acme.test/?utm_source=linkedin&utm_medium=social&utm_campaign=spring",
                },
                {
                    "type": "identify",
                    "visitor_id": "vis-a",
                    "event_id": "id-1",
                    "email": "Ann@Acme.test",
                    "form_id": "demo",
                },
                {"type": "page_view", "visitor_id": "vis-b", "event_id": "pv-2", "url": "https://acme.test/pricing"},
            ],
        )
        assert browser.json()["accepted"] == 3
        server = client.post(
            "/v1/events",
            headers={"X-Closedloop-Key": SERVER_KEY},
            json=[
                {
                    "type": "crm_status",
                    "event_id": "crm-1",
                    "crm": "salesforce",
                    "crm_object_id": "006A",
                    "email": "ann@acme.test",
                    "stage": "opportunity",
                    "occurred_at": "2024-05-02T00:00:00Z",
                },
                {
                    "type": "spend",
                    "event_id": "sp-1",
                    "date": "2024-05-01",
                    "channel": "Paid Social",
                    "source": "linkedin",
                    "medium": "cpc",
                    "campaign": "spring",
                    "cost": "99.90",
                    "currency": "EUR",
                    "occurred_at": "2024-05-01",
                },
            ],
        )
        assert server.json()["accepted"] == 2
    topics = settings.topics
    events = read_topic(settings.kafka_servers, topics.events, 3)
    assert sorted((key, value["event_id"], value["site_id"]) for key, value in events) == [
        ("vis-a", "id-1", "demo"),
        ("vis-a", "pv-1", "demo"),
        ("vis-b", "pv-2", "demo"),
    ]
    vis_a = [value["event"] for key, value in events if key == "vis-a"]
    assert [e["type"] for e in vis_a] == ["page_view", "identify"]  # one visitor's events keep their order
    assert (vis_a[0]["utm_source"], vis_a[0]["utm_medium"], vis_a[0]["utm_campaign"]) == (
        "linkedin",
        "social",
        "spring",
    )
    assert vis_a[1]["email"] == "ann@acme.test"
    crm = read_topic(settings.kafka_servers, topics.crm, 1)
    assert [(k, v["event_id"], v["site_id"], v["event"]["stage"]) for k, v in crm] == [
        ("ann@acme.test", "crm-1", "backend", "opportunity")
    ]
    spend = read_topic(settings.kafka_servers, topics.spend, 1)
    assert [(k, v["event"]["cost"]) for k, v in spend] == [("2024-05-01|Paid Social|linkedin|cpc|spring", "99.90")]


def test_hubspot_signed_arrives_once_tampered_stale_unsigned_never(settings) -> None:
    events = [
        {
            "eventId": 11,
            "portalId": 62515,
            "subscriptionType": "contact.propertyChange",
            "objectId": 501,
            "propertyName": "lifecyclestage",
            "propertyValue": "salesqualifiedlead",
            "occurredAt": 1714557600000,
        },
        {
            "eventId": 12,
            "portalId": 62515,
            "subscriptionType": "deal.propertyChange",
            "objectId": 901,
            "propertyName": "dealstage",
            "propertyValue": "closedwon",
            "occurredAt": 1714557700000,
            "contactId": 501,
            "amount": 5000,
            "currency": "EUR",
        },
    ]
    body = dumps(events)
    tampered = body.replace(b"5000", b"9000")
    stale = hubspot_headers(body, HS_URL, timestamp_ms=int(time.time() * 1000) - 301_000)
    with TestClient(create_app(settings)) as client:
        assert (
            client.post("/v1/webhooks/hubspot", content=tampered, headers=hubspot_headers(body, HS_URL)).status_code
            == 401
        )
        assert client.post("/v1/webhooks/hubspot", content=body, headers=stale).status_code == 401
        assert (
            client.post("/v1/webhooks/hubspot", content=body, headers={"Content-Type": "application/json"}).status_code
            == 401
        )
        first = client.post("/v1/webhooks/hubspot", content=body, headers=hubspot_headers(body, HS_URL))
        retry = client.post("/v1/webhooks/hubspot", content=body, headers=hubspot_headers(body, HS_URL))
        assert (first.json()["accepted"], retry.json()["accepted"], retry.json()["duplicates"]) == (2, 0, 2)
    crm = read_topic(settings.kafka_servers, settings.topics.crm, 2)
    assert [(k, v["event_id"], v["event"]["stage"], v["event"]["deal_value"]) for k, v in crm] == [
        ("hubspot:501", "hubspot:62515:11", "sql", None),
        ("hubspot:501", "hubspot:62515:12", "customer", "5000.00"),
    ]


def test_pipedrive_and_generic_webhooks_arrive(settings) -> None:
    won = {
        "meta": {
            "action": "change",
            "entity": "deal",
            "entity_id": 31,
            "id": "d-31-won",
            "version": "2.0",
            "company_id": 77,
            "attempt": 1,
            "timestamp": 1714728000,
        },
        "data": {"id": 31, "status": "won", "value": "1500", "currency": "EUR", "person_id": 12},
        "previous": {"status": "open"},
    }
    generic = dumps(
        {"events": [{"id": "g-1", "stage": "lost", "occurred_at": "2024-05-06T00:00:00Z", "email": "c@d.test"}]}
    )
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/webhooks/pipedrive", json=won, headers=basic_auth()).json()["accepted"] == 1
        retried = client.post(
            "/v1/webhooks/pipedrive", json={**won, "meta": {**won["meta"], "attempt": 2}}, headers=basic_auth()
        )
        assert retried.json()["duplicates"] == 1
        signed = {"X-Closedloop-Signature": sign_generic(CRM_SECRET, generic)}
        assert client.post("/v1/webhooks/crm", content=generic, headers=signed).json()["accepted"] == 1
    crm = read_topic(settings.kafka_servers, settings.topics.crm, 2)
    assert sorted((k, v["event_id"], v["event"]["stage"]) for k, v in crm) == [
        ("c@d.test", "generic:generic:g-1", "lost"),
        ("pipedrive:12", "pipedrive:77:d-31-won:0", "customer"),
    ]
