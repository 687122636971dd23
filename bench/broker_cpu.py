"""Benchmark: the embedded Apache Kafka's CPU per record as its log grows to a million records.

Why: the old embedded broker (noida-db) rewrote its whole log about once a second, so every record cost it more
than the one before (bench/README.md, history). A Kafka broker appends to segment files; the target is that
the tenth 100,000 records cost the broker what the first did.

Method (results in bench/kafka.md):
1. start a private Apache Kafka node (``deploy.stack``, as ``closedloop up`` runs it) in a temporary directory on
   free loopback ports, and create the pipeline's events topic with its configs (4 partitions, deploy.topics);
2. make 100,000 page-view records as the collector makes them: tracker-shaped page views (random visitor,
   session and event ids, one of 3,200 pages, referrers, UTM parameters on half the URLs, four user agents)
   parsed by the collector's own code, about 800 bytes each, keyed by visitor;
3. warm the broker up with ``--warmup-chunks`` chunks to another topic (the JVM compiles its hot paths during
   the first seconds: that cost is reported, not mixed into the first measured chunk);
4. produce 10 chunks of those 100,000 records with aiokafka and the collector's producer settings (acks=all,
   idempotent, lz4, 2 ms linger, 512 KiB batches), sending as fast as the acks allow with at most
   ``--in-flight`` records unacknowledged; after each chunk's last ack read the broker's CPU from
   /proc/<pid>/stat and report the CPU microseconds per record of that chunk, its rate, and what else ran;
5. then the broker's idle CPU for ``--idle-seconds``, its data on disk and its resident memory.

Run: ``.venv/bin/python bench/broker_cpu.py [--chunks 10] [--chunk-records 100000]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.support import (  # the repository root is on the path first when run as a script  # noqa: E402 - after the sys.path line above
    EmbeddedStack,
    cpu_seconds,
    load_average,
    others_busy,
    process_table,
    rss_bytes,
    tracker_page_view,
    wait_for_quiet,
)

PREFIX = "brokercpu"


def page_view_records(count: int) -> list[tuple[str, bytes, bytes]]:
    """``count`` page-view records (topic, key, value) as the collector publishes them: tracker-shaped page views
    (bench.support.tracker_page_view), each parsed by the collector's own code."""
    from collector import events as parsing
    from schemas.topics import Topics

    rng = random.Random(20261205)
    topics = Topics(PREFIX)
    made = []
    for _ in range(count):
        event, user_agent = tracker_page_view(rng)
        batch = parsing.parse_events(
            [event],
            site_id="demo",
            allowed_types=parsing.BROWSER_TYPES,
            received_at=parsing.now_utc(),
            user_agent=user_agent,
            topics=topics,
        )
        made.extend((accepted.record.topic, accepted.record.key, accepted.record.value) for accepted in batch.accepted)
    assert len(made) == count, "the collector refused some of the generated page views"
    return made


async def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes, bytes]], in_flight: int) -> float:
    """Produce every record to ``topic`` and wait for all acks; seconds taken."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        compression_type="lz4",
        request_timeout_ms=30_000,
    )
    await producer.start()
    try:
        await producer.partitions_for(topic)
        started = time.perf_counter()
        pending: list[asyncio.Future] = []
        for _, key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= in_flight:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--chunk-records", type=int, default=100_000)
    parser.add_argument("--in-flight", type=int, default=20_000, help="most records sent and not yet acknowledged")
    parser.add_argument("--warmup-chunks", type=int, default=2, help="chunks sent to another topic first")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="how long to watch the broker idle after")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="wait at most this many seconds for a load average under 1.5 before measuring",
    )
    args = parser.parse_args()
    if not (
        1 <= args.chunks <= 50
        and 1_000 <= args.chunk_records <= 500_000
        and 100 <= args.in_flight <= 100_000
        and 0 <= args.idle_seconds <= 120
        and 0 <= args.quiet_wait <= 600
        and 0 <= args.warmup_chunks <= 5
    ):
        parser.error("keep it bounded: chunks <= 50, chunk records 1,000-500,000, idle seconds <= 120")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    from deploy.topics import create_topics
    from schemas.settings import PipelineSettings
    from schemas.topics import TopicSpec

    tmp = Path(tempfile.mkdtemp(prefix="closedloop-broker-cpu-"))
    stack = EmbeddedStack(tmp / "stack").start("kafka")
    try:
        settings = PipelineSettings(kafka_bootstrap_servers=stack.bootstrap, topic_prefix=PREFIX, partitions=4)
        events = next(spec for spec in settings.topics.specs() if spec.name == settings.topics.events)
        warm = TopicSpec(f"{PREFIX}.warm-up", events.key, events.kind, doc="the JIT's warm-up")
        create_topics(settings, [events, warm])
        records = page_view_records(args.chunk_records)
        size = sum(len(value) + len(key) for _, key, value in records) / len(records)
        print(f"{len(records):,} page-view records, {size:.0f} bytes a record (key + value) on average", flush=True)
        pid = stack.kafka_pid
        own = set(stack.pids.values())

        for chunk in range(args.warmup_chunks):
            before = cpu_seconds(pid)
            seconds = asyncio.run(produce(stack.bootstrap, warm.name, records, args.in_flight))
            print(
                f"warm-up chunk {chunk + 1} (another topic): {(cpu_seconds(pid) - before) * 1e6 / len(records):.1f}"
                f" us a record, {len(records) / seconds:,.0f} records/s",
                flush=True,
            )
        wait_for_quiet(args.quiet_wait)
        print(
            f"{'chunk':>5} {'records so far':>15} {'broker us/record':>17} {'records/s':>10} {'producer us/rec':>16} "
            f"{'data MB':>8} {'RSS MB':>7}  beside it",
            flush=True,
        )
        costs = []
        for chunk in range(1, args.chunks + 1):
            table, own_cpu, broker_before = process_table(), time.process_time(), cpu_seconds(pid)
            seconds = asyncio.run(produce(stack.bootstrap, events.name, records, args.in_flight))
            broker = cpu_seconds(pid) - broker_before
            producer = time.process_time() - own_cpu
            costs.append(broker * 1e6 / len(records))
            beside = others_busy(table, process_table(), seconds, own)
            print(
                f"{chunk:>5} {chunk * len(records):>15,} {costs[-1]:>17.2f} {len(records) / seconds:>10,.0f} "
                f"{producer * 1e6 / len(records):>16.2f} {stack.kafka_data_bytes() / 1e6:>8.0f} "
                f"{rss_bytes(pid) / 1e6:>7.0f}  {beside}; load {load_average()}",
                flush=True,
            )
        first, last = costs[0], costs[-1]
        third = max(1, len(costs) // 3)  # one chunk is at the mercy of one noisy moment: a third of them is not
        early, late = statistics.median(costs[:third]), statistics.median(costs[-third:])
        print(
            f"broker CPU a record: first chunk {first:.2f} us, last {last:.2f} us (last / first {last / first:.2f}); "
            f"first {third} chunks' median {early:.2f}, last {third}'s {late:.2f} (ratio {late / early:.2f}); "
            f"median {statistics.median(costs):.2f}, range {min(costs):.2f}-{max(costs):.2f}",
            flush=True,
        )
        before = cpu_seconds(pid)
        time.sleep(args.idle_seconds)
        idle = (cpu_seconds(pid) - before) / max(args.idle_seconds, 1e-9)
        print(
            f"after the run: broker idle {idle * 100:.1f}% of a core over {args.idle_seconds:.0f} s; data "
            f"{stack.kafka_data_bytes() / 1e6:.0f} MB on disk "
            f"({(args.chunks + args.warmup_chunks) * len(records):,} records, "
            f"warm-up included); resident {rss_bytes(pid) / 1e6:.0f} MB; load {load_average()}",
            flush=True,
        )
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
