"""Fixtures of the fault suite: ``stack_factory`` (a private broker of one or three nodes, a collector process,
a sink thread, a database of the test's own) and ``sink_database`` (topics on the shared broker and a database on
the shared ClickHouse endpoint, for faults that leave the broker alone)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import EmbeddedKafka

from deploy.stack import clickhouse_request
from deploy.topics import create_topics
from sinks.migrate import migrate_up
from sinks.settings import SinkSettings

from .support import CollectorProcess, RunningSink, Stack


def run_cleanups(cleanups: list[Callable[[], object]]) -> None:
    """Run every cleanup, last first; raise the first failure after all have run."""
    errors = []
    for cleanup in reversed(cleanups):
        try:
            cleanup()
        except Exception as error:  # noqa: BLE001 - every cleanup runs; the first failure is raised
            errors.append(error)
    if errors:
        raise errors[0]


@pytest.fixture
def stack_factory(tmp_path: Path, clickhouse_http_url: str, unique_name: str) -> Iterator[Callable[..., Stack]]:
    """Builds the stack of one test: a private Kafka of ``nodes`` nodes with every pipeline topic, the
    ClickHouse migrations in a database of the test's own, a collector process (``collector_env``: settings of
    its own on top of the suite's) and a sink thread. Everything is stopped (and the database dropped)
    afterwards; ``stack.cleanups`` takes more (a worker the test starts)."""
    cleanups: list[Callable[[], object]] = []

    def build(nodes: int, collector_env: dict[str, str] | None = None) -> Stack:
        broker = EmbeddedKafka(tmp_path / "kafka", nodes=nodes)
        cleanups.append(broker.kill_all)  # its data goes with tmp_path: no controlled shutdown needed
        broker.start()
        settings = SinkSettings(
            kafka_bootstrap_servers=broker.bootstrap,
            replication_factor=nodes,
            clickhouse_url=f"{clickhouse_http_url}/{unique_name}",
            topic_prefix=unique_name,
            sink_consumer_group=f"{unique_name}-sink",
            sink_batch_seconds=0.5,
        )
        create_topics(settings)
        cleanups.append(
            lambda: clickhouse_request(settings.clickhouse, f"DROP DATABASE IF EXISTS `{unique_name}`", timeout=30)
        )
        migrate_up(settings)
        collector = CollectorProcess(tmp_path / "collector", broker.bootstrap, unique_name, collector_env)
        cleanups.append(collector.stop)
        collector.start()
        sink = RunningSink(settings)
        cleanups.append(sink.stop)
        return Stack(broker, settings, collector, sink, cleanups)

    try:
        yield build
    finally:
        run_cleanups(cleanups)
