"""Collector unit tests: no broker. The app runs with its real publisher pointed at a closed port, so every
accepted record lands in the real on-disk spool, which the tests read back."""

from __future__ import annotations

import gzip
import time
import zlib
from pathlib import Path

import orjson
import pytest
from collector_support import (
    CRM_SECRET,
    SERVER_KEY,
    basic_auth,
    collector_settings,
    dumps,
    hubspot_headers,
    offline_client,
    spooled,
)

from collector.webhooks.generic import sign as sign_generic

PAGE = {
    "type": "page_view",
    "visitor_id": "vis-1",
    "url": "https://acme.test/pricing?utm_source=linkedin&utm_medium=social",
}
KEY = {"X-Closedloop-Key": "demo-write-key"}


@pytest.fixture
def client(tmp_path: Path):
    with offline_client(collector_settings(tmp_path)) as client:
        yield client


def envelopes(client) -> list[tuple[str, str | None, dict]]:
    return [(r.topic, r.key.decode() if r.key else None, orjson.loads(r.value)) for r in spooled(client)]


# -- POST /v1/events ---------------------------------------------------------------------------------------------


def test_single_page_view_is_accepted_keyed_by_visitor(client) -> None:
    response = client.post(
        "/v1/events", headers=KEY, json={**PAGE, "event_id": "e-1", "sent_at": "2024-05-01T10:00:00Z"}
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "rejected": [], "event_ids": ["e-1"]}
    [(topic, key, envelope)] = envelopes(client)
    assert (topic, key) == ("closedloop.events", "vis-1")
    assert envelope["event_id"] == "e-1"
    assert envelope["site_id"] == "demo"
    assert envelope["sent_at"] == "2024-05-01T10:00:00Z"
    assert envelope["event"]["utm_source"] == "linkedin"
    assert envelope["event"]["utm_medium"] == "social"
    assert envelope["event"]["path"] == "/pricing"
    assert envelope["event"]["occurred_at"] == envelope["received_at"]
    assert envelope["event"]["user_agent"] == "testclient"


def test_key_in_query_string_and_text_plain_body(client) -> None:
    # sendBeacon cannot set headers and posts text/plain: both must work.
    response = client.post("/v1/events?key=demo-write-key", content=dumps(PAGE), headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    assert response.json()["accepted"] == 1


@pytest.mark.parametrize("shape", ["array", "batch"])
def test_batch_accepts_valid_and_reports_invalid_by_index(client, shape: str) -> None:
    events = [
        PAGE,
        {"type": "page_view", "visitor_id": "undefined", "url": "https://acme.test/"},
        {"type": "identify", "visitor_id": "vis-1", "email": " Ann@Acme.TEST "},
        {"type": "nope"},
        42,
    ]
    body = events if shape == "array" else {"batch": events}
    response = client.post("/v1/events", headers=KEY, json=body)
    assert response.status_code == 200
    result = response.json()
    assert result["accepted"] == 2
    assert [r["index"] for r in result["rejected"]] == [1, 3, 4]
    assert result["rejected"][0]["errors"] == [
        {"loc": "visitor_id", "msg": "visitor_id 'undefined' is a placeholder, not an identifier"}
    ]
    assert result["rejected"][1]["errors"][0]["loc"] == "type"
    assert "unknown event type 'nope'" in result["rejected"][1]["errors"][0]["msg"]
    assert result["rejected"][2]["errors"] == [{"loc": "", "msg": "expected an event object, got int"}]
    records = envelopes(client)
    assert [(t, k, e["event"]["type"]) for t, k, e in records] == [
        ("closedloop.events", "vis-1", "page_view"),
        ("closedloop.events", "vis-1", "identify"),
    ]
    assert records[1][2]["event"]["email"] == "ann@acme.test"


def test_all_invalid_is_422_with_reasons(client) -> None:
    response = client.post("/v1/events", headers=KEY, json=[{"type": "page_view", "visitor_id": "v", "url": "ftp://x"}])
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_events" and body["accepted"] == 0
    assert body["rejected"] == [
        {
            "index": 0,
            "errors": [{"loc": "url", "msg": "url must be an absolute http(s) URL, e.g. https://example.com/pricing"}],
        }
    ]
    assert envelopes(client) == []


def test_times_out_of_range_in_utc_are_rejected_by_field(client) -> None:
    # Both are valid ISO 8601 but outside years 1-9999 once in UTC: the conversion once raised OverflowError (a 500).
    early, late = "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"
    response = client.post(
        "/v1/events", headers=KEY, json=[{**PAGE, "occurred_at": early}, {**PAGE, "sent_at": late}, PAGE]
    )
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    assert body["rejected"] == [
        {"index": 0, "errors": [{"loc": "occurred_at", "msg": "the time is out of range in UTC (years 1 to 9999)"}]},
        {
            "index": 1,
            "errors": [
                {"loc": "sent_at", "msg": "must be an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z (or left out)"}
            ],
        },
    ]


def test_unknown_field_is_named(client) -> None:
    response = client.post("/v1/events", headers=KEY, json={**PAGE, "colour": "red"})
    assert response.status_code == 422
    assert response.json()["rejected"][0]["errors"] == [
        {"loc": "colour", "msg": "unknown field (not part of this event type; check the spelling)"}
    ]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"", 400, "empty_body"),
        (b"{not json", 400, "invalid_json"),
        (b'"a string"', 400, "invalid_shape"),
        (b"[]", 400, "empty_batch"),
        (b'{"batch": 3}', 400, "invalid_shape"),
        (b'{"batch": [], "x": 1}', 400, "invalid_shape"),
    ],
)
def test_malformed_bodies(client, body: bytes, status: int, error: str) -> None:
    response = client.post("/v1/events", headers=KEY, content=body)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["message"]


def test_keys_and_origins(tmp_path: Path) -> None:
    settings = collector_settings(tmp_path, allowed_origins=["https://acme.test"])
    with offline_client(settings) as client:
        assert client.post("/v1/events", json=PAGE).json()["error"] == "missing_key"
        wrong = client.post("/v1/events", headers={"X-Closedloop-Key": "nope"}, json=PAGE)
        assert (wrong.status_code, wrong.json()["error"]) == (401, "unknown_key")
        foreign = client.post("/v1/events", headers={**KEY, "Origin": "https://evil.test"}, json=PAGE)
        assert (foreign.status_code, foreign.json()["error"]) == (403, "origin_not_allowed")
        ok = client.post("/v1/events", headers={**KEY, "Origin": "https://acme.test"}, json=PAGE)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://acme.test"
        preflight = client.options(
            "/v1/events",
            headers={
                "Origin": "https://acme.test",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-closedloop-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://acme.test"


def test_by_default_only_pages_on_this_machine_may_send_browser_events(tmp_path: Path) -> None:
    with offline_client(collector_settings(tmp_path)) as client:
        foreign = client.post("/v1/events", headers={**KEY, "Origin": "https://evil.test"}, json=PAGE)
        assert (foreign.status_code, foreign.json()["error"]) == (403, "origin_not_allowed")
        assert "access-control-allow-origin" not in foreign.headers
        preflight = client.options(
            "/v1/events", headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 400 and "access-control-allow-origin" not in preflight.headers
        for origin in ("http://localhost:8000", "http://127.0.0.1", "https://[::1]:8443"):
            local = client.post("/v1/events", headers={**KEY, "Origin": origin}, json=PAGE)
            assert local.status_code == 200, origin
            assert local.headers["access-control-allow-origin"] == origin
        # a look-alike host is not this machine
        lookalike = client.post("/v1/events", headers={**KEY, "Origin": "http://localhost.evil.test"}, json=PAGE)
        assert lookalike.status_code == 403
    with offline_client(collector_settings(tmp_path / "any", allowed_origins=["*"])) as client:
        assert client.post("/v1/events", headers={**KEY, "Origin": "https://evil.test"}, json=PAGE).status_code == 200


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "deflate", "identity", "GZip"])
def test_compressed_bodies_are_decoded(client, coding: str) -> None:
    body = orjson.dumps([PAGE, PAGE])
    if coding.lower() in ("gzip", "x-gzip"):
        body = gzip.compress(body)
    elif coding == "deflate":
        body = zlib.compress(body)
    response = client.post("/v1/events", headers={**KEY, "Content-Encoding": coding}, content=body)
    assert (response.status_code, response.json()["accepted"]) == (200, 2)


def test_a_body_the_collector_cannot_decode_is_refused(tmp_path: Path) -> None:
    with offline_client(collector_settings(tmp_path, max_body_bytes=2048)) as client:
        unknown = client.post("/v1/events", headers={**KEY, "Content-Encoding": "br"}, content=b"\x0b\x02\x80")
        assert (unknown.status_code, unknown.json()["error"]) == (415, "unsupported_content_encoding")
        assert "gzip" in unknown.json()["message"]
        broken = client.post("/v1/events", headers={**KEY, "Content-Encoding": "gzip"}, content=b"not gzip")
        assert (broken.status_code, broken.json()["error"]) == (400, "invalid_content_encoding")
        cut = client.post(
            "/v1/events", headers={**KEY, "Content-Encoding": "gzip"}, content=gzip.compress(orjson.dumps(PAGE))[:-12]
        )
        assert (cut.status_code, cut.json()["error"]) == (400, "invalid_content_encoding")
        bomb = gzip.compress(b"[" + b" " * 1_000_000 + b"]")  # 1 kB that unpacks to 1 MB
        assert len(bomb) < 2048
        big = client.post("/v1/events", headers={**KEY, "Content-Encoding": "gzip"}, content=bomb)
        assert (big.status_code, big.json()["error"]) == (413, "body_too_large")
        assert client.get("/metrics").status_code == 200  # nothing above took the process down


def test_crm_and_spend_need_a_server_key(client) -> None:
    crm = {
        "type": "crm_status",
        "crm": "generic",
        "crm_object_id": "d1",
        "email": "a@b.co",
        "stage": "customer",
        "deal_value": "100.50",
        "currency": "EUR",
        "occurred_at": "2024-05-02T00:00:00Z",
    }
    spend = {
        "type": "spend",
        "date": "2024-05-01",
        "channel": "Paid Search",
        "source": "google",
        "cost": "12.30",
        "currency": "EUR",
        "occurred_at": "2024-05-01T00:00:00Z",
    }
    refused = client.post("/v1/events", headers=KEY, json=[crm, spend])
    assert refused.status_code == 422
    assert all("need a server key" in r["errors"][0]["msg"] for r in refused.json()["rejected"])
    accepted = client.post("/v1/events", headers={"X-Closedloop-Key": SERVER_KEY}, json=[crm, spend])
    assert accepted.json()["accepted"] == 2
    assert [(t, k) for t, k, _ in envelopes(client)] == [
        ("closedloop.crm", "a@b.co"),
        ("closedloop.spend", "2024-05-01|Paid Search|google||"),
    ]


def test_limits(tmp_path: Path) -> None:
    with offline_client(collector_settings(tmp_path, max_batch_events=3, max_body_bytes=2048)) as client:
        many = client.post("/v1/events", headers=KEY, json=[PAGE] * 4)
        assert (many.status_code, many.json()["error"]) == (413, "batch_too_large")
        big = client.post("/v1/events", headers=KEY, json={**PAGE, "title": "x" * 5000})
        assert (big.status_code, big.json()["error"]) == (413, "body_too_large")


def test_spool_full_is_503_with_retry_after(tmp_path: Path) -> None:
    with offline_client(collector_settings(tmp_path, spool_max_bytes=4096)) as client:
        statuses = [client.post("/v1/events", headers=KEY, json=PAGE).status_code for _ in range(20)]
        assert statuses[0] == 200 and statuses[-1] == 503
        full = client.post("/v1/events", headers=KEY, json=PAGE)
        assert full.json()["error"] == "spool_full"
        assert full.headers["retry-after"] == "5"
        assert len(spooled(client)) == statuses.count(200)  # every 200 is on disk, no 503 is


def test_tracker_script_served_with_caching(client) -> None:
    response = client.get("/tracker.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert response.headers["cache-control"] == "public, max-age=3600"
    again = client.get("/tracker.js", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_health_ready_metrics_openapi(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["broker"] == "unreachable"
    client.post("/v1/events", headers=KEY, json=PAGE)
    client.post("/v1/events", headers=KEY, content=b"{")
    text = client.get("/metrics").text
    assert 'closedloop_collector_events_accepted_total{endpoint="/v1/events",type="page_view"} 1.0' in text
    assert 'closedloop_collector_events_rejected_total{endpoint="/v1/events",reason="invalid_json"} 1.0' in text
    assert "closedloop_collector_records_spooled_total 1.0" in text
    assert "closedloop_collector_publish_seconds_count 1.0" in text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/events", "/v1/webhooks/hubspot", "/v1/webhooks/pipedrive", "/v1/webhooks/crm"} <= set(paths)
    missing = client.get("/nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


# -- webhooks ----------------------------------------------------------------------------------------------------

HS_URL = "http://testserver/v1/webhooks/hubspot"


def hubspot_event(event_id: int, **fields) -> dict:
    return {
        "eventId": event_id,
        "subscriptionId": 9,
        "portalId": 62515,
        "appId": 1,
        "occurredAt": 1714557600000,
        "attemptNumber": 0,
        "changeSource": "CRM_UI",
        **fields,
    }


def test_hubspot_lifecycle_and_deal_changes(client) -> None:
    events = [
        hubspot_event(
            1,
            subscriptionType="contact.propertyChange",
            objectId=501,
            propertyName="lifecyclestage",
            propertyValue="marketingqualifiedlead",
        ),
        hubspot_event(
            2,
            subscriptionType="deal.propertyChange",
            objectId=901,
            propertyName="dealstage",
            propertyValue="closedwon",
            contactId=501,
            amount="1200.5",
            currency="eur",
        ),
        hubspot_event(
            3, subscriptionType="deal.propertyChange", objectId=902, propertyName="dealstage", propertyValue="closedwon"
        ),
        hubspot_event(
            4, subscriptionType="contact.propertyChange", objectId=501, propertyName="firstname", propertyValue="Ann"
        ),
    ]
    body = dumps(events)
    response = client.post("/v1/webhooks/hubspot", content=body, headers=hubspot_headers(body, HS_URL))
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (2, 0, [])
    assert [i["index"] for i in result["ignored"]] == [2, 3]
    assert "without contactId" in result["ignored"][0]["reason"]
    records = envelopes(client)
    assert [(t, k) for t, k, _ in records] == [("closedloop.crm", "hubspot:501"), ("closedloop.crm", "hubspot:501")]
    mql, won = records[0][2], records[1][2]
    assert mql["event_id"] == "hubspot:62515:1" and mql["site_id"] == "hubspot:62515"
    assert mql["event"] | {} == {
        **mql["event"],
        "stage": "mql",
        "crm_object_id": "501",
        "crm_contact_id": "501",
        "occurred_at": "2024-05-01T10:00:00Z",
    }
    assert (
        won["event"]["stage"],
        won["event"]["crm_object_id"],
        won["event"]["deal_value"],
        won["event"]["currency"],
    ) == ("customer", "901", "1200.50", "EUR")
    # HubSpot retries: the same eventIds produce nothing new.
    again = client.post("/v1/webhooks/hubspot", content=body, headers=hubspot_headers(body, HS_URL))
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 2)
    assert len(envelopes(client)) == 2


@pytest.mark.parametrize("case", ["unsigned", "tampered", "stale", "wrong_secret", "wrong_url"])
def test_hubspot_rejects_bad_signatures(client, case: str) -> None:
    body = dumps(
        [
            hubspot_event(
                1,
                subscriptionType="contact.propertyChange",
                objectId=5,
                propertyName="lifecyclestage",
                propertyValue="lead",
            )
        ]
    )
    headers = hubspot_headers(body, HS_URL)
    expected = "bad_signature"
    if case == "unsigned":
        headers.pop("X-HubSpot-Signature-v3")
        expected = "missing_signature"
    elif case == "tampered":
        body = body.replace(b'"lead"', b'"customer"')
    elif case == "stale":
        headers = hubspot_headers(body, HS_URL, timestamp_ms=int(time.time() * 1000) - 6 * 60 * 1000)
        expected = "stale_timestamp"
    elif case == "wrong_secret":
        headers = hubspot_headers(body, HS_URL, secret="other")
    else:
        headers = hubspot_headers(body, "https://elsewhere.test/v1/webhooks/hubspot")
    response = client.post("/v1/webhooks/hubspot", content=body, headers=headers)
    assert (response.status_code, response.json()["error"]) == (401, expected)
    assert envelopes(client) == []


def test_hubspot_signature_behind_a_proxy(tmp_path: Path) -> None:
    settings = collector_settings(tmp_path, trust_forwarded_headers=True)
    body = dumps(
        [
            hubspot_event(
                1,
                subscriptionType="contact.propertyChange",
                objectId=5,
                propertyName="lifecyclestage",
                propertyValue="lead",
            )
        ]
    )
    url = "https://collect.acme.test/v1/webhooks/hubspot?portal=1"
    headers = {**hubspot_headers(body, url), "X-Forwarded-Proto": "https", "X-Forwarded-Host": "collect.acme.test"}
    with offline_client(settings) as client:
        assert client.post("/v1/webhooks/hubspot?portal=1", content=body, headers=headers).status_code == 200


def test_endpoints_without_secrets_answer_503_naming_the_setting(tmp_path: Path) -> None:
    settings = collector_settings(tmp_path, hubspot_client_secret=None, pipedrive_user=None, crm_webhook_secret=None)
    with offline_client(settings) as client:
        for path, setting in [
            ("/v1/webhooks/hubspot", "CLOSEDLOOP_HUBSPOT_CLIENT_SECRET"),
            ("/v1/webhooks/pipedrive", "CLOSEDLOOP_PIPEDRIVE_USER"),
            ("/v1/webhooks/crm", "CLOSEDLOOP_CRM_WEBHOOK_SECRET"),
        ]:
            response = client.post(path, content=b"[]")
            assert response.status_code == 503
            assert response.json()["error"] == "not_configured"
            assert setting in response.json()["message"]


def pipedrive_body(
    entity: str, action: str, data: dict, previous: dict | None = None, meta_id: str = "m-1", attempt: int = 1
) -> dict:
    return {
        "meta": {
            "action": action,
            "entity": entity,
            "entity_id": data.get("id"),
            "id": meta_id,
            "version": "2.0",
            "company_id": 77,
            "attempt": attempt,
            "timestamp": "2024-05-03T08:00:00Z",
        },
        "data": data,
        "previous": previous,
    }


def test_pipedrive_deal_won_person_created_label_added(client) -> None:
    won = pipedrive_body(
        "deal",
        "change",
        {"id": 31, "status": "won", "value": 990, "currency": "usd", "person_id": 12, "stage_id": 2},
        {"status": "open"},
        meta_id="m-won",
    )
    person = pipedrive_body(
        "person",
        "create",
        {
            "id": 12,
            "name": "Ann",
            "emails": [
                {"label": "home", "value": "other@x.test", "primary": False},
                {"label": "work", "value": "Ann@Acme.test", "primary": True},
            ],
        },
        meta_id="m-person",
    )
    label = pipedrive_body(
        "person", "change", {"id": 12, "label_ids": [7], "emails": []}, {"label_ids": []}, meta_id="m-label"
    )
    untouched = pipedrive_body(
        "deal", "change", {"id": 31, "status": "won", "title": "x"}, {"title": "y"}, meta_id="m-title"
    )
    results = [
        client.post("/v1/webhooks/pipedrive", json=b, headers=basic_auth()).json()
        for b in (won, person, label, untouched)
    ]
    assert [r["accepted"] for r in results] == [1, 1, 1, 0]
    assert results[3]["ignored"][0]["reason"] == "deal change without a status or mapped stage change"
    records = envelopes(client)
    assert [(k, e["event"]["stage"]) for _, k, e in records] == [
        ("pipedrive:12", "customer"),
        ("ann@acme.test", "lead"),
        ("pipedrive:12", "mql"),
    ]
    deal = records[0][2]
    assert deal["event_id"] == "pipedrive:77:m-won:0"
    assert (deal["event"]["deal_value"], deal["event"]["currency"], deal["event"]["crm_object_id"]) == (
        "990.00",
        "USD",
        "31",
    )
    assert records[1][2]["event"]["crm_contact_id"] == "12"
    # a retry (same meta.id, next attempt) is a duplicate
    retry = client.post(
        "/v1/webhooks/pipedrive", json={**won, "meta": {**won["meta"], "attempt": 2}}, headers=basic_auth()
    )
    assert (retry.json()["accepted"], retry.json()["duplicates"]) == (0, 1)


def test_pipedrive_auth(client) -> None:
    body = pipedrive_body("person", "create", {"id": 1, "emails": [{"value": "a@b.co", "primary": True}]})
    assert client.post("/v1/webhooks/pipedrive", json=body).json()["error"] == "missing_credentials"
    wrong = client.post("/v1/webhooks/pipedrive", json=body, headers=basic_auth(password="nope"))
    assert (wrong.status_code, wrong.json()["error"]) == (401, "bad_credentials")
    assert wrong.headers["www-authenticate"] == 'Basic realm="closedloop"'
    v1 = client.post(
        "/v1/webhooks/pipedrive", json={**body, "meta": {**body["meta"], "version": "1.0"}}, headers=basic_auth()
    )
    assert (v1.status_code, v1.json()["error"]) == (422, "unsupported_version")


def test_generic_crm_webhook(client) -> None:
    body = dumps(
        {
            "source": "odoo",
            "events": [
                {"id": "chg-1", "stage": "sql", "occurred_at": "2024-05-04T09:00:00", "email": "Bob@Acme.test"},
                {
                    "id": "chg-2",
                    "stage": "customer",
                    "occurred_at": "2024-05-05T09:00:00Z",
                    "contact_id": "c-9",
                    "object_id": "deal-4",
                    "value": "250.00",
                    "currency": "gbp",
                },
                {"id": "chg-3", "stage": "won", "occurred_at": "2024-05-05T09:00:00Z", "email": "x@y.z"},
                {"id": "chg-4", "stage": "lead", "occurred_at": "2024-05-05T09:00:00Z"},
            ],
        }
    )
    response = client.post(
        "/v1/webhooks/crm", content=body, headers={"X-Closedloop-Signature": sign_generic(CRM_SECRET, body)}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == 2
    assert result["rejected"][0]["index"] == 2 and result["rejected"][0]["errors"][0]["loc"] == "stage"
    assert result["rejected"][1] == {
        "index": 3,
        "errors": [{"loc": "body", "msg": "a CRM status change needs the lead's email or crm_contact_id"}],
    }
    records = envelopes(client)
    assert [(k, e["event_id"], e["site_id"], e["event"]["stage"]) for _, k, e in records] == [
        ("bob@acme.test", "generic:odoo:chg-1", "crm:odoo", "sql"),
        ("generic:c-9", "generic:odoo:chg-2", "crm:odoo", "customer"),
    ]
    assert records[1][2]["event"]["deal_value"] == "250.00" and records[1][2]["event"]["currency"] == "GBP"
    bad = client.post(
        "/v1/webhooks/crm", content=body + b" ", headers={"X-Closedloop-Signature": sign_generic(CRM_SECRET, body)}
    )
    assert (bad.status_code, bad.json()["error"]) == (401, "bad_signature")
    again = client.post(
        "/v1/webhooks/crm", content=body, headers={"X-Closedloop-Signature": sign_generic(CRM_SECRET, body)}
    )
    assert again.json()["duplicates"] == 2


def test_tracker_min_is_built_from_the_source_and_small() -> None:
    import gzip
    import hashlib

    static = Path(__file__).resolve().parent.parent / "collector" / "static"
    source = (static / "tracker.js").read_bytes()
    minified = (static / "tracker.min.js").read_bytes()
    first_line = minified.split(b"\n", 1)[0].decode()
    assert first_line == f"/*! closedloop tracker, source sha256:{hashlib.sha256(source).hexdigest()} */", (
        "tracker.min.js is stale: run collector/static/build.sh"
    )
    assert len(gzip.compress(minified, 9)) < 4096


# -- the fast paths keep the contract ----------------------------------------------------------------------------


def test_record_values_are_the_serde_bytes_and_generated_ids_are_uuid4() -> None:
    import uuid
    from datetime import datetime, timezone

    from collector import events as event_parsing
    from schemas import serde
    from schemas.events import Envelope
    from schemas.topics import Topics

    items = [
        {**PAGE, "title": "  Prix  ", "referrer": "https://www.google.com/", "sent_at": "2024-05-01T12:00:00+02:00"},
        {"type": "identify", "visitor_id": "vis-1", "email": " Ana@Example.COM ", "fields": {"name": "Ana Ñ"}},
        {
            "type": "crm_status",
            "crm": "generic",
            "crm_object_id": "d-1",
            "email": "b@x.io",
            "stage": "customer",
            "deal_value": "1200.50",
            "currency": "EUR",
            "occurred_at": "2024-05-01T10:00:00",
        },
        {"type": "spend", "date": "2024-05-01", "channel": "paid_search", "cost": "12.3", "currency": "USD"},
    ]
    batch = event_parsing.parse_events(
        items,
        site_id="s",
        allowed_types=event_parsing.SERVER_TYPES,
        received_at=datetime(2024, 5, 1, 12, tzinfo=timezone.utc),
        user_agent="ua",
        topics=Topics("p"),
    )
    assert batch.rejected == []
    assert [event.type for event in batch.accepted] == ["page_view", "identify", "crm_status", "spend"]
    for event in batch.accepted:
        envelope = serde.loads(event.record.value, Envelope)
        assert event.record.value == serde.dumps(envelope)
        assert envelope.event_id == event.event_id
        assert uuid.UUID(hex=event.event_id).version == 4
    assert len({event.event_id for event in batch.accepted}) == 4


def test_generated_event_ids_are_distinct_uuid4_across_pool_refills() -> None:
    import uuid

    from collector.events import _EventIds

    ids = _EventIds(3000)  # pools of 1,024 ids: three refills
    generated = [uuid.UUID(hex=ids.new()) for _ in range(3000)]
    assert len(set(generated)) == 3000
    assert {(u.version, u.variant) for u in generated} == {(4, uuid.RFC_4122)}
    # every other hex digit stays random
    assert all(len({u.hex[i] for u in generated}) == 16 for i in range(32) if i not in (12, 16))


def test_batch_with_one_invalid_event_names_it_like_a_single_one(client) -> None:
    bad = {**PAGE, "url": "not-a-url"}
    single = client.post("/v1/events", headers=KEY, json=bad).json()["rejected"]
    batched = client.post("/v1/events", headers=KEY, json=[PAGE, bad, PAGE, {"type": "nope"}]).json()
    assert batched["accepted"] == 2
    assert batched["rejected"] == [
        {"index": 1, "errors": single[0]["errors"]},
        {
            "index": 3,
            "errors": [
                {
                    "loc": "type",
                    "msg": "unknown event type 'nope'; expected one of crm_status, identify, page_view, spend",
                }
            ],
        },
    ]


def test_first_query_values_equals_parse_qs() -> None:
    from urllib.parse import parse_qs

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from schemas.events import CLICK_ID_FIELDS, UTM_FIELDS, first_query_values

    names = st.sampled_from([*UTM_FIELDS, *CLICK_ID_FIELDS, "utm%5Fsource", "utm+source", "q", "", "gclid%"])
    values = st.text(alphabet="ab +%2F0=é&;", max_size=8)
    pairs = st.lists(st.tuples(names, st.sampled_from(["=", ""]), values), max_size=6)

    @settings(max_examples=400, deadline=None)
    @given(pairs, st.sampled_from(["&", "&&"]))
    def check(items, separator) -> None:
        query = separator.join(name + eq + value for name, eq, value in items)
        expected = {name: found[0] for name, found in parse_qs(query).items() if name in UTM_FIELDS + CLICK_ID_FIELDS}
        assert first_query_values(query) == expected

    check()


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01", "9999-12-31"])
@pytest.mark.parametrize("path", ["fast", "models"])
def test_times_outside_the_accepted_window_are_422_naming_the_field_and_the_window(
    client, occurred_at: str, path: str
) -> None:
    # Years 1 and 9999 were stored (ClickHouse clamps them) and made a touch today. A plain page view takes the
    # fast path; one whose title starts with U+001C (stripped by Python, not by pydantic) the models' path.
    item = {**PAGE, "occurred_at": occurred_at}
    if path == "models":
        item["title"] = "\x1cPricing"
    response = client.post("/v1/events", headers=KEY, json=item)
    assert response.status_code == 422
    [rejection] = response.json()["rejected"]
    [error] = rejection["errors"]
    assert error["loc"] == "occurred_at"
    assert "outside the accepted times" in error["msg"]
    assert "1826 days before to 24 hours after the collector's clock" in error["msg"]
    assert envelopes(client) == []


def test_the_window_is_a_setting_and_its_edges_are_accepted(tmp_path: Path) -> None:
    from datetime import datetime, timedelta, timezone

    settings = collector_settings(tmp_path, accept_past_days=30, accept_future_hours=1)
    now = datetime.now(timezone.utc)
    within = [(now - timedelta(days=29)).isoformat(), (now + timedelta(minutes=50)).isoformat()]
    outside = [(now - timedelta(days=31)).isoformat(), (now + timedelta(hours=2)).isoformat()]
    with offline_client(settings) as client:
        response = client.post("/v1/events", headers=KEY, json=[{**PAGE, "occurred_at": t} for t in within + outside])
        assert response.status_code == 200
        body = response.json()
        assert body["accepted"] == 2
        assert [(r["index"], r["errors"][0]["loc"]) for r in body["rejected"]] == [
            (2, "occurred_at"),
            (3, "occurred_at"),
        ]
        assert "30 days before to 1 hours after" in body["rejected"][0]["errors"][0]["msg"]


def _crm_request(crm: str, when: str, index: int) -> tuple[str, bytes, dict[str, str]]:
    """A signed request of one CRM whose change happened at ``when`` (ISO 8601)."""
    from datetime import datetime

    if crm == "hubspot":
        millis = int(datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp() * 1000)
        body = dumps(
            [
                hubspot_event(
                    index,
                    subscriptionType="contact.propertyChange",
                    objectId=5,
                    propertyName="lifecyclestage",
                    propertyValue="lead",
                    occurredAt=millis,
                )
            ]
        )
        return "/v1/webhooks/hubspot", body, hubspot_headers(body, HS_URL)
    if crm == "pipedrive":
        document = pipedrive_body(
            "person", "create", {"id": 12, "emails": [{"value": "a@b.co", "primary": True}]}, meta_id=f"m-{index}"
        )
        document["meta"]["timestamp"] = when
        return "/v1/webhooks/pipedrive", dumps(document), {**basic_auth(), "Content-Type": "application/json"}
    body = dumps({"events": [{"id": f"chg-{index}", "stage": "sql", "occurred_at": when, "contact_id": "c-1"}]})
    return "/v1/webhooks/crm", body, {"X-Closedloop-Signature": sign_generic(CRM_SECRET, body)}


@pytest.mark.parametrize(
    "crm, field", [("hubspot", "occurredAt"), ("pipedrive", "meta.timestamp"), ("generic", "occurred_at")]
)
def test_crm_change_times_outside_the_window_are_422_naming_the_field_and_the_window(
    tmp_path: Path, crm: str, field: str
) -> None:
    # CRM webhooks used to publish any time (a 1971 or a next-year change became a conversion at that time).
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    settings = collector_settings(tmp_path, accept_past_days=30, accept_future_hours=1)
    with offline_client(settings) as client:
        for index, when in enumerate([now - timedelta(days=31), now + timedelta(hours=2)]):
            path, body, headers = _crm_request(crm, when.isoformat().replace("+00:00", "Z"), index)
            response = client.post(path, content=body, headers=headers)
            assert response.status_code == 422, response.text
            [rejection] = response.json()["rejected"]
            [error] = rejection["errors"]
            assert error["loc"] == field
            assert "outside the accepted times" in error["msg"]
            assert "30 days before to 1 hours after the collector's clock" in error["msg"]
        assert envelopes(client) == []
        path, body, headers = _crm_request(crm, (now - timedelta(days=29)).isoformat(), 9)
        response = client.post(path, content=body, headers=headers)
        assert (response.status_code, response.json()["accepted"]) == (200, 1), response.text


def test_no_crm_id_the_collector_publishes_is_an_email_and_the_sink_stores_none(tmp_path: Path) -> None:
    # The generic webhook's object_id and the CSV import's record id defaulted to the email, and a CRM may name a
    # contact by its address: 123 rows of a demo's `events` table held an email in crm_object_id and the stored
    # JSON. Every such id is now the lead id the stream jobs compute (schemas.identity.lead_id_for, shared key).
    from collector import imports
    from schemas.identity import lead_id_for
    from sinks.rows import Provenance, RecordKind, rows_for

    key = b"shared-test-key"
    settings = collector_settings(tmp_path, lead_id_key=key.decode())
    emails = ["Bob@Acme.test", "carol@acme.test", "dan@acme.test", "erin@acme.test", "fay@acme.test"]
    with offline_client(settings) as client:
        body = dumps(
            {
                "events": [
                    {"id": "c1", "stage": "sql", "occurred_at": "2024-05-04T09:00:00Z", "email": emails[0]},
                    {"id": "c2", "stage": "sql", "occurred_at": "2024-05-04T09:00:00Z", "contact_id": emails[1]},
                    {
                        "id": "c3",
                        "stage": "sql",
                        "occurred_at": "2024-05-04T09:00:00Z",
                        "email": "x@y.co",
                        "object_id": emails[2],
                    },
                ]
            }
        )
        assert (
            client.post(
                "/v1/webhooks/crm", content=body, headers={"X-Closedloop-Signature": sign_generic(CRM_SECRET, body)}
            ).json()["accepted"]
            == 3
        )
        server = {"X-Closedloop-Key": SERVER_KEY}
        assert (
            client.post(
                "/v1/events",
                headers=server,
                json={
                    "type": "crm_status",
                    "crm": "salesforce",
                    "crm_object_id": emails[3],
                    "email": emails[3],
                    "stage": "mql",
                },
            ).json()["accepted"]
            == 1
        )
        records = spooled(client)
    sheet = tmp_path / "crm.csv"
    sheet.write_text(f"email,stage,date\n{emails[4]},lead,2024-05-01\n")
    records += list(
        imports.parse_file(sheet, "crm", settings.topics, imports.ImportSummary(), lead_key=settings.lead_key_bytes)
    )
    assert len(records) == 5
    ids = [orjson.loads(r.value)["event"]["crm_object_id"] for r in records]
    assert ids[0] == lead_id_for(emails[0], key) and ids[3] == lead_id_for(emails[3], key)
    assert orjson.loads(records[1].value)["event"]["crm_contact_id"] == lead_id_for(emails[1], key)
    for position, record in enumerate(records):
        event_id = orjson.loads(record.value)["event_id"]
        rows = rows_for(RecordKind.SOURCE, record.value, Provenance(record.topic, 0, position))
        stored = repr(rows).lower()
        assert not any(email.lower() in stored for email in emails), (event_id, stored)


def test_a_collector_whose_producer_cannot_start_closes_its_seen_deliveries_store(tmp_path: Path, monkeypatch) -> None:
    from starlette.testclient import TestClient

    from collector.app import create_app
    from collector.dedup import SeenDeliveries

    closed: list[SeenDeliveries] = []
    close = SeenDeliveries.close
    monkeypatch.setattr(SeenDeliveries, "close", lambda store: (closed.append(store), close(store)))

    class Unstartable:
        async def start(self) -> None:
            raise RuntimeError("no broker answered")

        async def close(self) -> None:
            raise AssertionError("a producer that never started is not closed")

    app = create_app(collector_settings(tmp_path), publisher=Unstartable())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no broker answered"), TestClient(app):
        pass
    assert len(closed) == 1
