"""The test harness: the one way tests start a broker or a ClickHouse endpoint, wait for a condition, take a free
port and name what they create. ``conftest.py`` builds the shared session fixtures on it; test files import from
here and define none of their own, so a fix to waiting or isolation reaches every test.

- :func:`wait_for`: poll a condition, fail with what was awaited (never a fixed sleep where a condition can be
  polled).
- :func:`free_port`: a loopback port nobody listens on.
- :func:`unique`: a fresh name for a topic prefix, consumer group, database or session.
- :class:`EmbeddedKafka` / :class:`EmbeddedClickHouse`: a private service in a directory of its own on free ports,
  started with the launcher of ``closedloop up`` (``deploy.stack``), so a test can stop, kill and restart it by PID.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from deploy import stack
from deploy.daemons import free_port, process_cmdline
from deploy.settings import private_stack_settings

__all__ = ["EmbeddedClickHouse", "EmbeddedKafka", "PartitionState", "free_port", "unique", "wait_for"]

T = TypeVar("T")

# free_port is the stack's own (deploy.daemons): the harness re-exports it so tests have one place to look.


def wait_for(condition: Callable[[], T], timeout: float, what: str | Callable[[], str], interval: float = 0.1) -> T:
    """Poll ``condition`` until it returns something truthy, and return that. After ``timeout`` seconds raise
    AssertionError naming ``what`` (a callable is asked only then, e.g. for a log tail) and the last value.

    The condition is asked at least once, and may itself raise to fail at once (a process that died)."""
    deadline = time.monotonic() + timeout
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() >= deadline:
            awaited = what() if callable(what) else what
            seen = "" if last is None or last is False else f" (last: {last!r})"
            raise AssertionError(f"timed out after {timeout:g} s waiting for {awaited}{seen}")
        time.sleep(interval)


def unique(stem: str = "t") -> str:
    """``stem`` plus random hex, valid as a Kafka topic prefix, consumer group, ClickHouse database or tmux session:
    lower case, ``[a-z0-9_]`` only, at most 24 characters of stem, never starting with a digit."""
    stem = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")[:24] or "t"
    if stem[0].isdigit():
        stem = f"t_{stem}"
    return f"{stem}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class PartitionState:
    """Who leads one partition (-1: nobody) and which nodes are in its in-sync replica set."""

    leader: int
    isr: frozenset[int]


class EmbeddedKafka:
    """A private Apache Kafka (one node or a three-node cluster) in ``root``: stop, SIGKILL and restart by PID on
    the same ports and data."""

    def __init__(self, root: Path, nodes: int = 1) -> None:
        self.settings = private_stack_settings(root, kafka_brokers=nodes)

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_servers

    def start(self) -> EmbeddedKafka:
        """Start every node that does not run (all of them at first, a killed one later); wait until each
        answers and sees the whole cluster."""
        stack.start_service(self.settings, "kafka", die_with_parent=True)
        return self

    def stop(self) -> None:
        """Controlled shutdown of every node (SIGTERM, then SIGKILL after the stop timeout)."""
        stack.down(self.settings, services=["kafka"])

    def pid(self, node_id: int = 1) -> int:
        process = self._process(node_id)
        pid = process.pid_file.running_pid()
        assert pid is not None, f"{process.name} does not run"
        return pid

    def kill(self, node_id: int = 1) -> None:
        """SIGKILL one node, as a crash would, and wait until it is gone."""
        process = self._process(node_id)
        pid = self.pid(node_id)
        os.kill(pid, signal.SIGKILL)
        stack._children.pop(pid).wait(timeout=30)
        wait_for(lambda: process_cmdline(pid) is None, 30, f"{process.name} to exit")
        process.pid_file.remove()

    def kill_all(self) -> None:
        """SIGKILL every running node (a fast teardown for a cluster whose data is thrown away)."""
        for node_id in self.running_nodes():
            self.kill(node_id)

    def running_nodes(self) -> list[int]:
        """Ids of the nodes whose process runs (a killed one is left out until ``start()``)."""
        return [
            p.node.node_id
            for p in stack.embedded_processes(self.settings, "kafka")
            if p.node and p.pid_file.running_pid() is not None
        ]

    def partitions(self, topic: str, timeout: float = 10.0, retry_for: float = 30.0) -> dict[int, PartitionState]:
        """Partition -> leader and ISR of ``topic``, as the running nodes report them. Until the cluster fences a
        killed node (its broker session, 9 s, runs out), the metadata still lists it and a request may go its
        way: then another attempt is made, every half second for up to ``retry_for`` seconds. (Six attempts in a
        row without a pause all came within that window: one run of three failed on the killed node.)"""
        from kafka.admin import KafkaAdminClient
        from kafka.errors import KafkaError

        error: Exception | None = None
        deadline = time.monotonic() + retry_for
        attempt = 0
        while attempt == 0 or time.monotonic() < deadline:
            live = [self._process(node_id).node.bootstrap for node_id in self.running_nodes()]
            attempt += 1
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=live[attempt % len(live) :] + live[: attempt % len(live)],
                    request_timeout_ms=int(timeout * 1000),
                    bootstrap_timeout_ms=int(timeout * 1000),
                    client_id="closedloop-test-leaders",
                )
                try:
                    [described] = admin.describe_topics([topic])
                finally:
                    admin.close()
            except (KafkaError, OSError) as failure:
                error = failure
                time.sleep(0.5)  # a pause between attempts: the cluster fences the node in its own time
                continue
            return {
                p["partition_index"]: PartitionState(p["leader_id"], frozenset(p["isr_nodes"]))
                for p in described["partitions"]
            }
        raise AssertionError(f"no running node described {topic} in {attempt} attempts over {retry_for:g} s: {error!r}")

    def _process(self, node_id: int) -> stack.EmbeddedService:
        return next(p for p in stack.embedded_processes(self.settings, "kafka") if p.node and p.node.node_id == node_id)


class EmbeddedClickHouse:
    """A private ClickHouse HTTP endpoint (chDB) in ``root``: stop and restart by PID on the same port and data."""

    def __init__(self, root: Path) -> None:
        self.settings = private_stack_settings(root)

    @property
    def url(self) -> str:
        """``http://default:PASSWORD@127.0.0.1:PORT`` (the data directory's password), without a database part."""
        return self.settings.clickhouse.rsplit("/", 1)[0]

    def start(self) -> EmbeddedClickHouse:
        """Start the endpoint unless it runs; wait until it answers."""
        stack.start_service(self.settings, "clickhouse", die_with_parent=True)
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the stop timeout; the data stays (a no-op when it does not run)."""
        stack.down(self.settings, services=["clickhouse"])

    def kill(self) -> None:
        """SIGKILL the endpoint, as a crash would, and wait until it is gone; the data stays."""
        process = stack.embedded_service(self.settings, "clickhouse")
        pid = process.pid_file.running_pid()
        assert pid is not None, "the ClickHouse endpoint does not run"
        os.kill(pid, signal.SIGKILL)
        stack._children.pop(pid).wait(timeout=30)
        wait_for(lambda: process_cmdline(pid) is None, 30, "the ClickHouse endpoint to exit")
        process.pid_file.remove()
