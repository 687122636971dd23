"""compat.kafka_python_fetcher: the compiled record reader yields exactly what kafka-python's own loop yields.

Batches are built with kafka-python's own writer (plain, gzip, lz4; keys, null keys and values, headers; several
batches in one fetch) and read through kafka-python's ``PartitionRecords`` twice: with its own
``_unpack_records`` and with ours. The records, the resume offset and the byte and record counts must be equal.
Transactions (aborted batches, control batches under read_committed) go through kafka-python's unchanged code;
``tests/test_sink.py::test_read_committed_skips_aborted_transactions`` covers them against the broker.
"""

from __future__ import annotations

import struct

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.util import calc_crc32c
from kafka.structs import TopicPartition

from compat import kafka_python_fetcher

TP = TopicPartition("closedloop.touches", 3)
GZIP, LZ4 = 1, 3


def fetch_buffer(batches: list[tuple[int, list[tuple]]], compression: int = 0, timestamp_type: int = 0) -> bytes:
    """Several v2 batches back to back (as a fetch returns them); each batch is (base offset, records)."""
    out = bytearray()
    for base_offset, records in batches:
        builder = DefaultRecordBatchBuilder(
            magic=2,
            compression_type=compression,
            is_transactional=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 24,
        )
        for delta, (key, value, headers) in enumerate(records):
            builder.append(delta, timestamp=1_700_000_000_000 + delta, key=key, value=value, headers=headers)
        data = builder.build()
        struct.pack_into(">q", data, 0, base_offset)
        if timestamp_type:  # LogAppendTime: every record takes the batch's max timestamp
            attributes = struct.unpack_from(">h", data, 21)[0] | 0x08
            struct.pack_into(">h", data, 21, attributes)
            struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
        out += data
    return bytes(out)


def read(buffer: bytes, fetch_offset: int, compiled: bool) -> tuple[list, int, int]:
    """(records, next fetch offset, records read) as kafka-python's fetcher would see them (its bytes-read
    metric is checked apart: ours counts the batches as fetched, kafka-python the decoded records)."""
    if compiled:
        assert kafka_python_fetcher.install()
    else:
        kafka_python_fetcher.uninstall()
    try:
        partition = Fetcher.PartitionRecords(fetch_offset, TP, MemoryRecords(buffer))
        records = partition.take()
        assert partition.bytes_read > 0 and not partition  # drained: the fetcher moves on to the next fetch
        if compiled:
            assert partition.bytes_read == len(buffer)
        return records, partition.next_fetch_offset, partition.records_read
    finally:
        kafka_python_fetcher.uninstall()


RECORDS = [
    (b"visitor-1", b'{"touch_id":"t1"}', []),
    (None, b'{"touch_id":"t2"}', [("trace", b"abc"), ("empty", None)]),
    (b"lead-\xc3\xa9", None, []),  # a tombstone with a non-ASCII key
    (b"", b"", [("k", b"")]),
    (b"visitor-2", b"x" * 5000, []),
]


@pytest.mark.parametrize("compression", [0, GZIP, LZ4], ids=["plain", "gzip", "lz4"])
def test_compiled_reader_yields_what_kafka_python_yields(compression):
    buffer = fetch_buffer([(100, RECORDS), (105, RECORDS[:2]), (107, RECORDS[2:])], compression)
    ours = read(buffer, 100, compiled=True)
    theirs = read(buffer, 100, compiled=False)
    assert [r.offset for r in ours[0]] == list(range(100, 110))
    assert ours == theirs
    assert ours[0][1].key is None and ours[0][1].headers == [("trace", b"abc"), ("empty", None)]
    assert ours[0][2].value is None and ours[0][2].serialized_value_size == -1
    assert ours[1:] == (110, 10)


def test_a_fetch_starting_inside_a_batch_skips_the_records_before_it():
    buffer = fetch_buffer([(100, RECORDS), (105, RECORDS[:2])])
    ours, theirs = read(buffer, 103, compiled=True), read(buffer, 103, compiled=False)
    assert [r.offset for r in ours[0]] == [103, 104, 105, 106]
    assert ours == theirs


def test_log_append_time_batches_give_every_record_the_batch_timestamp():
    buffer = fetch_buffer([(0, RECORDS)], timestamp_type=1)
    ours, theirs = read(buffer, 0, compiled=True), read(buffer, 0, compiled=False)
    assert {(r.timestamp, r.timestamp_type) for r in ours[0]} == {(1_700_000_000_004, 1)}
    assert ours == theirs


def test_a_corrupt_batch_is_refused_as_kafka_python_refuses_it():
    buffer = bytearray(fetch_buffer([(0, RECORDS)]))
    buffer[-3] ^= 0xFF  # inside the last record's value: the batch CRC no longer matches
    from kafka.errors import CorruptRecordError

    for compiled in (True, False):
        with pytest.raises(CorruptRecordError):
            read(bytes(buffer), 0, compiled)
