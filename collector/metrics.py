"""Prometheus metrics of one collector process, served at ``GET /metrics``.

Each app has its own registry (tests build many apps in one process). With several uvicorn workers every
worker reports its own counters; the ``worker`` label is the process id, so sum over it.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "CollectorMetrics"]


class CollectorMetrics:
    """The collector's counters: accepted, rejected by reason, spooled, duplicates, publish latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        worker = str(os.getpid())
        self.accepted = Counter(
            "closedloop_collector_events_accepted",
            "Events accepted (published or spooled), by endpoint and event type.",
            ["endpoint", "type"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "closedloop_collector_events_rejected",
            "Rejected requests or events, by endpoint and reason (the 'error' field of the response).",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "closedloop_collector_webhook_duplicates",
            "Webhook deliveries already seen (CRM retries), dropped.",
            ["endpoint"],
            registry=self.registry,
        )
        self.ignored = Counter(
            "closedloop_collector_webhook_ignored",
            "Webhook events that carry no lifecycle change we map (e.g. unmapped deal stages).",
            ["endpoint"],
            registry=self.registry,
        )
        self.spooled = Counter(
            "closedloop_collector_records_spooled",
            "Records written to the on-disk spool because the broker was unreachable.",
            registry=self.registry,
        )
        self.replayed = Counter(
            "closedloop_collector_records_replayed",
            "Spooled records published after the broker came back.",
            registry=self.registry,
        )
        self.spool_bytes = Gauge(
            "closedloop_collector_spool_bytes", "Bytes waiting in the spool.", ["worker"], registry=self.registry
        ).labels(worker)
        self.publish_seconds = Histogram(
            "closedloop_collector_publish_seconds",
            "From handing a request's records to the producer to the broker's ack (or the spool's fsync).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
