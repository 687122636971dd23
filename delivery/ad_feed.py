"""The ad feed: stage conversions -> outbox messages for Meta's and LinkedIn's Conversions APIs (docs/ADS.md).

It reads ``{prefix}.conversions`` (the stream worker's ``Conversion`` records) and the compacted ``{prefix}.leads``
(lead id -> email), in its own consumer group, and writes to ``{prefix}.outbox`` the messages that
:func:`delivery.ads.ad_messages` makes; ``closedloop deliver`` posts them. It runs inside ``closedloop deliver``
when Meta or LinkedIn is configured, so nothing else has to be started.

Why here and not in the stream worker: the worker's conversion emission is the hot path, and whether a platform is
configured is delivery's business; the conversions topic already is the contract (replays keep the conversion id).

- The email is kept in memory only, per lead, from the leads topic; a tombstone (``closedloop erase``) forgets it.
  It leaves this process only hashed (the message's payload). Leads are applied before conversions in each poll,
  and the worker writes a lead's record before its conversions, so the hash is there when the email is known.
- Offsets are committed after the messages are acknowledged: a restart re-reads the rest, and the messages it
  writes again have the same ids, which ``closedloop deliver``'s seen-store posts only once. A newer version of a
  conversion (late touches) gives the same message id: sent once, as first eligible.
- A record that is not a conversion is skipped with a log line naming its offset (no email in it).
"""

from __future__ import annotations

import logging
import threading

from kafka import KafkaConsumer, KafkaProducer
from pydantic import ValidationError

from delivery.ads import ConversionView, ad_messages
from delivery.settings import DeliverySettings
from schemas.kafka_security import kafka_python_security
from schemas.outputs import Lead
from schemas.settings import KAFKA_RECONNECT_BACKOFF_MAX_MS

log = logging.getLogger("closedloop.deliver.ad_feed")
QUEUED_IDS_LIMIT = 1_000_000


class Emails:
    """Lead id -> email, from the compacted leads topic (a tombstone deletes)."""

    def __init__(self) -> None:
        self._by_lead: dict[str, str] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            if key:
                self._by_lead.pop(key.decode("utf-8", "replace"), None)
            return
        try:
            lead = Lead.model_validate_json(value)
        except ValidationError:
            return
        self._by_lead[lead.lead_id] = lead.email

    def get(self, lead_id: str) -> str | None:
        return self._by_lead.get(lead_id)


def run(settings: DeliverySettings, stop: threading.Event) -> None:
    """Feed until ``stop`` is set; does nothing when no ad platform is configured."""
    stages = settings.ad_stages()
    if not stages:
        return
    topics = settings.topics
    consumer = KafkaConsumer(
        topics.leads,
        topics.conversions,
        bootstrap_servers=settings.kafka_servers,
        group_id=settings.delivery_ad_feed_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
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
    emails = Emails()
    queued_ids: set[str] = set()  # what this run put on the outbox: a newer version of a conversion adds nothing
    try:
        while not stop.is_set():
            batches = consumer.poll(timeout_ms=500, max_records=500)
            records = [record for partition_records in batches.values() for record in partition_records]
            for record in records:
                if record.topic == topics.leads:
                    emails.apply(record.key, record.value)
            queued = 0
            for record in records:
                if record.topic != topics.conversions or record.value is None:
                    continue
                try:
                    conversion = ConversionView.model_validate_json(record.value)
                except ValidationError:
                    log.warning(
                        "ad feed: not a conversion record, skipped",
                        extra={"partition": record.partition, "offset": record.offset},
                    )
                    continue
                for message in ad_messages(conversion, emails.get(conversion.lead_id), stages):
                    if message.message_id in queued_ids:
                        continue
                    if len(queued_ids) >= QUEUED_IDS_LIMIT:
                        queued_ids.clear()  # only an economy: deliver's seen-store is what keeps it once
                    queued_ids.add(message.message_id)
                    producer.send(topics.outbox, key=message.lead_id.encode(), value=message.model_dump_json().encode())
                    queued += 1
            if records:
                producer.flush(timeout=30)
                consumer.commit()
                if queued:
                    log.info("ad feed: messages queued", extra={"messages": queued})
    finally:
        consumer.close()
        producer.close()
