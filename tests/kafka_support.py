"""A private embedded Apache Kafka (one node or a three-node cluster) that a test can stop, SIGKILL and restart by
PID on the same ports and data: the same launcher as ``closedloop up`` (``deploy.stack``), in the test's own
temporary directory."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from deploy import stack
from deploy.daemons import process_cmdline, wait_until
from deploy.settings import private_stack_settings


@dataclass(frozen=True)
class PartitionState:
    """Who leads one partition (-1: nobody) and which nodes are in its in-sync replica set."""

    leader: int
    isr: frozenset[int]


class EmbeddedKafka:
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
        wait_until(lambda: process_cmdline(pid) is None, 30, f"{process.name} to exit")
        process.pid_file.remove()

    def kill_all(self) -> None:
        """SIGKILL every running node (a fast teardown for a cluster whose data is thrown away)."""
        for node_id in self.running_nodes():
            self.kill(node_id)

    def running_nodes(self) -> list[int]:
        """Ids of the nodes whose process runs (a killed one is left out until ``start()``)."""
        return [p.node.node_id for p in stack.embedded_processes(self.settings, "kafka")
                if p.node and p.pid_file.running_pid() is not None]

    def partitions(self, topic: str, timeout: float = 10.0, attempts: int = 6) -> dict[int, PartitionState]:
        """Partition -> leader and ISR of ``topic``, as the running nodes report them. Until the cluster fences a
        killed node, the metadata still lists it and a request may go its way: then another attempt is made."""
        from kafka.admin import KafkaAdminClient
        from kafka.errors import KafkaError

        error: Exception | None = None
        for attempt in range(attempts):
            live = [self._process(node_id).node.bootstrap for node_id in self.running_nodes()]
            try:
                admin = KafkaAdminClient(bootstrap_servers=live[attempt % len(live):] + live[:attempt % len(live)],
                                         request_timeout_ms=int(timeout * 1000),
                                         bootstrap_timeout_ms=int(timeout * 1000),
                                         client_id="closedloop-test-leaders")
                try:
                    [described] = admin.describe_topics([topic])
                finally:
                    admin.close()
            except (KafkaError, OSError) as failure:
                error = failure
                continue
            return {p["partition_index"]: PartitionState(p["leader_id"], frozenset(p["isr_nodes"]))
                    for p in described["partitions"]}
        raise AssertionError(f"no running node described {topic} in {attempts} attempts: {error!r}")

    def _process(self, node_id: int) -> stack.EmbeddedService:
        return next(p for p in stack.embedded_processes(self.settings, "kafka") if p.node and p.node.node_id == node_id)
