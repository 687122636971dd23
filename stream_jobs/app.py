"""The Faust app factory: ``create_app(settings)`` builds the worker's app with its agents, tables and web pages.

Configuration, and why
    - ``processing_guarantee``: ``at_least_once`` by default (``CLOSEDLOOP_PROCESSING_GUARANTEE``). We tried
      ``exactly_once`` on the embedded broker (noida-db 0.2.3): transactions work in a steady state (a probe
      consumed ``read_committed`` saw every record once, the journey test passes), but restarts go wrong. The
      highwater -1 a restarted worker reported on every changelog was Faust's (a last-stable-offset cache read
      before any fetch: recovery skipped, tables empty; fixed by ``faust_fixes``). With that fixed, a worker
      restarted after a SIGKILL now reads the real highwaters but its recovery stalls ("need offset 8, have
      offset -1" on every changelog partition, the SIGKILL test of tests/test_worker.py run with
      ``exactly_once`` never drains): no record before the dead producer's aborted transaction reaches Faust's
      recovery, whose aborted-transaction detection is itself broken in 0.15.3. noida-db fences correctly in a
      probe (an open transaction holds the last stable offset back and is aborted when its transactional id
      starts again or the broker restarts). Crash recovery matters more than transactions here, because every
      output is idempotent downstream (stable ``touch_id`` / ``conversion_id``, ``version``) and every state
      transition is replay-safe: the visitors
      table records the last applied offset and skips redelivered records (sessionisation is order-dependent);
      leads and contacts merge by id with earliest-wins rules, so a replay changes nothing. Counters may count a
      conversion twice after a crash (they are a live view, not a report). ``exactly_once`` stays selectable
      (tests/test_recovery.py runs a graceful worker and broker restart under both guarantees), but is not
      recommended with Faust 0.15.3 until its crash recovery is shown to work.
    - ``store="memory://"``: tables live in memory and are rebuilt from their changelog topics at start. No
      RocksDB dependency; recovery reads the compacted changelogs (see bench/worker.md for the time it takes).
    - ``faust_fixes.install()``: four Faust 0.15.3 faults lost table state or input records across restarts
      (recovery skipped under ``exactly_once``; queued changelog writes dropped at a commit or a stop; records
      cleared after the end-of-rebalance seek; records taken for partitions not asked for); see that module and
      docs/STREAMS.md, "Restarts and recovery".
    - ``topic_allow_declare=False``, ``topic_disable_leader=True``: the worker creates no topic itself; every
      topic comes from ``schemas.topics`` or ``stream_jobs.topology.internal_topics`` and exists before start.
    - Keys and values are raw bytes on every topic: the agents decode with ``schemas.serde`` themselves, so a bad
      record becomes a dead letter instead of an agent crash.
    - Dynamic group membership (no ``consumer_group_instance_id``): a restarted worker joins with a new member id,
      and Kafka evicts a SIGKILLed one after ``broker_session_timeout`` (10 s), so a restart after a crash waits
      at most that long for its partitions; a stopped worker leaves the group at once. Static membership was
      needed only for the embedded noida-db, which never evicted a dead member (docs/STREAMS.md).
    - ``consumer_auto_offset_reset="earliest"``: a new worker group reads its topics from the beginning.
    - Fetches as aiokafka makes them: Kafka holds a fetch that finds nothing new for up to Faust's 1.5 s fetch
      wait, so an idle worker costs about 0.5% of a core (the client-side back-off written for noida-db, which
      answered at once, is gone; docs/STREAMS.md).
    - ``producer_linger=0.005``, ``producer_max_batch_size=512 KiB``: aiokafka keeps one produce request in flight
      per broker, and a full batch makes ``send`` wait until it is drained; with the 16 KiB default a busy
      partition (visitors changelog, credits) filled its batch long before the request came back, and the agents
      waited. Bigger batches, gathered for 5 ms, also mean fewer requests for the broker (bench/worker.md).
"""

from __future__ import annotations

from typing import Any

import faust

from stream_jobs import faust_fixes
from stream_jobs.channels import ChannelRules
from stream_jobs.settings import WorkerSettings
from stream_jobs.topology import internal_topics

__all__ = ["changelog_topics", "create_app"]


def _broker_urls(servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in servers.split(",") if server.strip()]


def create_app(settings: WorkerSettings, rules: ChannelRules | None = None) -> Any:
    """A Faust app for these settings, with the pipeline's agents attached (``app.pipeline``)."""
    from stream_jobs.agents import Pipeline

    faust_fixes.install()
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
        table_standby_replicas=0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        autodiscover=False,
        producer_linger=0.005,
        producer_max_batch_size=512 * 1024,
    )
    app.pipeline = Pipeline(app, settings, rules)
    return app


def changelog_topics(settings: WorkerSettings) -> list[str]:
    """Names of the worker's internal topics (alias kept for ARCHITECTURE.md; see ``topology.internal_topics``)."""
    return [spec.name for spec in internal_topics(settings)]
