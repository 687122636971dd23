"""The Faust app factory: ``create_app(settings)`` builds the worker's app with its agents, tables and web pages.

Configuration, and why
    - ``processing_guarantee``: ``exactly_once`` by default. The embedded broker (noida-db) supports Kafka
      transactions: a probe with a table and an output topic, consumed ``read_committed``, delivered every record
      once, and the restart test (SIGKILL mid-stream) ends with the same credits as an uninterrupted run. With
      exactly_once, a table update, the records it causes and the source offset commit are one transaction, so a
      crash can neither double-count a counter nor lose a changelog write. ``at_least_once`` remains available
      (``CLOSEDLOOP_PROCESSING_GUARANTEE``) for brokers without transactions; outputs are idempotent downstream
      either way (stable ``conversion_id`` / ``touch_id``, ``version``).
    - ``store="memory://"``: tables live in memory and are rebuilt from their changelog topics at start. No
      RocksDB dependency; recovery reads the compacted changelogs (see bench/worker.md for the time it takes).
    - ``topic_allow_declare=False``, ``topic_disable_leader=True``: the worker creates no topic itself; every
      topic comes from ``schemas.topics`` or ``stream_jobs.topology.internal_topics`` and exists before start.
    - Keys and values are raw bytes on every topic: the agents decode with ``schemas.serde`` themselves, so a bad
      record becomes a dead letter instead of an agent crash.
    - ``consumer_auto_offset_reset="earliest"``: a new worker group reads its topics from the beginning.
"""

from __future__ import annotations

from typing import Any

import faust

from stream_jobs.channels import ChannelRules
from stream_jobs.settings import WorkerSettings
from stream_jobs.topology import internal_topics

__all__ = ["changelog_topics", "create_app"]


def _broker_urls(servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in servers.split(",") if server.strip()]


def create_app(settings: WorkerSettings, rules: ChannelRules | None = None) -> Any:
    """A Faust app for these settings, with the pipeline's agents attached (``app.pipeline``)."""
    from stream_jobs.agents import Pipeline

    rules = rules if rules is not None else ChannelRules.from_file(settings.channel_rules_file)
    datadir = settings.data_dir / "worker" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=_broker_urls(settings.kafka_servers),
        store="memory://",
        processing_guarantee=settings.processing_guarantee,
        topic_allow_declare=False,
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        datadir=str(datadir),
        web_enabled=True,
        web_bind=settings.worker_web_host,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        table_standby_replicas=0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        autodiscover=False,
    )
    app.pipeline = Pipeline(app, settings, rules)
    return app


def changelog_topics(settings: WorkerSettings) -> list[str]:
    """Names of the worker's internal topics (alias kept for ARCHITECTURE.md; see ``topology.internal_topics``)."""
    return [spec.name for spec in internal_topics(settings)]
