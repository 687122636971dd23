"""How the agents put records on their output topics: straight into the Kafka producer, credits in batches.

Faust's ``Topic.send`` does a lot of Python per record, and the worker sends several output records per input event
(one per credit), so with ``at_least_once`` the agents hand records to the app's aiokafka producer directly
(figures in bench/worker.md):

- :meth:`Outputs.send`: one record, keyed, default partitioner (the same partition Faust would choose);
- :meth:`Outputs.send_all`: many records with one key (the credits of one conversion, keyed by its id): the
  partition is computed once and each record appended to the partition's open producer batch. Still one record
  per credit on the topic, each with its key, so consumers see exactly what ``Topic.send`` would have produced.
  (Not aiokafka's ``send_batch``: it waits for the partition's pending batch, a round trip per conversion.)

Guarantee: unchanged. Faust's ``at_least_once`` commit awaits ``app.producer.flush()``, which flushes this same
aiokafka producer, so an input offset is committed only after the records it produced were acknowledged.
Values are queued before the agent writes its table, so a changelog never gets ahead of what was sent.

``exactly_once`` sends must go through Faust's per-partition transactional producers, so in that mode both
methods fall back to ``Topic.send``, record by record.

Serialization: :func:`record_bytes` gives the bytes of ``schemas.serde.dumps`` (pydantic-core's ``to_json`` of the
model writes the same JSON as orjson of ``model_dump(mode="json")``, faster; a unit test checks they agree).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
        self._topics: dict[str, Any] = {}

    def _faust_topic(self, topic: str) -> Any:
        if topic not in self._topics:
            self._topics[topic] = self.app.topic(topic)
        return self._topics[topic]

    def _producer(self) -> Any:
        return faust_internals.aiokafka_producer(self.app)

    async def send(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Queue one record (returns once it is in the producer's buffer, not when it is acknowledged); a None
        value is a tombstone."""
        if self.transactional:
            await self._faust_topic(topic).send(key=key, value=value)
            return
        await self._producer().send(topic, value, key=key)

    async def send_all(self, topic: str, key: bytes, values: Sequence[bytes]) -> None:
        """Queue several records with the same key, in order, as few producer batches as their size allows."""
        if not values:
            return
        if self.transactional:
            faust_topic = self._faust_topic(topic)
            for value in values:
                await faust_topic.send(key=key, value=value)
            return
        producer = self._producer()
        # key_partition reads the producer's metadata without fetching it: ask for the topic first (a no-op once
        # known). A Kafka broker answers metadata for the topics asked, so the credits topic is unknown until then.
        await producer.partitions_for(topic)
        partition = self.app.producer.key_partition(topic, key).partition
        for value in values:
            await producer.send(topic, value, key=key, partition=partition)
