"""Fixtures and helpers shared by the sink, migration and report tests.

``ch_url`` / ``kafka_servers`` use the shared session fixtures of ``tests/conftest.py``
(``clickhouse_http_url`` / ``kafka_bootstrap``) when they exist, else start the embedded services themselves
(stopped by PID at the end of the session).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clickhouse_endpoint.server import start_server_process, wait_until_ready
from deploy.daemons import free_port
from kafka_support import EmbeddedKafka


def unique(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll ``condition`` until it returns a truthy value; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


class ClickHouseProcess:
    """An embedded ClickHouse endpoint we own: started and stopped by PID (for the outage test)."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path, self.port = path, port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """With the password the endpoint keeps in its data directory (made at its first start)."""
        password = (self.path / "password").read_text().strip()
        return f"http://default:{password}@127.0.0.1:{self.port}"

    def start(self) -> "ClickHouseProcess":
        self.process = start_server_process(str(self.path), self.port)
        wait_until_ready(self.process, self.port, timeout=60)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="session")
def ch_url(request, tmp_path_factory) -> Iterator[str]:
    """``http://user:password@host:port`` of a ClickHouse HTTP endpoint."""
    try:
        yield request.getfixturevalue("clickhouse_http_url")
        return
    except pytest.FixtureLookupError:
        pass
    server = ClickHouseProcess(tmp_path_factory.mktemp("clickhouse") / "data").start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_servers(request, tmp_path_factory) -> Iterator[str]:
    """Bootstrap servers of a Kafka broker."""
    try:
        yield request.getfixturevalue("kafka_bootstrap")
        return
    except pytest.FixtureLookupError:
        pass
    broker = EmbeddedKafka(tmp_path_factory.mktemp("broker")).start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
