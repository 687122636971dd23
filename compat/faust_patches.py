"""Six fixes to faust-streaming 0.15.3 that keep a worker's tables and streams whole across a restart.

The tables live in memory and are rebuilt from their changelog topics at start (``stream_jobs.runtime.app``), so
whatever the changelog misses, or whatever recovery does not read, is state lost for good. The first two faults
were found reproducing "conversions credited to ``(none)`` after a second ``closedloop demo``" (docs/STREAMS.md,
*Restarts and recovery*; ``tests/test_recovery.py``).

1. Recovery skipped under ``exactly_once``. Faust reads the changelog partitions up to their highwater; in a
   transaction it takes that highwater from ``AIOKafkaConsumer.last_stable_offset(tp)``, a value aiokafka only
   caches from fetch responses. Right after a worker starts nothing has been fetched yet, so it is ``None``, Faust
   turns it into -1 ("nothing to read") and declares "Recovery complete" with empty tables. Whether the cache is
   filled in time is a race; after a broker restart it lost every time here (Faust's own tracker has the same
   log: a table of highwater -1 followed by "Recovery complete"). Fix: ask the broker, with a ListOffsets
   request at the consumer's isolation level. For a ``read_committed`` consumer the broker answers the last
   stable offset, which is exactly what the cache was meant to hold.

2. Table writes not flushed before a commit or a stop. A table assignment queues its changelog record in Faust's
   ``ProducerBuffer`` (``send_soon``; ``__setitem__`` cannot await). Before committing source offsets Faust
   calls ``producer.flush()``, whose buffer part returns as soon as one record takes longer than 0.1 s to hand
   over, so the commit can go ahead of changelog records still queued; the buffer is also flushed that way when
   the worker stops, and what is left then is dropped. On a busy or loaded machine the offsets of processed
   events are then committed while the table writes they caused never reach the changelog: after a restart those
   events are not redelivered, and the table has silently lost them. Worse, on a stop the Kafka client is closed
   *before* the buffer's own final flush, so that flush cannot send anything. Fix: ``flush()`` waits until every
   message queued when it began was handed to the client (it still fails, as before, when the buffer is no
   longer running), and the producer flushes its buffer before it closes the client (bounded by
   :data:`STOP_FLUSH_TIMEOUT_S`, with an error in the log naming what could not be sent). ``flush_atmost(n)``,
   which Faust uses for back-pressure, is unchanged.

3. Records dropped at the end of a rebalance. When table recovery is done, Faust resumes the stream partitions,
   *then* seeks them to the committed offsets, then resumes flow control, which clears every stream buffer
   (the buffers are meant to hold only records fetched before the seek). Faust's fetch loop runs while the seek
   is awaited: records fetched at the new position in that window reach a stream buffer and are cleared with the
   stale ones, while the Kafka client's position is already past them. They are never processed, and since Faust
   commits only contiguous offsets, the group's committed offset stays below them for good: the worker keeps
   processing newer records but its lag never reaches zero (in CI the end-to-end test's drain stuck after a
   restart with 33 CRM records never processed; under load here, 20 page views of one partition;
   ``GET /diagnostics/`` shows it as ``committed`` below ``acked_pending_min`` with no ``gaps``). Fix: seek
   first, resume the stream partitions after, with no await between resuming them and resuming the flow, so
   nothing can be fetched into a buffer that is about to be cleared. ``tests/test_worker.py`` widens the window
   with a slow seek. Faust's ``_resume_streams``, taken only by
   an app without tables, has the same order; this worker always has tables, so it is left as it is.

4. Records consumed for a partition nobody asked for. Faust's fetch loop hands the consumer thread its set of
   active partitions *itself*, not a copy, and aiokafka's ``fetched_records(partitions)`` returns the records of
   *every* partition when that set is empty. When recovery ends, Faust pauses the changelog partitions (the set
   becomes empty) while a fetch waits in the thread; the fetch then takes every stream partition's records out
   of the client, Faust drops them because their partitions are not active, and the client's position is past
   them. A partition with a committed offset is sought back later; one without (a fresh consumer group, or a
   worker killed before its first commit) is not, and its records are lost. Seen with fix 3 in place: after a
   SIGKILL before any commit, the restarted worker's client stood at the end of every input partition with
   nothing read (``GET /diagnostics/``: ``position`` = ``highwater``, ``read`` null). Fix: hand the thread a
   copy taken when the fetch starts, and do not fetch at all when it is empty.

5. Table writes committed in a later transaction than their event's offset (``exactly_once``). Fix 2 made the
   flush before a commit wait for the whole buffer, but Faust calls that flush only in its ``at_least_once`` branch
   (``Consumer._commit_offsets``); in a transaction it goes straight to ``TransactionManager.commit``. A table write
   still queued in the buffer then reaches its transactional producer after the commit, in the *next* transaction
   of that partition, while the offset of the event that made it is already committed: a SIGKILL before that
   transaction commits loses the write, and the event is not delivered again. Under load the buffer is far from
   empty: a traced SIGKILL run (faust-streaming 0.15.3, aiokafka 0.14.0) committed lead-events offsets 90 and 77
   with 2,130 table writes queued; the killed worker had sent one leads-changelog record, so 67 leads, whose 167
   lead events it had processed and committed, restarted with no state, and their conversions came out with
   journeys short of touches (docs/STREAMS.md, "The lost table writes of December 2026"). Fix: the transactional
   commit flushes the buffer first (fix 2's flush: every record queued when the commit began is handed to its
   transactional producer, whose ``commit_transaction`` sends it before it ends the transaction).

6. Recovery ended before the records on their way were read (``exactly_once``). A changelog written in transactions
   ends with a transaction marker, which a ``read_committed`` consumer never receives, so recovery cannot wait for
   an offset to reach the highwater. Faust's recovery loop instead gives a partition up as "read to the end" when it
   has waited twice 5 s for a changelog record and the Kafka client's position has reached the highwater. But it
   counts those waits from the worker's start, not from the start of reading (after a SIGKILL the restarted worker
   waits about 10 s for its partitions, so two are counted before anything is read), and the client's position
   moves when the client hands a batch over, before its records reach the loop. A wait that ended in between gave
   up on every partition of that batch, and their records, arriving a moment later, were dropped as already seen:
   the second SIGKILL series (faust-streaming 0.15.3, aiokafka 0.14.0) lost run 13 this way, the restarted worker
   giving up on 10 changelog partitions (leads, contacts, counters) 1.9 s after it began reading them, with no
   record applied, and 65 of 235 conversions came out different. Fix: the Kafka client's position counts only when
   the recovery loop has received the last record the client handed over for that partition (the consumer notes
   it for each batch); until then recovery keeps waiting. ``Consumer.position`` is read by nothing else in Faust.

All six are faults of Faust, not of a broker: each was left out in turn on Apache Kafka 4.4.0 and its test failed
(docs/STREAMS.md, "On Apache Kafka: what went, what stayed"; the tests are listed in docs/COMPAT.md).

``install()`` is idempotent and called by ``create_app``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.tables import recovery as faust_recovery
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as faust_aiokafka

FLUSH_POLL_S = 0.1
STOP_FLUSH_TIMEOUT_S = 15.0  # below the 20 s that `closedloop down` waits before SIGKILL

log = logging.getLogger(__name__)
_original_producer_on_stop = faust_aiokafka.Producer.on_stop
_original_send_pending = faust_producer.ProducerBuffer._send_pending
_original_transactional_commit = faust_consumer.TransactionManager.commit


async def _highwaters_from_the_broker(self: Any, partitions: Any) -> Any:
    """End offsets from a ListOffsets request; at ``read_committed`` the broker answers the last stable offset."""
    consumer = self._ensure_consumer()
    return await consumer.end_offsets(list(partitions))


async def _send_pending_counted(self: Any, fut: Any) -> None:
    """The buffer's send, counting messages in flight (``size`` no longer counts them) and messages sent."""
    counts = self.__dict__
    counts["_closedloop_in_flight"] = counts.get("_closedloop_in_flight", 0) + 1
    try:
        await _original_send_pending(self, fut)
    finally:
        counts["_closedloop_in_flight"] -= 1
        counts["_closedloop_sent"] = counts.get("_closedloop_sent", 0) + 1


async def _flush_until_empty(self: Any) -> None:
    """Wait until every message queued when the flush began was handed to the client (the original stops at the
    first slow one). Messages queued later are not waited for, so a busy worker's commit cannot wait forever."""
    counts = self.__dict__
    target = counts.get("_closedloop_sent", 0) + self.size + counts.get("_closedloop_in_flight", 0)
    while counts.get("_closedloop_sent", 0) < target:
        if self.state != "running":
            raise RuntimeError(f"Cannot flush: Producer not Running ({self.size} messages still queued)")
        self.message_sent.clear()
        try:
            await asyncio.wait_for(self.message_sent.wait(), timeout=FLUSH_POLL_S)
        except asyncio.TimeoutError:
            continue  # a slow send: keep waiting, never commit ahead of it


async def _flush_then_stop(self: Any) -> None:
    """Send what table writes are still queued while the Kafka client is open, then stop as before."""
    if self._producer is not None and (self.buffer.size or self.buffer.__dict__.get("_closedloop_in_flight")):
        try:
            await asyncio.wait_for(self.buffer.flush(), timeout=STOP_FLUSH_TIMEOUT_S)
        except (asyncio.TimeoutError, RuntimeError) as error:
            log.error(
                "stopping with %d queued changelog/output records not sent (%r): the tables may miss "
                "them after a restart",
                self.buffer.size,
                error,
            )
    await _original_producer_on_stop(self)


async def _getmany_of_a_copy(self: Any, active_partitions: Any, timeout: float) -> Any:
    """Fetch for a snapshot of the active partitions, never for none (fault 4); ``None`` still means all. Notes the
    offset of the last record handed over per partition (fault 6)."""
    if active_partitions is not None:
        active_partitions = set(active_partitions)
        if not active_partitions:
            return {}
    records = await self._thread.getmany(active_partitions, timeout)
    handed_over = self.__dict__.setdefault("_closedloop_handed_over", {})
    for tp, tp_records in records.items():
        if tp_records:
            handed_over[tp] = tp_records[-1].offset
    return records


async def _position_once_recovery_received_it(self: Any, tp: Any) -> Any:
    """The client's position of a changelog partition in recovery, or -1 ("not there yet") while the last record
    the client handed over for it has not reached the recovery loop (fault 6)."""
    position = await self._thread.position(tp)
    handed_over = self.__dict__.get("_closedloop_handed_over", {}).get(tp)
    recovery = self.app.tables.recovery
    if tp in recovery.active_tps:
        received = recovery.active_offsets.get(tp)
    elif tp in recovery.standby_tps:
        received = recovery.standby_offsets.get(tp)
    else:
        return position
    if handed_over is not None and (received is None or received < handed_over):
        return -1
    return position


async def _on_recovery_completed_seek_first(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery.on_recovery_completed`` with the stream partitions resumed after the seek (fault 3)."""
    app, consumer = self.app, self.app.consumer
    self.log.info("Restore complete!")
    await app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callbacks = [
        asyncio.ensure_future(
            table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
        )
        for table in self.tables.values()
    ]
    if callbacks:
        await asyncio.wait(callbacks)
    assignment = consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning(f"Recovery rebalancing again app id {app.consumer_generation_id} param {generation_id}")
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    # From here to resume_flow nothing awaits: the fetch loop cannot fill a buffer that flow_control clears.
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    app.flow_control.resume()
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def _commit_after_the_table_writes(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
    """Faust's ``TransactionManager.commit`` once every table write queued so far is in its transaction (fault 5):
    the writes of the events whose offsets are committed were queued before those events were acknowledged."""
    await self.producer.buffer.flush()
    return await _original_transactional_commit(self, offsets, start_new_transaction=start_new_transaction)


def install() -> None:
    """Patch Faust once per process (idempotent)."""
    faust_aiokafka.AIOKafkaConsumerThread._highwaters = _highwaters_from_the_broker
    faust_producer.ProducerBuffer._send_pending = _send_pending_counted
    faust_producer.ProducerBuffer.flush = _flush_until_empty
    faust_aiokafka.Producer.on_stop = _flush_then_stop
    faust_recovery.Recovery.on_recovery_completed = _on_recovery_completed_seek_first
    faust_consumer.ThreadDelegateConsumer._getmany = _getmany_of_a_copy
    faust_consumer.TransactionManager.commit = _commit_after_the_table_writes
    faust_consumer.ThreadDelegateConsumer.position = _position_once_recovery_received_it
