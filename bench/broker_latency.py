"""Benchmark: the embedded broker's own produce latency as its log grows (no collector, no closedloop code).

Why: the collector answers a request only after the broker acknowledged its records (acks=all), so the broker's
latency is the floor of the collector's. This measures that floor at the rate of the collector's half-load test.

Method (results in bench/collector.md, "The broker's own latency"):
1. start a private Apache Kafka node (``deploy.stack``, as ``closedloop up`` runs it) on free loopback ports in a
   temporary directory, create a 4-partition topic;
2. optionally pre-load ``--preload`` records, to start from a log of a given size;
3. one aiokafka producer (acks=all, lz4, 2 ms linger, as the collector's) sends ``--batch`` records per "request"
   at ``--rate`` requests per second for ``--seconds``, on an open loop: each request is scheduled at a fixed
   time and its latency runs from that time until every record of it is acknowledged, so a broker stall counts
   for every request scheduled during it;
4. print p50 / p99 / max per 2-second window, overall, the broker's CPU per record, its data on disk and its
   resident memory.

Records are 600 bytes of hex from os.urandom, compressing about as little as real page-view JSON does in lz4
batches (a constant payload would compress to almost nothing and hide the log's growth).

Run: ``.venv/bin/python bench/broker_latency.py --rate 190 --batch 100 --seconds 10 [--preload 400000]``
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPIC = "latency-probe"


def payload() -> bytes:
    return binascii.hexlify(os.urandom(300))


async def measure(broker, args) -> None:
    from aiokafka import AIOKafkaProducer

    from bench.collector_load import Result
    from bench.support import cpu_seconds, rss_bytes

    bootstrap = broker.stack.bootstrap

    def data_size() -> str:
        return f"{broker.stack.kafka_data_bytes() / 1e6:.1f} MB"

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, compression_type="lz4", max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        for start in range(0, args.preload, 10_000):
            acks = [
                await producer.send(TOPIC, payload(), key=b"k%d" % i)
                for i in range(start, min(args.preload, start + 10_000))
            ]
            await asyncio.gather(*acks)
        print(f"pre-loaded {args.preload:,} records; data directory {data_size()}", flush=True)

        latencies: list[tuple[float, float]] = []

        async def request(number: int, scheduled: float) -> None:
            acks = [
                await producer.send(TOPIC, payload(), key=b"k%d" % (number * args.batch + i)) for i in range(args.batch)
            ]
            await asyncio.gather(*acks)
            latencies.append((scheduled, time.monotonic() - scheduled))

        cpu_before = cpu_seconds(broker.pid)
        started = time.monotonic()
        tasks = []
        total = int(args.rate * args.seconds)
        for number in range(total):
            scheduled = started + number / args.rate
            wait = scheduled - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(request(number, scheduled)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        broker_cpu = cpu_seconds(broker.pid) - cpu_before
    finally:
        await producer.stop()

    windows: dict[int, list[float]] = {}
    for scheduled, latency in latencies:
        windows.setdefault(int((scheduled - started) // 2), []).append(latency)
    for window, values in sorted(windows.items()):
        window_result = Result(len(values), 0, 2.0, values)  # the collector bench's percentiles, in ms
        print(
            f"  t={window * 2:3d}-{window * 2 + 2:<3d}s  {len(values):4d} requests"
            f"  p50 {window_result.pct(0.5):6.1f} ms"
            f"  p99 {window_result.pct(0.99):6.1f} ms  max {max(values) * 1000:6.1f} ms"
        )
    every = Result(len(latencies), 0, args.seconds, [latency for _, latency in latencies])
    print(
        f"all: {every.requests} requests of {args.batch} records at {args.rate:g}/s: p50 {every.pct(0.5):.1f} ms,"
        f" p99 {every.pct(0.99):.1f} ms, max {max(every.latencies) * 1000:.1f} ms; broker CPU "
        f"{broker_cpu * 1e6 / (total * args.batch):.1f} us a record; data directory {data_size()}, broker resident "
        f"{rss_bytes(broker.pid) / 1e6:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=190.0, help="requests per second")
    parser.add_argument("--batch", type=int, default=100, help="records per request")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--preload", type=int, default=0, help="records written before the measurement")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="wait at most this many seconds for a load average under 1.5 before measuring",
    )
    args = parser.parse_args()
    if not (
        0 < args.rate <= 10_000
        and 0 < args.batch <= 1_000
        and 0 < args.seconds <= 120
        and 0 <= args.preload <= 5_000_000
        and 0 <= args.quiet_wait <= 600
    ):
        parser.error("keep it bounded: rate <= 10,000/s, batch <= 1,000, seconds <= 120, preload <= 5,000,000")

    from kafka.admin import KafkaAdminClient, NewTopic

    from bench.collector_load import start_broker
    from bench.support import wait_for_quiet

    tmp = Path(tempfile.mkdtemp(prefix="closedloop-broker-latency-"))
    broker, bootstrap = start_broker(tmp / "stack")
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(TOPIC, 4, 1)])
        admin.close()
        wait_for_quiet(args.quiet_wait)
        asyncio.run(measure(broker, args))
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
