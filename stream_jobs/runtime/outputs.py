"""How the agents put records on their output topics: straight into the Kafka producer.

Faust's ``Topic.send`` does a lot of Python per record, so with ``at_least_once`` the agents hand records to the
app's aiokafka producer directly (:meth:`Outputs.send`: one record, keyed, default partitioner, the same partition
Faust would choose; figures in bench/worker.md). Until 2026-12-06 the worker sent one record per credit (about 22
per conversion) and this module batched them per conversion; a conversion now carries its credits in one record
(``schemas.outputs.Conversion``), so there is nothing left to batch.

Guarantee: unchanged. Faust's ``at_least_once`` commit awaits ``app.producer.flush()``, which flushes this same
aiokafka producer, so an input offset is committed only after the records it produced were acknowledged.
Values are queued before the agent writes its table, so a changelog never gets ahead of what was sent.

``exactly_once`` sends must go through Faust's per-partition transactional producers: a record belongs in the
transaction of the *source* partition whose event produced it, because that is the transaction the consumer
commits with that partition's offset (transactional id ``{app id}-{topic group}-{partition}``, faust
``TransactionManager.commit``). Faust's own ``Topic.send`` picks the producer by the partition the record goes
*to* (``TransactionManager.send``), so a lead event for lead-events[0] produced by an event of events[1] went into
the open transaction of ``...-0``, which only a commit of a partition-0 source ever ends: on an idle worker never,
and since read_committed consumers stop at it, the leads agent stalls until the broker aborts the transaction at
its timeout and the record is lost (docs/STREAMS.md, "Processing guarantee"). And for a topic the worker does not
consume (touches, conversions, leads...) Faust finds no partition, so no transactional id, and sends on the
plain producer, outside any transaction.
So in that mode :meth:`Outputs.send` sends each record on the transactional producer of the current event's partition
(:meth:`Outputs._transactional_id`); a send with no current event is an error, not a record in a transaction
nobody commits.

Serialization: :func:`record_bytes` gives the bytes of ``schemas.serde.dumps`` (pydantic-core's ``to_json`` of the
model writes the same JSON as orjson of ``model_dump(mode="json")``, faster; a unit test checks they agree).
"""

from __future__ import annotations

from typing import Any

import faust
from pydantic import BaseModel

from compat import faust_internals

__all__ = ["Outputs", "record_bytes"]


def record_bytes(record: BaseModel) -> bytes:
    """The JSON bytes of a record on a topic: the same bytes as ``schemas.serde.dumps(record)``, faster."""
    return type(record).__pydantic_serializer__.to_json(record)


class Outputs:
    """Sends output records for the agents of one app (see the module docstring)."""

    def __init__(self, app: Any, transactional: bool) -> None:
        self.app = app
        self.transactional = transactional

    def _producer(self) -> Any:
        return faust_internals.aiokafka_producer(self.app)

    def _transactional_id(self) -> str:
        """The transactional id Faust commits the current event's source partition with."""
        event = faust.current_event()
        if event is None:
            raise RuntimeError("an exactly_once output sent outside an agent's event: no transaction would commit it")
        tp = event.message.tp
        return f"{self.app.conf.id}-{self.app.assignor.group_for_topic(tp.topic)}-{tp.partition}"

    async def _send_in_transaction(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        # No partition: aiokafka's default partitioner, the one Faust's would be (the app sets none).
        await self.app.consumer.transactions.producer.send(
            topic, key, value, None, None, None, transactional_id=self._transactional_id()
        )

    async def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Queue one record (returns once it is in the producer's buffer, not when it is acknowledged); a None
        value is a tombstone."""
        if self.transactional:
            await self._send_in_transaction(topic, key, value)
            return
        await self._producer().send(topic, value, key=key)

    async def send_outside_transaction(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None
    ) -> None:
        """Queue one record on the app's plain producer, in no transaction, from anywhere (a timer): only for
        records whose loss or repetition changes nothing (the leads agent's flush reminders, the contacts sweep).
        Inside a transaction no source partition's commit would ever end it (see the module docstring)."""
        await self._producer().send(topic, value, key=key, partition=partition)
