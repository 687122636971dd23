"""The worker's table state on disk: Faust's RocksDB store (``rocksdict``), written only at a commit.

Why not Faust's store as it is (faust-streaming 0.15.3): it puts every table assignment into RocksDB at once, while
the changelog record, the event's outputs and its source offset reach Kafka later (and under ``exactly_once`` only
when the transaction commits). After a SIGKILL the local state is then *ahead* of what Kafka kept: the events the
killed worker had not committed are delivered again onto a state that already holds them, and the agents skip what
their state says is done (the visitors table's last applied offset, the leads table's emitted versions), so outputs
that were lost with the killed process (or aborted with its transaction) are never sent again. The memory store
has no such problem: it is rebuilt from the changelog, which never runs ahead of the outputs.

So this store keeps a table partition's writes in memory (the *overlay*, read before RocksDB) and writes them to
RocksDB in one batch after the commit that makes their changelog records durable has succeeded, together with the
"persisted offset" Faust's recovery starts from. Each batch is a state Kafka also has, and the persisted offset
never passes a changelog record whose write is not in RocksDB, so a restarted worker reads RocksDB, then the
changelog after that offset, and ends with exactly what the memory store would have rebuilt from the whole
changelog (the argument, step by step, in docs/STREAMS.md, "Table state on disk").

- Which partitions a commit covers: under ``at_least_once`` Faust flushes the producer (every changelog record
  queued so far is acknowledged) before it commits, so all of them; under ``exactly_once`` the partitions whose
  transactions this commit ends (Faust names a table partition's transaction ``{app id}-{group}-{partition}``, as
  it does for the source partitions whose offsets it commits; fault 5 of ``faust_patches`` hands every queued
  record over before the transaction ends).
- The persisted offset is the newest changelog offset acknowledged *before* the commit began: its record, and every
  one before it, belongs to a write in this batch or an earlier one. A lower offset is always safe (recovery
  re-reads records RocksDB already has); a higher one is not, so nothing later is used.
- A commit that ends during a rebalance writes nothing: recovery is writing older changelog records to RocksDB
  then; the writes stay in memory for the next commit.
- A failed transactional commit (or a fenced producer, after which Faust crashes the worker) stops all writes to
  RocksDB for the rest of the process: what it holds stays a committed state, and the restart recovers the rest.
- Faust's ``TableManager.persist_offset_on_commit`` (the ``exactly_once`` path of the acknowledgement callback)
  keys its pending offsets by changelog partition and looks them up by source partition, so it never writes one;
  acknowledgements of this store's records come here instead.

Faust's store is otherwise used as it is (one RocksDB per table partition under ``tabledir``, its recovery writing
changelog batches straight to RocksDB). ``install()`` registers the ``closedloop-rocksdb://`` store and wraps
``Consumer._commit_offsets``; ``create_app`` calls it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from faust import stores as faust_stores
from faust.stores import rocksdb as faust_rocksdb
from faust.streams import current_event
from faust.tables import manager as faust_table_manager
from faust.transport import consumer as faust_consumer
from faust.types import TP

STORE_URL = "closedloop-rocksdb://"

# Faust's defaults are 64 MiB memtables (3 of them) and a 2 GiB block cache per database, and there is one database
# per table partition (12 with 3 tables and 4 partitions): sized for one big table, not a dozen small ones.
ROCKSDB_OPTIONS: dict[str, Any] = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
}

log = logging.getLogger(__name__)
_original_commit_offsets = faust_consumer.Consumer._commit_offsets
_original_persist_offset_on_commit = faust_table_manager.TableManager.persist_offset_on_commit

Writes = dict[bytes, bytes | None]  # key -> value; None is a deletion


@dataclass
class _Batch:
    """One table partition's writes handed to a commit, and the changelog offset they reach."""

    partition: int
    writes: Writes
    changelog_offset: int | None


class CommittedRocksDBStore(faust_rocksdb.Store):
    """Faust's RocksDB store, with writes kept in memory until the commit that makes them durable in Kafka."""

    def __init__(self, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, options={**ROCKSDB_OPTIONS, **(options or {})}, **kwargs)
        self._pending: dict[int, Writes] = {}  # written since the last commit began
        self._committing: dict[int, list[Writes]] = {}  # handed to a commit not finished yet
        self._acknowledged: dict[int, int] = {}  # newest acknowledged changelog offset per partition
        self._applying_changelog = False
        self.frozen = False  # a transactional commit failed: RocksDB is not written again by this process

    @property
    def _changelog_topic(self) -> str:
        return str(cast(Any, self.table).changelog_topic_name)  # on Faust's Collection, not its interface

    # -- reads and writes ------------------------------------------------------------------------------------

    def _event_partition(self) -> int | None:
        event = current_event()
        if event is None or self.table.is_global or self.table.use_partitioner:
            return None
        return int(event.message.partition)

    def _overlay(self, partition: int, key: bytes) -> tuple[bool, bytes | None]:
        pending = self._pending.get(partition)
        if pending is not None and key in pending:
            return True, pending[key]
        for writes in reversed(self._committing.get(partition, ())):
            if key in writes:
                return True, writes[key]
        return False, None

    def _overlay_partitions(self, partition: int | None) -> Iterable[int]:
        if partition is not None:
            return (partition,)
        return set(self._pending) | set(self._committing)

    def _get(self, key: bytes) -> bytes | None:
        for partition in self._overlay_partitions(self._event_partition()):
            found, value = self._overlay(partition, key)
            if found:
                return value
        return super()._get(key)

    def _contains(self, key: bytes) -> bool:
        for partition in self._overlay_partitions(self._event_partition()):
            found, value = self._overlay(partition, key)
            if found:
                return value is not None
        return bool(super()._contains(key))

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = self._event_partition()
        if partition is None:
            raise RuntimeError(f"table {self.table.name!r} written outside of an event: its partition is unknown")
        self._pending.setdefault(partition, {})[key] = value
        self._key_index[key] = partition

    def _del(self, key: bytes) -> None:
        partition = self._event_partition()
        for each in (partition,) if partition is not None else list(self._dbs):
            self._pending.setdefault(each, {})[key] = None

    def _merged(self, partition: int) -> Writes:
        merged: Writes = {}
        for writes in self._committing.get(partition, ()):
            merged.update(writes)
        merged.update(self._pending.get(partition, {}))
        return merged

    def _active_partitions(self) -> list[int]:
        actives = self.app.assignor.assigned_actives()
        topic = self._changelog_topic
        return [p for p in self._dbs if self.table.is_global or TP(topic=topic, partition=p) in actives]

    def _iteritems(self) -> Iterator[tuple[bytes, bytes]]:
        for partition in self._active_partitions():
            overlay = self._merged(partition)
            for key, value in self._visible_items(self._dbs[partition]):
                if key not in overlay:
                    yield key, value
            for key, maybe in overlay.items():
                if maybe is not None:
                    yield key, maybe

    def _iterkeys(self) -> Iterator[bytes]:
        for key, _ in self._iteritems():
            yield key

    def _itervalues(self) -> Iterator[bytes]:
        for _, value in self._iteritems():
            yield value

    def _size(self) -> int:
        return sum(1 for _ in self._iteritems())

    # -- changelog offsets -----------------------------------------------------------------------------------

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        """Recovery: the records go straight to RocksDB with their offsets (Faust's own behaviour)."""
        self._applying_changelog = True
        try:
            super().apply_changelog_batch(batch, to_key, to_value)
        finally:
            self._applying_changelog = False

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        """From recovery: written at once, with the records. From a changelog acknowledgement: noted for the next
        commit, which writes it with the table writes it covers."""
        if self._applying_changelog:
            super().set_persisted_offset(tp, offset)
        elif offset > self._acknowledged.get(tp.partition, -1) and self._assigned(tp.partition):
            self._acknowledged[tp.partition] = offset

    def _assigned(self, partition: int) -> bool:
        """Whether this process serves the partition now: an acknowledgement or a write arriving after the
        partition was given away must not move its offset (its writes were dropped)."""
        actives = cast(Any, self.app.assignor)._assignment.actives
        return partition in actives.get(self._changelog_topic, ())

    # -- commits ---------------------------------------------------------------------------------------------

    def begin_commit(self, covers: Callable[[str, int], bool]) -> list[_Batch]:
        """Hand the writes of every partition the commit covers to it; reads still see them until it finishes."""
        batches = []
        topic = self._changelog_topic
        for partition in set(self._pending) | set(self._acknowledged):
            if not covers(topic, partition) or not self._assigned(partition):
                continue
            writes = self._pending.pop(partition, {})
            self._committing.setdefault(partition, []).append(writes)
            batches.append(_Batch(partition, writes, self._acknowledged.get(partition)))
        return batches

    def finish_commit(self, batches: list[_Batch]) -> None:
        """The commit succeeded: write each batch, with its changelog offset, to RocksDB in one atomic write."""
        if self.frozen:
            self.abandon_commit(batches, freeze=True)
            return
        for batch in batches:
            if not self._holds(batch):
                continue  # its partition was given away meanwhile: whoever gets it reads the changelog again
            write = faust_rocksdb.rocksdict.WriteBatch(raw_mode=True)
            for key, value in batch.writes.items():
                if value is None:
                    write.delete(key)
                else:
                    write.put(key, value)
            if batch.changelog_offset is not None:
                write.put(self.offset_key, str(batch.changelog_offset).encode())
            self._db_for_partition(batch.partition).write(write)
            self._forget(batch)

    def abandon_commit(self, batches: list[_Batch], *, freeze: bool) -> None:
        """The commit did not happen (or must not be written yet): its writes go back under the newer ones;
        ``freeze`` after a failed transaction, whose writes Kafka may not keep."""
        if freeze and not self.frozen:
            self.frozen = True
            log.error(
                "a commit failed: table %s keeps its state in memory and stops writing RocksDB until the worker "
                "restarts (which recovers from the changelog)",
                self.table.name,
            )
        for batch in batches:
            if self._holds(batch):
                self._forget(batch)
                self._pending[batch.partition] = {**batch.writes, **self._pending.get(batch.partition, {})}

    def _holds(self, batch: _Batch) -> bool:
        return any(layer is batch.writes for layer in self._committing.get(batch.partition, ()))

    def _forget(self, batch: _Batch) -> None:
        layers = [layer for layer in self._committing.get(batch.partition, ()) if layer is not batch.writes]
        if layers:
            self._committing[batch.partition] = layers
        else:
            self._committing.pop(batch.partition, None)

    async def stop(self) -> None:
        """Faust stops the tables first, then the agents, then the consumer, whose last commit writes the last
        batches; its store forgets its databases here, which would drop them. They stay open until the process
        ends (RocksDB's log has every write)."""
        self.logger.info("keeping RocksDB open for the consumer's last commit")

    def revoke_partitions(self, table: Any, tps: Any) -> None:
        """Unwritten state of a partition given away is dropped: RocksDB plus the changelog is the truth."""
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                self._pending.pop(tp.partition, None)
                self._committing.pop(tp.partition, None)
                self._acknowledged.pop(tp.partition, None)
        super().revoke_partitions(table, tps)


def _stores(app: Any) -> list[CommittedRocksDBStore]:
    return [table.data for table in app.tables.values() if isinstance(table.data, CommittedRocksDBStore)]


def _commit_lock(app: Any) -> asyncio.Lock:
    lock = app.__dict__.get("_closedloop_commit_lock")
    if lock is None:
        lock = app.__dict__["_closedloop_commit_lock"] = asyncio.Lock()
    return lock


async def _commit_offsets_then_write_state(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
    """Faust's ``Consumer._commit_offsets``; the tables' writes it covers go to RocksDB once it succeeded."""
    app = self.app
    stores = _stores(app)
    if not stores:
        return bool(await _original_commit_offsets(self, offsets, start_new_transaction=start_new_transaction))
    async with _commit_lock(app):  # one commit at a time: a batch's offset assumes the earlier ones are written
        transactional = bool(self.in_transaction)
        covers = _what_the_commit_covers(app, [tp for tp in offsets if tp in self.assignment()], transactional)
        begun = [(store, store.begin_commit(covers)) for store in stores]
        try:
            did_commit = await _original_commit_offsets(self, offsets, start_new_transaction=start_new_transaction)
        except BaseException:
            for store, batches in begun:
                store.abandon_commit(batches, freeze=transactional)
            raise
        crashed = bool(app.crashed)  # Faust crashes the app on a fenced producer and reports the commit as done
        # While a rebalance recovers partitions this process keeps, recovery writes changelog records to RocksDB
        # up to a highwater read before this commit: a batch written now could be overwritten by an older record.
        # The writes wait in memory (newer than anything recovery reads) for a commit after the rebalance.
        recovering = bool(app.rebalancing or app.in_recovery)
        for store, batches in begun:
            if did_commit and not crashed and not recovering:
                store.finish_commit(batches)
            else:
                store.abandon_commit(batches, freeze=transactional and crashed)
        return bool(did_commit)


def _what_the_commit_covers(app: Any, committable: list[TP], transactional: bool) -> Callable[[str, int], bool]:
    """Whether a commit of these source offsets makes the changelog records of (changelog topic, partition)
    durable: all of them under ``at_least_once`` (the producer is flushed first); under ``exactly_once`` those in
    the transactions it ends, named as Faust's ``TransactionManager`` names them."""
    if not committable:
        return lambda topic, partition: False
    if not transactional:
        return lambda topic, partition: True
    group_id = app.conf.id
    ended = {f"{group_id}-{app.assignor.group_for_topic(tp.topic)}-{tp.partition}" for tp in committable}

    def covers(topic: str, partition: int) -> bool:
        try:
            return f"{group_id}-{app.assignor.group_for_topic(topic)}-{partition}" in ended
        except KeyError:  # not in a topic group yet: its records are in no transaction this commit knows
            return False

    return covers


def _persist_offset_of_our_records(self: Any, store: Any, tp: TP, offset: int) -> None:
    if isinstance(store, CommittedRocksDBStore):
        store.set_persisted_offset(tp, offset)
    else:
        _original_persist_offset_on_commit(self, store, tp, offset)


def install() -> None:
    """Register the store and wrap the commit (idempotent)."""
    faust_stores.STORES.aliases["closedloop-rocksdb"] = f"{__name__}:CommittedRocksDBStore"
    faust_consumer.Consumer._commit_offsets = _commit_offsets_then_write_state
    faust_table_manager.TableManager.persist_offset_on_commit = _persist_offset_of_our_records
