"""Under exactly_once an output goes to the transaction of the partition its source event came from: the one
Faust's commit ends with that partition's offset (docs/STREAMS.md, "The exactly_once stall of December 2026")."""

from __future__ import annotations

import asyncio
import weakref
from types import SimpleNamespace

import pytest
from faust import streams as faust_streams
from faust.types import TP

from stream_jobs.runtime.outputs import Outputs


class _Event:
    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(tp=TP(topic, partition), topic=topic, partition=partition)


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    async def send(self, topic, key, value, partition, timestamp, headers, *, transactional_id=None):
        self.sent.append((topic, key, value, partition, transactional_id))


def _app(producer: _Producer) -> SimpleNamespace:
    groups = {"p.events": 0, "p.lead-events": 0, "p.crm": 1}
    return SimpleNamespace(
        conf=SimpleNamespace(id="p-worker"),
        assignor=SimpleNamespace(group_for_topic=groups.__getitem__),
        consumer=SimpleNamespace(transactions=SimpleNamespace(producer=producer)),
    )


def _in_event(event: _Event, coro):
    async def run():
        faust_streams._current_event.set(weakref.ref(event))
        return await coro

    return asyncio.run(run())


def test_an_output_goes_to_the_transaction_of_its_source_partition_not_its_destination():
    producer = _Producer()
    outputs = Outputs(_app(producer), transactional=True)
    event = _Event("p.events", 1)
    _in_event(event, outputs.send("p.lead-events", b"lead-on-partition-0", b"{}"))
    _in_event(event, outputs.send("p.conversions", b"lead", b"1"))
    _in_event(_Event("p.crm", 0), outputs.send("p.dead-letters", None, b"x"))
    assert producer.sent == [
        ("p.lead-events", b"lead-on-partition-0", b"{}", None, "p-worker-0-1"),
        ("p.conversions", b"lead", b"1", None, "p-worker-0-1"),
        ("p.dead-letters", None, b"x", None, "p-worker-1-0"),
    ]


def test_an_exactly_once_output_without_a_current_event_is_refused():
    producer = _Producer()
    outputs = Outputs(_app(producer), transactional=True)
    with pytest.raises(RuntimeError, match="outside an agent's event"):
        asyncio.run(outputs.send("p.lead-events", b"k", b"v"))
    assert producer.sent == []
