"""Appending a record straight to aiokafka's batch for a known partition.

The collector computes each record's partition itself (murmur2 of the key, as every default partitioner does), so
``AIOKafkaProducer.send``'s per-call work (a metadata check that builds a new set of partition ids, serializers,
the partitioner, transaction state) applies to nothing; the accumulator's ``add_message`` is where ``send`` ends
(bench/collector.md measures the difference). Checked on aiokafka 0.14; ``pyproject.toml`` pins it below 0.15.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

__all__ = ["append_to_batch"]


async def append_to_batch(
    producer: AIOKafkaProducer, tp: TopicPartition, key: bytes, value: bytes, timeout_s: float
) -> asyncio.Future[Any]:
    """Queue one record on ``tp``'s open batch; the future resolves with its acknowledgement."""
    future: asyncio.Future[Any] = await producer._message_accumulator.add_message(tp, key, value, timeout_s)
    return future
