"""``closedloop deliver``'s loop on a real Kafka broker, posting to local HTTP servers (the real destinations cannot
be reached from the test machines)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from test_delivery_units import SECRET, T0, Script, destination, message

from delivery import requests as build
from delivery.process import ERASED_REASON, run
from delivery.settings import DeliverySettings
from deploy.daemons import wait_until
from deploy.topics import create_topics
from schemas.outbox import DeliveryStatus, LeadErased

pytestmark = pytest.mark.kafka
__all__ = ["destination"]  # the fixture, imported for its use below


def running(settings: DeliverySettings) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(settings, stop), daemon=True)
    thread.start()
    return stop, thread


def stopped(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def test_each_destination_gets_each_message_once_after_retries_and_replays(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    destination: tuple[str, Script],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, script = destination
    settings = DeliverySettings(
        data_dir=tmp_path,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=unique_name,
        delivery_consumer_group=unique_name,
        delivery_webhook_url=url + "/hook",
        delivery_webhook_secret=SECRET,
        delivery_slack_webhook_url=url + "/services/T/B/XSECRETX",
        delivery_retry_initial_seconds=0.05,
        delivery_retry_max_seconds=0.2,
    )
    create_topics(settings, settings.topics.specs())
    # the first request (the webhook) fails with 500, the retry with 429 Retry-After 2 s (the 30 s would
    # make the test slow): it is delivered after that
    script.answers = [(500, {}), (429, {"Retry-After": "2"})]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for value in (message(), message()):  # the same record replayed by its producer
        producer.send(settings.topics.outbox, key=b"lead-1", value=value.model_dump_json().encode())
    producer.flush(30)

    caplog.set_level(logging.INFO)
    started = time.monotonic()
    stop, thread = running(settings)
    try:
        wait_until(lambda: len(script.received) >= 4, 60, "webhook (3 tries) and Slack requests")
        wait_until(lambda: (settings.data_dir / "deliver").exists(), 10, "the seen-store")
    finally:
        stopped(stop, thread)
    assert time.monotonic() - started >= 2.0  # Retry-After was obeyed

    paths = [path for path, _, _ in script.received]
    assert paths == ["/hook", "/hook", "/hook", "/services/T/B/XSECRETX"]
    _, headers, body = script.received[2]
    assert json.loads(body)["message_id"] == "sales_ready:lead-1"
    assert build.verify_signature(SECRET, headers["X-Closedloop-Signature"], body, now=int(time.time()))
    assert headers["Idempotency-Key"] == build.idempotency_key(message(), "webhook")
    assert json.loads(script.received[3][2])["text"] == "Ann is sales-ready (score 72)"
    logged = caplog.text
    assert SECRET not in logged and "XSECRETX" not in logged
    assert "delivery webhook sales_ready:lead-1: delivered" in logged

    # a new consumer group re-reads everything (as a restart before the commit would): nothing is posted again
    again = settings.model_copy(update={"delivery_consumer_group": unique_name + "-again"})
    stop, thread = running(again)
    try:
        group_done: Callable[[], bool] = lambda: committed(kafka_bootstrap, again)  # noqa: E731
        wait_until(group_done, 60, "the replaying group to commit")
    finally:
        stopped(stop, thread)
    assert len(script.received) == 4
    # one status per delivery, none from the replaying group: what the sink writes to the deliveries table
    statuses = [
        DeliveryStatus.model_validate_json(value) for value in read_all(kafka_bootstrap, settings.topics.deliveries)
    ]
    assert [(d.destination, d.status, d.tries, d.http_status, d.reason) for d in statuses] == [
        ("webhook", "delivered", 3, 200, ""),
        ("slack", "delivered", 1, 200, ""),
    ]
    assert {d.delivery_key for d in statuses} == {build.idempotency_key(message(), d) for d in ("webhook", "slack")}


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of ``topic`` now, in order (one partition per key here: the outbox is keyed by lead)."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


def test_a_delivery_status_becomes_a_deliveries_row(clickhouse_http_url: str) -> None:
    from harness import unique

    from schemas import serde
    from sinks.client import connect
    from sinks.migrate import migrate_up
    from sinks.rows import Provenance, RecordKind, insert, rows_for
    from sinks.settings import SinkSettings

    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('deliveries')}")
    migrate_up(settings)
    client = connect(settings)
    try:
        status = DeliveryStatus(
            delivery_key="k1",
            message_id="sales_ready:lead-1",
            kind="sales_ready",
            lead_id="lead-1",
            destination="hubspot",
            status="dead",
            tries=1,
            http_status=None,
            reason="no email in the message: HubSpot finds the contact by email",
            finished_at=message().occurred_at,
        )
        rows = rows_for(RecordKind.DELIVERY, serde.dumps(status), Provenance("t.deliveries", 0, 0))
        insert(client, "deliveries", [row for _, row in rows])
        insert(client, "deliveries", [row for _, row in rows])  # a replay collapses
        assert client.query(
            "SELECT destination, status, tries, http_status, reason FROM deliveries FINAL"
        ).result_rows == [("hubspot", "dead", 1, None, "no email in the message: HubSpot finds the contact by email")]
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
        client.close()


def committed(bootstrap: str, settings: DeliverySettings) -> bool:
    from kafka import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.delivery_consumer_group)
    try:
        partitions = consumer.partitions_for_topic(settings.topics.outbox) or set()
        tps = [TopicPartition(settings.topics.outbox, p) for p in partitions]
        ends = consumer.end_offsets(tps)
        return bool(tps) and all((consumer.committed(tp) or 0) >= ends[tp] for tp in tps)
    finally:
        consumer.close()


def test_a_destination_that_keeps_failing_gets_the_message_dead_lettered_with_its_reason(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, destination: tuple[str, Script]
) -> None:
    url, script = destination
    settings = DeliverySettings(
        data_dir=tmp_path,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=unique_name,
        delivery_consumer_group=unique_name,
        delivery_slack_webhook_url=url + "/slack",
        delivery_max_tries=2,
        delivery_retry_initial_seconds=0.05,
    )
    create_topics(settings, settings.topics.specs())
    script.answers = [(503, {}), (503, {})]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(settings.topics.outbox, key=b"lead-1", value=message().model_dump_json().encode())
    producer.flush(30)
    dead = KafkaConsumer(settings.topics.outbox_dead, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    stop, thread = running(settings)
    try:
        records: list[bytes] = []

        def polled() -> bool:
            for batch in dead.poll(timeout_ms=200).values():
                records.extend(record.value for record in batch)
            return bool(records)

        wait_until(polled, 60, "the dead letter")
        wait_until(lambda: committed(kafka_bootstrap, settings), 60, "the commit")
    finally:
        stopped(stop, thread)
        dead.close()
    assert len(records) == 1
    letter = json.loads(records[0])
    assert {k: letter[k] for k in ("destination", "reason", "tries")} == {
        "destination": "slack",
        "reason": "gave up after 2 tries; last: HTTP 503: ok",
        "tries": 2,
    }
    assert letter["message"]["message_id"] == "sales_ready:lead-1"
    assert len(script.received) == 2
    (status,) = [DeliveryStatus.model_validate_json(v) for v in read_all(kafka_bootstrap, settings.topics.deliveries)]
    assert (status.destination, status.status, status.tries, status.http_status, status.reason) == (
        "slack",
        "dead",
        2,
        503,
        "gave up after 2 tries; last: HTTP 503: ok",
    )


def test_messages_queued_for_a_lead_before_its_erasure_are_not_sent(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, destination: tuple[str, Script]
) -> None:
    """closedloop erase writes LeadErased to the erased-leads topic: what was queued for the lead before then gets an
    "erased" status and no request (not even a dead letter, which would keep the email); the lead's later activity
    and other leads are sent as usual."""
    url, script = destination
    settings = DeliverySettings(
        data_dir=tmp_path,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=unique_name,
        delivery_consumer_group=unique_name,
        delivery_webhook_url=url + "/hook",
        delivery_webhook_secret=SECRET,
    )
    create_topics(settings, settings.topics.specs())
    hour = timedelta(hours=1)
    queued = [
        message(message_id="sales_ready:ann-1", lead_id="ann", occurred_at=T0),
        message(message_id="sales_ready:bob-1", lead_id="bob", email="bob@example.com", occurred_at=T0 + hour),
        message(message_id="sales_ready:ann-2", lead_id="ann", occurred_at=T0 + 3 * hour),  # after the erasure
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    erased = LeadErased(lead_id="ann", request_id="erase-1", erased_at=T0 + 2 * hour)
    producer.send(settings.topics.erased_leads, key=b"ann", value=erased.model_dump_json().encode())
    for value in queued:
        producer.send(settings.topics.outbox, key=value.lead_id.encode(), value=value.model_dump_json().encode())
    producer.flush(30)

    stop, thread = running(settings)
    try:
        wait_until(lambda: committed(kafka_bootstrap, settings), 60, "the outbox read and committed")
    finally:
        stopped(stop, thread)
    assert sorted(json.loads(body)["message_id"] for _, _, body in script.received) == [
        "sales_ready:ann-2",
        "sales_ready:bob-1",
    ]
    statuses = [
        DeliveryStatus.model_validate_json(value) for value in read_all(kafka_bootstrap, settings.topics.deliveries)
    ]
    assert sorted((d.message_id, d.status, d.tries, d.reason) for d in statuses) == [
        ("sales_ready:ann-1", "erased", 0, ERASED_REASON),
        ("sales_ready:ann-2", "delivered", 1, ""),
        ("sales_ready:bob-1", "delivered", 1, ""),
    ]
    assert read_all(kafka_bootstrap, settings.topics.outbox_dead) == []
