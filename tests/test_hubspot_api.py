"""HubSpot's stock webhook events, completed through HubSpot's CRM API (``collector.webhooks.hubspot_api``).

HubSpot cannot be reached from these machines: a local server answers in the shapes of HubSpot's public API
reference (objects v3 with ``properties``, associations v4 with ``results[].toObjectId``) and refuses requests
that HubSpot would refuse (no bearer token, unknown paths)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from collector_support import HUBSPOT_SECRET, collector_settings, hubspot_headers, offline_client, spooled

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
PORTAL = 62515


class FakeHubSpot:
    """Records, per path, what HubSpot's API would answer; ``script`` queues one-off answers (status, headers)."""

    def __init__(self) -> None:
        self.contacts = {"99": "Ann@Acme.test", "101": "ben@acme.test", "7": "cy@acme.test"}
        self.deals = {
            "555": ({"amount": "1500.5", "deal_currency_code": "eur"}, ["101", "99"]),
            "556": ({"amount": "80", "deal_currency_code": None}, ["7"]),
            "557": ({"amount": None, "deal_currency_code": None}, []),
        }
        self.requests: list[str] = []
        self.script: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.lock = threading.Lock()

    def answer(self, path: str, query: dict[str, list[str]], authorization: str | None) -> tuple[int, dict, dict]:
        with self.lock:
            self.requests.append(path)
            if self.script.get(path):
                status, headers = self.script[path].pop(0)
                return status, headers, {"status": "error", "message": "scripted", "category": "RATE_LIMITS"}
        if authorization != f"Bearer {TOKEN}":
            return 401, {}, {"status": "error", "message": "Authentication credentials not found.", "category": ""}
        parts = path.strip("/").split("/")
        if parts[:4] == ["crm", "v3", "objects", "contacts"] and len(parts) == 5:
            assert query.get("properties") == ["email"], query
            if parts[4] not in self.contacts:
                return 404, {}, {"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"}
            email = self.contacts[parts[4]]
            return 200, {}, {"id": parts[4], "properties": {"email": email, "hs_object_id": parts[4]}}
        if parts[:4] == ["crm", "v3", "objects", "deals"] and len(parts) == 5:
            assert query.get("properties") == ["amount,deal_currency_code,closed_lost_reason"], query
            if parts[4] not in self.deals:
                return 404, {}, {"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"}
            return 200, {}, {"id": parts[4], "properties": self.deals[parts[4]][0], "archived": False}
        if parts[:4] == ["crm", "v4", "objects", "deals"] and parts[5:] == ["associations", "contacts"]:
            contacts = self.deals.get(parts[4], ({}, []))[1]
            results = [
                {
                    "toObjectId": int(c),
                    "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 3, "label": None}],
                }
                for c in contacts
            ]
            return 200, {}, {"results": results}
        return 404, {}, {"status": "error", "message": f"no route {path}", "category": "NOT_FOUND"}


@pytest.fixture
def hubspot_api():
    fake = FakeHubSpot()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            status, headers, body = fake.answer(url.path, parse_qs(url.query), self.headers.get("Authorization"))
            payload = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def hubspot_client(tmp_path: Path, url: str, **settings):
    values = dict(hubspot_private_app_token=TOKEN, hubspot_api_url=url, hubspot_api_budget_s=2.5, **settings)
    return offline_client(collector_settings(tmp_path, **values))


def deliver(client, events: list[dict]):
    body = orjson.dumps(events)
    url = "http://testserver/v1/webhooks/hubspot"
    return client.post("/v1/webhooks/hubspot", content=body, headers=hubspot_headers(body, url, HUBSPOT_SECRET))


def stock(event_id: int, kind: str, object_id: int, prop: str, value: str) -> dict:
    """An event exactly as HubSpot sends it: no contact, no email, no amount."""
    return {
        "eventId": event_id,
        "subscriptionId": 9,
        "portalId": PORTAL,
        "appId": 1,
        "occurredAt": 1714557600000,
        "subscriptionType": f"{kind}.propertyChange",
        "attemptNumber": 0,
        "objectId": object_id,
        "changeSource": "CRM_UI",
        "propertyName": prop,
        "propertyValue": value,
    }


def changes(client) -> list[tuple[str, dict]]:
    return [(r.key.decode(), orjson.loads(r.value)["event"]) for r in spooled(client)]


def test_stock_deal_and_contact_events_are_completed_from_the_api(tmp_path, hubspot_api) -> None:
    fake, url = hubspot_api
    with hubspot_client(tmp_path, url) as client:
        response = deliver(
            client,
            [stock(1, "deal", 555, "dealstage", "closedwon"), stock(2, "contact", 7, "lifecyclestage", "lead")],
        )
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == 2
        got = [
            (key, e["stage"], e["crm_object_id"], e["crm_contact_id"], e["email"], e["deal_value"], e["currency"])
            for key, e in changes(client)
        ]
    # The deal's contacts are 101 and 99: the lowest id (99) is credited, its email asked for.
    assert got == [
        ("ann@acme.test", "customer", "555", "99", "ann@acme.test", "1500.50", "EUR"),
        ("cy@acme.test", "lead", "7", "7", "cy@acme.test", None, None),
    ]
    assert sorted(fake.requests) == [
        "/crm/v3/objects/contacts/7",
        "/crm/v3/objects/contacts/99",
        "/crm/v3/objects/deals/555",
        "/crm/v4/objects/deals/555/associations/contacts",
    ]


def test_a_rate_limited_api_is_waited_for_and_answers_are_cached(tmp_path, hubspot_api) -> None:
    fake, url = hubspot_api
    fake.script["/crm/v3/objects/deals/556"] = [(429, {"Retry-After": "1"})]
    with hubspot_client(tmp_path, url, hubspot_currency="USD") as client:
        first = deliver(client, [stock(3, "deal", 556, "dealstage", "closedwon")])
        again = deliver(client, [stock(4, "deal", 556, "dealstage", "closedlost")])
        assert (first.json()["accepted"], again.json()["accepted"]) == (1, 1)
        got = [(e["stage"], e["crm_contact_id"], e["deal_value"], e["currency"]) for _, e in changes(client)]
    # a lost deal keeps its amount as the event's deal value (pipeline lost; only customer carries revenue)
    assert got == [("customer", "7", "80.00", "USD"), ("lost", "7", "80.00", "USD")]
    # one 429 and its retry, then the second delivery is answered from the cache
    assert fake.requests.count("/crm/v3/objects/deals/556") == 2
    assert len(fake.requests) == 4


def test_an_api_that_stays_down_refuses_the_delivery_so_hubspot_resends_it(tmp_path, hubspot_api) -> None:
    fake, url = hubspot_api
    fake.script["/crm/v3/objects/deals/555"] = [(503, {"Retry-After": "5"})]
    with hubspot_client(tmp_path, url) as client:
        refused = deliver(client, [stock(5, "deal", 555, "dealstage", "closedwon")])
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert refused.json()["error"] == "hubspot_api_unavailable"
        assert changes(client) == []
        resent = deliver(client, [stock(5, "deal", 555, "dealstage", "closedwon")])  # HubSpot's retry
        assert (resent.status_code, resent.json()["accepted"], resent.json()["duplicates"]) == (200, 1, 0)
        assert [e["crm_contact_id"] for _, e in changes(client)] == ["99"]


def test_a_refused_token_names_the_setting_and_a_deleted_deal_is_ignored(tmp_path, hubspot_api) -> None:
    fake, url = hubspot_api
    with offline_client(
        collector_settings(tmp_path / "a", hubspot_private_app_token="wrong", hubspot_api_url=url)
    ) as client:
        refused = deliver(client, [stock(6, "contact", 7, "lifecyclestage", "lead")])
        assert refused.status_code == 503
        assert "CLOSEDLOOP_HUBSPOT_PRIVATE_APP_TOKEN" in refused.json()["message"]
    with hubspot_client(tmp_path / "b", url) as client:
        gone = deliver(client, [stock(7, "deal", 999, "dealstage", "closedwon")])
        no_contacts = deliver(client, [stock(8, "deal", 557, "dealstage", "closedwon")])
    for response in (gone, no_contacts):
        assert response.status_code == 200
        assert response.json()["accepted"] == 0
        assert "cannot tell whose deal it is" in response.json()["ignored"][0]["reason"]
