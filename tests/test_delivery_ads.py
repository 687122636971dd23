"""Meta and LinkedIn Conversions API destinations (issue 25, item 3; docs/ADS.md) against a local HTTP server that
checks the request shapes of the platforms' public documentation. These machines cannot reach either API.

Hashes are checked against Meta's documented normalisation example (customer information parameters, ``em``:
input ``John_Smith@gmail.com``, normalised ``john_smith@gmail.com``, SHA-256
``62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f``); LinkedIn documents the same normalisation
(trimmed, lower-cased, SHA-256 hex) for ``SHA256_EMAIL``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from delivery import ads
from delivery.process import deliver_to
from delivery.sender import Outcome, send
from delivery.settings import DeliverySettings
from schemas.outputs import AdClick, Conversion

META_EXAMPLE = ("  John_Smith@gmail.com ", "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f")
META_TOKEN = "EAAB-meta-secret-token"
LINKEDIN_TOKEN = "AQX-linkedin-secret-token"
PIXEL = "1234567890"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
STAGES = {"meta": ["customer", "sql"], "linkedin": ["customer", "sql"]}
HEX64 = re.compile(r"^[0-9a-f]{64}$")
META_ACTION_SOURCES = {
    "email", "website", "app", "phone_call", "chat", "physical_store", "system_generated", "business_messaging", "other"
}  # fmt: skip
LINKEDIN_ID_TYPES = {"SHA256_EMAIL", "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "ACXIOM_ID", "ORACLE_MOAT_ID"}


def conversion(
    stage: str = "customer",
    *,
    consent: str | None = "granted",
    clicked_days_before: float = 3,
    at: datetime = NOW - timedelta(hours=2),
    lead: str = "lead-1",
    revenue: str | None = "1200.00",
) -> Conversion:
    clicked_at = at - timedelta(days=clicked_days_before)
    return Conversion(
        conversion_id=f"{lead}-{stage}",
        lead_id=lead,
        stage=stage,
        occurred_at=at,
        revenue=Decimal(revenue) if revenue and stage == "customer" else None,
        currency="EUR" if revenue and stage == "customer" else None,
        touch_count=2,
        event_id="e1",
        clicks=(
            AdClick(kind="gclid", value="G-1", clicked_at=clicked_at, touch_id="t0"),
            AdClick(
                kind="fbc",
                value=f"fb.1.{int(clicked_at.timestamp() * 1000)}.IwAR3x",
                clicked_at=clicked_at,
                touch_id="t1",
            ),  # fmt: skip
            AdClick(kind="li_fat_id", value="df5gf5-gh6t7", clicked_at=clicked_at, touch_id="t2"),
        ),
        ads_consent=consent,
    )


def view(record: Conversion) -> ads.ConversionView:
    return ads.ConversionView.model_validate_json(record.model_dump_json())


def test_email_hash_follows_the_documented_normalisation():
    raw, expected = META_EXAMPLE
    assert ads.email_sha256(raw) == expected


def test_ad_messages_need_consent_a_configured_stage_and_a_recent_click():
    assert ads.ad_messages(view(conversion(consent=None)), "ann@acme.test", STAGES) == []
    assert ads.ad_messages(view(conversion(consent="denied")), "ann@acme.test", STAGES) == []
    assert ads.ad_messages(view(conversion("mql")), "ann@acme.test", STAGES) == []
    assert ads.ad_messages(view(conversion(clicked_days_before=91)), "ann@acme.test", STAGES) == []
    assert [m.kind for m in ads.ad_messages(view(conversion()), None, {"meta": ["customer"]})] == ["meta_conversion"]
    meta, linkedin = ads.ad_messages(view(conversion()), META_EXAMPLE[0], STAGES)
    assert (meta.message_id, linkedin.message_id) == ("meta:lead-1-customer", "linkedin:lead-1-customer")
    assert meta.email is None and META_EXAMPLE[0].strip() not in meta.model_dump_json()
    assert meta.payload["email_sha256"] == META_EXAMPLE[1]
    assert (meta.payload["click_kind"], linkedin.payload["click_id"]) == ("fbc", "df5gf5-gh6t7")
    assert (meta.payload["value"], meta.payload["currency"]) == ("1200.00", "EUR")


def test_a_record_with_fields_the_feed_does_not_know_still_parses():
    record = json.loads(conversion().model_dump_json())
    record["credits"] = [{"model": "linear", "credit": "1"}]  # what another producer may add
    assert ads.ConversionView.model_validate(record).conversion_id == "lead-1-customer"


class FakeAdPlatforms:
    """Answers like Meta's and LinkedIn's Conversions APIs and records every problem with a request's shape."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict]] = []
        self.problems: list[str] = []
        self.lock = threading.Lock()

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        document = json.loads(body)
        with self.lock:
            self.requests.append((path, headers, document))
        if path == f"/v21.0/{PIXEL}/events":
            return self._meta(path, headers, document)
        if path == "/rest/conversionEvents":
            return self._linkedin(headers, document)
        self.problems.append(f"unknown path {path}")
        return 404, {}

    def _meta(self, path: str, headers: dict[str, str], document: dict) -> tuple[int, dict]:
        self.check(META_TOKEN not in path, "the token must not be in the URL")
        if document.get("access_token") != META_TOKEN:
            return 400, {"error": {"message": "Invalid OAuth access token", "type": "OAuthException", "code": 190}}
        self.check(headers.get("content-type") == "application/json", "content type")
        for event in document["data"]:
            self.check(isinstance(event["event_name"], str) and event["event_name"], "event_name")
            self.check(isinstance(event["event_time"], int) and 1e9 < event["event_time"] < 1e10, "event_time: s")
            self.check(isinstance(event["event_id"], str) and event["event_id"], "event_id")
            self.check(event["action_source"] in META_ACTION_SOURCES, "action_source")
            user = event["user_data"]
            self.check(all(HEX64.match(h) for h in user.get("em", [])), "em: list of SHA-256 hex")
            self.check(re.fullmatch(r"fb\.1\.\d{13}\.\S+", user.get("fbc", "")) is not None, "fbc format")
            custom = event.get("custom_data", {})
            if "value" in custom:
                self.check(isinstance(custom["value"], (int, float)), "value is a number")
                self.check(re.fullmatch(r"[A-Z]{3}", custom.get("currency", "")) is not None, "currency")
        return 200, {"events_received": len(document["data"]), "messages": [], "fbtrace_id": "A1"}

    def _linkedin(self, headers: dict[str, str], document: dict) -> tuple[int, dict]:
        if headers.get("authorization") != f"Bearer {LINKEDIN_TOKEN}":
            return 401, {"status": 401, "serviceErrorCode": 65600, "message": "Invalid access token"}
        self.check(re.fullmatch(r"\d{6}", headers.get("linkedin-version", "")) is not None, "LinkedIn-Version")
        self.check(headers.get("x-restli-protocol-version") == "2.0.0", "X-Restli-Protocol-Version")
        self.check(re.fullmatch(r"urn:lla:llaPartnerConversion:\d+", document["conversion"]) is not None, "urn")
        happened = document["conversionHappenedAt"]
        self.check(isinstance(happened, int) and 1e12 < happened < 1e13, "conversionHappenedAt: ms")
        self.check(isinstance(document["eventId"], str) and document["eventId"], "eventId")
        for user_id in document["user"]["userIds"]:
            self.check(user_id["idType"] in LINKEDIN_ID_TYPES, "idType")
            if user_id["idType"] == "SHA256_EMAIL":
                self.check(HEX64.match(user_id["idValue"]) is not None, "SHA256_EMAIL: hex")
        if "conversionValue" in document:
            value = document["conversionValue"]
            self.check(isinstance(value["amount"], str), "amount is a string")
            self.check(re.fullmatch(r"[A-Z]{3}", value["currencyCode"]) is not None, "currencyCode")
        return 201, {}


@pytest.fixture
def platforms() -> Iterator[tuple[str, FakeAdPlatforms]]:
    fake = FakeAdPlatforms()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, answer = fake.answer(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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


def ad_settings(url: str, tmp_path: Path, **overrides) -> DeliverySettings:
    return DeliverySettings(
        data_dir=tmp_path,
        delivery_meta_pixel_id=PIXEL,
        delivery_meta_token=META_TOKEN,
        delivery_meta_url=url,
        delivery_linkedin_token=LINKEDIN_TOKEN,
        delivery_linkedin_url=url,
        delivery_linkedin_conversions={"sql": "104001", "customer": "urn:lla:llaPartnerConversion:104002"},
        delivery_retry_initial_seconds=0.01,
        delivery_retry_max_seconds=0.05,
        **overrides,
    )


def send_one(client: httpx.Client):
    return lambda request: send(client, request, max_tries=3, base_seconds=0.01, cap_seconds=0.02)


def test_meta_and_linkedin_requests_have_the_documented_shape(platforms, tmp_path) -> None:
    url, fake = platforms
    settings = ad_settings(url, tmp_path)
    record = conversion()
    meta, linkedin = ads.ad_messages(view(record), META_EXAMPLE[0], settings.ad_stages())
    assert settings.routes("meta_conversion") == ["meta"] and settings.routes("linkedin_conversion") == ["linkedin"]
    with httpx.Client(timeout=5) as client:
        outcomes = [deliver_to(d, m, settings, send_one(client)) for d, m in (("meta", meta), ("linkedin", linkedin))]
    assert [(o.delivered, o.tries, o.status) for o in outcomes] == [(True, 1, 200), (True, 1, 201)]
    assert fake.problems == []
    (meta_path, _, meta_body), (linkedin_path, linkedin_headers, linkedin_body) = fake.requests
    assert meta_body == {
        "access_token": META_TOKEN,
        "data": [
            {
                "event_name": "Purchase",
                "event_time": int(record.occurred_at.timestamp()),
                "event_id": "lead-1-customer",
                "action_source": "system_generated",
                "user_data": {"em": [META_EXAMPLE[1]], "fbc": record.clicks[1].value},
                "custom_data": {
                    "lead_event_source": "closedloop",
                    "event_source": "crm",
                    "value": 1200.0,
                    "currency": "EUR",
                },
            }
        ],
    }
    assert linkedin_body == {
        "conversion": "urn:lla:llaPartnerConversion:104002",
        "conversionHappenedAt": int(record.occurred_at.timestamp()) * 1000,
        "conversionValue": {"currencyCode": "EUR", "amount": "1200.00"},
        "user": {
            "userIds": [
                {"idType": "SHA256_EMAIL", "idValue": META_EXAMPLE[1]},
                {"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": "df5gf5-gh6t7"},
            ]
        },
        "eventId": "lead-1-customer",
    }
    assert linkedin_headers["linkedin-version"] == "202506"


def test_an_sql_without_value_and_without_a_known_email(platforms, tmp_path) -> None:
    url, fake = platforms
    settings = ad_settings(url, tmp_path)
    meta, linkedin = ads.ad_messages(view(conversion("sql")), None, settings.ad_stages())
    with httpx.Client(timeout=5) as client:
        for destination, message in (("meta", meta), ("linkedin", linkedin)):
            assert deliver_to(destination, message, settings, send_one(client)).delivered
    assert fake.problems == []
    (_, _, meta_body), (_, _, linkedin_body) = fake.requests
    event = meta_body["data"][0]
    assert (event["event_name"], event["user_data"].keys(), "value" in event["custom_data"]) == (
        "Lead",
        {"fbc"},
        False,
    )
    assert linkedin_body["conversion"] == "urn:lla:llaPartnerConversion:104001"
    assert "conversionValue" not in linkedin_body
    assert [u["idType"] for u in linkedin_body["user"]["userIds"]] == ["LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID"]


def test_too_old_for_meta_is_dead_unsent_and_a_refused_token_is_dead_at_once(platforms, tmp_path) -> None:
    url, fake = platforms
    old = conversion(at=NOW - timedelta(days=8))
    meta, linkedin = ads.ad_messages(view(old), "ann@acme.test", STAGES)
    settings = ad_settings(url, tmp_path)
    with httpx.Client(timeout=5) as client:
        outcome = deliver_to("meta", meta, settings, send_one(client))
        assert (outcome.delivered, outcome.tries) == (False, 0)
        assert "older than Meta's 7 days" in outcome.reason
        assert deliver_to("linkedin", linkedin, settings, send_one(client)).delivered  # LinkedIn takes 90 days
        wrong = settings.model_copy(update={"delivery_linkedin_token": SecretStr("wrong")})
        refused: Outcome = deliver_to("linkedin", linkedin, wrong, send_one(client))
    assert (refused.delivered, refused.tries, refused.status) == (False, 1, 401)
    assert [path for path, _, _ in fake.requests] == ["/rest/conversionEvents", "/rest/conversionEvents"]


def test_tokens_are_masked_in_the_settings(tmp_path) -> None:
    settings = ad_settings("http://127.0.0.1:9", tmp_path)
    shown = repr(settings) + settings.model_dump_json()
    assert META_TOKEN not in shown and LINKEDIN_TOKEN not in shown


@pytest.mark.kafka
def test_the_feed_and_deliver_send_each_conversion_once_across_replays(
    platforms, tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    """Conversions and lead records on Kafka -> the ad feed -> the outbox -> deliver -> the local platforms; then
    new consumer groups for both re-read everything (as a restart before a commit would) and nothing is sent again.
    """
    from kafka import KafkaProducer

    from delivery import ad_feed
    from delivery.process import run
    from deploy.daemons import wait_until
    from deploy.topics import create_topics
    from schemas import serde
    from schemas.outbox import AdFeedback
    from schemas.outputs import Lead

    url, fake = platforms
    settings = ad_settings(
        url,
        tmp_path,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=unique_name,
        delivery_consumer_group=unique_name,
        delivery_ad_feed_group=unique_name + "-feed",
    )
    create_topics(settings, settings.topics.specs())
    topics = settings.topics
    records = [
        (topics.leads, "ann", Lead(lead_id="ann", email=META_EXAMPLE[0].strip(), first_identified_at=NOW)),
        (topics.conversions, "ann", conversion("sql", lead="ann", at=NOW - timedelta(hours=3))),
        (topics.conversions, "ann", conversion("sql", lead="ann", at=NOW - timedelta(hours=3)).model_copy(
            update={"version": 2})),  # a newer version of the same conversion: the same message id
        (topics.conversions, "ann", conversion("customer", lead="ann")),
        (topics.conversions, "bob", conversion("customer", lead="bob", consent=None)),  # no consent: nothing
        (topics.conversions, "cyd", conversion("lead", lead="cyd")),  # a stage no platform takes
    ]  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for topic, key, record in records:
        producer.send(topic, key=key.encode(), value=serde.dumps(record))
    producer.flush(30)

    def running(current: DeliverySettings) -> tuple[threading.Event, list[threading.Thread]]:
        stop = threading.Event()
        threads = [threading.Thread(target=f, args=(current, stop), daemon=True) for f in (ad_feed.run, run)]
        for thread in threads:
            thread.start()
        return stop, threads

    def stopped(stop: threading.Event, threads: list[threading.Thread]) -> None:
        stop.set()
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive()

    stop, threads = running(settings)
    try:
        wait_until(lambda: len(fake.requests) >= 4, 60, "two conversions to Meta and LinkedIn each")
        wait_until(lambda: len(read_all(kafka_bootstrap, topics.ad_feedback)) >= 4, 30, "the audit records")
    finally:
        stopped(stop, threads)
    assert fake.problems == []
    sent = sorted(
        (path, body["data"][0]["event_id"] if "data" in body else body["eventId"]) for path, _, body in fake.requests
    )
    assert sent == [
        ("/rest/conversionEvents", "ann-customer"),
        ("/rest/conversionEvents", "ann-sql"),
        (f"/v21.0/{PIXEL}/events", "ann-customer"),
        (f"/v21.0/{PIXEL}/events", "ann-sql"),
    ]
    assert all(
        body["data"][0]["user_data"]["em"] == [META_EXAMPLE[1]] for path, _, body in fake.requests if "data" in body
    )

    again = settings.model_copy(
        update={"delivery_consumer_group": unique_name + "-again", "delivery_ad_feed_group": unique_name + "-feed2"}
    )
    stop, threads = running(again)
    try:
        wait_until(lambda: len(read_all(kafka_bootstrap, topics.outbox)) >= 8, 60, "the replayed feed's messages")
        wait_until(lambda: committed(kafka_bootstrap, again), 60, "the replaying deliver group to commit")
    finally:
        stopped(stop, threads)
    assert len(fake.requests) == 4  # nothing twice
    audit = sorted(
        (a.platform, a.stage, a.click_kind, a.status, a.value)
        for a in (AdFeedback.model_validate_json(v) for v in read_all(kafka_bootstrap, topics.ad_feedback))
    )
    assert audit == [
        ("linkedin", "customer", "li_fat_id", "delivered", Decimal("1200.00")),
        ("linkedin", "sql", "li_fat_id", "delivered", None),
        ("meta", "customer", "fbc", "delivered", Decimal("1200.00")),
        ("meta", "sql", "fbc", "delivered", None),
    ]


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000)
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


def committed(bootstrap: str, settings: DeliverySettings) -> bool:
    """The deliver group committed past every outbox record."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.delivery_consumer_group)
    try:
        partitions = [
            TopicPartition(settings.topics.outbox, p)
            for p in consumer.partitions_for_topic(settings.topics.outbox) or ()
        ]
        ends = consumer.end_offsets(partitions)
        return bool(partitions) and all((consumer.committed(tp) or 0) >= ends[tp] for tp in partitions)
    finally:
        consumer.close()


@pytest.mark.clickhouse
def test_an_api_audit_record_becomes_an_ad_feedback_row(clickhouse_http_url: str, tmp_path: Path) -> None:
    from harness import unique

    from delivery.process import ad_feedback
    from schemas import serde
    from schemas.outbox import DeliveryStatus
    from sinks.client import connect
    from sinks.migrate import migrate_up
    from sinks.rows import Provenance, RecordKind, insert, rows_for
    from sinks.settings import SinkSettings

    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('adfeedback')}")
    migrate_up(settings)
    client = connect(settings)
    try:
        [meta] = ads.ad_messages(view(conversion()), "ann@acme.test", {"meta": ["customer"]})
        status = DeliveryStatus(
            delivery_key="k1",
            message_id=meta.message_id,
            kind=meta.kind,
            lead_id=meta.lead_id,
            destination="meta",
            status="delivered",
            tries=1,
            http_status=200,
            finished_at=NOW,
        )
        audit = ad_feedback("meta", meta, ad_settings("http://127.0.0.1:9", tmp_path), status)
        rows = rows_for(RecordKind.AD_FEEDBACK, serde.dumps(audit), Provenance("t.ad-feedback", 0, 0))
        insert(client, "ad_feedback", [row for _, row in rows])
        insert(client, "ad_feedback", [row for _, row in rows])  # a replay collapses
        found = client.query(
            "SELECT feedback_id, platform, route, action, conversion_name, click_kind, value, currency, status "
            "FROM ad_feedback FINAL"
        ).result_rows
        assert [tuple(row) for row in found] == [
            ("meta:upload:lead-1-customer", "meta", "api", "upload", "Purchase", "fbc", Decimal("1200.00"), "EUR",
             "delivered")
        ]  # fmt: skip
        assert "ann@acme.test" not in serde.dumps(audit).decode() and ads.email_sha256("ann@acme.test") not in str(
            found
        )
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
        client.close()
