"""Load test of the collector publishing to the embedded broker, on loopback only, bounded in time and count.

    .venv/bin/python bench/collector_load.py [--workers 2] [--seconds 8] [--repeat 3] [--bootstrap HOST:PORT]
                                             [--only single|batch100] [--fresh-broker]

Starts (and stops, by PID) its own noida-db broker unless --bootstrap is given, and a collector
(``closedloop collector``) on a free 127.0.0.1 port with a fresh topic prefix. Then, for single events and for
batches of 100: a closed loop at full concurrency (throughput; driven by ``wrk`` when it is installed, a C client
far lighter than any Python one, else by the asyncio client below), and an open loop at half that rate from the
asyncio client (latency measured from each request's scheduled send time, so a stall counts against the
collector). Each phase runs ``--repeat`` times; the table shows the median and the range, and the CPU seconds
the collector, the broker and the load generator used per 1,000 events. With ``--fresh-broker`` every phase
gets a new broker and collector: noida-db rewrites its whole log about once a second, so on a broker that already
holds the earlier phases' events its stalls, not the collector, set the half-load tail. bench/collector.md records
the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import resource
import shutil
import statistics
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
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
            length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            if head[9:12] != b"200":
                self.errors += 1
            del self.buffer[:end + 4 + length]
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
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s",
         str(tmp / "post.lua"), f"http://{HOST}:{port}/v1/events"],
        env={**os.environ, "CLOSEDLOOP_BENCH_BODY": str(tmp / "body.json")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all threads), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def tree(pid: int) -> list[int]:
    """A process and its children (the collector's uvicorn workers)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


@dataclass
class Servers:
    """The broker (embedded unless --bootstrap) and the collector of one measurement, with their PIDs."""

    broker: subprocess.Popen | None
    collector: subprocess.Popen
    port: int
    data_dir: Path
    collector_pids: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, args: argparse.Namespace, data_dir: Path) -> "Servers":
        broker, bootstrap = (None, args.bootstrap) if args.bootstrap else start_broker(data_dir / "broker")
        prefix = f"bench_{uuid.uuid4().hex[:8]}"
        create_topics(bootstrap, prefix)
        port = free_port()
        env = {**os.environ, "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CLOSEDLOOP_TOPIC_PREFIX": prefix,
               "CLOSEDLOOP_DATA_DIR": str(data_dir / "data")}
        collector = subprocess.Popen(
            [sys.executable, "-m", "closedloop.cli", "collector", "--port", str(port), "--workers",
             str(args.workers), "--log-level", "warning"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers = cls(broker, collector, port, data_dir)
        try:
            wait_port(port, 30)
            time.sleep(1.0)  # let every worker finish its startup (producer connected)
        except BaseException:
            servers.stop()
            raise
        servers.collector_pids = tree(collector.pid)
        return servers

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far: (the collector's processes, the broker)."""
        return cpu_seconds(self.collector_pids), cpu_seconds([self.broker.pid]) if self.broker else 0.0

    def broker_megabytes(self) -> float:
        files = (self.data_dir / "broker").rglob("*")
        return sum(f.stat().st_size for f in files if f.is_file()) / 1e6

    def stop(self) -> None:
        stop(self.collector)
        if self.broker is not None:
            stop(self.broker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each phase; the median is reported")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-wrk", action="store_true", help="drive the closed loop with the asyncio client")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--only", choices=["single", "batch100"], help="run one mode (both by default)")
    parser.add_argument("--fresh-broker", action="store_true",
                        help="run each half-load phase on a new broker and collector, so that the embedded "
                             "broker's log (rewritten whole about once a second) holds only that phase's events")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    tmp = Path(tempfile.mkdtemp(prefix="closedloop-collector-bench-"))
    started: list[Servers] = []

    def start_servers() -> Servers:
        started.append(Servers.start(args, tmp / str(len(started))))
        return started[-1]

    def measure(servers: Servers, phase):  # -> (result, CPU seconds of collector, broker, client)
        before = (*servers.cpu(), self_cpu())
        result, client_cpu = phase()
        after = servers.cpu()
        return result, (after[0] - before[0], after[1] - before[1],
                        self_cpu() - before[2] if client_cpu is None else client_cpu)

    def row(result: Result, used: tuple[float, float, float], events: int) -> tuple:
        """(req/s, events/s, p50, p99, errors, CPU s per 1,000 events of collector, broker, client)."""
        rate = result.requests / result.seconds
        return (rate, rate * events, result.pct(0.5), result.pct(0.99), result.errors,
                *(1000 * u / max(1, result.requests * events) for u in used))

    def next_phase(servers: Servers, events: int) -> tuple[Servers, bytes]:
        """The servers and request bytes of the next phase: with --fresh-broker, a new broker and collector."""
        if args.fresh_broker:
            servers.stop()
            servers = start_servers()
        return servers, request_bytes(servers.port, events)

    try:
        servers = start_servers()
        runs: dict[tuple[str, str], list[tuple[float, float, float, float, int, float, float, float]]] = {}
        broker_mb: dict[str, list[float]] = {}
        for label, events in (("single", 1), ("batch100", 100)):
            if args.only and label != args.only:
                continue
            payload = request_bytes(servers.port, events)
            asyncio.run(closed_loop(servers.port, payload, 8, 1.0, 10_000))  # warm-up
            for _ in range(args.repeat):
                if use_wrk:
                    peak, used = measure(servers, lambda: wrk_closed_loop(
                        servers.port, payload, args.concurrency, args.seconds, tmp))
                else:
                    peak, used = measure(servers, lambda: (asyncio.run(closed_loop(
                        servers.port, payload, args.concurrency, args.seconds, 2_000_000)), None))
                runs.setdefault((label, "max"), []).append(row(peak, used, events))
                req_rate = peak.requests / peak.seconds
                servers, payload = next_phase(servers, events)
                half, used = measure(servers, lambda: (asyncio.run(open_loop(
                    servers.port, payload, req_rate / 2, args.seconds, args.concurrency)), None))
                broker_mb.setdefault(label, []).append(servers.broker_megabytes())
                runs.setdefault((label, "half"), []).append(row(half, used, events))
                servers, payload = next_phase(servers, events)  # the next max phase: a fresh broker, like the first
        print(f"collector workers={args.workers} concurrency={args.concurrency} seconds={args.seconds} "
              f"repeat={args.repeat} cpus={os.cpu_count()} closed loop by {'wrk' if use_wrk else 'asyncio client'}"
              f"{'; a fresh broker for each phase' if args.fresh_broker else ''}; "
              f"load average {os.getloadavg()[0]:.2f}")
        print("median [min-max] of the runs; cpu = CPU seconds per 1,000 events (collector / broker / client)")
        print(f"{'mode':<9} {'load':<5} {'req/s':>22} {'events/s':>24} {'p50 ms':>20} {'p99 ms':>22} "
              f"{'errors':>6}  cpu")
        for (label, load), rows in runs.items():
            def col(i: int, fmt: str) -> str:
                values = [row[i] for row in rows]
                return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"
            errors = sum(row[4] for row in rows)
            cpu = " / ".join(f"{statistics.median(row[i] for row in rows):.2f}" for i in (5, 6, 7))
            print(f"{label:<9} {load:<5} {col(0, ',.0f'):>22} {col(1, ',.0f'):>24} {col(2, '.1f'):>20} "
                  f"{col(3, '.1f'):>22} {errors:>6}  {cpu}")
        if not args.bootstrap:
            for label, sizes in broker_mb.items():
                print(f"{label}: the broker's data at the end of each half-load phase: "
                      + ", ".join(f"{size:.0f} MB" for size in sizes))
    finally:
        for servers in started:
            servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the brokers' logs, the spools, wrk's script


if __name__ == "__main__":
    main()
