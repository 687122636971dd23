"""Several sink processes in one consumer group (``closedloop sink --processes N``).

One Python process uses at most one core (record decoding and row conversion are CPU-bound and hold the GIL;
its rows/s are in bench/sink.md), so more throughput needs more processes. Each child runs its own
``SinkWriter`` in the same consumer group: Kafka spreads the partitions over them, and each commits its own
offsets after its own inserts, so the guarantees of one writer (commit after insert, no loss, dead letters,
replays collapse) hold per partition. Partitions are the unit of parallelism: more processes than partitions of
the busiest topic leave some idle.

The parent only starts, watches and stops the children: SIGINT/SIGTERM (or ``stop()``) sets a shared event, each
child flushes and commits its batch and exits. A child that dies is reported and the others are stopped, so a
supervisor sees the failure instead of a silently smaller group.
"""

from __future__ import annotations

import logging
import logging.config
import multiprocessing
import queue
import signal
import threading
from dataclasses import dataclass
from typing import Any

from schemas.logs import LogSettings, logging_config
from sinks.settings import SinkSettings

log = logging.getLogger(__name__)


@dataclass
class GroupResult:
    """What the children reported when they stopped (rows, batches, retries, dead letters summed)."""

    rows: int = 0
    batches: int = 0
    retries: int = 0
    dead_letters: int = 0
    failed: int = 0  # children that exited with an error


def _child(settings_json: str, stop, results, log_config: dict[str, Any]) -> None:
    """One member of the group: run a SinkWriter until the shared stop event is set."""
    from sinks.writer import SinkWriter, tune_gc_for_throughput

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    logging.config.dictConfig(log_config)  # a spawned child starts with no logging set up: the parent's setup
    writer = SinkWriter(SinkSettings.model_validate_json(settings_json))
    tune_gc_for_throughput()
    signal.signal(signal.SIGTERM, lambda *_: writer.stop())

    def stop_when_told() -> None:
        stop.wait()
        writer.stop()

    threading.Thread(target=stop_when_told, daemon=True).start()
    try:
        metrics = writer.run()
    finally:
        writer.close()
    results.put((metrics.total_rows, metrics.batches, metrics.retries, metrics.dead_letters))


class SinkGroup:
    """``processes`` SinkWriter processes of one consumer group; ``run()`` blocks until they stop."""

    def __init__(self, settings: SinkSettings, processes: int, log_config: dict[str, Any] | None = None) -> None:
        """``log_config``: the parent's ``schemas.logs.logging_config``, applied in every child (default: the
        default settings, info as JSON)."""
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.settings = settings
        context = multiprocessing.get_context("spawn")  # no forked kafka/HTTP client state
        self._stop = context.Event()
        self._results = context.Queue()
        log_config = log_config or logging_config(LogSettings())
        self._children = [
            context.Process(
                target=_child,
                args=(settings.model_dump_json(), self._stop, self._results, log_config),
                name=f"closedloop-sink-{i + 1}",
            )
            for i in range(processes)
        ]

    @property
    def pids(self) -> list[int | None]:
        return [child.pid for child in self._children]

    def stop(self) -> None:
        """Ask every child to flush, commit and exit (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> GroupResult:
        """Start the children and wait for them; when one dies the others are stopped too."""
        for child in self._children:
            child.start()
        result = GroupResult()
        running = list(self._children)
        while running:
            for child in list(running):
                child.join(timeout=0.5)
                if child.exitcode is None:
                    continue
                running.remove(child)
                if child.exitcode != 0 and not self._stop.is_set():
                    log.error(
                        "a sink process exited; stopping the others",
                        extra={"child": child.name, "child_pid": child.pid, "exit_code": child.exitcode},
                    )
                    self._stop.set()
                if child.exitcode != 0:
                    result.failed += 1
        for _ in range(len(self._children) - result.failed):
            try:
                rows, batches, retries, dead = self._results.get(timeout=5)
            except queue.Empty:
                break
            result.rows += rows
            result.batches += batches
            result.retries += retries
            result.dead_letters += dead
        return result
