"""Benchmark: end-to-end delay from an event accepted by the collector to its row queryable in ClickHouse's
``events`` table (the sink's table), at a steady 1,000 events/s.

Method (results in bench/kafka.md):
1. start a private Apache Kafka node and the ClickHouse endpoint (``deploy.stack``, as ``closedloop up`` runs
   them) in a temporary directory on free loopback ports; create the pipeline's topics (4 partitions) and apply
   the migrations;
2. run ``closedloop collector`` and ``closedloop sink`` as the production commands, with their default settings
   (the sink's batches: 10,000 rows or 1 s, whichever comes first; ``--sink-batch-seconds`` changes the 1 s);
3. warm up for ``--warmup-seconds`` at the same rate and wait until those rows are in ClickHouse;
4. send single page views (one per request, as the tracker does) on an open loop at ``--rate`` requests per
   second for ``--seconds`` over 64 keep-alive connections; note each event's id (from the answer) and the
   wall-clock time its 200 came back: the moment the collector accepted it (the broker acknowledged it);
5. meanwhile poll ClickHouse every ``--poll-ms`` for rows of the events table, noting when each event id is
   first returned (the poll's start: the row was queryable by then, and not before the poll before it), and
   the row's ``ingested_at`` (the server's clock when the sink's insert ran);
6. once every accepted event is seen (at most 60 s after the load), print the delay's p50 / p90 / p99 / max, to
   first seen and to ``ingested_at``, per 10-second window and overall, and every process's CPU per event.

Everything runs on one machine, so the client's and the server's wall clocks are the same clock.

Run: ``.venv/bin/python bench/e2e_delay.py [--rate 1000] [--seconds 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.support import (  # the repository root is on the path first when run as a script  # noqa: E402 - after the sys.path line above
    HOST,
    EmbeddedStack,
    children,
    cpu_seconds,
    free_port,
    load_average,
    others_busy,
    process_table,
    rss_bytes,
    wait_for_quiet,
    wait_port,
)

PREFIX = "e2e"
DATABASE = "e2e"


def request(port: int, number: int) -> bytes:
    body = orjson.dumps(
        {
            "type": "page_view",
            "visitor_id": f"v{number % 5000}",
            "url": f"https://e2e.test/p/{number % 200}?utm_source=google&utm_medium=cpc&utm_campaign=e2e",
        }
    )
    return (
        f"POST /v1/events HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Closedloop-Key: demo-write-key\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Connection(asyncio.Protocol):
    """One pipelined keep-alive connection: requests written when due, each answer matched to its scheduled time,
    its event id and the wall-clock time it came back recorded."""

    def __init__(self, accepted: dict[str, float], http_latency: list[float]) -> None:
        self.accepted = accepted
        self.http_latency = http_latency
        self.scheduled: collections.deque[float] = collections.deque()
        self.buffer = bytearray()
        self.errors = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, payload: bytes, scheduled: float) -> None:
        self.scheduled.append(scheduled)
        self.transport.write(payload)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"content-length:")
            stop = head.find(b"\r\n", at)
            length = int(head[at + 15 : stop if stop > 0 else None]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            now_wall, now = time.time(), time.perf_counter()
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.http_latency.append(now - self.scheduled.popleft())
            if head[9:12] != b"200":
                self.errors += 1
                continue
            for event_id in orjson.loads(body)["event_ids"]:
                self.accepted[event_id] = now_wall


async def send_load(
    port: int,
    rate: float,
    seconds: float,
    connections: int,
    first: int,
    accepted: dict[str, float],
    http_latency: list[float],
) -> int:
    """An open loop of single page views at ``rate`` a second for ``seconds``; returns errors."""
    loop = asyncio.get_running_loop()
    pool = [
        (await loop.create_connection(lambda: Connection(accepted, http_latency), HOST, port))[1]
        for _ in range(connections)
    ]
    total = int(rate * seconds)
    start = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            pool[sent % connections].send(request(port, first + sent), start + sent / rate)
            sent += 1
        await asyncio.sleep(max(0.001, start + sent / rate - time.perf_counter()))
    deadline = time.perf_counter() + 30
    while len(http_latency) < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    for connection in pool:
        connection.transport.close()  # type: ignore[union-attr]
    return sum(connection.errors for connection in pool) + total - len(http_latency)


class Poller(threading.Thread):
    """Polls the events table; event id -> (wall time of the poll that first returned it, its ingested_at)."""

    def __init__(self, url: str, interval: float) -> None:
        super().__init__(daemon=True)
        from schemas.settings import PipelineSettings
        from sinks.client import connect

        self.client = connect(PipelineSettings(clickhouse_url=url))
        self.interval = interval
        self.seen: dict[str, tuple[float, float]] = {}
        self.polls = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        watermark = 0  # ms: rows ingested before this were all returned by an earlier poll
        while not self.stopped.is_set():
            started = time.time()
            rows = self.client.query(
                "SELECT event_id, toUnixTimestamp64Milli(ingested_at) FROM events "
                "WHERE ingested_at >= fromUnixTimestamp64Milli({watermark:Int64}, 'UTC')",
                parameters={"watermark": watermark},
            ).result_rows
            self.polls += 1
            for event_id, ingested_ms in rows:
                if event_id not in self.seen:
                    self.seen[event_id] = (started, ingested_ms / 1000)
            if rows:
                # An insert's rows carry the time it started; one batch is in flight at a time, so rows older than
                # a few seconds before the newest cannot appear any more.
                watermark = max(watermark, max(ms for _, ms in rows) - 5000)
            self.stopped.wait(max(0.0, self.interval - (time.time() - started)))

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)
        self.client.close()


def percentiles(values: list[float]) -> str:
    if not values:
        return "no data"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return f"p50 {at(0.5):7.0f} ms  p90 {at(0.9):7.0f} ms  p99 {at(0.99):7.0f} ms  max {ordered[-1] * 1000:7.0f} ms"


def wait_seen(poller: Poller, ids, timeout: float) -> int:
    """Wait until every id is seen (at most ``timeout`` s); returns how many are still missing."""
    deadline = time.monotonic() + timeout
    missing = [i for i in ids if i not in poller.seen]
    while missing and time.monotonic() < deadline:
        time.sleep(0.2)
        missing = [i for i in missing if i not in poller.seen]
    return len(missing)


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events (requests) per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1, help="collector workers (its default is 1)")
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="keep-alive connections; uvicorn answers a connection's requests one at a time, so "
        "this bounds the rate at connections / answer time (16 held 1,000/s back to 889)",
    )
    parser.add_argument("--poll-ms", type=float, default=100.0)
    parser.add_argument(
        "--sink-batch-seconds",
        type=float,
        default=None,
        help="CLOSEDLOOP_SINK_BATCH_SECONDS for the sink (its default, 1 s, when not given)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="wait at most this many seconds for a load average under 1.5 before measuring",
    )
    args = parser.parse_args()
    if not (
        0 < args.rate <= 5_000
        and 0 < args.seconds <= 300
        and 0 <= args.warmup_seconds <= 60
        and 1 <= args.workers <= 4
        and 1 <= args.connections <= 256
        and 20 <= args.poll_ms <= 5000
        and (args.sink_batch_seconds is None or 0.01 <= args.sink_batch_seconds <= 60)
        and 0 <= args.quiet_wait <= 600
    ):
        parser.error("keep it bounded: rate <= 5,000/s, seconds <= 300, warm-up <= 60 s, workers <= 4")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    from deploy.topics import create_topics
    from schemas.settings import PipelineSettings
    from sinks.migrate import migrate_up
    from sinks.settings import SinkSettings

    tmp = Path(tempfile.mkdtemp(prefix="closedloop-e2e-"))
    stack = EmbeddedStack(tmp / "stack")
    processes: list[subprocess.Popen] = []
    poller = None
    try:
        stack.start("kafka", "clickhouse")
        url = stack.clickhouse_url(DATABASE)
        create_topics(PipelineSettings(kafka_bootstrap_servers=stack.bootstrap, topic_prefix=PREFIX, partitions=4))
        migrate_up(SinkSettings(clickhouse_url=url, kafka_bootstrap_servers=stack.bootstrap, topic_prefix=PREFIX))
        env = {
            **os.environ,
            "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
            "CLOSEDLOOP_CLICKHOUSE_URL": url,
            "CLOSEDLOOP_TOPIC_PREFIX": PREFIX,
            "CLOSEDLOOP_PARTITIONS": "4",
            "CLOSEDLOOP_DATA_DIR": str(tmp / "data"),
            "CLOSEDLOOP_SINK_CONSUMER_GROUP": "e2e-sink",
        }
        if args.sink_batch_seconds is not None:
            env["CLOSEDLOOP_SINK_BATCH_SECONDS"] = str(args.sink_batch_seconds)
        port = free_port()
        with open(tmp / "collector.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "closedloop.cli",
                        "collector",
                        "--port",
                        str(port),
                        "--workers",
                        str(args.workers),
                        "--log-level",
                        "warning",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        with open(tmp / "sink.log", "wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "closedloop.cli", "sink", "--no-migrate"],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        collector, sink = processes
        wait_port(port, 60)
        time.sleep(2.0)  # every worker's producer connected
        poller = Poller(url, args.poll_ms / 1000)
        poller.start()

        accepted: dict[str, float] = {}
        http_latency: list[float] = []
        errors = asyncio.run(
            send_load(port, args.rate, args.warmup_seconds, args.connections, 0, accepted, http_latency)
        )
        missing = wait_seen(poller, list(accepted), 90)
        if errors or missing:
            for name in ("collector.log", "sink.log"):
                print(f"--- {name}:\n" + "\n".join((tmp / name).read_text(errors="replace").splitlines()[-20:]))
            raise SystemExit(f"warm-up failed: {errors} requests failed, {missing} events never reached ClickHouse")
        print(f"warm-up: {len(accepted):,} events in ClickHouse", flush=True)
        wait_for_quiet(args.quiet_wait)

        groups = {
            "collector": children(collector.pid),
            "sink": children(sink.pid),
            "broker": [stack.kafka_pid],
            "endpoint": [stack.clickhouse_pid],
        }
        own = {pid for pids in groups.values() for pid in pids}
        cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items()}
        client_before = time.process_time()
        table = process_table()
        accepted, http_latency = {}, []
        started = time.time()
        errors = asyncio.run(
            send_load(port, args.rate, args.seconds, args.connections, 10_000_000, accepted, http_latency)
        )
        load_seconds = time.time() - started
        missing = wait_seen(poller, list(accepted), 60)
        cpu = {name: cpu_seconds(pids) - cpu_before[name] for name, pids in groups.items()}
        client_cpu = time.process_time() - client_before
        beside = others_busy(table, process_table(), time.time() - started, own)

        events = len(accepted)
        print(f"sink batches: {args.sink_batch_seconds or 'default'} s; collector workers: {args.workers}")
        print(
            f"load: {events:,} events accepted in {load_seconds:.1f} s ({events / load_seconds:,.0f}/s; asked "
            f"{args.rate:,.0f}/s for {args.seconds:.0f} s), {errors} failed requests, {missing} events not in "
            f"ClickHouse after 60 s; {poller.polls} polls",
            flush=True,
        )
        print(f"beside the bench: {beside}; load average {load_average()}", flush=True)
        print(f"HTTP answer (from the scheduled send):      {percentiles(http_latency)}")
        seen = [(accepted[i], *poller.seen[i]) for i in accepted if i in poller.seen]
        print(f"accepted -> first returned by a poll:       {percentiles([s - a for a, s, _ in seen])}")
        print(f"accepted -> ingested_at (the insert's start): {percentiles([g - a for a, _, g in seen])}")
        print("per 10 s of sending, accepted -> first returned by a poll:")
        windows: dict[int, list[float]] = {}
        for accept, first_seen, _ in seen:
            windows.setdefault(int((accept - started) // 10), []).append(first_seen - accept)
        for window, delays in sorted(windows.items()):
            print(f"  t={window * 10:3d}-{window * 10 + 10:<3d}s {len(delays):6,} events  {percentiles(delays)}")
        print(
            "CPU ms per event: "
            + ", ".join(f"{name} {cpu[name] * 1000 / max(1, events):.3f}" for name in groups)
            + f", load generator and poller {client_cpu * 1000 / max(1, events):.3f}"
        )
        print(
            f"broker at the end: data {stack.kafka_data_bytes() / 1e6:.0f} MB on disk, resident "
            f"{rss_bytes(stack.kafka_pid) / 1e6:.0f} MB"
        )
        if missing or errors:
            raise SystemExit(1)
    finally:
        if poller is not None:
            poller.stop()
        for process in reversed(processes):
            stop_process(process)
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
