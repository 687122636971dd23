"""``closedloop deliver``'s loop: poll the outbox, post each message to its destinations, commit when all are done.

Order: poll -> per message and destination: skip a key already in the seen-store, else send (with retries), a
failure to ``{prefix}.outbox-dead`` with the reason, then remember the key -> commit offsets. The seen-store is a
local append-only file fsynced before the commit: a restart before the commit re-reads the messages and finds
their keys, so nothing is posted twice (the file is written in the same step as the send, unlike a ClickHouse
table that could be away exactly then).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import httpx
from kafka import KafkaConsumer, KafkaProducer
from pydantic import ValidationError

from delivery import crm
from delivery import requests as build
from delivery.sender import Outcome, send
from delivery.settings import DeliverySettings
from schemas import serde
from schemas.outbox import DeliveryStatus, OutboxMessage
from schemas.settings import KAFKA_RECONNECT_BACKOFF_MAX_MS

log = logging.getLogger("closedloop.deliver")


class SeenStore:
    """Idempotency keys of finished deliveries (delivered or dead), one per line, fsynced on every add."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.keys = set(path.read_text().split()) if path.exists() else set()
        self._file = path.open("a")

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def add(self, key: str) -> None:
        self._file.write(key + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.keys.add(key)

    def close(self) -> None:
        self._file.close()


def deliver_to(
    destination: str, message: OutboxMessage, settings: DeliverySettings, send_one: Callable[[build.Request], Outcome]
) -> Outcome:
    """One destination's requests for one message, each sent with ``send_one`` (the sender's retries)."""
    if destination == "webhook":
        assert settings.delivery_webhook_url and settings.delivery_webhook_secret  # routes() checked both
        secret = settings.delivery_webhook_secret.get_secret_value()
        return send_one(build.generic_webhook(message, settings.delivery_webhook_url, secret, int(time.time())))
    if destination == "slack":
        assert settings.delivery_slack_webhook_url
        return send_one(build.slack(message, settings.delivery_slack_webhook_url.get_secret_value()))
    if destination == "hubspot":
        assert settings.delivery_hubspot_token
        token = settings.delivery_hubspot_token.get_secret_value()
        return crm.hubspot(message, send_one, settings.delivery_hubspot_url, token, settings.delivery_hubspot_owner_id)
    if destination == "pipedrive":
        assert settings.delivery_pipedrive_token and settings.delivery_pipedrive_url
        token = settings.delivery_pipedrive_token.get_secret_value()
        activity = settings.delivery_pipedrive_activity_type
        return crm.pipedrive(message, send_one, settings.delivery_pipedrive_url, token, activity)
    raise ValueError(f"unknown destination {destination!r}")


def deliver_one(
    message: OutboxMessage,
    settings: DeliverySettings,
    client: httpx.Client,
    seen: SeenStore,
    producer: KafkaProducer,
    stop: threading.Event,
) -> dict[str, Outcome | None]:
    """Every destination of one message; None for one already done before (a replay)."""
    outcomes: dict[str, Outcome | None] = {}
    for destination in settings.routes(message.kind):
        key = build.idempotency_key(message, destination)
        if key in seen:
            outcomes[destination] = None
            continue

        def send_one(request: build.Request) -> Outcome:
            return send(
                client,
                request,
                max_tries=settings.delivery_max_tries,
                base_seconds=settings.delivery_retry_initial_seconds,
                cap_seconds=settings.delivery_retry_max_seconds,
                max_retry_after_seconds=settings.delivery_max_retry_after_seconds,
                sleep=stop.wait,
            )

        outcome = deliver_to(destination, message, settings, send_one)
        if not outcome.delivered and stop.is_set():
            return outcomes  # stopped mid-retry: neither dead nor done; not committed, so sent again after restart
        if not outcome.delivered:
            dead = {"destination": destination, "reason": outcome.reason, "tries": outcome.tries}
            value = json.dumps({**dead, "message": message.model_dump(mode="json")}).encode()
            producer.send(settings.topics.outbox_dead, key=message.lead_id.encode(), value=value).get(timeout=30)
        seen.add(key)
        status = DeliveryStatus(
            delivery_key=key,
            message_id=message.message_id,
            kind=message.kind,
            lead_id=message.lead_id,
            destination=destination,
            status="delivered" if outcome.delivered else "dead",
            tries=outcome.tries,
            http_status=outcome.status,
            reason=outcome.reason,
            finished_at=datetime.now(timezone.utc),
        )
        # After the seen-store: a crash in between loses this status row, never sends the message twice.
        producer.send(settings.topics.deliveries, key=message.lead_id.encode(), value=serde.dumps(status))
        # no URL, no secret, no body in the log: the destination's name and the outcome only
        log.info("delivery %s %s: %s", destination, message.message_id, "delivered" if outcome.delivered else "dead")
        outcomes[destination] = outcome
    return outcomes


def run(settings: DeliverySettings, stop: threading.Event) -> None:
    # httpx logs every request's full URL at INFO, and a Slack webhook's URL is its secret
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not any(settings.routes(kind) for kind in ("sales_ready", "buying_signal")):
        log.info("deliver: no destination configured (CLOSEDLOOP_DELIVERY_*): nothing to send, idling")
    consumer = KafkaConsumer(
        settings.topics.outbox,
        bootstrap_servers=settings.kafka_servers,
        group_id=settings.delivery_consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # the worker writes the outbox in transactions (exactly_once): never post a record of an aborted one
        isolation_level="read_committed",
        reconnect_backoff_max_ms=KAFKA_RECONNECT_BACKOFF_MAX_MS,
    )
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_servers, acks="all", reconnect_backoff_max_ms=KAFKA_RECONNECT_BACKOFF_MAX_MS
    )
    seen = SeenStore(settings.data_dir / "deliver" / "seen-keys")  # not per group: a new group re-reads, too
    try:
        with httpx.Client(timeout=settings.delivery_timeout_seconds) as client:
            while not stop.is_set():
                batches = consumer.poll(timeout_ms=500, max_records=100)
                for records in batches.values():
                    for record in records:
                        try:
                            message = OutboxMessage.model_validate_json(record.value)
                        except ValidationError as error:
                            value = json.dumps({"reason": f"not an OutboxMessage: {error.errors()[:3]}"}).encode()
                            producer.send(settings.topics.outbox_dead, value=value).get(timeout=30)
                            continue
                        deliver_one(message, settings, client, seen, producer, stop)
                if batches and not stop.is_set():
                    producer.flush(timeout=30)  # the status rows of what the commit marks as done
                    consumer.commit()
    finally:
        seen.close()
        consumer.close()
        producer.close()
