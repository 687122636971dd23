"""Helpers for the collector tests: settings, an offline app (records land in the real spool), signing,
reading topics. Services, ports, names and waiting come from ``harness.py``."""

from __future__ import annotations

import base64
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import orjson
from starlette.testclient import TestClient

from collector.app import create_app
from collector.settings import CollectorSettings
from collector.spool import SpoolRecord

HUBSPOT_SECRET = "hs-secret-1234"
PIPEDRIVE_USER = "pd-user"
PIPEDRIVE_PASSWORD = "pd-password"
CRM_SECRET = "crm-secret-5678"
SERVER_KEY = "server-key-abc"
CLOSED_PORT = "127.0.0.1:1"  # nothing listens on port 1: the publisher spools everything


def collector_settings(
    data_dir: Path, bootstrap: str = CLOSED_PORT, prefix: str = "closedloop", **overrides: Any
) -> CollectorSettings:
    values: dict[str, Any] = dict(
        data_dir=data_dir,
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        server_keys={SERVER_KEY: "backend"},
        hubspot_client_secret=HUBSPOT_SECRET,
        pipedrive_user=PIPEDRIVE_USER,
        pipedrive_password=PIPEDRIVE_PASSWORD,
        crm_webhook_secret=CRM_SECRET,
        pipedrive_label_ids={"7": "mql", "8": "sql"},
        pipedrive_stage_ids={"3": "sql"},
    )
    values.update(overrides)
    return CollectorSettings(**values)


@contextmanager
def offline_client(settings: CollectorSettings) -> Iterator[TestClient]:
    """The real app with its real publisher, on an address where no broker listens: accepted records are spooled."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def spooled(client: TestClient) -> list[SpoolRecord]:
    spool = client.app.state.publisher.spool  # type: ignore[attr-defined]
    records, _ = spool.read(1_000_000)
    return records


def basic_auth(user: str = PIPEDRIVE_USER, password: str = PIPEDRIVE_PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def hubspot_headers(
    body: bytes, url: str, secret: str = HUBSPOT_SECRET, timestamp_ms: int | None = None
) -> dict[str, str]:
    from collector.webhooks.hubspot import sign

    timestamp = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": sign(secret, "POST", url, body, timestamp),
        "X-HubSpot-Request-Timestamp": timestamp,
    }


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def create_source_topics(bootstrap: str, settings: CollectorSettings, partitions: int = 2) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, partitions, 1) for t in settings.topics.source_topics()])
    finally:
        admin.close()


def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0
) -> list[tuple[str | None, dict[str, Any]]]:
    """(key, value) of the records of ``topic``, waiting until ``expected`` arrived (or the deadline)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    out: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for message in consumer:
                out.append(
                    (
                        message.partition,
                        message.offset,
                        message.key.decode() if message.key else None,
                        orjson.loads(message.value),
                    )
                )
            if len(out) >= expected:
                # a last short poll: more than expected would be a bug the test should see
                for message in consumer:
                    out.append(
                        (
                            message.partition,
                            message.offset,
                            message.key.decode() if message.key else None,
                            orjson.loads(message.value),
                        )
                    )
                break
    finally:
        consumer.close()
    out.sort(key=lambda row: (row[0], row[1]))  # partition order, then offsets: per-key order is kept
    return [(key, value) for _, _, key, value in out]
