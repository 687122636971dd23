"""Publishing accepted records to Kafka, with the on-disk spool behind it.

The contract with request handlers: :meth:`Publisher.publish` returns only once every record is either
acknowledged by the broker (``acks=all``) or fsynced to the spool; it raises :class:`SpoolFull` when neither is
possible, and the handler answers 503 + Retry-After, accepting nothing. So an answered 200 is never lost.

- kafka-python's ``send`` only appends to the producer's in-memory batch (the I/O happens in its sender thread),
  so it is called on the event loop; the acks come back through callbacks bridged with ``call_soon_threadsafe``.
  The one blocking case, a topic whose metadata is not cached yet, is sent from a worker thread instead.
- While the spool holds anything, new records are appended behind it, so order is kept; a replay task drains
  it in order (a chunk at a time, each chunk acknowledged before the cursor moves) once a TCP probe says the
  broker is back. Replays are at-least-once; every envelope's ``event_id`` lets downstream drop a copy.
- Each worker process claims its own spool slot (``slot-N``, held by an flock), and replays whatever an earlier
  process left there.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from collector.metrics import CollectorMetrics
from collector.settings import CollectorSettings
from collector.spool import Spool, SpoolFull, SpoolRecord

log = logging.getLogger(__name__)

__all__ = ["Publisher", "SpoolFull", "SpoolRecord"]

_REPLAY_CHUNK = 1000


class _Acks:
    """Counts the acks of one request's records (in the producer's thread) and wakes the request once."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        self.remaining = count
        self.failed: list[int] = []
        self.future: asyncio.Future[list[int]] = loop.create_future()
        self._loop = loop
        self._lock = threading.Lock()

    def ok(self, _metadata: Any) -> None:
        self._done(None)

    def error(self, index: int, _exc: BaseException) -> None:
        self._done(index)

    def _done(self, failed_index: int | None) -> None:
        with self._lock:
            if failed_index is not None:
                self.failed.append(failed_index)
            self.remaining -= 1
            finished = self.remaining == 0
        if finished:
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(sorted(self.failed))


class Publisher:
    """Owns the Kafka producer and the spool of one collector process. ``start`` and ``close`` bracket it."""

    def __init__(self, settings: CollectorSettings, metrics: CollectorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.spool: Spool | None = None
        self._producer: KafkaProducer | None = None
        self._slot_lock: int | None = None
        self._spool_lock = asyncio.Lock()
        self._spooled = asyncio.Event()
        self._replayer: asyncio.Task[None] | None = None
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
            await asyncio.to_thread(producer.flush, self.settings.publish_timeout_s)
            await asyncio.sleep(0)  # let ack callbacks queued by the flush run, so their requests finish
            await asyncio.to_thread(producer.close, 5)
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
        """Send records in order; the indexes of those the broker did not acknowledge in time."""
        producer = self._producer
        if producer is None:
            return list(range(len(records)))
        acks = _Acks(len(records), asyncio.get_running_loop())
        if all(self._metadata_known(producer, topic) for topic in {r.topic for r in records}):
            self._hand_over(producer, records, acks)
        else:  # send() would block on a metadata fetch: do that off the event loop
            await asyncio.to_thread(self._hand_over, producer, records, acks)
        try:
            return await asyncio.wait_for(asyncio.shield(acks.future), self.settings.publish_timeout_s + 5)
        except asyncio.TimeoutError:  # the producer's own delivery timeout should have fired first
            return list(range(len(records)))

    @staticmethod
    def _hand_over(producer: KafkaProducer, records: list[SpoolRecord], acks: _Acks) -> None:
        for index, record in enumerate(records):
            try:
                future = producer.send(record.topic, key=record.key, value=record.value)
            except (KafkaError, AssertionError, ValueError) as exc:
                acks.error(index, exc)
                continue
            future.add_callback(acks.ok)
            future.add_errback(acks.error, index)

    @staticmethod
    def _metadata_known(producer: KafkaProducer, topic: str) -> bool:
        # kafka-python has no public non-blocking check; its cluster metadata object answers without I/O.
        try:
            return bool(producer._metadata.partitions_for_topic(topic))  # noqa: SLF001
        except Exception:  # noqa: BLE001 - any surprise means "not known": take the threaded path
            return False

    # -- the broker ----------------------------------------------------------------------------------------------

    async def _connect(self) -> bool:
        """Create the producer and warm the source topics' metadata; False (spooling) if the broker is away."""
        if self._producer is not None:
            return True
        if not await asyncio.to_thread(self._probe):
            log.warning("broker %s unreachable: accepted events go to the spool", self.settings.kafka_servers)
            return False
        try:
            producer = await asyncio.to_thread(self._new_producer)
        except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable and friends: keep spooling, retry later
            log.warning("cannot connect the producer to %s: %s", self.settings.kafka_servers, exc)
            return False
        for topic in self.settings.topics.source_topics():
            try:
                await asyncio.to_thread(producer.partitions_for, topic)
            except Exception as exc:  # noqa: BLE001 - a missing topic is reported by /readyz, not fatal
                log.warning("no metadata for topic %s: %s", topic, exc)
        self._producer = producer
        self.broker_reachable = True
        return True

    def _new_producer(self) -> KafkaProducer:
        timeout_ms = int(self.settings.publish_timeout_s * 1000)
        request_timeout_ms = max(500, timeout_ms // 2)
        return KafkaProducer(
            bootstrap_servers=self.settings.kafka_servers.split(","),
            client_id=f"closedloop-collector-{os.getpid()}",
            acks="all",
            enable_idempotence=True,  # broker-side dedup of the producer's own retries, order kept per partition
            linger_ms=self.settings.linger_ms,
            batch_size=256 * 1024,
            compression_type="lz4",
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_ms=max(timeout_ms, request_timeout_ms + self.settings.linger_ms + 1),
            max_block_ms=5000,
            reconnect_backoff_ms=100,
            reconnect_backoff_max_ms=2000,
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
            except Exception:  # noqa: BLE001 - a replay hiccup must not kill the task; the data stays spooled
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
