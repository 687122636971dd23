"""Reads of faust-streaming's and aiokafka's private state: the worker's diagnostics page and its output producer.

Read-only: nothing here changes how Faust or aiokafka behave (that is ``compat.faust_patches``). Checked on
faust-streaming 0.15.3 and aiokafka 0.14 (``pyproject.toml`` pins both below their next minor); on another
version a missing attribute raises ``AttributeError``/``KeyError``, which ``GET /diagnostics/`` turns into a 503.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["aiokafka_producer", "consumer_thread_loop", "worker_state"]


def aiokafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's (Faust starts it before any agent runs): records sent on it skip
    Faust's per-record topic and future bookkeeping."""
    return app.producer._ensure_producer()


def consumer_thread_loop(app: Any) -> asyncio.AbstractEventLoop | None:
    """The event loop of the thread Faust runs its Kafka consumer in."""
    return getattr(getattr(app.consumer, "_thread", None), "thread_loop", None)


def _tp_name(tp: Any) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _client_partitions(app: Any) -> dict[Any, dict[str, Any]]:
    """The aiokafka consumer's view: fetch position, pause flag, prefetched records per partition."""
    thread = getattr(app.consumer, "_thread", None)
    client = getattr(thread, "_consumer", None)
    if client is None:
        return {}
    views: dict[Any, dict[str, Any]] = {}
    assignment = client._subscription.subscription.assignment if client._subscription.subscription else None
    if assignment is None:
        return {}
    prefetched = getattr(client._fetcher, "_records", {})
    for tp in list(assignment.tps):
        state = assignment.state_value(tp)
        records = prefetched.get(tp)
        views[(tp.topic, tp.partition)] = {
            "position": state._position,
            "client_paused": state.paused,
            "highwater": state.highwater,
            "prefetched": None if records is None else len(getattr(records, "_records", []) or []),
        }
    return views


def _gaps(consumer: Any, tp: Any) -> list[list[int]]:
    tree = consumer._gap.get(tp)
    return sorted([interval.begin, interval.end - 1] for interval in tree) if tree else []


def worker_state(app: Any) -> dict[str, Any]:
    """Faust's flow control and offset bookkeeping per source partition, beside the Kafka client's view of it;
    the stream buffers; the producer buffer. The keys are documented in ``stream_jobs.runtime.diagnostics``."""
    consumer = app.consumer
    active = consumer._active_partitions or set()
    client = _client_partitions(app)
    partitions = {}
    for tp in sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition)):
        if consumer._is_changelog_tp(tp):
            continue
        acked = consumer._acked.get(tp) or []
        partitions[_tp_name(tp)] = {
            "fetching": tp in active,
            "paused": tp in consumer._paused_partitions,
            "buffered": tp in consumer._buffered_partitions,
            "read": consumer._read_offset.get(tp),
            "committed": consumer._committed_offset.get(tp),
            "acked_pending": len(acked),
            "acked_pending_min": min(acked) if acked else None,
            "gaps": _gaps(consumer, tp),
            **client.get((tp.topic, tp.partition), {}),
        }
    streams = {}
    for topic in list(app.topics._topics):
        queue = getattr(topic, "queue", None)
        if queue is not None:
            streams[",".join(topic.topics)] = {"queued": queue.qsize(), "maxsize": queue.maxsize}
    buffer = app.producer.buffer
    return {
        "app": {
            "in_recovery": bool(app.in_recovery),
            "rebalancing": bool(app.rebalancing),
            "flow_control_active": app.flow_control.is_active(),
            "consumer_flow_active": consumer.flow_active,
            "unacked_messages": len(consumer._unacked_messages),
        },
        "partitions": partitions,
        "streams": streams,
        "producer": {"queued": buffer.size, "in_flight": buffer.__dict__.get("_closedloop_in_flight", 0)},
    }
