"""kafka-python's record decoding, done by aiokafka's compiled record batches.

kafka-python reads every record of a v2 batch in pure Python (varints, a record object, a generator step): about
a quarter of the sink's CPU per row (bench/sink.md). aiokafka, already installed for the Faust worker and the
collector, ships the same format's reader compiled with Cython, five times cheaper,
``ConsumerRecord`` included (``tests/test_sink_decode.py`` checks that both give identical records).

``install()`` replaces ``Fetcher.PartitionRecords._unpack_records`` with a copy of kafka-python 3.0's that differs
in one place: the records of a v2 batch come from ``aiokafka``'s ``DefaultRecordBatch`` built on the same bytes.
Everything around it is kafka-python's own logic, unchanged: the batch CRC check, read_committed's aborted
transactions and control batches, the leader epoch, offsets to resume from. One figure differs: the fetch-bytes
metric counts a batch's bytes as fetched instead of the sum of its decoded records (they differ only by the batch
header and compression). Legacy (v0/v1) batches, records with
deserializers configured (the sink uses none) and a missing compiled module keep kafka-python's loop.

The copy is tied to kafka-python's internals; ``install()`` refuses (and the sink keeps the original) when the
installed kafka-python is not a 3.0 release, so an upgrade can only make the sink slower, never wrong.
"""

from __future__ import annotations

import logging

import kafka
import kafka.errors as Errors
from kafka.consumer import fetcher
from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)

try:
    from aiokafka.record._crecords.default_records import DefaultRecordBatch as CompiledBatch
except ImportError:  # aiokafka without its compiled extensions (e.g. AIOKAFKA_NO_EXTENSIONS): keep kafka-python's
    CompiledBatch = None

_ORIGINAL = fetcher.Fetcher.PartitionRecords._unpack_records


def install() -> bool:
    """Patch kafka-python's fetcher once per process (idempotent). Returns whether the compiled reader is in use."""
    if fetcher.Fetcher.PartitionRecords._unpack_records is _unpack_records:
        return True
    if CompiledBatch is None or not kafka.__version__.startswith("3.0."):
        log.info("kafka-python %s: record decoding stays in pure Python", kafka.__version__)
        return False
    fetcher.Fetcher.PartitionRecords._unpack_records = _unpack_records
    return True


def uninstall() -> None:
    """Restore kafka-python's own decoding (for tests that compare both)."""
    fetcher.Fetcher.PartitionRecords._unpack_records = _ORIGINAL


def _compiled_records(self, tp, batch):
    """The ConsumerRecords of one v2 batch, read by the compiled batch (what kafka-python's loop yields for it)."""
    topic, partition, leader_epoch = tp.topic, tp.partition, self.leader_epoch
    for record in CompiledBatch(bytes(batch._buffer)):
        key, value, headers = record.key, record.value, record.headers
        offset = record.offset
        self.records_read += 1
        self.next_fetch_offset = offset + 1
        yield ConsumerRecord(
            topic,
            partition,
            leader_epoch,
            offset,
            record.timestamp,
            record.timestamp_type,
            key,
            value,
            headers,
            None,  # v2 records carry no checksum of their own (kafka-python's DefaultRecord.checksum is None too)
            -1 if key is None else len(key),
            -1 if value is None else len(value),
            sum(len(k.encode("utf-8")) + (len(v) if v is not None else 0) for k, v in headers) if headers else -1,
        )
    self.bytes_read += batch.size_in_bytes  # the batch as fetched (kafka-python adds up the decoded records)


def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
    # kafka-python 3.0.12's PartitionRecords._unpack_records; only the v2 record loop differs (marked below).
    try:
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch

            if self.check_crcs and not batch.validate_crc():
                raise Errors.CorruptRecordError(
                    "Record batch for partition %s at offset %s failed crc check"
                    % (self.topic_partition, batch.base_offset)
                )

            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if self.isolation_level == fetcher.IsolationLevel.READ_COMMITTED and batch.has_producer_id():
                    self._consume_aborted_transactions_up_to(batch.last_offset)

                    producer_id = batch.producer_id
                    if self._contains_abort_marker(batch):
                        try:
                            self.aborted_producer_ids.remove(producer_id)
                        except KeyError:
                            pass
                    elif self._is_batch_aborted(batch):
                        fetcher.log.debug(
                            "Skipping aborted record batch from partition %s with producer_id %s and offsets %s to %s",
                            self.topic_partition,
                            producer_id,
                            batch.base_offset,
                            batch.last_offset,
                        )
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue

                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue

                # -- the one difference: v2 records read by the compiled batch ---------------------------------
                if key_deserializer is None and value_deserializer is None:
                    yield from _compiled_records(self, tp, batch)
                    batch = records.next_batch()
                    continue

            for record in batch:
                if self.check_crcs and not record.validate_crc():
                    raise Errors.CorruptRecordError(
                        "Record for partition %s at offset %s failed crc check" % (self.topic_partition, record.offset)
                    )
                key_size = len(record.key) if record.key is not None else -1
                value_size = len(record.value) if record.value is not None else -1
                key = self._deserialize(key_deserializer, tp.topic, record.headers, record.key)
                value = self._deserialize(value_deserializer, tp.topic, record.headers, record.value)
                headers = record.headers
                header_size = (
                    sum(
                        len(h_key.encode("utf-8")) + (len(h_val) if h_val is not None else 0)
                        for h_key, h_val in headers
                    )
                    if headers
                    else -1
                )
                self.records_read += 1
                self.bytes_read += record.size_in_bytes
                self.next_fetch_offset = record.offset + 1
                yield ConsumerRecord(
                    tp.topic,
                    tp.partition,
                    self.leader_epoch,
                    record.offset,
                    record.timestamp,
                    record.timestamp_type,
                    key,
                    value,
                    record.headers,
                    record.checksum,
                    key_size,
                    value_size,
                    header_size,
                )

            batch = records.next_batch()
        else:
            if last_batch and last_batch.magic == 2:
                self.next_fetch_offset = last_batch.next_offset
            self.drain()

    except StopIteration:
        fetcher.log.exception("StopIteration raised unpacking messageset")
        raise RuntimeError("StopIteration raised unpacking messageset") from None
