"""HubSpot and Pipedrive destinations against local servers that check the request shapes of their public API
documentation (HubSpot CRM API v3 contacts search and tasks; Pipedrive API v1 persons search and activities).
These machines cannot reach either service; docs/DELIVERY.md says so."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from test_delivery_units import message

from delivery import crm
from delivery.process import deliver_to
from delivery.sender import Outcome, send
from delivery.settings import DeliverySettings

TOKEN = "pat-na1-secret-token"


class FakeCrm:
    """Answers like HubSpot or Pipedrive for one known person, refuses what their docs would refuse, records all."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.problems: list[str] = []
        self.fail_first: list[int] = []  # statuses to answer before answering properly (a 429, a 500)
        self.people = {"ann@example.com": 5101}

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        self.requests.append((method, target, headers, body))
        if self.fail_first:
            return self.fail_first.pop(0), {"message": "try later"}
        url = urlsplit(target)
        if url.path.startswith("/crm/v3/"):
            return self._hubspot(method, url.path, headers, body)
        return self._pipedrive(method, url.path, parse_qs(url.query), headers, body)

    def _check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def _hubspot(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {"status": "error", "category": "INVALID_AUTHENTICATION"}
        document = json.loads(body)
        if (method, path) == ("POST", "/crm/v3/objects/contacts/search"):
            filters = document["filterGroups"][0]["filters"]
            self._check(filters[0]["propertyName"] == "email" and filters[0]["operator"] == "EQ", "search filter")
            found = self.people.get(filters[0]["value"])
            results = [{"id": str(found), "properties": {"email": filters[0]["value"]}}] if found else []
            return 200, {"total": len(results), "results": results}
        if (method, path) == ("POST", "/crm/v3/objects/tasks"):
            properties = document["properties"]
            self._check("hs_timestamp" in properties, "hs_timestamp is required")
            self._check(properties.get("hs_task_status") in ("NOT_STARTED", "COMPLETED"), "hs_task_status")
            self._check(properties.get("hs_task_priority") in ("LOW", "MEDIUM", "HIGH"), "hs_task_priority")
            self._check(properties.get("hs_task_type") in ("EMAIL", "CALL", "TODO"), "hs_task_type")
            types = document["associations"][0]["types"][0]
            self._check(types == {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}, "association")
            return 201, {"id": "9001", "properties": properties}
        return 404, {"message": f"no route {method} {path}"}

    def _pipedrive(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> tuple[int, dict]:
        if headers.get("x-api-token") != TOKEN or "api_token" in query:
            return 401, {"success": False, "error": "unauthorized"}
        if (method, path) == ("GET", "/api/v1/persons/search"):
            self._check(query.get("fields") == ["email"] and query.get("exact_match") == ["true"], "search query")
            found = self.people.get(query["term"][0])
            items = [{"result_score": 1.0, "item": {"id": found, "type": "person"}}] if found else []
            return 200, {"success": True, "data": {"items": items}}
        if (method, path) == ("POST", "/api/v1/activities"):
            document = json.loads(body)
            self._check(isinstance(document.get("person_id"), int), "person_id must be an integer")
            self._check(len(document.get("due_date", "")) == 10, "due_date is YYYY-MM-DD")
            self._check(bool(document.get("subject")) and bool(document.get("type")), "subject and type")
            return 201, {"success": True, "data": {"id": 77, **document}}
        return 404, {"success": False, "error": f"no route {method} {path}"}


@pytest.fixture
def fake_crm() -> Iterator[tuple[str, FakeCrm]]:
    fake = FakeCrm()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, document = fake.answer(self.command, self.path, headers, body)
            data = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _sender(client: httpx.Client):
    return lambda request: send(client, request, max_tries=3, base_seconds=0.0, sleep=lambda _: None)


def test_hubspot_finds_the_contact_and_creates_a_task_on_it(fake_crm) -> None:
    url, fake = fake_crm
    fake.fail_first = [429]  # HubSpot's rate limit on the search: retried
    with httpx.Client(timeout=5) as client:
        outcome = crm.hubspot(message(), _sender(client), url, TOKEN, owner_id="64492917")
    assert (outcome.delivered, outcome.tries, outcome.status, fake.problems) == (True, 3, 201, [])
    assert [(m, t) for m, t, _, _ in fake.requests] == [
        ("POST", "/crm/v3/objects/contacts/search"),
        ("POST", "/crm/v3/objects/contacts/search"),
        ("POST", "/crm/v3/objects/tasks"),
    ]
    task = json.loads(fake.requests[-1][3])
    assert task == {
        "properties": {
            "hs_timestamp": "2026-03-01T12:00:00.000Z",
            "hs_task_subject": "Ann is sales-ready",
            "hs_task_body": "Lead: lead-1\nAt: 2026-03-01T12:00:00+00:00\nScore: 72\n"
            "First touch: campaign=spring, channel=paid_search",
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": "HIGH",
            "hs_task_type": "TODO",
            "hubspot_owner_id": "64492917",
        },
        "associations": [
            {"to": {"id": "5101"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]}
        ],
    }


def test_pipedrive_finds_the_person_and_adds_an_activity(fake_crm) -> None:
    url, fake = fake_crm
    with httpx.Client(timeout=5) as client:
        outcome = crm.pipedrive(message(), _sender(client), url, TOKEN, "call")
    assert (outcome.delivered, outcome.tries, outcome.status, fake.problems) == (True, 2, 201, [])
    method, target, headers, _ = fake.requests[0]
    assert (method, urlsplit(target).path) == ("GET", "/api/v1/persons/search")
    assert parse_qs(urlsplit(target).query) == {
        "term": ["ann@example.com"],
        "fields": ["email"],
        "exact_match": ["true"],
        "limit": ["1"],
    }
    assert TOKEN not in target  # the token travels in a header, never in a URL a proxy or log could keep
    assert json.loads(fake.requests[1][3]) == {
        "subject": "Ann is sales-ready",
        "type": "call",
        "person_id": 5101,
        "due_date": "2026-03-01",
        "note": "Lead: lead-1<br>At: 2026-03-01T12:00:00+00:00<br>Score: 72<br>"
        "First touch: campaign=spring, channel=paid_search",
        "done": 0,
    }


@pytest.mark.parametrize("destination", ["hubspot", "pipedrive"])
def test_an_unknown_person_or_no_email_is_dead_at_once_with_the_reason(fake_crm, destination) -> None:
    url, fake = fake_crm
    send_to = getattr(crm, destination)
    last = "call" if destination == "pipedrive" else None
    with httpx.Client(timeout=5) as client:
        unknown = send_to(message(email="bob@example.com"), _sender(client), url, TOKEN, last)
        no_email = send_to(message(email=None), _sender(client), url, TOKEN, last)
    name = {"hubspot": "HubSpot has no contact", "pipedrive": "Pipedrive has no person"}[destination]
    assert (unknown.delivered, unknown.tries, unknown.reason.startswith(name)) == (False, 1, True)
    assert (no_email.delivered, no_email.tries) == (False, 0)
    assert no_email.reason.startswith("no email in the message")
    assert len(fake.requests) == 1  # no create request for either


def test_a_wrong_token_is_dead_without_retries(fake_crm) -> None:
    url, fake = fake_crm
    with httpx.Client(timeout=5) as client:
        outcome = crm.hubspot(message(), _sender(client), url, "wrong", None)
    assert (outcome.delivered, outcome.tries, outcome.status) == (False, 1, 401)


def test_settings_route_the_crms_and_pipedrive_needs_its_url(fake_crm, monkeypatch) -> None:
    url, fake = fake_crm
    monkeypatch.setenv("CLOSEDLOOP_DELIVERY_HUBSPOT_TOKEN", TOKEN)
    monkeypatch.setenv("CLOSEDLOOP_DELIVERY_HUBSPOT_URL", url)
    monkeypatch.setenv("CLOSEDLOOP_DELIVERY_PIPEDRIVE_TOKEN", TOKEN)
    monkeypatch.setenv("CLOSEDLOOP_DELIVERY_PIPEDRIVE_KINDS", '["sales_ready"]')
    with pytest.raises(ValueError, match="CLOSEDLOOP_DELIVERY_PIPEDRIVE_URL is not: set it to your company"):
        DeliverySettings()
    monkeypatch.setenv("CLOSEDLOOP_DELIVERY_PIPEDRIVE_URL", url)
    settings = DeliverySettings()
    assert settings.routes("sales_ready") == ["hubspot", "pipedrive"]
    assert settings.routes("buying_signal") == ["hubspot"]
    assert TOKEN not in repr(settings) + str(settings.model_dump())
    with httpx.Client(timeout=5) as client:
        outcomes = {d: deliver_to(d, message(), settings, _sender(client)) for d in settings.routes("sales_ready")}
    assert {d: (o.delivered, o.tries) for d, o in outcomes.items()} == {"hubspot": (True, 2), "pipedrive": (True, 2)}
    assert all(isinstance(o, Outcome) for o in outcomes.values()) and fake.problems == []
