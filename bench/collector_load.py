"""Load test of the collector on the embedded Apache Kafka, beside its two ceilings, on loopback only, bounded in
time and count.

    .venv/bin/python bench/collector_load.py [--workers 2] [--seconds 8] [--repeat 3] [--bootstrap HOST:PORT]
                                             [--only single|batch100] [--targets collector,bare,producer]
                                             [--half-rate REQUESTS_PER_S] [--tree NAME=PATH --tree NAME=PATH]

Starts (and stops, by PID) a private Apache Kafka node unless --bootstrap is given, creates the source topics
(4 partitions) under a fresh prefix, and measures three targets with the same requests, in the same run:

- **collector**: ``closedloop collector`` on a free 127.0.0.1 port (every request answered after the broker's
  acks);
- **bare**: ``bench/bare_collector.py`` under the same uvicorn (workers, uvloop, httptools), answering the same
  POST with a body of the collector's shape and no Kafka: the HTTP ceiling;
- **producer**: aiokafka producers with the collector's producer settings (acks=all, idempotent, lz4 in its
  fast mode, 2 ms linger), one process per collector worker, publishing the records the collector makes of the
  same requests with ``send()``, each "request" waiting for its records' acks: the Kafka ceiling, no HTTP.
  (``--linger-ms`` sets both the collector's and these producers' linger.) The collector hands a request's
  records over per partition (``compat.aiokafka_producer``), which costs less CPU than ``send()`` per record: the
  ceiling bounds its latency, not its CPU.

For single events and for batches of 100: a closed loop at full concurrency (throughput; driven by ``wrk`` when
it is installed, else by the asyncio client below; the producer target runs the same number of concurrent
requests), then an open loop at half the collector's max rate of that round, for every target (latency measured
from each request's scheduled send time, so a stall counts against the target). Each round measures the
collector first (its max sets the half rate), then the two ceilings in an order that alternates from round to
round. The table shows the median and range over ``--repeat`` rounds, the CPU seconds of the target, the broker
and the load generator per 1,000 events, and the collector's ratios to its ceilings, taken round by round.
bench/collector.md records the figures.

``--half-rate`` fixes the half phases' rate (requests a second) instead of half the collector's max of each round:
a target stated at a given load (issue 17: 388 batches of 100 a second) is measured at that load whatever the
machine gives that round. ``--tree NAME=PATH`` (twice or more) runs the collector of each checkout (e.g. ``git
worktree`` or ``git archive`` of another commit) as a target of its own, ``collector@NAME``, in the same rounds,
beside the same ceilings, in an order that alternates from round to round: two builds compared on one broker, one
machine state. The first tree's max sets the half rate when ``--half-rate`` is not given.

``--py-spy DIR`` records every collector worker with py-spy during each half phase (``--idle --nonblocking``, 97
samples a second, raw stacks: ``DIR/<mode>-<target>-round<n>-<pid>.txt``) and prints where each collector's event
loop spent its busy samples; py-spy's own CPU then runs beside the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
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

TARGETS = ("collector", "bare", "producer")


def request_body(events: int, start: int = 0) -> bytes:
    batch = [
        {
            "type": "page_view",
            "visitor_id": f"bench-{i % 64}",
            "url": f"https://bench.test/p/{i}?utm_source=google&utm_medium=cpc&utm_campaign=load",
        }
        for i in range(start, start + events)
    ]
    return orjson.dumps(batch[0] if events == 1 else batch)


def request_bytes(port: int, events: int) -> bytes:
    body = request_body(events)
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Closedloop-Key: demo-write-key\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
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

    fixed: tuple[float, float] | None = None  # (p50, p99) ms when measured by wrk

    def pct(self, q: float) -> float:
        if self.fixed is not None and q in (0.5, 0.99):
            return self.fixed[0] if q == 0.5 else self.fixed[1]
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


class _Pipelined(asyncio.Protocol):
    """One keep-alive connection of the open loop: requests are written when due (HTTP/1.1 pipelining, which
    uvicorn serves in order), responses matched to their scheduled send times in order. No task per request:
    the generator must stay much lighter than the collector it measures."""

    def __init__(self, latencies: list[float]) -> None:
        self.latencies = latencies
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
            length = (
                int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            )
            if len(self.buffer) < end + 4 + length:
                return
            if head[9:12] != b"200":
                self.errors += 1
            del self.buffer[: end + 4 + length]
            self.latencies.append(time.perf_counter() - self.scheduled.popleft())


async def open_loop(port: int, payload: bytes, rate: float, seconds: float, connections: int) -> Result:
    """Requests scheduled at a fixed rate, round-robin over keep-alive connections; latency from the schedule."""
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    latencies: list[float] = []
    pool = [(await loop.create_connection(lambda: _Pipelined(latencies), HOST, port))[1] for _ in range(connections)]
    start = time.perf_counter()
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        while sent < due:  # catch up on everything due: its latency still counts from its scheduled time
            pool[sent % connections].send(payload, start + sent / rate)
            sent += 1
        # Ticks of at least 1 ms (finer sleeps just spin the loop); what fell due meanwhile goes out at once.
        await asyncio.sleep(max(0.001, start + sent / rate - time.perf_counter()))
    deadline = time.perf_counter() + 60
    while len(latencies) < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    for protocol in pool:
        protocol.transport.close()  # type: ignore[union-attr]
    errors = sum(protocol.errors for protocol in pool) + (total - len(latencies))
    return Result(len(latencies), errors, elapsed, latencies)


WRK_SCRIPT = """
local f = io.open(os.getenv("CLOSEDLOOP_BENCH_BODY"), "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Closedloop-Key"] = "demo-write-key"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.6f %.3f %.3f %d\\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_closed_loop(port: int, payload: bytes, concurrency: int, seconds: float, tmp: Path) -> tuple[Result, float]:
    """The closed loop driven by wrk: (result with p50/p99 only, wrk's CPU seconds)."""
    body = payload.split(b"\r\n\r\n", 1)[1]
    (tmp / "body.json").write_bytes(body)
    (tmp / "post.lua").write_text(WRK_SCRIPT)
    proc = subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(tmp / "post.lua"),
            f"http://{HOST}:{port}/v1/events",
        ],
        env={**os.environ, "CLOSEDLOOP_BENCH_BODY": str(tmp / "body.json")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = proc.stdout.read().decode()  # type: ignore[union-attr]
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    match = re.search(r"RESULT (\d+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+)", out)
    if match is None:
        raise RuntimeError(f"wrk failed: {out}")
    requests, secs, p50, p99, errors = match.groups()
    result = Result(int(requests), int(errors), float(secs), [])
    result.fixed = (float(p50), float(p99))
    return result, usage.ru_utime + usage.ru_stime


PUBLISH_BUCKET = re.compile(rb'^closedloop_collector_publish_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)
SPOOL_WORKER = re.compile(rb'^closedloop_collector_spool_bytes\{worker="(\d+)"\}', re.M)


def publish_histograms(port: int, workers: int) -> dict[str, dict[float, float]]:
    """Each worker's cumulative ``publish_seconds`` buckets (hand-over to the broker's ack), by worker pid, read
    from ``/metrics`` (each scrape answers from one worker: scrape until every worker answered, at most 60 times)."""
    found: dict[str, dict[float, float]] = {}
    for _ in range(60):
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as answer:
            text = answer.read()
        worker = SPOOL_WORKER.search(text)
        if worker is not None:
            found[worker.group(1).decode()] = {float(le): float(n) for le, n in PUBLISH_BUCKET.findall(text)}
        if len(found) >= workers:
            break
    return found


def publish_summary(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> str:
    """The phase's publish times from two ``publish_histograms``: the bucket holding the 99th percentile, the share
    above 50 ms."""
    delta: dict[float, float] = collections.Counter()
    for worker, buckets in after.items():
        for le, count in buckets.items():
            delta[le] += count - before.get(worker, {}).get(le, 0.0)
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return "publish -"
    p99 = next(le for le in sorted(delta) if delta[le] >= 0.99 * total)
    over = 1 - delta.get(0.05, 0.0) / total
    return f"publish p99 <= {p99 * 1000:g} ms, {100 * over:.1f}% > 50 ms"


def collector_workers(server_pids: list[int]) -> list[int]:
    """The processes of a uvicorn server that serve requests: its spawned workers, or itself with one worker."""
    workers = []
    for pid in server_pids[1:]:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
        except OSError:
            continue
    return workers or server_pids[:1]


def start_py_spy(pids: list[int], seconds: float, prefix: Path) -> list[subprocess.Popen]:
    """py-spy on each process for ``seconds``: raw stacks of every thread, idle ones included, not pausing it."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return [
        subprocess.Popen(
            [exe, "record", "-p", str(pid), "-r", "97", "-d", str(max(1, round(seconds))), "--idle", "--nonblocking"]
            + ["-f", "raw", "-o", f"{prefix}-{pid}.txt"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def event_loop_profile(files: list[Path], top: int = 20) -> str:
    """Where the event loop (the main thread's ``asyncio`` runner) spent its busy samples: the idle share, then
    the functions with the largest inclusive shares of the busy samples (those under almost all of them left out)."""
    stacks: collections.Counter[str] = collections.Counter()
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            stack, _, count = line.rpartition(" ")
            if "Runner.run (asyncio/runners.py" in stack and count.isdigit():
                stacks[stack] += int(count)
    total = sum(stacks.values())
    idle = sum(n for stack, n in stacks.items() if stack.rsplit(";", 1)[-1].startswith("Runner.run "))
    busy = total - idle
    if busy <= 0:
        return "no samples"
    inclusive: collections.Counter[str] = collections.Counter()
    for stack, n in stacks.items():
        if stack.rsplit(";", 1)[-1].startswith("Runner.run "):
            continue
        for name in {re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")}:
            inclusive[name] += n
    shown = [(name, n) for name, n in inclusive.most_common() if n < 0.95 * busy][:top]
    return f"idle {100 * idle / total:.0f}% of {total} samples; of the busy ones: " + ", ".join(
        f"{name.split(' (')[0]} {100 * n / busy:.0f}%" for name, n in shown
    )


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the broker ----------------------------------------------------------------------------------------------


@dataclass
class Broker:
    """A private Apache Kafka node (``deploy.stack``), with the handle other bench scripts expect."""

    stack: EmbeddedStack

    @property
    def pid(self) -> int:
        return self.stack.kafka_pid

    def stop(self) -> None:
        self.stack.stop()


def start_broker(data_dir: Path) -> tuple[Broker, str]:
    """Start a private one-node Apache Kafka in ``data_dir``: (broker, bootstrap servers). bench/faust_floor.py
    uses this, ``stop`` and ``cpu_seconds`` from here too."""
    broker = Broker(EmbeddedStack(data_dir).start("kafka"))
    return broker, broker.stack.bootstrap


def create_topics(bootstrap: str, prefix: str) -> None:
    """The source topics under ``prefix``, 4 partitions, with the pipeline's configs (deploy.topics)."""
    from deploy.topics import create_topics as create
    from schemas.settings import PipelineSettings

    settings = PipelineSettings(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=4)
    sources = set(settings.topics.source_topics())
    create(settings, [spec for spec in settings.topics.specs() if spec.name in sources])


def stop(process) -> None:
    """Stop a process this script started: a Popen (SIGTERM, SIGKILL after 20 s) or a Broker."""
    if isinstance(process, Broker):
        process.stop()
        return
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the targets ---------------------------------------------------------------------------------------------


@dataclass
class HttpServer:
    """A uvicorn server (the collector, or the bare app) with its worker PIDs."""

    process: subprocess.Popen
    port: int
    pids: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], workers: int, cwd: Path = ROOT) -> HttpServer:
        port = free_port()
        process = subprocess.Popen(
            [*argv, "--port", str(port)], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        server = cls(process, port)
        try:
            wait_port(port, 60)
            deadline = time.monotonic() + 30  # every worker up (and, for the collector, its producer connected)
            while len(children(process.pid)) < 1 + (workers if workers > 1 else 0) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
        except BaseException:
            stop(process)
            raise
        server.pids = children(process.pid)
        return server


def collector_server(
    bootstrap: str, prefix: str, workers: int, data_dir: Path, linger_ms: int, tree: Path = ROOT
) -> HttpServer:
    """``closedloop collector`` of the checkout ``tree``: run from it with ``-m``, so its own code is imported."""
    env = {
        **os.environ,
        "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CLOSEDLOOP_TOPIC_PREFIX": prefix,
        "CLOSEDLOOP_DATA_DIR": str(data_dir),
        "CLOSEDLOOP_LINGER_MS": str(linger_ms),
    }
    env.pop("PYTHONPATH", None)  # the tree first on the path, not this checkout
    return HttpServer.start(
        [sys.executable, "-m", "closedloop.cli", "collector", "--workers", str(workers), "--log-level", "warning"],
        env,
        workers,
        cwd=tree,
    )


def bare_server(workers: int) -> HttpServer:
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.bare_collector:app",
        "--host",
        HOST,
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--no-server-header",
    ]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return HttpServer.start(argv, {**os.environ, "PYTHONPATH": str(ROOT)}, workers)


def collector_records(events: int, requests: int, prefix: str) -> list[list[tuple[str, bytes | None, bytes]]]:
    """The records the collector makes of ``requests`` requests of ``events`` page views each (its own parsing,
    fresh event ids and received times), for the producer target."""
    from collector import events as parsing
    from schemas.topics import Topics

    topics = Topics(prefix)
    made = []
    for number in range(requests):
        items = parsing.event_items(parsing.parse_json(request_body(events, number * events)), 500)
        batch = parsing.parse_events(
            items,
            site_id="demo",
            allowed_types=parsing.BROWSER_TYPES,
            received_at=parsing.now_utc(),
            user_agent="wrk",
            topics=topics,
        )
        made.append([(event.record.topic, event.record.key, event.record.value) for event in batch.accepted])
    return made


def _producer_process(bootstrap: str, linger_ms: int, requests: dict, commands, results) -> None:
    """One producer process: on ("run", label, mode, concurrency, rate, seconds) run one phase, put its result."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_producer_main(bootstrap, linger_ms, requests, commands, results))


async def _producer_main(bootstrap: str, linger_ms: int, requests: dict, commands, results) -> None:
    from aiokafka import AIOKafkaProducer

    from compat.aiokafka_producer import compress_lz4_fast

    # The collector's producer (collector/publisher.py, Publisher._new_producer), its lz4 level included.
    compress_lz4_fast()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap.split(","),
        client_id=f"bench-producer-{os.getpid()}",
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        compression_type="lz4",
        request_timeout_ms=10_000,
        retry_backoff_ms=100,
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    try:
        for topic in {record[0] for batches in requests.values() for batch in batches for record in batch}:
            await producer.partitions_for(topic)
        results.put(("ready", os.getpid()))
        while True:
            command = await loop.run_in_executor(None, commands.get)
            if command[0] == "stop":
                return
            _, label, mode, concurrency, rate, seconds = command
            cpu_before = time.process_time()
            requests_done, errors, elapsed, latencies = await _producer_phase(
                producer, requests[label], mode, concurrency, rate, seconds
            )
            results.put(("done", requests_done, errors, elapsed, latencies, time.process_time() - cpu_before))
    finally:
        await producer.stop()


async def _producer_phase(
    producer, batches: list, mode: str, concurrency: int, rate: float, seconds: float
) -> tuple[int, int, float, list[float]]:
    """One phase of "requests" (a batch of records sent, then all their acks awaited): a closed loop of
    ``concurrency`` clients (max) or an open loop at ``rate`` (latency from the scheduled time)."""
    latencies: list[float] = []
    errors = 0
    sent = 0

    async def one(scheduled: float) -> None:
        nonlocal errors, sent
        batch = batches[sent % len(batches)]
        sent += 1
        try:
            futures = [await producer.send(topic, value, key=key) for topic, key, value in batch]
            await asyncio.gather(*futures)
        except Exception:  # noqa: BLE001 - counted, as an HTTP error would be
            errors += 1
        latencies.append(time.perf_counter() - scheduled)

    started = time.perf_counter()
    if mode == "max":
        deadline = started + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                await one(time.perf_counter())

        await asyncio.gather(*(client() for _ in range(concurrency)))
    else:
        tasks = []
        for number in range(int(rate * seconds)):
            scheduled = started + number / rate
            wait = scheduled - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    return len(latencies), errors, time.perf_counter() - started, latencies


class Producers:
    """``workers`` producer processes (as many as the collector's workers) kept for the whole run."""

    def __init__(self, bootstrap: str, linger_ms: int, requests: dict, workers: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.commands = [context.Queue() for _ in range(workers)]
        self.results = context.Queue()
        self.processes = [
            context.Process(
                target=_producer_process, args=(bootstrap, linger_ms, requests, queue, self.results), daemon=True
            )
            for queue in self.commands
        ]
        for process in self.processes:
            process.start()
        self.pids = [self.results.get(timeout=120)[1] for _ in self.processes]

    def run(self, label: str, mode: str, concurrency: int, rate: float, seconds: float) -> tuple[Result, float]:
        """One phase on every process at once: (their merged result, their CPU seconds)."""
        share = len(self.processes)
        for queue in self.commands:
            queue.put(("run", label, mode, max(1, concurrency // share), rate / share, seconds))
        done = [self.results.get(timeout=seconds + 180) for _ in self.processes]
        latencies = [latency for item in done for latency in item[4]]
        result = Result(
            sum(item[1] for item in done), sum(item[2] for item in done), max(item[3] for item in done), latencies
        )
        return result, sum(item[5] for item in done)

    def stop(self) -> None:
        for queue in self.commands:
            queue.put(("stop",))
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)


# -- the run -------------------------------------------------------------------------------------------------

Row = tuple[float, float, float, float, int, float, float, float]  # req/s, events/s, p50, p99, errors, 3 CPUs


def row(result: Result, used: tuple[float, float, float], events: int) -> Row:
    """(req/s, events/s, p50, p99, errors, CPU s per 1,000 events of target, broker, client)."""
    rate = result.requests / result.seconds
    return (
        rate,
        rate * events,
        result.pct(0.5),
        result.pct(0.99),
        result.errors,
        *(1000 * u / max(1, result.requests * events) for u in used),
    )


def column(rows: list[Row], index: int, fmt: str) -> str:
    """Median [min-max] of one figure over the rounds."""
    values = [row[index] for row in rows]
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every phase; the median is reported")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-wrk", action="store_true", help="drive the closed loop with the asyncio client")
    parser.add_argument("--bootstrap", default=None, help="an existing broker (then its CPU is not measured)")
    parser.add_argument("--only", choices=["single", "batch100"], help="run one mode (both by default)")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated subset of collector,bare,producer (the collector is always run)",
    )
    parser.add_argument(
        "--linger-ms",
        type=int,
        default=2,
        help="the producers' linger (CLOSEDLOOP_LINGER_MS for the collector; 2 is its default)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="wait at most this many seconds for a load average under 1.5 before starting",
    )
    parser.add_argument(
        "--half-rate",
        type=float,
        default=None,
        help="requests a second of the half phases (default: half the collector's max of each round)",
    )
    parser.add_argument("--py-spy", default=None, metavar="DIR", help="profile the collectors' half phases into DIR")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a checkout whose collector is measured as collector@NAME (give two or more to compare builds)",
    )
    args = parser.parse_args()
    if not (
        0 <= args.linger_ms <= 100
        and 1 <= args.workers <= 8
        and 0 < args.seconds <= 60
        and 1 <= args.repeat <= 10
        and 1 <= args.concurrency <= 512
        and 0 <= args.quiet_wait <= 600
        and (args.half_rate is None or 0 < args.half_rate <= 20_000)
        and len(args.tree) <= 4
        and all("=" in tree for tree in args.tree)
    ):
        parser.error(
            "keep it bounded: workers <= 8, seconds <= 60, repeat <= 10, concurrency <= 512, half rate <= 20,000, "
            "at most 4 trees given as NAME=PATH"
        )
    # The collectors measured: this checkout's, or one per --tree.
    collectors = {"collector": ROOT}
    if args.tree:
        collectors = {f"collector@{name}": Path(path).resolve() for name, path in (t.split("=", 1) for t in args.tree)}
    ceiling_targets = [t for t in args.targets.split(",") if t in TARGETS and t != "collector"]
    targets = [*collectors, *ceiling_targets]
    if args.py_spy:
        Path(args.py_spy).mkdir(parents=True, exist_ok=True)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    tmp = Path(tempfile.mkdtemp(prefix="closedloop-collector-bench-"))
    labels = [
        (label, events) for label, events in (("single", 1), ("batch100", 100)) if not args.only or label == args.only
    ]
    started: list = []
    try:
        broker, bootstrap = (None, args.bootstrap) if args.bootstrap else start_broker(tmp / "stack")
        if broker is not None:
            started.append(broker)
        prefix = f"bench_{uuid.uuid4().hex[:8]}"
        create_topics(bootstrap, prefix)
        servers: dict[str, HttpServer] = {}
        for number, (name, tree) in enumerate(collectors.items()):
            servers[name] = collector_server(
                bootstrap, prefix, args.workers, tmp / f"data-{number}", args.linger_ms, tree
            )
            started.append(servers[name].process)
        if "bare" in targets:
            servers["bare"] = bare_server(args.workers)
            started.append(servers["bare"].process)
        producers = None
        if "producer" in targets:
            # Enough distinct requests that lz4 sees as little repetition as the collector's own records.
            requests = {
                label: collector_records(events, 4000 if events == 1 else 200, prefix) for label, events in labels
            }
            producers = Producers(bootstrap, args.linger_ms, requests, args.workers)
            started.append(producers)
        own = {
            os.getpid(),
            *(broker.stack.pids.values() if broker else ()),
            *(pid for server in servers.values() for pid in server.pids),
            *(producers.pids if producers else ()),
        }
        state_before = wait_for_quiet(args.quiet_wait)

        def broker_cpu() -> float:
            return cpu_seconds([broker.pid]) if broker else 0.0

        profiles: dict[str, list[Path]] = {}
        publishes: dict[tuple[str, str], list[str]] = {}

        def measure_http(target: str, events: int, mode: str, rate: float) -> tuple[Result, tuple]:
            server = servers[target]
            payload = request_bytes(server.port, events)
            spies: list[subprocess.Popen] = []
            if args.py_spy and target in collectors and mode == "half":
                prefix = Path(args.py_spy) / f"{'single' if events == 1 else 'batch100'}-{target}-round{round_no + 1}"
                workers = collector_workers(server.pids)
                spies = start_py_spy(workers, args.seconds, prefix)
                profiles.setdefault(target, []).extend(Path(f"{prefix}-{pid}.txt") for pid in workers)
            histograms = publish_histograms(server.port, args.workers) if target in collectors else None
            before = (cpu_seconds(server.pids), broker_cpu(), self_cpu())
            if mode == "max" and use_wrk:
                result, client = wrk_closed_loop(server.port, payload, args.concurrency, args.seconds, tmp)
            elif mode == "max":
                result, client = (
                    asyncio.run(closed_loop(server.port, payload, args.concurrency, args.seconds, 2_000_000)),
                    None,
                )
            else:
                result, client = (
                    asyncio.run(open_loop(server.port, payload, rate, args.seconds, args.concurrency)),
                    None,
                )
            used = (
                cpu_seconds(server.pids) - before[0],
                broker_cpu() - before[1],
                self_cpu() - before[2] if client is None else client,
            )
            if histograms is not None:
                publishes.setdefault((target, mode), []).append(
                    publish_summary(histograms, publish_histograms(server.port, args.workers))
                )
            for spy in spies:
                try:
                    spy.wait(timeout=args.seconds + 30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
            return result, used

        def measure_producer(label: str, mode: str, rate: float) -> tuple[Result, tuple]:
            before = broker_cpu()
            result, producer_cpu = producers.run(label, mode, args.concurrency, rate, args.seconds)
            return result, (producer_cpu, broker_cpu() - before, 0.0)

        runs: dict[tuple[str, str, str], list[Row]] = {}
        ratios: dict[tuple[str, str], list[float]] = {}
        during: list[str] = []
        for label, events in labels:
            for server in servers.values():  # warm-up: connections, the producers' first batches
                asyncio.run(closed_loop(server.port, request_bytes(server.port, events), 8, 1.0, 10_000))
            if producers:
                producers.run(label, "max", 8, 0, 1.0)
            for round_no in range(args.repeat):
                table, round_started = process_table(), time.monotonic()
                order = list(collectors) if round_no % 2 == 0 else list(collectors)[::-1]
                for name in order:
                    peak, used = measure_http(name, events, "max", 0)
                    runs.setdefault((label, name, "max"), []).append(row(peak, used, events))
                first = runs[(label, next(iter(collectors)), "max")][-1]
                half_rate = args.half_rate if args.half_rate is not None else first[0] / 2
                ceilings = ceiling_targets if round_no % 2 == 0 else ceiling_targets[::-1]
                for target in [*order, *ceilings]:
                    for mode in ("max", "half") if target not in collectors else ("half",):
                        if target == "producer":
                            result, used = measure_producer(label, mode, half_rate)
                        else:
                            result, used = measure_http(target, events, mode, half_rate)
                        runs.setdefault((label, target, mode), []).append(row(result, used, events))
                during.append(
                    f"{label} round {round_no + 1}: "
                    + others_busy(table, process_table(), time.monotonic() - round_started, own)
                )
                for name in collectors:
                    collector_max = runs[(label, name, "max")][-1][1]
                    for target in ceilings:
                        ceiling_max = runs[(label, target, "max")][-1][1]
                        ratios.setdefault((label, f"{name} / {target}, max events/s"), []).append(
                            collector_max / ceiling_max
                        )
                        ratios.setdefault((label, f"{name} / {target}, CPU per event (collector + broker)"), []).append(
                            sum(runs[(label, name, "max")][-1][5:7])
                            / max(1e-9, sum(runs[(label, target, "max")][-1][5:7]))
                        )
                        ratios.setdefault((label, f"{name} / {target}, half-load p99"), []).append(
                            runs[(label, name, "half")][-1][3] / max(1e-9, runs[(label, target, "half")][-1][3])
                        )
        print(
            f"workers={args.workers} concurrency={args.concurrency} seconds={args.seconds} repeat={args.repeat} "
            f"linger_ms={args.linger_ms} half_rate={args.half_rate or 'half the max'} "
            f"cpus={os.cpu_count()}; closed loop by {'wrk' if use_wrk else 'asyncio client'}; "
            f"broker {'Apache Kafka (private, one node)' if broker else bootstrap}"
        )
        print(f"before: {state_before}")
        print(f"after: load average {load_average()}; beside the bench, per round: " + " | ".join(during))
        print(
            "median [min-max] of the rounds; half = an open loop at "
            + (f"{args.half_rate:g} requests/s" if args.half_rate else "half the collector's max rate of the round")
            + "; cpu = CPU seconds per 1,000 events (target / broker / client)"
        )
        print(
            f"{'mode':<9} {'target':<18} {'load':<5} {'req/s':>22} {'events/s':>26} {'p50 ms':>18} "
            f"{'p99 ms':>22} {'errors':>6}  cpu"
        )
        for (label, target, load), rows in sorted(
            runs.items(), key=lambda item: (item[0][0] != "single", targets.index(item[0][1]), item[0][2] != "max")
        ):
            errors = sum(row[4] for row in rows)
            cpu = " / ".join(f"{statistics.median(row[i] for row in rows):.3f}" for i in (5, 6, 7))
            print(
                f"{label:<9} {target:<18} {load:<5} {column(rows, 0, ',.0f'):>22} "
                f"{column(rows, 1, ',.0f'):>26} {column(rows, 2, '.1f'):>18} {column(rows, 3, '.1f'):>22} "
                f"{errors:>6}  {cpu}"
            )
        print("every round (events/s, p50 ms, p99 ms, target CPU s / 1,000 events; what else ran is listed above):")
        for (label, target, load), rows in sorted(
            runs.items(), key=lambda item: (item[0][0] != "single", targets.index(item[0][1]), item[0][2] != "max")
        ):
            print(
                f"  {label:<9} {target:<18} {load:<5} "
                + " | ".join(f"{r[1]:,.0f} {r[2]:.1f} {r[3]:.1f} {r[5]:.3f}" for r in rows)
            )
        for (target, load), summaries in publishes.items():
            print(f"  {target:<28} {load:<5} " + " | ".join(summaries))
        print("ratios, round by round (median [min-max]):")
        for (label, what), values in ratios.items():
            print(f"  {label:<9} {what}: {statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]")
        for target, files in profiles.items():
            print(f"py-spy, {target}, half phases: {event_loop_profile(files)}")
        if broker:
            print(
                f"broker at the end: data {broker.stack.kafka_data_bytes() / 1e6:.0f} MB on disk, resident "
                f"{rss_bytes(broker.pid) / 1e6:.0f} MB"
            )
    finally:
        for process in reversed(started):
            if isinstance(process, Producers):
                process.stop()
            else:
                stop(process)
        shutil.rmtree(tmp, ignore_errors=True)  # the broker's log, the spools, wrk's script


if __name__ == "__main__":
    main()
