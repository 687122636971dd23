"""Prometheus metrics of one worker process, served at ``GET /metrics`` on its web port (public, like ``/counters/``:
counts and offsets, nothing about a person).

The figures come from Faust's own monitor (every message read, per topic; every event processed; commit
latency; the offsets it tracks per partition), plus the worker's dead letters and its assigned partitions. Metric
names are documented in docs/OPERATIONS.md (Monitoring) and used by deploy/compose/prometheus/alerts.yml.

``closedloop_worker_partition_lag`` is the partition's end offset minus the offset committed for it, for each
partition this process has fetched records from since it started (Faust learns a partition's end offset from a
fetch, so a partition without records is not listed). On the topics
the worker itself writes in transactions (lead events, contacts; under ``exactly_once``) each transaction also
leaves one commit marker at the end, so an idle partition there reads 1 or 2 rather than 0: alert on sustained
lag in the hundreds, not on any lag.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4"  # aiohttp adds "; charset=utf-8" to a text answer


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items()) + "}"


class _Text:
    """Prometheus' text format: each family's HELP and TYPE once, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, object], float]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{_labels(labels)} {value:g}" for labels, value in samples]

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(monitor: Any, dead_letters: int, assigned: Mapping[str, int]) -> str:
    """The metrics page from Faust's ``app.monitor`` (see the module docstring)."""
    text = _Text()
    received = monitor.messages_received_by_topic or {}
    text.family(
        "closedloop_worker_messages_received_total",
        "counter",
        "Records read from Kafka, per topic.",
        [({"topic": topic}, count) for topic, count in sorted(received.items())],
    )
    text.family(
        "closedloop_worker_events_total", "counter", "Records processed by the agents.", [({}, monitor.events_total)]
    )
    text.family(
        "closedloop_worker_dead_letters_total",
        "counter",
        "Records this process sent to the dead-letter topic since it started.",
        [({}, dead_letters)],
    )
    text.family(
        "closedloop_worker_assigned_partitions",
        "gauge",
        "Partitions this process owns now, per topic (its inputs, and its tables' changelogs).",
        [({"topic": topic}, count) for topic, count in sorted(assigned.items())],
    )
    commits = list(monitor.commit_latency or ())
    text.family(
        "closedloop_worker_commit_latency_seconds_max",
        "gauge",
        "Longest of the recent offset commits (Faust keeps the last few).",
        [({}, max(commits) if commits else 0.0)],
    )
    ends = monitor.tp_end_offsets or {}
    committed = monitor.tp_committed_offsets or {}
    text.family(
        "closedloop_worker_partition_lag",
        "gauge",
        "End offset minus committed offset of each partition this process read (transaction markers count).",
        [
            ({"topic": tp.topic, "partition": tp.partition}, max(0, end - committed.get(tp, 0)))
            for tp, end in sorted(ends.items())
        ],
    )
    return text.render()


def install_web(app: Any, dead_letters: Callable[[], int]) -> None:
    """``GET /metrics`` on the worker's web server."""

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        assigned = Counter(tp.topic for tp in app.assignor.assigned_actives())
        return web.text(render(app.monitor, dead_letters(), assigned), content_type=CONTENT_TYPE)
