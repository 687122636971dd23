"""The Faust app factory: ``create_app(settings)`` builds the worker's app with its agents, tables and web pages.

Configuration, and why
    - ``processing_guarantee``: ``exactly_once`` by default (``CLOSEDLOOP_PROCESSING_GUARANTEE``): outputs, table
      writes and source offsets in one Kafka transaction per source partition (its SIGKILL restart series passed 20
      of 20 on 2026-12-06; docs/STREAMS.md). ``at_least_once`` stays selectable and costs less (bench/worker.md):
      every output is idempotent downstream (stable ``touch_id`` / ``conversion_id``, ``version``), so a replay
      changes nothing but the live counters.
    - ``store``: RocksDB by default (``CLOSEDLOOP_WORKER_STORE=rocksdb``; ``compat.faust_rocksdb``, which writes
      a table's state to disk only once the commit that makes it durable in Kafka succeeded): state larger than
      memory, and a restart reads its files and only the changelog records written since. ``memory`` rebuilds
      every table from its changelog at each start. The live counters stay in memory either way (small, and
      windowed tables expire keys outside of any event, which the RocksDB store cannot place).
    - ``datadir``: one per process, ``<data dir>/worker/<app id>/<web port>`` (``WorkerSettings.state_dir``):
      RocksDB locks its files, so two processes on one machine must not share one.
    - ``faust_patches.install()``: six Faust 0.15.3 faults lost table state or input records across restarts
      (recovery skipped under ``exactly_once``; queued changelog writes dropped at a commit or a stop; records
      cleared after the end-of-rebalance seek; records taken for partitions not asked for); see that module and
      docs/STREAMS.md, "Restarts and recovery".
    - ``topic_allow_declare=False``, ``topic_disable_leader=True``: the worker creates no topic itself; every
      topic comes from ``schemas.topics`` or ``stream_jobs.runtime.topology.internal_topics`` and exists before start.
    - Keys and values are raw bytes on every topic: the agents decode with ``schemas.serde`` themselves, so a bad
      record becomes a dead letter instead of an agent crash.
    - Dynamic group membership (no ``consumer_group_instance_id``): a restarted worker joins with a new member id,
      and Kafka evicts a SIGKILLed one after ``broker_session_timeout`` (10 s), so a restart after a crash waits
      at most that long for its partitions; a stopped worker leaves the group at once (docs/STREAMS.md).
    - ``consumer_auto_offset_reset="earliest"``: a new worker group reads its topics from the beginning.
    - Fetches as aiokafka makes them: Kafka holds a fetch that finds nothing new for up to Faust's 1.5 s fetch
      wait, so an idle worker costs about 0.5% of a core (docs/STREAMS.md).
    - The web server serves our pages only: ``/counters/``, ``/metrics`` (Prometheus, ``metrics``) and Faust's
      index ``/`` (``{"status": "OK"}``, the health check) to anyone, ``/diagnostics/`` with the data directory's
      password (``diagnostics``). Faust's own
      pages are off: ``/table/<name>/<key>/`` handed out table data (and answered 500 for ``ContactState``,
      which JSON cannot serialize), ``/router/`` the cluster's layout; ``@table_route`` is not used, so nothing
      needs the router. Anything else answers 404.
    - ``producer_linger=0.005``, ``producer_max_batch_size=512 KiB``: aiokafka keeps one produce request in flight
      per broker, and a full batch makes ``send`` wait until it is drained; with the 16 KiB default a busy
      partition (visitors changelog, credits) filled its batch long before the request came back, and the agents
      waited. Bigger batches, gathered for 5 ms, also mean fewer requests for the broker (bench/worker.md).
"""

from __future__ import annotations

from typing import Any

import faust

from compat import faust_patches, faust_rocksdb
from schemas.kafka_security import faust_security
from stream_jobs.rules.channels import ChannelRules
from stream_jobs.runtime.topology import internal_topics
from stream_jobs.settings import WorkerSettings

__all__ = ["changelog_topics", "create_app"]


def _broker_urls(servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in servers.split(",") if server.strip()]


def create_app(settings: WorkerSettings, rules: ChannelRules | None = None) -> Any:
    """A Faust app for these settings, with the pipeline's agents attached (``app.pipeline``)."""
    from stream_jobs.runtime.agents import Pipeline

    faust_patches.install()
    faust_rocksdb.install()
    rules = rules if rules is not None else ChannelRules.from_file(settings.channel_rules_file)
    settings.ensure_data_dir()
    datadir = settings.state_dir
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=_broker_urls(settings.kafka_servers),
        store=faust_rocksdb.STORE_URL if settings.worker_store == "rocksdb" else "memory://",
        processing_guarantee=settings.processing_guarantee,
        topic_allow_declare=False,
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        topic_replication_factor=max(1, settings.topic_replication_factor),
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        datadir=str(datadir),
        web_enabled=True,
        web_bind=settings.worker_web_host,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        table_standby_replicas=0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        autodiscover=False,
        producer_linger=0.005,
        producer_max_batch_size=512 * 1024,
        **faust_security(settings),
    )
    app.pipeline = Pipeline(app, settings, rules)  # type: ignore[attr-defined]  # the agents find their pipeline on the app
    return app


def changelog_topics(settings: WorkerSettings) -> list[str]:
    """Names of the worker's internal topics (alias kept for ARCHITECTURE.md; see ``topology.internal_topics``)."""
    return [spec.name for spec in internal_topics(settings)]
