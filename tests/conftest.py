"""Shared fixtures: the real services the integration tests run against, and fresh names for isolation. They are
built on ``harness.py`` (the launchers, ``wait_for``, ``free_port``, ``unique``), which test files import from.

- ``kafka_bootstrap`` (session): the embedded Apache Kafka (one KRaft node) on free ports in a temporary data
  directory, or ``CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS`` when set (then nothing starts).
- ``clickhouse_http_url`` (session): ``http://default:PASSWORD@127.0.0.1:PORT`` of the embedded chDB endpoint
  started the same way (its data directory's password), or ``CLOSEDLOOP_CLICKHOUSE_URL`` (without its database
  part) when set.
- ``pipeline_settings`` (function): a ``PipelineSettings`` on both services with a unique topic prefix (every
  topic created) and a unique, existing database.
- ``unique_name`` (function): a fresh name usable as a topic prefix, consumer group or database.
- ``own_broker`` (function): a one-node Kafka of the test alone (``harness.EmbeddedKafka``), which it may stop,
  kill and restart.

A service starts only when a selected test asks for it, and stops at the end of the session (``own_broker``: of
the test). Unit tests use none of these. A test that needs another private service (a cluster, an endpoint to
stop) builds it from ``harness.EmbeddedKafka`` / ``harness.EmbeddedClickHouse``.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import EmbeddedClickHouse, EmbeddedKafka, unique

from schemas.settings import PipelineSettings

# pytest-xdist's workers run with COLUMNS=80 and LINES=24 in their environment: the CLI's output would wrap at 80
# columns and a child given its own terminal (the watch view in tmux) would ignore that terminal's size.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)

KAFKA_ENV = "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS"
CLICKHOUSE_ENV = "CLOSEDLOOP_CLICKHOUSE_URL"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the broker the tests use."""
    external = os.environ.get(KAFKA_ENV)
    if external:
        yield external
        return
    broker = EmbeddedKafka(tmp_path_factory.mktemp("kafka-stack"))
    try:
        yield broker.start().bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def clickhouse_http_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://[user:password@]host:port`` of the ClickHouse HTTP endpoint the tests use (no database part)."""
    external = os.environ.get(CLICKHOUSE_ENV)
    if external:
        parts = urllib.parse.urlsplit(external)
        yield urllib.parse.urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        return
    endpoint = EmbeddedClickHouse(tmp_path_factory.mktemp("clickhouse-stack"))
    try:
        yield endpoint.start().url
    finally:
        endpoint.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedKafka]:
    """A one-node Kafka in ``tmp_path`` that nothing else uses: the test may stop, kill and restart it."""
    broker = EmbeddedKafka(tmp_path / "own-broker")
    try:
        yield broker.start()
    finally:
        broker.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A fresh name from the test's own name plus random hex: valid as topic prefix, group id and database."""
    return unique(request.node.name)


@pytest.fixture
def pipeline_settings(
    kafka_bootstrap: str, clickhouse_http_url: str, unique_name: str, tmp_path: Path
) -> Iterator[PipelineSettings]:
    """Settings on the test services with this test's own topics (all created) and database (created, dropped
    afterwards)."""
    from deploy.stack import clickhouse_request
    from deploy.topics import create_topics

    settings = PipelineSettings(
        data_dir=tmp_path / "data",
        kafka_bootstrap_servers=kafka_bootstrap,
        clickhouse_url=f"{clickhouse_http_url}/{unique_name}",
        topic_prefix=unique_name,
    )
    create_topics(settings)
    clickhouse_request(settings.clickhouse, f"CREATE DATABASE IF NOT EXISTS `{unique_name}`", timeout=30)
    yield settings
    try:
        clickhouse_request(settings.clickhouse, f"DROP DATABASE IF EXISTS `{unique_name}`", timeout=30)
    except OSError:
        pass  # the endpoint is going away with the session; the temporary directory goes with it
