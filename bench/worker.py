"""Benchmark: sustained events/s through the stream-jobs worker, its CPU and memory, and state size.

Method (see bench/worker.md for results):
1. start a private embedded broker (or use CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS), create the topics;
2. pre-load the input: ``--visitors`` visitors with 4 page views each over several channels, a third of them
   identifying (half of those sharing an email with another device), CRM mql/opportunity/customer changes;
3. start ``closedloop worker`` (one process), time from "ready" until its group has committed every input offset;
   sample the worker's CPU time and RSS from /proc every 0.5 s;
4. state size: bytes of the newest value per key in each changelog topic (what a compacted topic keeps and
   what a restart recovers), scaled to 100,000 visitors.

Run: ``.venv/bin/python bench/worker.py --visitors 20000``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_worker import (  # noqa: E402 - the test harness is the benchmark's harness too
    Worker, as_records, create_all_topics, generated_stream, send, wait_idle, worker_settings,
)

from stream_jobs.topology import TABLES, changelog_topic  # noqa: E402

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return cpu, rss


def compacted_bytes(settings, topic: str) -> tuple[int, int]:
    """(keys, bytes of key + newest value per key) of a topic."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        newest: dict[bytes, int] = {}
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=500, max_records=50_000).values():
                for r in records:
                    newest[r.key] = len(r.key or b"") + len(r.value or b"")
        return len(newest), sum(newest.values())
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=20_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        tmp_path = Path(tmp)
        bootstrap = os.environ.get("CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS")
        stack_settings = None
        if not bootstrap:
            from deploy import stack
            from deploy.settings import private_stack_settings

            stack_settings = private_stack_settings(tmp_path / "stack")
            stack.start_service(stack_settings, "kafka")
            bootstrap = stack_settings.kafka_servers
        try:
            settings = worker_settings(bootstrap, f"bench_{int(time.time())}", tmp_path / "data")
            create_all_topics(settings)
            stream = generated_stream(args.visitors)
            records = as_records(settings, stream)
            kinds = {"page_view": 0, "identify": 0, "crm_status": 0}
            for envelope in stream:
                kinds[envelope.event.type] += 1
            t0 = time.monotonic()
            send(settings, records)
            print(f"loaded {len(records)} events {kinds} in {time.monotonic() - t0:.1f}s", flush=True)

            worker = Worker(settings, tmp_path / "worker.log")
            worker.start()
            pid = worker.process.pid
            cpu0, _ = proc_sample(pid)
            start = time.monotonic()
            peak_rss = 0
            try:
                import threading

                done = threading.Event()

                def sample() -> None:
                    nonlocal peak_rss
                    while not done.is_set():
                        peak_rss = max(peak_rss, proc_sample(pid)[1])
                        time.sleep(0.5)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                wait_idle(settings, timeout=3600, worker=worker)
                elapsed = time.monotonic() - start
                done.set()
                cpu1, rss = proc_sample(pid)
            finally:
                worker.stop()
            # wait_idle needs three quiet polls (about 1 s) after the last commit: subtract it.
            busy = max(elapsed - 1.0, 0.001)
            print(f"worker: {len(records)} events in {busy:.1f}s = {len(records) / busy:,.0f} events/s; "
                  f"CPU {cpu1 - cpu0:.1f}s ({(cpu1 - cpu0) / busy * 100:.0f}% of one core); "
                  f"RSS end {rss / 2**20:.0f} MiB, peak {peak_rss / 2**20:.0f} MiB")
            total = 0
            for table in TABLES:
                keys, size = compacted_bytes(settings, changelog_topic(settings.app_id, table))
                total += size
                print(f"  state {table:16s} {keys:8d} keys {size / 2**20:8.2f} MiB")
            print(f"state per 100,000 visitors: {total / args.visitors * 100_000 / 2**20:.1f} MiB")
        finally:
            if stack_settings is not None:
                from deploy import stack

                stack.down(stack_settings, services=["kafka"])


if __name__ == "__main__":
    main()
