"""Publishing accepted records to Kafka, with the on-disk spool behind it.

The contract with request handlers: :meth:`Publisher.publish` returns only once every record is either
acknowledged by the broker (``acks=all``) or fsynced to the spool; it raises :class:`SpoolFull` when neither is
possible, and the handler answers 503 + Retry-After, accepting nothing. So an answered 200 is never lost.

- The producer is aiokafka's (idempotent, ``acks=all``, lz4, batching with ``linger_ms``): it lives on the event
  loop, so handing a record over is a plain call (no thread hop, no GIL handoff, no lock per record) and the acks
  come back as futures of the same loop. kafka-python, used before, cost about 55 us of CPU per record (its sender
  thread, per-record callbacks and pure-Python record building) against about 9 us here: see bench/collector.md.
- Records go to the partition kafka-python's and Java's default partitioner would pick (murmur2 of the key; the
  hash is cached per key, visitor ids repeat). With the partition known, a request's records for each partition
  are appended straight to the producer's open batch for it, together (``compat.aiokafka_producer``, where
  ``send()`` ends), with one future per batch: ``send()`` first re-checks topic metadata (a new set of partition
  ids per call), serializers, partitioner and transaction state, none of which applies here, and a future, a
  coroutine and an offset record per record cost about 3 of the 10 us of the publisher's CPU per record that
  remained (bench/collector.md). aiokafka is pinned below 0.15 in pyproject.toml for this and the stream jobs'
  use of its internals.
- While the spool holds anything, new records are appended behind it, so order is kept; a replay task drains
  it in order (a chunk at a time, each chunk acknowledged before the cursor moves) once a TCP probe says the
  broker is back. Replays are at-least-once; every envelope's ``event_id`` lets downstream drop a copy.
- Each worker process claims its own spool slot (``slot-N``, held by an flock), and replays whatever an earlier
  process left there.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from collector.metrics import CollectorMetrics
from collector.settings import CollectorSettings
from collector.spool import Spool, SpoolFull, SpoolRecord
from compat.aiokafka_producer import append_records, compress_lz4_fast
from schemas.kafka_security import aiokafka_security

log = logging.getLogger(__name__)

__all__ = ["Publisher", "SpoolFull", "SpoolRecord", "partition_for"]

_REPLAY_CHUNK = 1000


@functools.lru_cache(maxsize=1 << 16)
def _key_hash(key: bytes) -> int:
    # The pure-Python murmur2 costs about 4 us a key; a visitor sends many events.
    return murmur2(key) & 0x7FFFFFFF


def partition_for(key: bytes, partitions: list[int]) -> int:
    """The default partitioner's choice (Java client, kafka-python, aiokafka): murmur2 of the key, sorted ids."""
    return partitions[_key_hash(key) % len(partitions)]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Done-callback for futures nobody awaits any more: mark their exception as seen (no log noise)."""
    if not future.cancelled():
        future.exception()


class Publisher:
    """Owns the Kafka producer and the spool of one collector process. ``start`` and ``close`` bracket it."""

    def __init__(self, settings: CollectorSettings, metrics: CollectorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.spool: Spool | None = None
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        self._send_timeout_s = settings.publish_timeout_s  # the producer's request_timeout_ms, as send() uses it
        self._slot_lock: int | None = None
        self._spool_lock = asyncio.Lock()
        self._spooled = asyncio.Event()
        self._replayer: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closing = False
        self.broker_reachable = False

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Claim a spool slot, connect the producer (or start in spooling mode), start the replay task."""
        self.spool = await asyncio.to_thread(self._claim_spool)
        self.metrics.spool_bytes.set(self.spool.pending_bytes)
        await self._connect()
        self._replayer = asyncio.create_task(self._replay_forever(), name="spool-replay")

    async def close(self) -> None:
        """Stop replaying, flush the producer (unacked records go to the spool), release the slot."""
        self._closing = True
        if self._replayer is not None:
            self._replayer.cancel()
            try:
                await self._replayer
            except asyncio.CancelledError:
                pass
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await asyncio.wait_for(producer.flush(), self.settings.publish_timeout_s)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - the waiting requests spool what failed
                log.warning("producer flush incomplete at shutdown; unacknowledged records go to the spool")
            for _ in range(3):
                await asyncio.sleep(0)  # let requests woken by the flush finish (or spool) before the close
            try:
                await asyncio.wait_for(producer.stop(), 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - nothing answered is lost: it is spooled
                log.warning("producer did not stop cleanly")
        if self._slot_lock is not None:
            os.close(self._slot_lock)
            self._slot_lock = None

    # -- publishing ----------------------------------------------------------------------------------------------

    async def publish(self, records: list[SpoolRecord]) -> None:
        """Return once every record is acked by the broker or fsynced to the spool; raise SpoolFull otherwise."""
        if not records:
            return
        started = time.perf_counter()
        assert self.spool is not None, "Publisher.start() was not called"
        if self._producer is None or not self.spool.empty:
            await self._append_to_spool(records)
        else:
            failed = await self._send(records)
            if failed:
                self.broker_reachable = False
                await self._append_to_spool([records[i] for i in failed])
        self.metrics.publish_seconds.observe(time.perf_counter() - started)

    async def ready(self) -> dict[str, Any]:
        """What /readyz reports: is the broker reachable, how much is spooled."""
        reachable = await asyncio.to_thread(self._probe)
        self.broker_reachable = reachable
        return {
            "broker": "reachable" if reachable else "unreachable",
            "producer": "connected" if self._producer is not None else "not connected",
            "spool_bytes": self.spool.pending_bytes if self.spool else 0,
        }

    async def _append_to_spool(self, records: list[SpoolRecord]) -> None:
        async with self._spool_lock:
            await asyncio.to_thread(self.spool.append, records)  # type: ignore[union-attr]
            self.metrics.spool_bytes.set(self.spool.pending_bytes)  # type: ignore[union-attr]
        self.metrics.spooled.inc(len(records))
        self._spooled.set()

    async def _send(self, records: list[SpoolRecord]) -> list[int]:
        """Send records in order per partition; the indexes of those the broker did not acknowledge in time.

        The records are grouped by partition (each key's records stay in their order) and each group is handed
        over at once (``compat.aiokafka_producer.append_records``: one future per batch, not per record). Handing
        over does not suspend while the topic's metadata is known and the partition's open batch has room, so a
        request's records enter the producer together. When one cannot be handed over, neither can the rest
        (they are reported failed and spooled, keeping the order per key).
        """
        producer = self._producer
        if producer is None:
            return list(range(len(records)))
        loop = asyncio.get_running_loop()
        started = loop.time()
        partitions = self._partitions
        groups: dict[TopicPartition, list[int]] = {}
        keyless: list[int] = []
        # (record indexes of a partition, the (end, future) spans of the batches they went to)
        handed: list[tuple[list[int], list[tuple[int, asyncio.Future[Any]]]]] = []
        try:
            for index, record in enumerate(records):
                topic_partitions = partitions.get(record.topic)
                if topic_partitions is None:
                    topic_partitions = sorted(await producer.partitions_for(record.topic))
                    partitions[record.topic] = topic_partitions
                if record.key is None:
                    keyless.append(index)
                    continue
                tp = self._topic_partition(record.topic, partition_for(record.key, topic_partitions))
                group = groups.get(tp)
                if group is None:
                    groups[tp] = [index]
                else:
                    group.append(index)
            timestamp_ms = int(time.time() * 1000)
            for tp, indexes in groups.items():
                spans: list[tuple[int, asyncio.Future[Any]]] = []
                handed.append((indexes, spans))
                await append_records(
                    producer,
                    tp,
                    [(records[i].key, records[i].value) for i in indexes],
                    self._send_timeout_s,
                    timestamp_ms,
                    spans,
                )
            for index in keyless:
                handed.append(([index], [(1, await producer.send(records[index].topic, records[index].value))]))
        except Exception as exc:  # noqa: BLE001 - KafkaError, closed producer, buffer timeout: spool the rest
            log.warning("producer refused records of a request of %d: %r", len(records), exc)
            self._partitions = {}  # the partition count may have changed: ask again
            if self._producer is producer:  # e.g. a fatal idempotence error: replace it on the next replay
                self._producer = None
                self._retire(producer)
        failed: list[int] = []
        waits: list[tuple[list[int], asyncio.Future[Any]]] = []
        reached = 0
        for indexes, spans in handed:
            reached += len(indexes)
            begin = 0
            for end, future in spans:
                waits.append((indexes[begin:end], future))
                begin = end
            failed.extend(indexes[begin:])  # not handed over
        if reached < len(records):  # partitions (or keyless records) never reached
            seen = {index for indexes, _ in handed for index in indexes}
            failed.extend(index for index in range(len(records)) if index not in seen)
        # aiokafka never expires the batches of an idempotent producer: it retries them until the broker takes
        # them (however long a node stays down or a new leader takes to be elected). So the wait is bounded here:
        # a record not acknowledged within publish_timeout_s of the hand-over goes to the spool. The producer may
        # still deliver it later (cancelling its future would not take it out of the batch); its event_id lets
        # downstream drop that copy.
        deadline = started + self.settings.publish_timeout_s
        for indexes, future in waits:
            if not future.done():
                # Futures resolve batch by batch: only the first wait of a request usually suspends.
                remaining = deadline - loop.time()
                if remaining > 0:
                    await asyncio.wait((future,), timeout=remaining)
                if not future.done():
                    failed.extend(indexes)
                    future.add_done_callback(_retrieve)
                    continue
            if future.cancelled() or future.exception() is not None:
                failed.extend(indexes)
        return sorted(failed)

    def _topic_partition(self, topic: str, partition: int) -> TopicPartition:
        tp = self._tps.get((topic, partition))
        if tp is None:
            tp = self._tps[(topic, partition)] = TopicPartition(topic, partition)
        return tp

    def _retire(self, producer: AIOKafkaProducer) -> None:
        """Stop a detached producer in the background; its unacknowledged records fail and get spooled."""
        task = asyncio.create_task(self._stop_quietly(producer), name="producer-retire")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _stop_quietly(producer: AIOKafkaProducer) -> None:
        try:
            await asyncio.wait_for(producer.stop(), 5)
        except Exception:  # noqa: BLE001 - it was already failing; nothing answered depends on it
            log.warning("a retired producer did not stop cleanly")

    # -- the broker ----------------------------------------------------------------------------------------------

    async def _connect(self) -> bool:
        """Start the producer and warm the source topics' metadata; False (spooling) if the broker is away."""
        if self._producer is not None:
            return True
        if not await asyncio.to_thread(self._probe):
            log.warning("broker %s unreachable: accepted events go to the spool", self.settings.kafka_servers)
            return False
        producer = self._new_producer()
        try:
            await asyncio.wait_for(producer.start(), self.settings.publish_timeout_s + 5)
        except Exception as exc:  # noqa: BLE001 - connection refused and friends: keep spooling, retry later
            log.warning("cannot connect the producer to %s: %s", self.settings.kafka_servers, exc)
            try:
                await asyncio.wait_for(producer.stop(), 5)
            except Exception:  # noqa: BLE001 - a half-started producer: nothing of ours is in it
                pass
            return False
        for topic in self.settings.topics.source_topics():
            try:
                self._partitions[topic] = sorted(await asyncio.wait_for(producer.partitions_for(topic), 5))
            except Exception as exc:  # noqa: BLE001 - a missing topic is reported by /readyz, not fatal
                log.warning("no metadata for topic %s: %r", topic, exc)
        self._producer = producer
        self.broker_reachable = True
        return True

    def _new_producer(self) -> AIOKafkaProducer:
        # request_timeout_ms bounds each produce request; a batch is retried until acknowledged (idempotence),
        # so _send bounds the wait for acks itself. lz4 in its fast mode: aiokafka's LZ4 HC was the largest
        # single cost of a record on the event loop (compat.aiokafka_producer).
        compress_lz4_fast()
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_servers.split(","),
            client_id=f"closedloop-collector-{os.getpid()}",
            acks="all",
            enable_idempotence=True,  # broker-side dedup of the producer's own retries, order kept per partition
            linger_ms=self.settings.linger_ms,
            max_batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024,
            compression_type="lz4",
            request_timeout_ms=int(self.settings.publish_timeout_s * 1000),
            retry_backoff_ms=100,
            **aiokafka_security(self.settings),
        )

    def _probe(self) -> bool:
        """Can we open a TCP connection to any bootstrap server? (Cheap; run in a thread.)"""
        for server in self.settings.kafka_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=1):
                    return True
            except (OSError, ValueError):
                continue
        return False

    # -- the spool -----------------------------------------------------------------------------------------------

    def _claim_spool(self) -> Spool:
        """Take the first spool slot no other live process holds (flock dies with its process)."""
        root = self.settings.spool_path
        root.mkdir(parents=True, exist_ok=True)
        for slot in range(self.settings.workers + 64):
            directory = root / f"slot-{slot}"
            directory.mkdir(exist_ok=True)
            fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._slot_lock = fd
            return Spool(Path(directory), self.settings.spool_max_bytes)
        raise RuntimeError(f"every spool slot under {root} is held by another process")

    async def _replay_forever(self) -> None:
        backoff = 0.1
        while not self._closing:
            if self.spool is None or self.spool.empty:
                self._spooled.clear()
                try:
                    await asyncio.wait_for(self._spooled.wait(), timeout=1.0)
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                drained = await self._replay_chunk()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("spool replay failed; will retry")
                drained = False
            if drained:
                backoff = 0.1
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _replay_chunk(self) -> bool:
        """Publish the oldest spooled chunk; True when the broker acked all of it (and the cursor moved)."""
        if not await asyncio.to_thread(self._probe):
            return False
        if not await self._connect():
            return False
        async with self._spool_lock:
            records, position = await asyncio.to_thread(self.spool.read, _REPLAY_CHUNK)  # type: ignore[union-attr]
        if not records:
            return True
        failed = await self._send(records)
        if failed:
            log.warning("replay: %d of %d spooled records not acknowledged; retrying", len(failed), len(records))
            return False
        async with self._spool_lock:
            await asyncio.to_thread(self.spool.commit, position)  # type: ignore[union-attr]
            self.metrics.spool_bytes.set(self.spool.pending_bytes)  # type: ignore[union-attr]
        self.metrics.replayed.inc(len(records))
        self.broker_reachable = True
        return True
