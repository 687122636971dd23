"""Outbound delivery without Kafka: exact request bodies/headers, the signature, and retries against a local server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from delivery import requests as build
from delivery.sender import send
from schemas.outbox import OutboxMessage
from schemas.retry import backoff_seconds, retry_after_seconds
from schemas.topics import Topics

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "s3cret-value-never-logged"


def message(**changes: object) -> OutboxMessage:
    fields: dict[str, object] = {
        "message_id": "sales_ready:lead-1",
        "kind": "sales_ready",
        "lead_id": "lead-1",
        "email": "ann@example.com",
        "occurred_at": T0,
        "title": "Ann is sales-ready",
        "payload": {"score": 72, "first_touch": {"channel": "paid_search", "campaign": "spring"}},
    }
    fields.update(changes)
    return OutboxMessage.model_validate(fields)


def test_outbox_topics_are_a_queue_and_a_dead_letter_topic() -> None:
    specs = {spec.name: spec for spec in Topics("t").specs()}
    assert (specs["t.outbox"].kind, specs["t.outbox"].key, specs["t.outbox"].compacted) == ("output", "lead_id", False)
    assert specs["t.outbox-dead"].kind == "dead-letters"


def test_generic_webhook_request_is_signed_with_a_timestamp() -> None:
    request = build.generic_webhook(message(), "http://127.0.0.1:9/hook", SECRET, 1_772_366_400)
    body = (
        b'{"email":"ann@example.com","kind":"sales_ready","lead_id":"lead-1","message_id":"sales_ready:lead-1",'
        b'"occurred_at":"2026-03-01T12:00:00Z","payload":{"first_touch":{"campaign":"spring","channel":"paid_search"},'
        b'"score":72},"schema_version":1,"title":"Ann is sales-ready"}'
    )
    assert request.body == body
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == build.idempotency_key(message(), "webhook")
    assert request.headers["X-Closedloop-Signature"] == build.signature(SECRET, 1_772_366_400, body)
    assert request.headers["X-Closedloop-Signature"].startswith("t=1772366400,v1=")
    header = request.headers["X-Closedloop-Signature"]
    assert build.verify_signature(SECRET, header, body, now=1_772_366_400 + 10)
    assert not build.verify_signature(SECRET, header, body + b" ", now=1_772_366_400)
    assert not build.verify_signature("other", header, body, now=1_772_366_400)
    assert not build.verify_signature(SECRET, header, body, now=1_772_366_400 + 301)  # too old: a replay
    assert not build.verify_signature(SECRET, "garbage", body, now=1_772_366_400)


def test_idempotency_key_is_stable_and_per_destination() -> None:
    assert build.idempotency_key(message(), "webhook") == build.idempotency_key(message(title="x"), "webhook")
    assert build.idempotency_key(message(), "webhook") != build.idempotency_key(message(), "slack")
    assert build.idempotency_key(message(), "webhook") != build.idempotency_key(message(message_id="m2"), "webhook")
    assert len(build.idempotency_key(message(), "webhook")) == 32


def test_slack_message_has_text_and_blocks() -> None:
    request = build.slack(message(), "http://127.0.0.1:9/services/T/B/X")
    assert json.loads(request.body) == {
        "text": "Ann is sales-ready (score 72)",
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*Ann is sales-ready (score 72)*\nLead: `lead-1`\nAt: 2026-03-01T12:00:00+00:00\n"
                    "First touch: campaign=spring, channel=paid_search",
                },
            }
        ],
    }
    assert json.loads(build.slack(message(title="", payload={}), "u").body)["text"] == "sales ready: lead lead-1"


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    assert [backoff_seconds(n, 1.0, 10.0, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert backoff_seconds(3, 1.0, 10.0, rng=lambda: 0.5) == 2.0
    assert backoff_seconds(3, 1.0, 10.0, rng=lambda: 0.0) == 0.0


def test_retry_after_seconds_or_http_date() -> None:
    assert retry_after_seconds("30") == 30.0
    assert retry_after_seconds("Sun, 01 Mar 2026 12:00:30 GMT", now=T0) == 30.0
    assert retry_after_seconds("Sun, 01 Mar 2026 11:00:00 GMT", now=T0) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(" 1.5 ") == 1.5  # HubSpot sends seconds, sometimes with decimals
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("") is None
    assert retry_after_seconds(None) is None


class Script:
    """A local destination answering a scripted list of (status, headers) and then 200, recording each request."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]]) -> None:
        self.answers = list(answers)
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()


@pytest.fixture
def destination() -> Iterator[tuple[str, Script]]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with script.lock:
                script.received.append((self.path, dict(self.headers.items()), body))
                status, headers = script.answers.pop(0) if script.answers else (200, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_send_retries_500_then_honours_retry_after_on_429(destination: tuple[str, Script]) -> None:
    url, script = destination
    script.answers = [(500, {}), (429, {"Retry-After": "2"})]  # the issue says 30 s; 2 s keeps the test quick
    waits: list[float] = []
    request = build.generic_webhook(message(), url + "/hook", SECRET, 1_772_366_400)
    with httpx.Client(timeout=5) as client:
        outcome = send(client, request, max_tries=5, base_seconds=0.01, cap_seconds=0.05, sleep=waits.append)
    assert (outcome.delivered, outcome.tries, outcome.status, outcome.reason) == (True, 3, 200, "")
    assert len(waits) == 2 and 0 <= waits[0] <= 0.01 and waits[1] == 2.0
    assert [path for path, _, _ in script.received] == ["/hook"] * 3
    keys = {headers["Idempotency-Key"] for _, headers, _ in script.received}
    assert keys == {build.idempotency_key(message(), "webhook")}  # the same key on every retry
    assert {body for _, _, body in script.received} == {request.body}


def test_send_gives_up_after_max_tries_and_at_once_on_a_4xx(destination: tuple[str, Script]) -> None:
    url, script = destination
    script.answers = [(503, {})] * 3
    with httpx.Client(timeout=5) as client:
        outcome = send(client, build.slack(message(), url), max_tries=3, base_seconds=0.0, sleep=lambda _: None)
        assert (outcome.delivered, outcome.tries, outcome.status) == (False, 3, 503)
        assert outcome.reason == "gave up after 3 tries; last: HTTP 503: ok"
        script.answers = [(400, {})]
        outcome = send(client, build.slack(message(), url), max_tries=3, base_seconds=0.0, sleep=lambda _: None)
    assert (outcome.delivered, outcome.tries, outcome.status, outcome.reason) == (False, 1, 400, "HTTP 400: ok")
    assert len(script.received) == 4


def test_send_counts_an_unreachable_destination_as_a_try() -> None:
    with httpx.Client(timeout=1) as client:
        outcome = send(client, build.slack(message(), "http://127.0.0.1:9/x"), max_tries=2, sleep=lambda _: None)
    assert (outcome.delivered, outcome.tries, outcome.status) == (False, 2, None)
    assert outcome.reason == "gave up after 2 tries; last: ConnectError: no answer from the destination"


def test_settings_route_kinds_and_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from delivery.settings import DeliverySettings

    monkeypatch.setenv("CLOSEDLOOP_DELIVERY_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("CLOSEDLOOP_DELIVERY_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("CLOSEDLOOP_DELIVERY_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/services/T/B/XSECRET")
    monkeypatch.setenv("CLOSEDLOOP_DELIVERY_SLACK_KINDS", '["sales_ready"]')
    settings = DeliverySettings()
    assert settings.routes("sales_ready") == ["webhook", "slack"]
    assert settings.routes("buying_signal") == ["webhook"]
    assert settings.routes("other") == []
    shown = repr(settings) + str(settings.model_dump())
    assert SECRET not in shown and "XSECRET" not in shown
    monkeypatch.delenv("CLOSEDLOOP_DELIVERY_WEBHOOK_SECRET")
    assert DeliverySettings().routes("buying_signal") == []  # a webhook without its secret is not sent unsigned
