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
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pydantic import ValidationError

from delivery import ads, crm
from delivery import requests as build
from delivery.sender import Outcome, send
from delivery.settings import DeliverySettings
from schemas import serde
from schemas.kafka_security import kafka_python_security
from schemas.outbox import AdFeedback, DeliveryStatus, LeadErased, OutboxMessage
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
    if destination in ("meta", "linkedin"):
        return _ad_platform(destination, message, settings, send_one)
    raise ValueError(f"unknown destination {destination!r}")


def _ad_platform(
    platform: str, message: OutboxMessage, settings: DeliverySettings, send_one: Callable[[build.Request], Outcome]
) -> Outcome:
    """A conversion event to Meta's or LinkedIn's Conversions API (delivery/ads.py); refused ages are dead unsent."""
    stage = str(message.payload.get("stage", ""))
    old = ads.too_old(message, platform, datetime.now(timezone.utc))
    if old:
        return Outcome(False, 0, None, old)
    if platform == "meta":
        assert settings.delivery_meta_token and settings.delivery_meta_pixel_id
        event_name = settings.delivery_meta_event_names.get(stage)
        if event_name is None:
            return Outcome(False, 0, None, f"no Meta event name for stage {stage!r} (DELIVERY_META_EVENT_NAMES)")
        request = ads.meta_request(
            message,
            base_url=settings.delivery_meta_url,
            api_version=settings.delivery_meta_api_version,
            pixel_id=settings.delivery_meta_pixel_id,
            token=settings.delivery_meta_token.get_secret_value(),
            event_name=event_name,
            test_event_code=settings.delivery_meta_test_event_code,
        )
        return send_one(request)
    assert settings.delivery_linkedin_token
    conversion = settings.delivery_linkedin_conversions.get(stage)
    if conversion is None:
        return Outcome(
            False, 0, None, f"no LinkedIn conversion rule for stage {stage!r} (DELIVERY_LINKEDIN_CONVERSIONS)"
        )
    request = ads.linkedin_request(
        message,
        base_url=settings.delivery_linkedin_url,
        version=settings.delivery_linkedin_version,
        token=settings.delivery_linkedin_token.get_secret_value(),
        conversion=conversion,
    )
    return send_one(request)


def ad_feedback(
    destination: str, message: OutboxMessage, settings: DeliverySettings, status: DeliveryStatus
) -> AdFeedback:
    """The audit row of one conversion sent (or given up) to an ad platform's API (the ``ad_feedback`` table)."""
    payload = message.payload
    stage = str(payload.get("stage", ""))
    names = settings.delivery_meta_event_names if destination == "meta" else settings.delivery_linkedin_conversions
    return AdFeedback(
        feedback_id=f"{destination}:upload:{payload.get('conversion_id', message.message_id)}",
        conversion_id=str(payload.get("conversion_id", message.message_id)),
        lead_id=message.lead_id,
        stage=stage or "unknown",
        platform=destination,
        route="api",
        conversion_name=names.get(stage, ""),
        click_kind=str(payload.get("click_kind", "")),
        click_id=str(payload.get("click_id", "")),
        converted_at=message.occurred_at,
        value=payload.get("value"),
        currency=payload.get("currency"),
        status=status.status,
        reason=status.reason,
        recorded_at=status.finished_at,
    )


ERASED_REASON = "not sent: the lead was erased after this message was queued (closedloop erase)"


class ErasedLeads:
    """The leads ``closedloop erase`` erased, and when, read whole from the compacted erased-leads topic before each
    batch of the outbox: a message queued for a lead before its erasure is not sent, since it may carry the email
    the person asked to be forgotten. A message already in its retries when the erasure comes finishes them."""

    def __init__(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self._consumer = consumer
        self._partitions = partitions
        self.erased_at: dict[str, datetime] = {}

    @classmethod
    def open(cls, settings: DeliverySettings) -> ErasedLeads | None:
        """None while the topic does not exist yet (``closedloop up`` creates it): nothing was erased through it."""
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_servers,
            enable_auto_commit=False,
            reconnect_backoff_max_ms=KAFKA_RECONNECT_BACKOFF_MAX_MS,
            **kafka_python_security(settings),
        )
        numbers = consumer.partitions_for_topic(settings.topics.erased_leads)
        if not numbers:
            consumer.close()
            return None
        partitions = [TopicPartition(settings.topics.erased_leads, n) for n in sorted(numbers)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return cls(consumer, partitions)

    def catch_up(self, timeout_s: float = 30.0) -> None:
        """Read up to the topic's end as of now; TimeoutError when the broker does not let it within ``timeout_s``
        (the batch is then not delivered, and the loop fails like on any Kafka error)."""
        ends = self._consumer.end_offsets(self._partitions)
        deadline = time.monotonic() + timeout_s
        while any(self._consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {self._partitions[0].topic} to its end within {timeout_s:g} s")
            for records in self._consumer.poll(timeout_ms=200).values():
                for record in records:
                    if record.value is None:
                        continue
                    try:
                        erased = LeadErased.model_validate_json(record.value)
                    except ValidationError:
                        log.warning("not a LeadErased record: ignored", extra={"offset": record.offset})
                        continue
                    before = self.erased_at.get(erased.lead_id)
                    self.erased_at[erased.lead_id] = max(before, erased.erased_at) if before else erased.erased_at

    def covers(self, message: OutboxMessage) -> bool:
        erased_at = self.erased_at.get(message.lead_id)
        return erased_at is not None and message.occurred_at <= erased_at

    def close(self) -> None:
        self._consumer.close()


def deliver_one(
    message: OutboxMessage,
    settings: DeliverySettings,
    client: httpx.Client,
    seen: SeenStore,
    producer: KafkaProducer,
    stop: threading.Event,
    erased: bool = False,
) -> dict[str, Outcome | None]:
    """Every destination of one message; None for one already done before (a replay). ``erased``: the lead was
    erased after the message was queued, so each destination gets an "erased" status and no request."""
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

        if erased:
            outcome = Outcome(False, 0, None, ERASED_REASON)
        else:
            outcome = deliver_to(destination, message, settings, send_one)
        if not outcome.delivered and stop.is_set():
            return outcomes  # stopped mid-retry: neither dead nor done; not committed, so sent again after restart
        if not outcome.delivered and not erased:  # an erased lead's message is not kept (it may carry the email)
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
            status="delivered" if outcome.delivered else "erased" if erased else "dead",
            tries=outcome.tries,
            http_status=outcome.status,
            reason=outcome.reason,
            finished_at=datetime.now(timezone.utc),
        )
        # After the seen-store: a crash in between loses this status row, never sends the message twice.
        producer.send(settings.topics.deliveries, key=message.lead_id.encode(), value=serde.dumps(status))
        if destination in ("meta", "linkedin"):  # the ad platforms' audit trail (docs/ADS.md)
            audit = ad_feedback(destination, message, settings, status)
            producer.send(settings.topics.ad_feedback, key=message.lead_id.encode(), value=serde.dumps(audit))
        # no URL, no secret, no body in the log: the destination's name and the outcome only
        log.info("delivery %s %s: %s", destination, message.message_id, status.status)
        outcomes[destination] = outcome
    return outcomes


def run(settings: DeliverySettings, stop: threading.Event) -> None:
    # httpx logs every request's full URL at INFO, and a Slack webhook's URL is its secret
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not any(settings.routes(kind) for kind in ("sales_ready", "buying_signal", *ads.KINDS.values())):
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
        **kafka_python_security(settings),
    )
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_servers,
        acks="all",
        reconnect_backoff_max_ms=KAFKA_RECONNECT_BACKOFF_MAX_MS,
        **kafka_python_security(settings),
    )
    seen = SeenStore(settings.data_dir / "deliver" / "seen-keys")  # not per group: a new group re-reads, too
    erasures: ErasedLeads | None = None
    try:
        with httpx.Client(timeout=settings.delivery_timeout_seconds) as client:
            while not stop.is_set():
                batches = consumer.poll(timeout_ms=500, max_records=100)
                if batches:
                    erasures = erasures or ErasedLeads.open(settings)
                    if erasures is not None:
                        erasures.catch_up()
                for records in batches.values():
                    for record in records:
                        try:
                            message = OutboxMessage.model_validate_json(record.value)
                        except ValidationError as error:
                            value = json.dumps({"reason": f"not an OutboxMessage: {error.errors()[:3]}"}).encode()
                            producer.send(settings.topics.outbox_dead, value=value).get(timeout=30)
                            continue
                        erased = erasures.covers(message) if erasures is not None else False
                        deliver_one(message, settings, client, seen, producer, stop, erased)
                if batches and not stop.is_set():
                    producer.flush(timeout=30)  # the status rows of what the commit marks as done
                    consumer.commit()
    finally:
        seen.close()
        consumer.close()
        producer.close()
        if erasures is not None:
            erasures.close()
