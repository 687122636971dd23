"""Soak benchmark: the whole pipeline under a steady bounded load for ``--minutes``, with each process's resident
memory and CPU and the disk use of the Kafka log directory and the ClickHouse data directory sampled every
``--sample-seconds``. It answers whether memory levels off (the worker's tables live in memory) and how fast the
data directories grow. Run by hand, not in the test suite; the figures and the method are in bench/soak.md.

Method:
1. start a private Apache Kafka node and the ClickHouse endpoint (``deploy.stack``, as ``closedloop up`` runs
   them) in a temporary directory on free loopback ports, create every pipeline topic, apply the migrations;
2. run ``closedloop collector``, ``closedloop worker`` and ``closedloop sink`` as the production commands with
   their default settings (a CRM webhook secret set so the generic CRM webhook takes deliveries);
3. send ``--rate`` events/s on an open loop over keep-alive connections: page views of a fixed population of
   ``--visitors`` returning visitors (tracker-shaped, with referrers and UTM tags), one visitor in 50 submits a
   form (an identify event) the first time it is drawn, and every identified lead moves through lead -> mql ->
   customer in signed generic-CRM deliveries, so every worker table and output topic takes writes;
4. every sample: VmRSS and VmHWM from /proc/<pid>/status and CPU (utime + stime, as cores since the last sample)
   of each process (the collector's uvicorn workers with it), the blocks allocated under the Kafka and ClickHouse
   directories, the 1-minute load average, and the requests answered with an error;
5. at the end, wait until the sink has written every accepted page view, print the table and the summary, and
   write both into ``--out`` (bench/soak.md keeps the figures of the runs quoted there).

Run: ``.venv/bin/python bench/soak.py [--minutes 10] [--rate 300] [--out /tmp/soak.md]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.support import (  # the repository root is on the path first when run as a script  # noqa: E402
    HOST,
    EmbeddedStack,
    children,
    cpu_seconds,
    free_port,
    load_average,
    tracker_page_view,
    wait_port,
)
from deploy.kafka_broker import data_size  # noqa: E402

PREFIX = "soak"
DATABASE = "soak"
WRITE_KEY = "demo-write-key"
CRM_SECRET = "soak-crm-secret"
PROCESSES = ("collector", "worker", "sink", "broker", "endpoint")


def status_kib(pid: int, field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/<pid>/status in KiB, 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Load:
    """The open-loop sender: page views, identifies and CRM deliveries at a fixed total rate, from a thread."""

    def __init__(self, port: int, rate: float, visitors: int, connections: int, seed: int = 11) -> None:
        self.port = port
        self.rate = rate
        self.visitors = visitors
        self.connections = connections
        self.rng = random.Random(seed)
        self.identified: set[int] = set()
        self.leads: list[int] = []  # identified visitors, in order: the CRM moves them along
        self.crm_step = 0
        self.sent = {"page_view": 0, "identify": 0, "crm": 0}
        self.accepted_page_views: list[str] = []
        self.errors = 0
        self.error_reasons: dict[str, int] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="soak-load", daemon=True)

    def _visitor_id(self, n: int) -> str:
        return f"{n:08x}" + hashlib.blake2b(str(n).encode(), digest_size=12).hexdigest()

    def next_request(self) -> tuple[str, dict[str, str], bytes, str | None]:
        """(path, headers, body, event id of a page view or None): what the site or the CRM sends next."""
        if self.leads and self.rng.random() < 0.03:
            n = self.leads[self.crm_step % len(self.leads)]
            stage = ("lead", "mql", "customer")[(self.crm_step // len(self.leads)) % 3]
            self.crm_step += 1
            event = {
                "id": f"soak-{n}-{stage}-{self.crm_step}",
                "stage": stage,
                "occurred_at": datetime.now(timezone.utc).isoformat(),
                "email": f"lead-{n}@soak.example.com",
                **({"value": "1200.00", "currency": "EUR"} if stage == "customer" else {}),
            }
            body = orjson.dumps({"source": "soak", "events": [event]})
            signature = "sha256=" + hmac.new(CRM_SECRET.encode(), body, hashlib.sha256).hexdigest()
            self.sent["crm"] += 1
            return "/v1/webhooks/crm", {"X-Closedloop-Signature": signature}, body, None
        page_view, user_agent = tracker_page_view(self.rng)
        n = self.rng.randrange(self.visitors)
        visitor = self._visitor_id(n)
        if n % 50 == 0 and n not in self.identified:
            self.identified.add(n)
            self.leads.append(n)
            event = {
                "type": "identify",
                "visitor_id": visitor,
                "email": f"lead-{n}@soak.example.com",
                "form_id": "demo-request",
            }
            self.sent["identify"] += 1
            return "/v1/events", {"X-Closedloop-Key": WRITE_KEY, "User-Agent": user_agent}, orjson.dumps(event), None
        event_id = f"pv-{self.sent['page_view']:09d}"
        page_view.update(visitor_id=visitor, event_id=event_id)
        self.sent["page_view"] += 1
        return (
            "/v1/events",
            {"X-Closedloop-Key": WRITE_KEY, "User-Agent": user_agent},
            orjson.dumps(page_view),
            event_id,
        )

    async def _main(self) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.connections * 16)

        async def schedule() -> None:
            started = time.monotonic()
            count = 0
            while not self.stop_event.is_set():
                due = started + count / self.rate
                pause = due - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                count += 1
                try:
                    queue.put_nowait(self.next_request())
                except asyncio.QueueFull:
                    self._error("client queue full (answers slower than the rate; not sent)")
            for _ in range(self.connections):
                await queue.put(None)

        await asyncio.gather(schedule(), *(self._connection(queue) for _ in range(self.connections)))

    def _error(self, reason: str) -> None:
        self.errors += 1
        self.error_reasons[reason] = self.error_reasons.get(reason, 0) + 1

    async def _connection(self, queue: asyncio.Queue) -> None:
        reader = writer = None
        while (item := await queue.get()) is not None:
            path, headers, body, event_id = item
            head = f"POST {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: application/json\r\n"
            head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            head += f"Content-Length: {len(body)}\r\n\r\n"
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, self.port)
                writer.write(head.encode() + body)
                response_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                length = 0
                for line in response_head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                answer = await reader.readexactly(length)
                status = int(response_head[9:12])
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
                self._error(type(error).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            if status != 200:
                self._error(f"{path} {status} {answer[:80]!r}")
            elif event_id is not None:
                self.accepted_page_views.append(event_id)
        if writer is not None:
            writer.close()


def clickhouse_count(url: str, sql: str) -> int:
    from deploy.stack import clickhouse_request

    return int(clickhouse_request(url, sql, timeout=30).strip() or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=300.0, help="requests (one event each) per second")
    parser.add_argument("--visitors", type=int, default=50_000, help="the returning visitors' population")
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="write the table and summary here (markdown)")
    args = parser.parse_args()
    if not (
        0 < args.minutes <= 120
        and 0 < args.rate <= 2_000
        and 100 <= args.visitors <= 10_000_000
        and 1 <= args.sample_seconds <= 300
        and 1 <= args.connections <= 128
    ):
        parser.error("keep it bounded: minutes <= 120, rate <= 2,000/s, connections <= 128")

    from deploy.topics import create_topics
    from schemas.settings import PipelineSettings
    from sinks.migrate import migrate_up
    from sinks.settings import SinkSettings

    tmp = Path(tempfile.mkdtemp(prefix="closedloop-soak-"))
    stack = EmbeddedStack(tmp / "stack")
    processes: dict[str, subprocess.Popen] = {}
    load: Load | None = None
    try:
        stack.start("kafka", "clickhouse")
        url = stack.clickhouse_url(DATABASE)
        create_topics(PipelineSettings(kafka_bootstrap_servers=stack.bootstrap, topic_prefix=PREFIX))
        migrate_up(SinkSettings(clickhouse_url=url, kafka_bootstrap_servers=stack.bootstrap, topic_prefix=PREFIX))
        port, web_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
        env.update(
            CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap,
            CLOSEDLOOP_CLICKHOUSE_URL=url,
            CLOSEDLOOP_TOPIC_PREFIX=PREFIX,
            CLOSEDLOOP_DATA_DIR=str(tmp / "data"),
            CLOSEDLOOP_CRM_WEBHOOK_SECRET=CRM_SECRET,
            CLOSEDLOOP_WORKER_WEB_PORT=str(web_port),
            CLOSEDLOOP_SINK_CONSUMER_GROUP="soak-sink",
            CLOSEDLOOP_LEAD_ID_KEY="soak-lead-id-key",
        )
        commands = {
            "collector": ["collector", "--host", HOST, "--port", str(port), "--log-level", "warning"],
            "worker": ["worker", "--loglevel", "warning"],
            "sink": ["sink", "--no-migrate"],
        }
        for name, argv in commands.items():
            with open(tmp / f"{name}.log", "wb") as log:
                processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "closedloop.cli", *argv],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        wait_port(port, 60)
        wait_port(web_port, 90)

        def pids(name: str) -> list[int]:
            if name == "broker":
                return [stack.kafka_pid]
            if name == "endpoint":
                return [stack.clickhouse_pid]
            return children(processes[name].pid)

        directories = {"kafka": stack.settings.kafka_dir, "clickhouse": stack.settings.clickhouse_dir}
        if not directories["clickhouse"].exists():
            raise SystemExit(f"no ClickHouse data directory at {directories['clickhouse']}")
        load = Load(port, args.rate, args.visitors, args.connections)
        load.thread.start()
        started = time.monotonic()
        rows: list[dict] = []
        cpu_before = {name: cpu_seconds(pids(name)) for name in PROCESSES}
        last = started
        end = started + args.minutes * 60
        columns = " ".join(f"{name[:9]:>9}" for name in PROCESSES)
        print(f"   t  {columns}   (RSS MB)  kafka MB  ch MB  cores c/w/s/b/e      load  errors", flush=True)
        while True:
            now = time.monotonic()
            wait = min(end, last + args.sample_seconds) - now
            if wait > 0:
                time.sleep(wait)
            now = time.monotonic()
            for name, process in processes.items():
                if process.poll() is not None:
                    tail = (tmp / f"{name}.log").read_text(errors="replace").splitlines()[-20:]
                    raise SystemExit(f"{name} exited with {process.returncode}:\n" + "\n".join(tail))
            cpu_now = {name: cpu_seconds(pids(name)) for name in PROCESSES}
            row = {
                "t": now - started,
                "rss": {name: sum(status_kib(pid, "VmRSS") for pid in pids(name)) / 1024 for name in PROCESSES},
                "hwm": {name: sum(status_kib(pid, "VmHWM") for pid in pids(name)) / 1024 for name in PROCESSES},
                "cores": {name: (cpu_now[name] - cpu_before[name]) / (now - last) for name in PROCESSES},
                "disk": {key: data_size(path) / 1e6 for key, path in directories.items()},
                "load": load_average().split()[0],
                "errors": load.errors,
                "sent": dict(load.sent),
            }
            cpu_before, last = cpu_now, now
            rows.append(row)
            print(
                f"{row['t']:4.0f}  "
                + " ".join(f"{row['rss'][name]:9.0f}" for name in PROCESSES)
                + f"   {row['disk']['kafka']:16.0f} {row['disk']['clickhouse']:6.0f}  "
                + "/".join(f"{row['cores'][name]:.2f}" for name in PROCESSES)
                + f"  {row['load']:>5}  {row['errors']}",
                flush=True,
            )
            if now >= end:
                break
        load.stop_event.set()
        load.thread.join(timeout=60)
        accepted = set(load.accepted_page_views)
        deadline = time.monotonic() + 120
        stored = 0
        while time.monotonic() < deadline:
            stored = clickhouse_count(
                url, f"SELECT uniqExact(event_id) FROM {DATABASE}.events WHERE event_id LIKE 'pv-%'"
            )
            if stored >= len(accepted):
                break
            time.sleep(1)
        touches = clickhouse_count(url, f"SELECT count() FROM {DATABASE}.touches FINAL")
        summary = summarise(rows, args, load, len(accepted), stored, touches, tmp)
        print(summary, flush=True)
        if args.out is not None:
            args.out.write_text(table_markdown(rows) + "\n" + summary + "\n")
        if stored < len(accepted):
            raise SystemExit(f"{len(accepted) - stored} accepted page views not in ClickHouse after 120 s")
    finally:
        if load is not None:
            load.stop_event.set()
        for process in reversed(list(processes.values())):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def table_markdown(rows: list[dict]) -> str:
    head = "| t (s) | " + " | ".join(f"{name} RSS MB" for name in PROCESSES) + " | Kafka dir MB | ClickHouse dir MB | "
    head += " | ".join(f"{name} cores" for name in PROCESSES) + " | load 1m | errors |"
    lines = [head, "|" + "---|" * (3 + 2 * len(PROCESSES) + 2)]
    for row in rows:
        lines.append(
            f"| {row['t']:.0f} | "
            + " | ".join(f"{row['rss'][name]:.0f}" for name in PROCESSES)
            + f" | {row['disk']['kafka']:.0f} | {row['disk']['clickhouse']:.0f} | "
            + " | ".join(f"{row['cores'][name]:.2f}" for name in PROCESSES)
            + f" | {row['load']} | {row['errors']} |"
        )
    return "\n".join(lines)


def summarise(rows: list[dict], args, load: Load, accepted: int, stored: int, touches: int, tmp: Path) -> str:
    """Per process: RSS at 1 min, at the middle and at the end, its peak, and the growth per minute over the last
    third of the run (about 0 once it has levelled off)."""
    lines = [
        f"run: {args.minutes:g} min at {args.rate:g} requests/s over {args.connections} connections, "
        f"{args.visitors:,} returning visitors; sent {load.sent}; {load.errors} errors {load.error_reasons}",
        f"page views accepted {accepted:,}, in ClickHouse {stored:,}; touches {touches:,}",
        f"load average at the end {load_average()}",
    ]
    if not rows:
        return "\n".join(lines)
    third = [row for row in rows if row["t"] >= rows[-1]["t"] * 2 / 3]
    minute = next((row for row in rows if row["t"] >= 60), rows[0])
    middle = rows[len(rows) // 2]
    for name in PROCESSES:
        slope = (third[-1]["rss"][name] - third[0]["rss"][name]) / max(1e-9, (third[-1]["t"] - third[0]["t"]) / 60)
        mean_cores = sum(row["cores"][name] for row in rows) / len(rows)
        lines.append(
            f"{name}: RSS {minute['rss'][name]:.0f} MB at {minute['t']:.0f} s, {middle['rss'][name]:.0f} at "
            f"{middle['t']:.0f} s, {rows[-1]['rss'][name]:.0f} at the end; peak (VmHWM) "
            f"{rows[-1]['hwm'][name]:.0f}; last third {slope:+.1f} MB/min; mean {mean_cores:.2f} cores"
        )
    for key in ("kafka", "clickhouse"):
        growth = (rows[-1]["disk"][key] - rows[0]["disk"][key]) / max(1e-9, (rows[-1]["t"] - rows[0]["t"]) / 60)
        lines.append(f"{key} directory: {rows[-1]['disk'][key]:.0f} MB at the end, {growth:+.1f} MB/min")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
