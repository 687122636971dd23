"""Load test of the collector publishing to the embedded broker, on loopback only, bounded in time and count.

    .venv/bin/python bench/collector_load.py [--workers 2] [--seconds 10] [--bootstrap HOST:PORT]

Starts (and stops, by PID) its own noida-db broker unless --bootstrap is given, and a collector
(``closedloop collector``) on a free 127.0.0.1 port with a fresh topic prefix. Then, for single events and for
batches of 100: a closed loop at full concurrency (throughput), and an open loop at half that rate (latency
measured from each request's scheduled send time, so a stall counts against the collector). Prints a table;
bench/collector.md records the figures and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {HOST}:{port}")


def request_bytes(port: int, events: int) -> bytes:
    batch = [{"type": "page_view", "visitor_id": f"bench-{i % 64}",
              "url": f"https://bench.test/p/{i}?utm_source=google&utm_medium=cpc&utm_campaign=load"}
             for i in range(events)]
    body = orjson.dumps(batch[0] if events == 1 else batch)
    head = (f"POST /v1/events HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Closedloop-Key: demo-write-key\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> int:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def closed_loop(port: int, payload: bytes, concurrency: int, seconds: float, max_requests: int) -> Result:
    latencies: list[float] = []
    errors = 0
    count = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors, count
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < deadline and count < max_requests:
                count += 1
                started = time.perf_counter()
                if await exchange(reader, writer, payload) != 200:
                    errors += 1
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return Result(len(latencies), errors, time.perf_counter() - started, latencies)


async def open_loop(port: int, payload: bytes, rate: float, seconds: float, connections: int) -> Result:
    """Requests scheduled at a fixed rate over a pool of keep-alive connections; latency from the schedule."""
    total = int(rate * seconds)
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(HOST, port))
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        try:
            if await exchange(reader, writer, payload) != 200:
                errors += 1
        finally:
            pool.put_nowait((reader, writer))
        latencies.append(time.perf_counter() - scheduled)

    start = time.perf_counter()
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait()[1].close()
    return Result(len(latencies), errors, elapsed, latencies)


def start_broker(data_dir: Path) -> tuple[subprocess.Popen, str]:
    import noida_db

    port = free_port()
    binary = Path(noida_db.__file__).parent / "noida-db"  # the real binary, so its PID is the broker's
    proc = subprocess.Popen([str(binary), "start", "--data-dir", str(data_dir), "--only", "kafka",
                             "--kafka-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_port(port, 30)
    return proc, f"{HOST}:{port}"


def create_topics(bootstrap: str, prefix: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    from schemas.topics import Topics

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, 4, 1) for t in Topics(prefix).source_topics()])
    finally:
        admin.close()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="closedloop-collector-bench-"))
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker, bootstrap = start_broker(tmp / "broker")
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, prefix)
    port = free_port()
    env = {**os.environ, "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CLOSEDLOOP_TOPIC_PREFIX": prefix,
           "CLOSEDLOOP_DATA_DIR": str(tmp / "data")}
    collector = subprocess.Popen(
        [sys.executable, "-m", "closedloop.cli", "collector", "--port", str(port), "--workers", str(args.workers),
         "--log-level", "warning"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 30)
        time.sleep(1.0)  # let every worker finish its startup (producer connected)
        rows = []
        for label, events in (("single", 1), ("batch100", 100)):
            payload = request_bytes(port, events)
            asyncio.run(closed_loop(port, payload, 8, 1.0, 10_000))  # warm-up
            peak = asyncio.run(closed_loop(port, payload, args.concurrency, args.seconds, 2_000_000))
            req_rate = peak.requests / peak.seconds
            half = asyncio.run(open_loop(port, payload, req_rate / 2, args.seconds, args.concurrency))
            rows.append((label, "max", req_rate, req_rate * events, peak.pct(0.5), peak.pct(0.99), peak.errors))
            rows.append((label, "half", half.requests / half.seconds, half.requests * events / half.seconds,
                         half.pct(0.5), half.pct(0.99), half.errors))
        print(f"collector workers={args.workers} concurrency={args.concurrency} seconds={args.seconds} cpus={os.cpu_count()}")
        print(f"{'mode':<9} {'load':<5} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        for label, load, rps, eps, p50, p99, errs in rows:
            print(f"{label:<9} {load:<5} {rps:>9.0f} {eps:>10.0f} {p50:>8.1f} {p99:>8.1f} {errs:>6}")
    finally:
        stop(collector)
        if broker is not None:
            stop(broker)


if __name__ == "__main__":
    main()
