"""The sink: a kafka-python consumer group that writes the pipeline's topics into ClickHouse.

Order of work: poll -> convert to rows -> batch -> insert -> publish dead letters -> commit offsets. Offsets are
committed only after every row of their batch is in ClickHouse, so a crash or an unreachable ClickHouse replays
records instead of losing them; replays are harmless because every table is a ReplacingMergeTree on a stable id.

This module moves data: it polls, inserts and commits. When a batch is due, when to commit, how long a poll may
block and how long to back off is decided by ``sinks.policy.SinkPolicy``; what a ClickHouse error means, by
``sinks.failures.classify``; a record's rows, by ``sinks.rows``. One batch is inserted by a background thread while
the next is read and converted (the insert mostly waits for ClickHouse, with the GIL released); at most one is in
flight, so commits stay in order. How each part behaves and why (failures retried or dead-lettered, inserts of at
most 100 partitions, the commit interval, rebalances, erasures): docs/CLICKHOUSE.md, "The sink".
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError

from compat import kafka_python_fetcher
from schemas import serde
from schemas.kafka_security import kafka_python_security
from schemas.outputs import DeadLetter
from schemas.settings import KAFKA_RECONNECT_BACKOFF_MAX_MS
from sinks.client import connect
from sinks.cluster_sql import mutation_target
from sinks.failures import Failure, classify
from sinks.policy import POLL_TIMEOUT_MS, SinkPolicy
from sinks.rows import Erasure, RecordError, partition_blocks, rows_for, topic_kinds
from sinks.rows import insert as insert_rows
from sinks.settings import SinkSettings

log = logging.getLogger(__name__)
COMPONENT = "sink"


def tune_gc_for_throughput() -> None:
    """Garbage-collector settings for a process whose main work is a SinkWriter (call once, after start-up).

    The writer allocates several containers per record and keeps a whole batch alive, so with CPython's default
    thresholds the collector re-scans the growing batch and the start-up heap over and over (the cost:
    docs/CLICKHOUSE.md, "The sink"). The records make no reference cycles, so collecting less often loses
    nothing: freeze what start-up built (never scanned again) and collect the youngest generation every 50,000
    allocations.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class SinkStopped(Exception):
    """Stop was requested while a batch was still waiting for ClickHouse; it was not committed."""


@dataclass
class SinkMetrics:
    """Counters of one sink process (also exported to Prometheus when a metrics port is set)."""

    records: int = 0
    rows_written: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    retries: int = 0  # unreachable_retries + refused_retries
    unreachable_retries: int = 0  # ClickHouse did not answer
    refused_retries: int = 0  # ClickHouse answered no because of its own state (a missing table, memory, ...)
    rejected_rows: int = 0  # rows ClickHouse rejected, dead-lettered with its reason
    dead_letters: int = 0
    erasures: int = 0
    lag: int = 0
    last_flush_seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows_written.values())


@dataclass
class _Tally:
    """What writing one batch took, for its log line: rows stored, ClickHouse retries, rows it rejected."""

    rows: int = 0
    retries: int = 0
    rejected_rows: int = 0


@dataclass
class _Batch:
    """A sealed batch: rows per table, the Kafka message of each row, dead letters, and the offsets to commit."""

    rows: dict[str, list[tuple]]
    sources: dict[str, list]
    dead: list[DeadLetter]
    offsets: dict[TopicPartition, OffsetAndMetadata]
    records: int
    sealed_at: float
    written: _Tally


class SinkWriter:
    """Consume, batch, insert, commit. ``run()`` until ``stop()``; ``poll_once()`` + ``flush()`` for tests."""

    def __init__(
        self,
        settings: SinkSettings,
        *,
        client_factory: Callable[[], Client] | None = None,
        policy: SinkPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.policy = policy or SinkPolicy.from_settings(settings)
        self.metrics = SinkMetrics()
        self._kinds = topic_kinds(settings.topics)
        self._client_factory = client_factory or (
            lambda: connect(
                settings,
                connect_timeout=settings.clickhouse_connect_timeout,
                query_timeout=settings.clickhouse_query_timeout,
            )
        )
        self._client: Client | None = None
        self._stop = threading.Event()
        # The pending batch: rows per table, the Kafka message of each row (to dead-letter it), dead letters, the
        # next offset per partition read so far, and what the policy needs to know about it.
        self._rows: dict[str, list[tuple]] = {}
        self._sources: dict[str, list] = {}
        self._dead: list[DeadLetter] = []
        self._offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        self._pending_records = 0
        self._pending_bytes = 0  # counted only when the policy bounds a batch's bytes
        self._batch_started: float | None = None
        self._tally = _Tally()  # rows written before the batch is sealed (before an erasure)
        # Offsets of batches already in ClickHouse, not committed yet (the policy's commit interval).
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._uncommitted_records = 0
        self._last_commit = time.monotonic()
        self._commit_failures = 0  # retriable commit failures in a row
        # The batch being inserted by the insert thread, and its future (result: None, or the exception).
        self._inflight: tuple[_Batch, Future] | None = None
        self._inserter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-insert")
        kafka_python_fetcher.install()  # records decoded by aiokafka's compiled reader (compat/kafka_python_fetcher.py)
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_servers,
            group_id=settings.sink_consumer_group,
            client_id=f"{settings.sink_consumer_group}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.sink_max_poll_records,
            # Outputs may come from transactional producers (the stream jobs under exactly_once on a real
            # Kafka): read only committed records, never those of an aborted transaction.
            isolation_level="read_committed",
            # Large fetches: fewer round trips and bigger record batches per poll (the broker's default caps
            # a partition at 1 MiB per fetch).
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # A long ClickHouse outage keeps us in the retry loop without polling: stay in the group meanwhile.
            max_poll_interval_ms=30 * 60 * 1000,
            # A killed sink stops heartbeating, and its partitions wait this long for the sink restarted in its
            # place (tests/faults/test_sink_kill.py); heartbeats at kafka-python's ratio (3 s for 45 s).
            session_timeout_ms=int(settings.sink_session_timeout_seconds * 1000),
            heartbeat_interval_ms=int(settings.sink_session_timeout_seconds * 1000 / 15),
            reconnect_backoff_max_ms=KAFKA_RECONNECT_BACKOFF_MAX_MS,
            **kafka_python_security(settings),
        )
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_servers,
            acks="all",
            linger_ms=5,
            reconnect_backoff_max_ms=KAFKA_RECONNECT_BACKOFF_MAX_MS,
            **kafka_python_security(settings),
        )
        # No rebalance listener: kafka-python 3 runs listeners on its network thread, where a blocking commit
        # raises (and the error ends poll()). A batch read from partitions that move to another member is still
        # written; its commit skips them, and their new owner reads those records again: replays collapse
        # onto the same ids.
        self._consumer.subscribe(sorted(self._kinds))
        # clickhouse-connect imports pandas (when installed) lazily on the first insert, which takes a while:
        # pay it at start-up instead of inside the first batch.
        from clickhouse_connect.driver import options

        options.pd  # noqa: B018 - the attribute access runs the lazy import

    # -- lifecycle -------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run()`` to flush what it has and return (thread-safe)."""
        self._stop.set()

    def close(self) -> None:
        """Close the consumer, producer and ClickHouse client (uncommitted records will be read again)."""
        self._stop.set()  # an insert still retrying an unreachable ClickHouse gives up (SinkStopped)
        self._inserter.shutdown(wait=True)
        self._consumer.close(autocommit=False)
        self._producer.close(timeout=10)
        if self._client is not None:
            self._client.close()

    def run(self) -> SinkMetrics:
        """Consume until ``stop()``; the last batch is flushed and committed before returning."""
        log.info("sink started", extra={"topics": sorted(self._kinds), "group": self.settings.sink_consumer_group})
        try:
            while not self._stop.is_set():
                polled = self.poll_once(self.policy.poll_timeout(now=time.monotonic(), started_at=self._batch_started))
                if self._inflight is not None and self._inflight[1].done():
                    self._finish_inflight()  # commit as soon as the insert is done, not at the next batch
                if self._due():
                    self._seal_and_insert()
                elif not polled and self._pending_records == 0 and self._inflight is None:
                    self._commit_if_due(caught_up=True)  # nothing to wait for
            self.flush()
        except SinkStopped:
            self._commit()  # the batches written before the one that could not be
            log.warning("sink stopped with an unwritten batch; it will be read again on the next start")
        return self.metrics

    # -- the loop --------------------------------------------------------------------------------------------

    def poll_once(self, timeout_ms: int = POLL_TIMEOUT_MS) -> int:
        """Poll once and add the records to the batch; returns how many records came."""
        polled = self._consumer.poll(timeout_ms=timeout_ms)
        count = 0
        add = self._add
        count_bytes = self.policy.max_bytes is not None
        for partition, messages in polled.items():
            for message in messages:
                add(message)
            count += len(messages)
            self._offsets[partition] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
            if count_bytes:
                self._pending_bytes += sum(len(m.value) for m in messages if m.value is not None)
        self.metrics.records += count
        return count

    def _due(self) -> bool:
        return self.policy.batch_due(
            now=time.monotonic(),
            started_at=self._batch_started,
            rows=sum(len(r) for r in self._rows.values()),
            size=self._pending_bytes,
        )

    def _add(self, message) -> None:
        # Per-record work is kept to the conversion itself: the key is decoded and the dead-letter source built
        # only when needed (the message object itself is kept as the source of its rows).
        if self._batch_started is None:
            self._batch_started = time.monotonic()
        self._pending_records += 1
        value = message.value
        try:
            result = rows_for(
                self._kinds[message.topic],
                value,
                message,  # topic, partition, offset: a Provenance
                serde.decode_key(message.key) if value is None else None,
            )
        except RecordError as exc:
            self._dead_letter_record(message, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a record must never stop the sink; it is dead-lettered
            self._dead_letter_record(message, f"unexpected {type(exc).__name__}: {exc}")
            return
        if isinstance(result, Erasure):
            # Erasures are rare: write what came before, then delete, so a later re-identification survives.
            # (The rows are written now; their offsets are committed with the rest of the batch.)
            self._finish_inflight()
            self._write(self._rows, self._sources, self._dead, self._tally)
            self._rows, self._sources = {}, {}
            self._erase(result.lead_id)
            return
        for table, row in result:
            rows = self._rows.get(table)
            if rows is None:
                rows = self._rows[table] = []
                self._sources[table] = []
            rows.append(row)
            self._sources[table].append(message)

    def _dead_letter_record(self, message, reason: str) -> None:
        self._dead.append(_dead_letter(message, reason))
        log.warning(
            "record does not fit; dead-lettered",
            extra={"reason": reason[:500], **_where(message), **record_ids(message.value)},
        )

    def flush(self) -> None:
        """Write the batch and any batch still in flight (retrying while ClickHouse is unreachable), publish dead
        letters, then commit: on return everything read so far is in ClickHouse and committed."""
        self._seal_and_insert()
        self._finish_inflight()
        self._commit()

    def _seal_and_insert(self) -> None:
        """Hand the pending batch to the insert thread, once the batch before it is finished (at most one in flight)."""
        if self._pending_records == 0:
            return
        self._finish_inflight()  # at most one batch in flight, and commits stay in order
        batch = _Batch(
            self._rows, self._sources, self._dead, self._offsets, self._pending_records, time.monotonic(), self._tally
        )
        self._rows, self._sources, self._dead, self._offsets = {}, {}, [], {}
        self._pending_records, self._pending_bytes, self._batch_started, self._tally = 0, 0, None, _Tally()
        future = self._inserter.submit(self._write, batch.rows, batch.sources, batch.dead, batch.written)
        self._inflight = (batch, future)

    def _finish_inflight(self) -> None:
        """Wait for the batch in flight; then publish its dead letters and commit its offsets (or keep them for a
        later commit, as the policy says)."""
        if self._inflight is None:
            return
        batch, future = self._inflight
        self._inflight = None
        future.result()  # re-raises SinkStopped (stop during an outage) or an unexpected error: nothing committed
        self._publish_dead_letters(batch.dead)
        self._uncommitted.update(batch.offsets)  # offsets only grow: a later batch's replace an earlier one's
        self._uncommitted_records += batch.records
        self.metrics.batches += 1
        self.metrics.last_flush_seconds = time.monotonic() - batch.sealed_at
        self._commit_if_due(caught_up=False)
        self.metrics.lag = self._lag()
        log.info(
            "batch written",
            extra={
                "rows": batch.written.rows,
                "records": batch.records,
                "lag": self.metrics.lag,
                "retries": batch.written.retries,
                "rejected_rows": batch.written.rejected_rows,
                "dead_letters": len(batch.dead),
                "seconds": round(self.metrics.last_flush_seconds, 3),
            },
        )

    # -- ClickHouse ------------------------------------------------------------------------------------------

    def _write(
        self, rows: dict[str, list[tuple]], sources: dict[str, list], dead: list[DeadLetter], tally: _Tally
    ) -> None:
        """Insert every table's rows, in blocks of at most 100 partitions; rows ClickHouse rejects go to ``dead``."""
        for table, table_rows in rows.items():
            table_sources = sources[table]
            blocks = partition_blocks(table, table_rows)
            if blocks is None:
                self._insert(table, table_rows, table_sources, dead, tally)
            else:
                for block in blocks:
                    self._insert(table, [table_rows[p] for p in block], [table_sources[p] for p in block], dead, tally)
            self.metrics.rows_written[table] = self.metrics.rows_written.get(table, 0) + len(table_rows)
            tally.rows += len(table_rows)

    def _insert(self, table: str, rows: list[tuple], sources: list, dead: list[DeadLetter], tally: _Tally) -> None:
        """Insert rows; when ClickHouse rejects them, split the rows to find those that do not fit and
        dead-letter them with its reason (a block it refuses for spanning too many partitions splits as well)."""
        if not rows:
            return
        try:
            self._with_retry(lambda client: insert_rows(client, table, rows), tally, table)
        except (DatabaseError, TypeError, ValueError, OverflowError) as exc:
            if len(rows) == 1:
                source = sources[0]
                reason = f"the row for {table} was rejected: {exc}"
                log.warning(
                    "ClickHouse rejected a row; dead-lettered",
                    extra={"table": table, "reason": reason[:500], **_where(source), **record_ids(source.value)},
                )
                dead.append(_dead_letter(source, reason))
                self.metrics.rejected_rows += 1
                self.metrics.rows_written[table] = self.metrics.rows_written.get(table, 0) - 1
                tally.rejected_rows += 1
                tally.rows -= 1
                return
            half = len(rows) // 2
            self._insert(table, rows[:half], sources[:half], dead, tally)
            self._insert(table, rows[half:], sources[half:], dead, tally)

    def _erase(self, lead_id: str) -> None:
        target = mutation_target("leads", self.settings.clickhouse_cluster)
        self._with_retry(
            lambda client: client.command(
                f"DELETE FROM {target} WHERE lead_id = {{lead_id:String}}", parameters={"lead_id": lead_id}
            ),
            self._tally,
            "leads",
        )
        self.metrics.erasures += 1
        log.info("lead erased", extra={"lead_id": lead_id})

    def _with_retry(self, operation: Callable[[Client], object], tally: _Tally, table: str) -> object:
        """Run ``operation`` with a client; while ClickHouse is unreachable or refuses for its own state, retry
        with the policy's back-off until stop() (then SinkStopped). Rows it rejects raise to the caller."""
        attempt = 0
        while True:
            try:
                if self._client is None:
                    self._client = self._client_factory()
                return operation(self._client)
            except DatabaseError as exc:
                failure = classify(exc)
                if failure is Failure.REJECTED:
                    raise
                self._drop_client()
                delay = self.policy.retry_delay(attempt)
                attempt += 1
                tally.retries += 1
                self.metrics.retries += 1
                fields = {"table": table, "retries": attempt, "retry_in_seconds": delay, "error": str(exc)}
                if failure is Failure.UNREACHABLE:
                    self.metrics.unreachable_retries += 1
                    log.warning("ClickHouse unreachable; retrying", extra=fields)
                else:
                    self.metrics.refused_retries += 1
                    log.warning("ClickHouse refused the insert (its own state, not the rows); retrying", extra=fields)
            if self._stop.wait(delay):
                raise SinkStopped()

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
        self._client = None

    # -- Kafka -----------------------------------------------------------------------------------------------

    def _publish_dead_letters(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        topic = self.settings.topics.dead_letters
        for letter in letters:
            self._producer.send(topic, key=serde.encode_key(letter.key), value=serde.dumps(letter))
        # Raises on failure: then nothing is committed and the records are read (and dead-lettered) again.
        self._producer.flush(timeout=60)
        self.metrics.dead_letters += len(letters)
        log.warning("dead letters published", extra={"dead_letters": len(letters), "topic": topic})

    def _commit_if_due(self, *, caught_up: bool) -> None:
        if self.policy.commit_due(
            now=time.monotonic(), last_commit=self._last_commit, caught_up=caught_up, failures=self._commit_failures
        ):
            self._commit()

    def _commit(self) -> None:
        """Commit the offsets of every batch already in ClickHouse (partitions still assigned to us only)."""
        if not self._uncommitted:
            return
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in self._uncommitted.items() if tp in assigned}
        records = self._uncommitted_records
        self._uncommitted, self._uncommitted_records = {}, 0
        self._last_commit = time.monotonic()
        try:
            if offsets:
                self._consumer.commit(offsets)
            self._commit_failures = 0
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # The group rebalanced (or is rebalancing) while we were writing: the rows are in ClickHouse, the
            # records will be delivered again and collapse onto the same ids.
            self._commit_failures = 0
            log.warning(
                "offset commit failed after a rebalance; records will be replayed",
                extra={"records": records, "error": str(exc)},
            )
        except KafkaError as exc:
            if not exc.retriable:
                raise
            # The broker or the group's coordinator is away (the commit gives up after request_timeout_ms): the
            # rows are in ClickHouse, so keep the offsets and commit them with a later commit; offsets of
            # batches written meanwhile supersede them.
            self._uncommitted = {**offsets, **self._uncommitted}
            self._uncommitted_records += records
            self._commit_failures += 1
            log.warning(
                "offset commit failed, broker unreachable; will commit again",
                extra={
                    "records": records,
                    "retries": self._commit_failures,
                    "retry_in_seconds": self.policy.retry_delay(self._commit_failures - 1),
                    "error": repr(exc),
                },
            )
        self.metrics.lag = self._lag()

    def _lag(self) -> int:
        """Records not committed yet: those read (the pending batch, the one in flight, those written but not
        committed), plus those behind the end of the assigned partitions as of the last fetch."""
        lag = self._pending_records + self._uncommitted_records
        lag += self._inflight[0].records if self._inflight is not None else 0
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                lag += max(0, high - self._consumer.position(tp))
        return lag


_ID_FIELDS = ("event_id", "conversion_id", "touch_id", "lead_id")


def record_ids(value: bytes | str | None) -> dict[str, str]:
    """The ids a record names (``event_id``, ``conversion_id``, ``touch_id``, ``lead_id``), for the log lines
    about it. Read without validating the record, on the failure path only: empty when it is not a JSON object."""
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(record, dict):
        return {}
    return {name: found for name in _ID_FIELDS if isinstance(found := record.get(name), str) and found}


def _where(message) -> dict[str, object]:
    """Where a Kafka message was read from, as log fields."""
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


def _dead_letter(message, reason: str) -> DeadLetter:
    """A dead letter for a Kafka message (anything with topic, partition, offset, key and value)."""
    value = "" if message.value is None else message.value.decode("utf-8", errors="replace")
    return DeadLetter(
        component=COMPONENT,
        reason=reason[:2000],
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=serde.decode_key(message.key),
        value=value,
        failed_at=datetime.now(timezone.utc),
    )
