"""Benchmark: the floor of faust-streaming itself on this machine, with no closedloop logic at all.

Why: the stream-jobs target is 5,000 events/s on 2 cores (bench/worker.md). This measures what the framework and
the embedded broker cost per event *before* any of our work, so the target can be judged against what is possible.

Method (results in bench/worker.md, "The framework's floor"):
1. start a private embedded broker on a free loopback port in a temporary directory;
2. per mode, pre-load ``--events`` page-view-sized records (about 400 bytes, 5,000 distinct keys) on a fresh
   2-partition topic, then start one Faust worker (this file, ``app`` argument) with the settings of
   ``stream_jobs/runtime/app.py`` that matter here: at_least_once, memory store, 512 KiB producer batches, 5 ms linger;
3. from the group's first committed offset to the last, measure the rate and the CPU time (user + system, from
   /proc) of the worker and of the broker per event.

Modes: ``noop`` iterates the stream and does nothing; ``take`` the same in batches (``stream.take(1000)``);
``table`` updates one changelog-backed table entry per event (the least per-visitor state the design needs:
sessionisation changes a visitor's state on every page view); ``table_out`` also sends one output record per event.

Run: ``.venv/bin/python bench/faust_floor.py --events 30000 --modes noop take table table_out [--loop uvloop]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("noop", "take", "table", "table_out")


def build_app():
    """The Faust app a worker subprocess runs (configured from the environment the parent sets)."""
    import faust

    mode = os.environ["FLOOR_MODE"]
    app = faust.App(
        os.environ["FLOOR_APP_ID"],
        broker="kafka://" + os.environ["FLOOR_BOOTSTRAP"],
        store="memory://",
        processing_guarantee="at_least_once",
        topic_partitions=2,
        web_enabled=False,
        producer_linger=0.005,
        producer_max_batch_size=512 * 1024,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
    )
    source = app.topic(os.environ["FLOOR_TOPIC"], key_serializer="raw", value_serializer="raw")
    out = app.topic(os.environ["FLOOR_TOPIC"] + "-out", key_serializer="raw", value_serializer="raw")
    table = app.Table("floor-visitors", default=int, partitions=2, key_type=bytes, value_type=int)

    if mode == "take":

        @app.agent(source)
        async def batches(stream):
            async for _batch in stream.take(1000, within=0.05):
                pass
    else:

        @app.agent(source)
        async def events(stream):
            async for key, value in stream.items():
                if mode == "noop":
                    continue
                table[key] = table[key] + 1
                if mode == "table_out":
                    await out.send(key=key, value=value)

    return app


def measure(mode: str, events: int, bootstrap: str, broker_pid: int, admin, tmp: Path, loop: str | None) -> str:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    from bench.collector_load import cpu_seconds

    stamp = f"{mode}-{time.time_ns()}"
    topic, app_id = f"floor-{stamp}", f"floor-app-{stamp}"
    admin.create_topics(
        [NewTopic(topic, 2, 1), NewTopic(topic + "-out", 2, 1), NewTopic(f"{app_id}-floor-visitors-changelog", 2, 1)]
    )
    value = (
        b'{"event_id":"' + b"e" * 32 + b'","site_id":"site","event":{"type":"page_view","visitor_id":"v",'
        b'"url":"https://example.com/a?utm_source=google&utm_medium=cpc&utm_campaign=spring",'
        b'"title":"A page","user_agent":"' + b"Mozilla/5.0 " * 20 + b'"}}'
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=512 * 1024)
    for i in range(events):
        producer.send(topic, key=f"visitor-{i % 5000}".encode(), value=value)
    producer.flush(timeout=120)
    producer.close()

    env = dict(os.environ, FLOOR_MODE=mode, FLOOR_APP_ID=app_id, FLOOR_BOOTSTRAP=bootstrap, FLOOR_TOPIC=topic)
    argv = (
        [sys.executable, __file__, "app"]
        + (["--loop", loop] if loop else [])
        + ["worker", "--loglevel", "warn", "--without-web"]
    )
    with open(tmp / f"worker-{mode}.log", "wb") as log:
        worker = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=app_id, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in (0, 1)]
    try:
        first = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and worker.poll() is None:
            done = sum(consumer.committed(tp) or 0 for tp in partitions)
            if done and first is None:
                first = (time.monotonic(), done, cpu_seconds([worker.pid]), cpu_seconds([broker_pid]))
            if done >= events:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{mode}: the worker did not consume {events} events; see {tmp}/worker-{mode}.log")
        end = (time.monotonic(), done, cpu_seconds([worker.pid]), cpu_seconds([broker_pid]))
    finally:
        worker.terminate()
        worker.wait(30)
        consumer.close()
    counted = end[1] - first[1]
    if counted < events // 2:
        return f"{mode}: the first commit came after {first[1]} of {events} events; use more --events"
    rate = counted / (end[0] - first[0])
    worker_us = (end[2] - first[2]) / counted * 1e6
    broker_us = (end[3] - first[3]) / counted * 1e6
    return (
        f"{mode:10} {rate:8,.0f} events/s   worker {worker_us:4.0f} us/event   broker {broker_us:4.0f} us/event   "
        f"together {worker_us + broker_us:4.0f} us/event -> at most {2e6 / (worker_us + broker_us):,.0f} "
        f"events/s on 2 fully used cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--loop", choices=("aio", "uvloop"), default=None, help="Faust's event loop (default aio)")
    args = parser.parse_args()

    from kafka.admin import KafkaAdminClient

    from bench.collector_load import start_broker, stop

    tmp = Path(tempfile.mkdtemp(prefix="closedloop-faust-floor-"))
    broker, bootstrap = start_broker(tmp / "kafka")
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        print(f"load average {os.getloadavg()[0]:.2f}; {args.events} events per mode; loop {args.loop or 'aio'}")
        for mode in args.modes:
            print(measure(mode, args.events, bootstrap, broker.pid, admin, tmp, args.loop), flush=True)
        admin.close()
    finally:
        stop(broker)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "app":
        del sys.argv[1]
        build_app().main()
    else:
        main()
