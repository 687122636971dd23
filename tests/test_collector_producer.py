"""compat.aiokafka_producer without a broker: a request's records in their partition's open batches, in order,
and the fast lz4 frames Kafka reads like aiokafka's own."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.codec import lz4_decode, lz4_encode
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import TopicPartition

from compat.aiokafka_producer import append_records, lz4_encode_fast

TP = TopicPartition("events", 2)


def records(count: int, size: int = 100) -> list[tuple[bytes | None, bytes]]:
    return [(f"visitor-{i % 7}".encode(), orjson.dumps({"n": i, "pad": "x" * size})) for i in range(count)]


def batches(producer: AIOKafkaProducer) -> list[Any]:
    return list(producer._message_accumulator._batches[TP])


def decoded(batch: Any) -> list[tuple[bytes | None, bytes]]:
    return [(record.key, record.value) for record in DefaultRecordBatch(bytes(batch.get_data_buffer()))]


def test_records_go_into_the_open_batch_in_order_with_one_future_per_batch() -> None:
    async def scenario() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", acks="all", compression_type="lz4")
        first, second = records(30), records(20)
        spans: list[tuple[int, asyncio.Future[Any]]] = []
        await append_records(producer, TP, first, 1.0, 1_700_000_000_000, spans)
        more: list[tuple[int, asyncio.Future[Any]]] = []
        await append_records(producer, TP, second, 1.0, 1_700_000_000_001, more)
        [batch] = batches(producer)
        assert [end for end, _ in spans] == [30] and [end for end, _ in more] == [20]
        assert spans[0][1] is more[0][1] is batch.future  # one open batch: both requests wait for its ack
        assert decoded(batch) == first + second
        await producer.stop()

    asyncio.run(scenario())


def test_a_full_batch_closes_and_the_rest_goes_into_the_next_one() -> None:
    async def scenario() -> None:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", max_batch_size=4096)
        sent = records(60, size=200)
        spans: list[tuple[int, asyncio.Future[Any]]] = []
        accumulator = producer._message_accumulator

        async def drain_when_full() -> None:  # the sender's part: take the full batch so the next one can open
            while len(spans) == 0 or spans[-1][0] < len(sent):
                for batch in list(accumulator._batches.get(TP, ())):
                    if batch._builder.closed():
                        accumulator._pop_batch(TP)
                        drained.append(batch)
                await asyncio.sleep(0.001)

        drained: list[Any] = []
        drainer = asyncio.create_task(drain_when_full())
        await asyncio.wait_for(append_records(producer, TP, sent, 5.0, 1_700_000_000_000, spans), 5)
        await asyncio.wait_for(drainer, 5)
        ends = [end for end, _ in spans]
        assert len(ends) > 1 and ends == sorted(ends) and ends[-1] == len(sent)
        got = [record for batch in [*drained, *batches(producer)] for record in decoded(batch)]
        assert got == sent
        assert [future for _, future in spans] == [batch.future for batch in [*drained, *batches(producer)]]
        await producer.stop()

    asyncio.run(scenario())


def test_the_fast_lz4_frame_is_aiokafkas_frame_at_another_level() -> None:
    payload = b"".join(value for _, value in records(200))
    fast, slow = lz4_encode_fast(payload), lz4_encode(payload)
    assert lz4_decode(fast) == payload
    assert fast[:6] == slow[:6]  # magic number, then the same FLG (independent blocks, no checksum) and BD bytes
    assert len(fast) < len(payload) / 3
