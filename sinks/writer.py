"""The sink: a kafka-python consumer group that writes the pipeline's topics into ClickHouse.

Order of work (as in snuba's and quix-streams' consumers): poll -> convert to rows -> batch (rows or seconds) ->
insert -> flush dead letters -> commit offsets. Offsets are committed only after every row of the batch is in
ClickHouse, so a crash or an unreachable ClickHouse replays records instead of losing them; replays are harmless
because every table is a ReplacingMergeTree on a stable id.

One batch is inserted by a background thread while the next one is read and converted (the insert mostly waits
for ClickHouse, which releases the GIL); at most one batch is in flight, and a batch's offsets are committed, in
order, only once its insert has finished.

While records keep coming, the offsets of written batches are committed at most every
``sink_commit_interval_seconds``, as Kafka Connect's ``offset.flush.interval.ms`` and Vector's
``commit_interval_ms`` do: a commit is a blocking round trip, and the embedded broker rewrites its log after each
(bench/sink.md, session 9). Once the sink has caught up (an empty poll, nothing pending or in flight), and on a
flush or stop, it commits at once. A crash replays at most the interval's records, onto the same ids. A commit
that fails because the broker (or the group's coordinator) is away keeps its offsets for the next commit.

Each table's rows go in blocks of at most 100 partitions (``rows.partition_blocks``), ClickHouse's
``max_partitions_per_insert_block``: a batch of page views from 500 months is five inserts, not a refusal.

Three ways an insert can fail, told apart in the logs and the metrics:

- ClickHouse unreachable (no answer: connection refused, reset, timed out, an HTTP error without a ClickHouse
  code): the same block is retried with exponential back-off, forever, and nothing is committed
  ("ClickHouse unreachable", ``unreachable_retries``).
- ClickHouse refusing because of its own state (a table or column missing, memory, too many parts, read-only,
  credentials: ``_SERVER_STATE_CODES``): retried the same way, never dead-lettered, so that a missing migration
  does not turn every record into a dead letter ("ClickHouse refused the insert", ``refused_retries``).
- ClickHouse rejecting the request's rows (any other error with a ClickHouse code): the block is split in halves
  until the rows that do not fit are found; they go to the dead-letter topic with ClickHouse's reason, like
  records that fail validation, and the rest is written ("rows rejected", ``rejected_rows``).
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError

from schemas import serde
from schemas.outputs import DeadLetter
from compat import kafka_python_fetcher
from sinks.client import connect
from sinks.rows import Erasure, RecordError, partition_blocks, rows_for, topic_kinds
from sinks.rows import insert as insert_rows
from sinks.settings import SinkSettings

log = logging.getLogger(__name__)
COMPONENT = "sink"
# The longest one poll blocks when nothing comes (Kafka holds an empty fetch for fetch_max_wait_ms): how soon a
# stop request or a batch falling due is noticed by an idle sink.
POLL_TIMEOUT_MS = 200


def tune_gc_for_throughput() -> None:
    """Garbage-collector settings for a process whose main work is a SinkWriter (call once, after start-up).

    The writer allocates several container objects per record (parsed dicts, the row, Kafka's record) and keeps
    a batch of 10,000 rows alive, so with CPython's default thresholds (a collection every 700 allocations) the
    collector kept re-scanning the growing batch and the start-up heap: about 3.5 of 24.5 us of sink CPU per row
    (bench/sink.md, session 5). The records make no reference cycles, so collecting less often loses nothing:
    freeze what start-up built (never scanned again) and collect the youngest generation every 50,000
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
class _Batch:
    """A sealed batch: rows per table, the Kafka message of each row, dead letters, and the offsets to commit."""

    rows: dict[str, list[tuple]]
    sources: dict[str, list]
    dead: list[DeadLetter]
    offsets: dict[TopicPartition, OffsetAndMetadata]
    records: int
    sealed_at: float


class SinkWriter:
    """Consume, batch, insert, commit. ``run()`` until ``stop()``; ``poll_once()`` + ``flush()`` for tests."""

    def __init__(self, settings: SinkSettings, *, client_factory: Callable[[], Client] | None = None) -> None:
        self.settings = settings
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
        self._rows: dict[str, list[tuple]] = {}
        self._sources: dict[str, list] = {}  # table -> the Kafka message of each pending row (to dead-letter it)
        self._dead: list[DeadLetter] = []
        self._offsets: dict[TopicPartition, OffsetAndMetadata] = {}  # next offset per partition read so far
        self._pending_records = 0
        # Offsets of batches already in ClickHouse, not committed yet (see sink_commit_interval_seconds).
        self._uncommitted: dict[TopicPartition, OffsetAndMetadata] = {}
        self._uncommitted_records = 0
        self._last_commit = time.monotonic()
        # The batch being inserted by the insert thread, and its future (result: None, or the exception).
        self._inflight: tuple[_Batch, Future] | None = None
        self._inserter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-insert")
        self._batch_started: float | None = None
        kafka_python_fetcher.install()  # records decoded by aiokafka's compiled reader: ~8 us less CPU per row
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
        )
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=5
        )
        # No rebalance listener: kafka-python 3 runs listeners on its network thread, where a blocking commit
        # raises (and the error ends poll()). A batch read from partitions that move to another member is still
        # written; its commit skips them, and their new owner reads those records again: replays collapse
        # onto the same ids.
        self._consumer.subscribe(sorted(self._kinds))
        # clickhouse-connect imports pandas (when installed) lazily on the first insert to check the data's type:
        # about 0.8 s here, once. Pay it at start-up instead of inside the first batch.
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
                polled = self.poll_once(self._poll_timeout_ms())
                if self._inflight is not None and self._inflight[1].done():
                    self._finish_inflight()  # commit as soon as the insert is done, not at the next batch
                if self._due():
                    self._seal_and_insert()
                elif not polled and self._pending_records == 0 and self._inflight is None:
                    self._commit()  # caught up: nothing to wait for
            self.flush()
        except SinkStopped:
            self._commit()  # the batches written before the one that could not be
            log.warning("sink stopped with an unwritten batch; it will be read again on the next start")
        return self.metrics

    # -- the loop --------------------------------------------------------------------------------------------

    def poll_once(self, timeout_ms: int = 200) -> int:
        """Poll once and add the records to the batch; returns how many records came."""
        polled = self._consumer.poll(timeout_ms=timeout_ms)
        count = 0
        add = self._add
        for partition, messages in polled.items():
            for message in messages:
                add(message)
            count += len(messages)
            self._offsets[partition] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
        self.metrics.records += count
        return count

    def _poll_timeout_ms(self) -> int:
        """How long the next poll may block: POLL_TIMEOUT_MS, cut short when the pending batch falls due."""
        if self._batch_started is None:
            return POLL_TIMEOUT_MS
        due_in = self._batch_started + self.settings.sink_batch_seconds - time.monotonic()
        return max(0, min(POLL_TIMEOUT_MS, int(due_in * 1000)))

    def _due(self) -> bool:
        if self._pending_records == 0:
            return False
        rows = sum(len(r) for r in self._rows.values())
        return rows >= self.settings.sink_batch_rows or (
            time.monotonic() - (self._batch_started or 0) >= self.settings.sink_batch_seconds
        )

    def _add(self, message) -> None:
        # Per-record work is kept to the conversion itself: the key is decoded and the dead-letter source built
        # only when needed (the message object itself is kept as the source of its rows).
        if self._batch_started is None:
            self._batch_started = time.monotonic()
        self._pending_records += 1
        value = message.value
        try:
            result = rows_for(self._kinds[message.topic], value, message,  # topic, partition, offset: a Provenance
                              serde.decode_key(message.key) if value is None else None)
        except RecordError as exc:
            self._dead.append(_dead_letter(message, str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - a record must never stop the sink; it is dead-lettered
            self._dead.append(_dead_letter(message, f"unexpected {type(exc).__name__}: {exc}"))
            return
        if isinstance(result, Erasure):
            # Erasures are rare: write what came before, then delete, so a later re-identification survives.
            # (The rows are written now; their offsets are committed with the rest of the batch.)
            self._finish_inflight()
            self._write(self._rows, self._sources, self._dead)
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
        batch = _Batch(self._rows, self._sources, self._dead, self._offsets, self._pending_records, time.monotonic())
        self._rows, self._sources, self._dead, self._offsets = {}, {}, [], {}
        self._pending_records = 0
        self._batch_started = None
        self._inflight = (batch, self._inserter.submit(self._write, batch.rows, batch.sources, batch.dead))

    def _finish_inflight(self) -> None:
        """Wait for the batch in flight; then publish its dead letters and commit its offsets (or, within
        sink_commit_interval_seconds of the last commit, keep them for the next one)."""
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
        if time.monotonic() - self._last_commit >= self.settings.sink_commit_interval_seconds:
            self._commit()
        self.metrics.lag = self._lag()
        log.info(
            "batch written",
            extra={"rows": self.metrics.total_rows, "batches": self.metrics.batches, "lag": self.metrics.lag,
                   "unreachable_retries": self.metrics.unreachable_retries,
                   "refused_retries": self.metrics.refused_retries, "rejected_rows": self.metrics.rejected_rows,
                   "dead_letters": self.metrics.dead_letters},
        )

    # -- ClickHouse ------------------------------------------------------------------------------------------

    def _write(self, rows: dict[str, list[tuple]], sources: dict[str, list], dead: list[DeadLetter]) -> None:
        """Insert every table's rows; rows ClickHouse rejects are added to ``dead``."""
        for table, table_rows in rows.items():
            table_sources = sources[table]
            blocks = partition_blocks(table, table_rows)
            if blocks is None:
                self._insert(table, table_rows, table_sources, dead)
            else:
                for block in blocks:
                    self._insert(table, [table_rows[p] for p in block], [table_sources[p] for p in block], dead)
            self.metrics.rows_written[table] = self.metrics.rows_written.get(table, 0) + len(table_rows)

    def _insert(self, table: str, rows: list[tuple], sources: list, dead: list[DeadLetter]) -> None:
        """Insert rows; when ClickHouse rejects them, split the rows to find those that do not fit and
        dead-letter them with its reason (a block it refuses for spanning too many partitions splits as well)."""
        if not rows:
            return
        try:
            self._with_retry(lambda client: insert_rows(client, table, rows))
        except (DatabaseError, TypeError, ValueError, OverflowError) as exc:
            if len(rows) == 1:
                reason = f"the row for {table} was rejected: {exc}"
                log.warning("ClickHouse rejected a row; dead-lettered: %s", reason[:500],
                            extra={"table": table, "topic": sources[0].topic, "partition": sources[0].partition,
                                   "offset": sources[0].offset})
                dead.append(_dead_letter(sources[0], reason))
                self.metrics.rejected_rows += 1
                self.metrics.rows_written[table] = self.metrics.rows_written.get(table, 0) - 1
                return
            half = len(rows) // 2
            self._insert(table, rows[:half], sources[:half], dead)
            self._insert(table, rows[half:], sources[half:], dead)

    def _erase(self, lead_id: str) -> None:
        self._with_retry(
            lambda client: client.command("DELETE FROM leads WHERE lead_id = {lead_id:String}",
                                          parameters={"lead_id": lead_id})
        )
        self.metrics.erasures += 1

    def _with_retry(self, operation: Callable[[Client], object]) -> object:
        """Run ``operation`` with a client; connection failures are retried with back-off until stop()."""
        delay = self.settings.sink_retry_initial_seconds
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
                self.metrics.retries += 1
                if failure is Failure.UNREACHABLE:
                    self.metrics.unreachable_retries += 1
                    log.warning("ClickHouse unreachable, retrying in %.1fs: %s", delay, exc)
                else:
                    self.metrics.refused_retries += 1
                    log.warning("ClickHouse refused the insert (its own state, not the rows), retrying in %.1fs: %s",
                                delay, exc)
            if self._stop.wait(delay):
                raise SinkStopped()
            delay = min(delay * 2, self.settings.sink_retry_max_seconds)

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
        log.warning("dead-lettered %d records", len(letters))

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
        except (CommitFailedError, RebalanceInProgressError) as exc:
            # The group rebalanced (or is rebalancing) while we were writing: the rows are in ClickHouse, the
            # records will be delivered again and collapse onto the same ids.
            log.warning("offset commit failed after a rebalance; records will be replayed: %s", exc)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            # The broker or the group's coordinator is away (the commit gives up after request_timeout_ms): the
            # rows are in ClickHouse, so keep the offsets and commit them with the next commit; offsets of
            # batches written meanwhile supersede them.
            self._uncommitted = {**offsets, **self._uncommitted}
            self._uncommitted_records += records
            log.warning("offset commit failed, broker unreachable; will commit again: %r", exc)
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


class Failure(Enum):
    """What a failed ClickHouse request means for the sink (see the module docstring)."""

    UNREACHABLE = "unreachable"  # no answer: retry
    REFUSED = "refused"  # an answer about the server's state: retry
    REJECTED = "rejected"  # an answer about the rows: split, dead-letter what does not fit


# Server errors about the server's own state, not the rows sent: the same insert can succeed later (after a
# migration, a merge, more memory or disk, a fixed password), so they are retried and nothing is dead-lettered.
# Every other error with a ClickHouse code is about the request (a bad value, overflow, too many partitions in
# the block, ...): it used to be retried as an outage unless its code was on a list of data errors, and an
# unlisted one (Code 252, too many partitions for a single INSERT block) wedged the sink forever.
_SERVER_STATE_CODES = frozenset({
    16,  # NO_SUCH_COLUMN_IN_TABLE: a migration not applied
    47,  # UNKNOWN_IDENTIFIER
    60,  # UNKNOWN_TABLE
    81,  # UNKNOWN_DATABASE
    159, 160, 209, 210,  # TIMEOUT_EXCEEDED, TOO_SLOW, SOCKET_TIMEOUT, NETWORK_ERROR
    164, 242,  # READONLY, TABLE_IS_READ_ONLY
    173, 241,  # CANNOT_ALLOCATE_MEMORY, MEMORY_LIMIT_EXCEEDED
    192, 193, 194, 195, 497, 516,  # unknown user, wrong password, access denied, authentication failed
    202, 203,  # TOO_MANY_SIMULTANEOUS_QUERIES, NO_FREE_CONNECTION
    225, 285, 319, 999,  # replication and Keeper unavailable, unknown status of the insert
    236, 394, 473,  # ABORTED, QUERY_WAS_CANCELLED, DEADLOCK_AVOIDED
    243,  # NOT_ENOUGH_SPACE
    252,  # TOO_MANY_PARTS (merges behind) - but not "too many partitions for single INSERT block", below
    425, 439,  # SYSTEM_ERROR, CANNOT_SCHEDULE_TASK
})
_CODE = re.compile(r"Code: (\d+)")
_TOO_MANY_PARTITIONS = "Too many partitions for single INSERT block"


def classify(exc: DatabaseError) -> Failure:
    """Whether a ClickHouse error means unreachable, refused for its own state, or the rows rejected."""
    if isinstance(exc, OperationalError):
        return Failure.UNREACHABLE
    text = str(exc)
    match = _CODE.search(text)
    if match is None:
        return Failure.UNREACHABLE  # an HTTP error from something in between (a proxy), not ClickHouse's answer
    if _TOO_MANY_PARTITIONS in text:
        return Failure.REJECTED  # about the block: halves of it go in
    return Failure.REFUSED if int(match.group(1)) in _SERVER_STATE_CODES else Failure.REJECTED


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
