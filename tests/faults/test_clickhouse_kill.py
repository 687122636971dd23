"""The ClickHouse endpoint SIGKILLed under sink load and restarted: page views keep arriving in the events topic
while the chDB server the sink writes to is killed (an insert may be cut off half way) and started again on the
same data directory.

The sink retries the batch it holds with back-off and commits no offset past what ClickHouse has taken, so when
the endpoint is back every page view the broker acknowledged is in ClickHouse exactly once: an insert that
landed before the kill and is written again after it collapses onto the same event ids (the check reads
``events FINAL``: ``count()`` and ``uniqExact(event_id)`` both equal the acknowledged count).
"""

from __future__ import annotations

import time

import pytest
from harness import EmbeddedClickHouse, wait_for

from deploy.topics import create_topics
from sinks.migrate import migrate_up
from sinks.settings import SinkSettings

from .support import EventProducer, RunningSink, check_events_exact, query, report_facts

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.clickhouse]


def test_clickhouse_endpoint_killed_under_sink_load_loses_and_doubles_nothing(
    kafka_bootstrap, unique_name, tmp_path
) -> None:
    endpoint = EmbeddedClickHouse(tmp_path / "clickhouse").start()
    sink: RunningSink | None = None
    try:
        settings = SinkSettings(
            kafka_bootstrap_servers=kafka_bootstrap,
            clickhouse_url=f"{endpoint.url}/{unique_name}",
            topic_prefix=unique_name,
            partitions=4,
            sink_consumer_group=f"{unique_name}-sink",
            sink_batch_seconds=0.5,
            sink_retry_initial_seconds=0.1,
            sink_retry_max_seconds=1.0,
            clickhouse_connect_timeout=1.0,
            clickhouse_query_timeout=15.0,
        )
        create_topics(settings)
        migrate_up(settings)
        sink = RunningSink(settings)
        metrics = sink.writer.metrics
        with EventProducer(settings, per_second=300, max_seconds=120) as producer:
            wait_for(
                lambda: sink.check() or query(settings, "SELECT count() FROM events")[0][0] >= 1500,
                60,
                "the sink's first 1500 rows",
                interval=0.5,
            )
            endpoint.kill()
            killed_at = time.monotonic()
            retries = metrics.retries
            wait_for(
                lambda: sink.check() or metrics.retries >= retries + 3,
                60,
                lambda: f"the sink to retry against the killed endpoint (metrics {vars(metrics)})",
            )
            acknowledged = len(producer.acknowledged)
            wait_for(lambda: len(producer.acknowledged) >= acknowledged + 600, 30, "600 more page views, endpoint down")
            endpoint.start()
            restarted_at = time.monotonic()
            acknowledged = len(producer.acknowledged)
            wait_for(lambda: len(producer.acknowledged) >= acknowledged + 600, 30, "600 more after the restart")
            accepted = producer.stop()
        raw_rows = check_events_exact(settings, accepted, 90, sink.check)
        sink.stop()
        assert metrics.dead_letters == 0, "the sink dead-lettered page views"
        report_facts(
            "ClickHouse endpoint SIGKILLed and restarted",
            acknowledged_page_views=len(accepted),
            down_s=round(restarted_at - killed_at, 1),
            sink_retries=metrics.retries - retries,
            events_rows_without_final=raw_rows,
        )
    finally:
        if sink is not None:
            sink.stop()
        endpoint.stop()
