"""Appending records straight to aiokafka's open batch for a known partition, many at a time.

The collector computes each record's partition itself (murmur2 of the key, as every default partitioner does), so
``AIOKafkaProducer.send``'s per-call work (a metadata check that builds a new set of partition ids, serializers,
the partitioner, transaction state) applies to nothing; the accumulator's ``add_message`` is where ``send`` ends.
A request's records for one partition go in together (:func:`append_records`): the first through
``add_message``, which opens a batch when there is none, checks that the producer is open and waits when the
batch is full, and the rest straight into that batch's builder, with one future for the whole batch instead of
a coroutine, a future and an offset record per record (bench/collector.md measures the difference). The public
batch API (``create_batch``/``send_batch``) does not fit: ``send_batch`` waits until the partition's previous
batch is drained, so every request would become a produce request of its own.

aiokafka compresses every lz4 batch at level 9 (LZ4 HC, ``aiokafka.codec.lz4_encode``) and offers no setting for
it; :func:`compress_lz4_fast` makes the record batch builders use lz4's fast mode, the same frame format. Checked
on aiokafka 0.14; ``pyproject.toml`` pins it below 0.15.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import cramjam
from aiokafka import AIOKafkaProducer
from aiokafka.record import default_records
from aiokafka.structs import TopicPartition

try:  # the compiled builder aiokafka uses when its extensions are built (they are in its wheels)
    from aiokafka.record._crecords import default_records as compiled_default_records
except ImportError:  # pragma: no cover - a pure-Python aiokafka
    compiled_default_records = None

__all__ = ["append_records", "append_to_batch", "compress_lz4_fast", "lz4_encode_fast"]


async def append_to_batch(
    producer: AIOKafkaProducer, tp: TopicPartition, key: bytes, value: bytes, timeout_s: float
) -> asyncio.Future[Any]:
    """Queue one record on ``tp``'s open batch; the future resolves with its acknowledgement."""
    future: asyncio.Future[Any] = await producer._message_accumulator.add_message(tp, key, value, timeout_s)
    return future


_NO_HEADERS: list[tuple[str, bytes]] = []  # read, never changed (the compiled builder takes a list only)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def append_records(
    producer: AIOKafkaProducer,
    tp: TopicPartition,
    records: Sequence[tuple[bytes | None, bytes]],
    timeout_s: float,
    timestamp_ms: int,
    spans: list[tuple[int, asyncio.Future[Any]]],
) -> None:
    """Queue ``(key, value)`` records on ``tp``'s open batches, in order, all with ``timestamp_ms``.

    For each batch the records went to, ``spans`` gets ``(end, future)``: records ``[previous end, end)`` are in
    that batch, and ``future`` resolves when the broker acknowledges it (or fails with the batch). ``spans`` is
    filled as the records are handed over, so when this raises (a closed or failed producer, a full batch not
    drained within ``timeout_s``) it holds exactly the records that were: the caller spools the others.
    """
    accumulator = producer._message_accumulator
    count = len(records)
    index = 0
    while index < count:
        key, value = records[index]
        # add_message opens a batch if needed, raises when the producer is closed or failed, and waits (up to
        # timeout_s) when the open batch is full; it returns right after appending, with no await in between,
        # so the partition's last batch is the one holding this record.
        first = await accumulator.add_message(tp, key, value, timeout_s, timestamp_ms=timestamp_ms)
        first.add_done_callback(_retrieve)  # the batch's future reports the outcome; this one is never awaited
        batch = accumulator._batches[tp][-1]
        builder = batch._builder
        index += 1
        while index < count:
            key, value = records[index]
            if builder.append(timestamp=timestamp_ms, key=key, value=value, headers=_NO_HEADERS) is None:
                break  # the batch is full (and now closed): the next add_message waits for it to drain
            index += 1
        spans.append((index, batch.future))


def lz4_encode_fast(payload: Any) -> bytes:
    """An lz4 frame as ``aiokafka.codec.lz4_encode`` writes it (independent blocks, no content checksum: what
    Kafka reads), compressed in lz4's fast mode (level 0) instead of LZ4 HC level 9."""
    compressor = cramjam.lz4.Compressor(level=0, content_checksum=False, block_linked=False)
    compressor.compress(payload)
    return bytes(compressor.finish())


def compress_lz4_fast() -> None:
    """Every aiokafka producer of this process compresses lz4 batches in the fast mode from now on.

    LZ4 HC at level 9 cost the collector 6-12 us of CPU a record, on the event loop that answers the requests;
    the fast mode about 0.3-1, for batches 12-25% larger (bench/collector.md, 2026-12-06). The record batch
    builders look the function up in their module when they build a batch, so replacing it there is enough.
    """
    default_records.lz4_encode = lz4_encode_fast
    if compiled_default_records is not None:
        compiled_default_records.lz4_encode = lz4_encode_fast
