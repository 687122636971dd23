"""A private embedded Apache Kafka (one node or a three-node cluster) that a test can stop, SIGKILL and restart by
PID on the same ports and data: the same launcher as ``closedloop up`` (``deploy.stack``), in the test's own
temporary directory."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from deploy import stack
from deploy.processes import process_cmdline, wait_until
from deploy.settings import private_stack_settings


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

    def _process(self, node_id: int) -> stack.EmbeddedService:
        return next(p for p in stack.embedded_processes(self.settings, "kafka") if p.node and p.node.node_id == node_id)
