"""The demo's moving parts: the pipeline's processes, waiting until everything is in ClickHouse, and measuring.

``closedloop demo`` (``closedloop/commands/demo.py``) strings these together: stack up, :class:`PipelineProcesses`
(collector, stream worker(s), sink and ``closedloop deliver`` as subprocesses with PID files in ``run/`` and logs
in ``logs/``), a :class:`DemoReceiver` standing in for a webhook destination, the
simulator with a :class:`DelayProbe` watching the touches table, :func:`wait_until_drained`, then the report.
The end-to-end test uses the same pieces against its own topics and database.

End-to-end delay: for every landing page view (each is a touch) the sender records the wall-clock time the
collector accepted it; the probe polls ClickHouse's ``touches`` table every ``interval`` seconds for the touch
ids sent and not yet seen, and records when each became queryable. Delay = visible - accepted, so it covers the
collector, Kafka, the stream worker's sessionisation and the sink's batching (resolution: the poll interval).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.daemons import (
    PidFile,
    StackError,
    log_tail,
    port_is_free,
    process_matches,
    start_detached,
    stop_pid,
    wait_until,
)
from schemas.kafka_security import kafka_python_security, security_environment
from schemas.settings import PipelineSettings
from simulator.senders import demo_collector_environment

PROCESS_NAMES = ("collector", "worker", "sink", "deliver")
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class PipelinePorts:
    """Where the demo's own processes listen (all on 127.0.0.1)."""

    collector: int = 8000
    worker_web: int = 6066  # the first worker's counters; worker n listens on worker_web + n
    dashboard: int | None = None  # the demo's dashboard; None: not started (the tests need none)


def pipeline_environment(
    settings: PipelineSettings, ports: PipelinePorts, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of the demo's subprocesses: where the broker, ClickHouse and topics are, the collector's
    demo credentials, and the ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env.update(
        {
            "CLOSEDLOOP_DATA_DIR": str(settings.data_dir.expanduser().resolve()),
            "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_servers,
            "CLOSEDLOOP_TOPIC_PREFIX": settings.topic_prefix,
            "CLOSEDLOOP_PARTITIONS": str(settings.partitions),
            # the topic settings too: a worker reconciles the topics' configs to its own settings at start
            "CLOSEDLOOP_RETENTION_HOURS": str(settings.retention_hours),
            "CLOSEDLOOP_RETENTION_MB_PER_PARTITION": str(settings.retention_mb_per_partition),
            "CLOSEDLOOP_DEAD_LETTER_RETENTION_HOURS": str(settings.dead_letter_retention_hours),
            "CLOSEDLOOP_COMPACTION_SEGMENT_HOURS": str(settings.compaction_segment_hours),
            "CLOSEDLOOP_HOST": "127.0.0.1",
            "CLOSEDLOOP_PORT": str(ports.collector),
            "PYTHONUNBUFFERED": "1",
            **demo_collector_environment(),
            **security_environment(settings),
        }
    )
    if settings.replication_factor is not None:
        env["CLOSEDLOOP_REPLICATION_FACTOR"] = str(settings.replication_factor)
    if settings.clickhouse_url:
        env["CLOSEDLOOP_CLICKHOUSE_URL"] = settings.clickhouse_url
    else:  # the embedded endpoint: each process reads its password in the data directory, not in its environment
        env["CLOSEDLOOP_EMBEDDED_CLICKHOUSE_PORT"] = str(settings.embedded_clickhouse_port)
    env.update(extra or {})
    return env


@dataclass
class PipelineProcesses:
    """The collector, the worker(s), the sink and the delivery process of one data directory, started as detached
    subprocesses.

    PID files ``run/demo-<name>.pid`` (checked against the command line before any signal) let a later
    ``closedloop demo`` find them running, and ``stop()`` stop exactly them.
    """

    settings: PipelineSettings
    ports: PipelinePorts = field(default_factory=PipelinePorts)
    workers: int = 1
    extra_env: Mapping[str, str] = field(default_factory=dict)
    deliver_env: Mapping[str, str] = field(default_factory=dict)  # the destinations' settings: deliver's alone
    die_with_parent: bool = False  # tests: the kernel stops them if the test process dies
    _children: dict = field(default_factory=dict, repr=False)  # name -> Popen of the ones this process started

    @property
    def run_dir(self) -> Path:
        return self.settings.data_dir.expanduser().resolve() / "run"

    @property
    def logs_dir(self) -> Path:
        return self.settings.data_dir.expanduser().resolve() / "logs"

    @property
    def collector_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.collector}"

    def worker_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports.worker_web + index}"

    def held_reemissions(self) -> int:
        """Leads whose changed conversions the workers still hold back (coalesced re-emission, docs/STREAMS.md):
        the output topics are not final until it is 0. A worker that does not answer counts as 1."""
        held = 0
        for index in range(self.workers):
            try:
                with urllib.request.urlopen(f"{self.worker_url(index)}/counters/?window=1m", timeout=2) as response:
                    held += int(json.loads(response.read()).get("held_reemissions", 0))
            except (OSError, ValueError, urllib.error.URLError):
                held += 1
        return held

    def _commands(self) -> dict[str, list[str]]:
        python = [sys.executable, "-m", "closedloop.cli"]
        commands = {
            "collector": [*python, "collector", "--port", str(self.ports.collector), "--log-level", "warning"],
            "sink": [*python, "sink", "--no-migrate"],
            "deliver": [*python, "deliver"],
        }
        for index in range(self.workers):
            name = "worker" if index == 0 else f"worker-{index}"
            commands[name] = [*python, "worker", "--web-port", str(self.ports.worker_web + index)]
        if self.ports.dashboard is not None:
            commands["dashboard"] = [
                *python,
                "dashboard",
                "--port",
                str(self.ports.dashboard),
                "--counters-url",
                self.worker_url(),
                "--log-level",
                "warning",
            ]
        return commands

    @property
    def dashboard_url(self) -> str | None:
        return None if self.ports.dashboard is None else f"http://127.0.0.1:{self.ports.dashboard}"

    def pid_file(self, name: str) -> PidFile:
        command = self._commands().get(name) or [name]
        return PidFile(self.run_dir / f"demo-{name}.pid", ("closedloop.cli", *command[3:]))

    def log(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def running(self) -> dict[str, int]:
        """name -> PID of the processes that run now."""
        found = {}
        for name in self._commands():
            child = self._children.get(name)
            if child is not None:
                if child.poll() is None:
                    found[name] = child.pid
                continue
            pid = self.pid_file(name).running_pid()
            if pid is not None:
                found[name] = pid
        return found

    def start(self, report: Callable[[str], None] = lambda line: None) -> dict[str, int]:
        """Start what does not run yet; wait until the collector answers. Returns name -> PID of everything."""
        env = pipeline_environment(self.settings, self.ports, self.extra_env)
        running = self.running()
        for name, argv in self._commands().items():
            if name in running:
                report(f"{name}: already running (PID {running[name]})")
                continue
            port = self._port_of(name)
            if port is not None and not port_is_free("127.0.0.1", port):
                setting = {"collector": "CLOSEDLOOP_PORT", "dashboard": "CLOSEDLOOP_DASHBOARD_PORT"}.get(
                    name, "CLOSEDLOOP_WORKER_WEB_PORT"
                )
                raise StackError(f"Cannot start the {name}: port {port} is taken. Free it, or set {setting}.")
            own_env = {**env, **self.deliver_env} if name == "deliver" else env
            process = start_detached(argv, self.log(name), env=own_env, die_with_parent=self.die_with_parent)
            self.pid_file(name).write(process.pid)
            self._children[name] = process
            # Until the child has exec'd, /proc shows our own command line: the PID file would look stale.
            wait_until(
                lambda: process.poll() is not None or process_matches(process.pid, self.pid_file(name).markers),  # noqa: B023 - called now
                10.0,
                f"the {name} to start",
                interval=0.02,
            )
            running[name] = process.pid
            report(f"{name}: started (PID {process.pid}, log {self.log(name)})")
        self.wait_collector_ready()
        return running

    def _port_of(self, name: str) -> int | None:
        if name == "collector":
            return self.ports.collector
        if name == "dashboard":
            return self.ports.dashboard
        if name.startswith("worker"):
            return self.ports.worker_web + (int(name.split("-")[1]) if "-" in name else 0)
        return None

    def wait_collector_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` says the broker is reachable; a collector that died is reported with its log."""

        def ready() -> bool:
            if "collector" not in self.running():
                raise StackError(
                    f"The collector exited. Its log ({self.log('collector')}) ends with:\n"
                    f"{log_tail(self.log('collector'))}"
                )
            try:
                with urllib.request.urlopen(f"{self.collector_url}/readyz", timeout=2) as response:
                    return response.status == 200
            except (OSError, urllib.error.URLError):
                return False

        wait_until(ready, timeout, f"the collector at {self.collector_url} to be ready", interval=0.2)

    def check_alive(self) -> None:
        """Raise StackError (with the log's tail) when one of the processes has died."""
        running = self.running()
        for name in self._commands():
            if name not in running:
                raise StackError(
                    f"The {name} is not running. Its log ({self.log(name)}) ends with:\n{log_tail(self.log(name))}"
                )

    def stop(self, report: Callable[[str], None] = lambda line: None) -> dict[str, int]:
        """Stop the processes (SIGTERM, then SIGKILL after a while), by their PID files."""
        stopped = {}
        for name in reversed(list(self._commands())):
            pid_file = self.pid_file(name)
            pid = pid_file.running_pid()
            if pid is None:
                exited = self._children.pop(name, None)
                if exited is not None:
                    exited.wait(timeout=STOP_TIMEOUT_S)
                continue
            stop_pid(pid, pid_file.markers, STOP_TIMEOUT_S)
            child = self._children.pop(name, None)
            if child is not None:
                child.wait(timeout=STOP_TIMEOUT_S)  # collect it: no zombie
            pid_file.remove()
            stopped[name] = pid
            report(f"{name}: stopped (PID {pid})")
        return stopped


def stop_demo_processes(data_dir: Path, report: Callable[[str], None] = lambda line: None) -> dict[str, int]:
    """Stop every ``run/demo-*.pid`` process of a data directory (for ``closedloop down``), by PID, verified."""
    run_dir = Path(data_dir).expanduser().resolve() / "run"
    stopped = {}
    for path in sorted(run_dir.glob("demo-*.pid")):
        name = path.stem.removeprefix("demo-")
        pid_file = PidFile(path, ("closedloop.cli", name.split("-")[0]))
        pid = pid_file.running_pid()
        if pid is not None:
            stop_pid(pid, pid_file.markers, STOP_TIMEOUT_S)
            stopped[name] = pid
            report(f"{name}: stopped (PID {pid})")
        pid_file.remove()
    return stopped


# -- draining --------------------------------------------------------------------------------------------------


MARKER_SLACK = 64  # offsets past a committed one that may all be transaction markers (see consumer_lag)


def consumer_lag(
    bootstrap_servers: str, group: str, topics: Iterable[str], client_kwargs: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Records not yet consumed by ``group`` per topic: end offset minus committed offset, over all partitions,
    not counting transaction markers (a transactional producer leaves one after its records; a consumer that
    read everything may have committed the offset before it). Under ``exactly_once`` the stream worker has one
    transactional producer per source partition and each may write to every output partition, so an idle partition
    can end with as many markers as the source topics have partitions: up to :data:`MARKER_SLACK` offsets past the
    committed one are read to count the records really there."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    servers = bootstrap_servers.split(",")
    admin = KafkaAdminClient(bootstrap_servers=servers, client_id="closedloop-demo-lag", **(client_kwargs or {}))
    consumer = KafkaConsumer(
        bootstrap_servers=servers,
        client_id="closedloop-demo-lag",
        enable_auto_commit=False,
        isolation_level="read_committed",
        **(client_kwargs or {}),
    )
    try:
        committed = admin.list_group_offsets([group]).get(group, {})
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = consumer.end_offsets(partitions) if partitions else {}
        lag: dict[str, int] = {tp.topic: 0 for tp in partitions}
        for tp in partitions:
            done = committed.get(tp)
            offset = done.offset if done is not None and done.offset >= 0 else 0
            behind = max(ends.get(tp, 0) - offset, 0)
            if 0 < behind <= MARKER_SLACK:
                behind = _records_between(consumer, tp, offset, ends[tp])
            lag[tp.topic] += behind
        return lag
    finally:
        consumer.close()
        admin.close()


def _records_between(consumer, tp, start: int, end: int) -> int:
    """How many committed records really lie in [start, end) of one partition (markers are not records)."""
    consumer.assign([tp])
    consumer.seek(tp, start)
    found = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=200, max_records=MARKER_SLACK)
        found += sum(1 for record in batch.get(tp, []) if record.offset < end)
        if consumer.position(tp) >= end:
            return found
    return max(found, end - start)  # could not tell: count it as behind


@dataclass
class DrainResult:
    seconds: float
    worker_lag: dict[str, int]
    sink_lag: dict[str, int]
    rows: dict[str, int]
    complete: bool


def row_counts(
    client, tables: Iterable[str] = ("events", "touches", "identity_links", "conversions", "credits", "spend")
) -> dict[str, int]:
    """Rows per table (FINAL: replays collapsed)."""
    counts = {}
    for table in tables:
        counts[table] = int(client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0])
    return counts


def wait_until_drained(
    settings,
    worker_group: str,
    sink_group: str,
    client,
    expected_touches: int | None = None,
    timeout: float = 180.0,
    stable_for: float = 2.0,
    on_poll: Callable[[DrainResult], None] | None = None,
    alive: Callable[[], None] = lambda: None,
    deliver_group: str | None = None,
    held: Callable[[], int] = lambda: 0,
) -> DrainResult:
    """Wait until the worker and the sink (and ``closedloop deliver``'s group, when given) have consumed
    everything, the workers hold no re-emission back (``held``, e.g. :meth:`PipelineProcesses.held_reemissions`),
    ClickHouse holds ``expected_touches`` touches, and no row count has moved for ``stable_for`` seconds (late
    re-emissions settle). Returns the state at that point; ``complete`` is False when ``timeout`` came first."""
    from stream_jobs.runtime.topology import crm_contacts_topic

    topics = settings.topics
    worker_topics = [topics.events, topics.crm, topics.lead_events, crm_contacts_topic(worker_group)]
    sink_topics = [topics.events, topics.crm, topics.spend, *topics.output_topics(), topics.deliveries]
    started = time.monotonic()
    last_rows: dict[str, int] | None = None
    stable_since = time.monotonic()
    while True:
        alive()
        security = kafka_python_security(settings)
        worker_lag = consumer_lag(settings.kafka_servers, worker_group, worker_topics, security)
        # deliver's lag first: the statuses it writes before its commit are then in the sink's lag below
        delivering = {}
        if deliver_group is not None:
            delivering = consumer_lag(settings.kafka_servers, deliver_group, [topics.outbox], security)
        sink_lag = consumer_lag(settings.kafka_servers, sink_group, sink_topics, security)
        sink_lag.update({f"deliver:{topic}": lag for topic, lag in delivering.items()})
        rows = row_counts(client)
        if rows != last_rows:
            last_rows, stable_since = rows, time.monotonic()
        result = DrainResult(time.monotonic() - started, worker_lag, sink_lag, rows, False)
        if on_poll is not None:
            on_poll(result)
        drained = not any(worker_lag.values()) and not any(sink_lag.values()) and held() == 0
        touches_ok = expected_touches is None or rows.get("touches") == expected_touches
        if drained and touches_ok and time.monotonic() - stable_since >= stable_for:
            result.complete = True
            return result
        if result.seconds > timeout:
            return result
        time.sleep(0.5)


# -- end-to-end delay ------------------------------------------------------------------------------------------


class DelayProbe:
    """Polls ClickHouse for touches sent and not yet queryable; records when each became visible."""

    def __init__(
        self, client_factory: Callable[[], Any], sent_at: Mapping[str, float], interval: float = 0.25, batch: int = 2000
    ) -> None:
        self._client_factory = client_factory
        self.sent_at = sent_at  # touch id -> accepted time; filled by the sender while it runs
        self.visible_at: dict[str, float] = {}
        self.interval = interval
        self.batch = batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-probe", daemon=True)
        self.errors = 0

    def start(self) -> "DelayProbe":
        self._thread.start()
        return self

    def stop(self, wait_for_all: float = 0.0) -> None:
        """Stop polling (after up to ``wait_for_all`` seconds more while touches are still missing)."""
        deadline = time.monotonic() + wait_for_all
        while time.monotonic() < deadline and self.pending():
            time.sleep(self.interval)
        self._stop.set()
        self._thread.join(timeout=10)

    def pending(self) -> list[str]:
        return [tid for tid in list(self.sent_at) if tid not in self.visible_at]

    def _run(self) -> None:
        client = self._client_factory()
        while not self._stop.is_set():
            began = time.time()
            pending = self.pending()[: self.batch]
            if pending:
                try:
                    rows = client.query(
                        "SELECT touch_id FROM touches WHERE touch_id IN {ids:Array(String)}",
                        parameters={"ids": pending},
                    ).result_rows
                except Exception:  # noqa: BLE001 - a busy endpoint: try again next round
                    self.errors += 1
                    rows = []
                seen = (began + time.time()) / 2  # visible somewhere between the query's start and its answer
                for (touch_id,) in rows:
                    self.visible_at.setdefault(touch_id, seen)
            self._stop.wait(max(self.interval - (time.time() - began), 0.01))

    def delays(self) -> list[float]:
        return sorted(max(self.visible_at[t] - self.sent_at[t], 0.0) for t in self.visible_at if t in self.sent_at)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of sorted ``values``."""
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, int(round(fraction * len(values) + 0.5)) - 1))
    return values[index]


def delay_summary(delays: list[float]) -> dict[str, float]:
    return {
        "count": len(delays),
        "p50": percentile(delays, 0.5),
        "p99": percentile(delays, 0.99),
        "max": delays[-1] if delays else float("nan"),
        "mean": statistics.fmean(delays) if delays else float("nan"),
    }


def counters_snapshot(worker_url: str) -> dict | None:
    """The worker's live counters (today's window), or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{worker_url}/counters/?window=today", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def wait_group_active(
    bootstrap_servers: str,
    group: str,
    timeout: float = 90.0,
    alive: Callable[[], None] = lambda: None,
    client_kwargs: Mapping[str, Any] | None = None,
) -> float:
    """Wait until a consumer group has members and a stable assignment (a worker has started); returns seconds."""
    from kafka import KafkaAdminClient
    from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers.split(","), client_id="closedloop-demo-groups", **(client_kwargs or {})
    )
    started = time.monotonic()
    try:

        def active() -> bool:
            alive()
            try:
                description = admin.describe_groups([group]).get(group) or {}
            except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError):
                return False  # a new broker creates its offsets topic at the first group's request
            return description.get("group_state") == "Stable" and bool(description.get("members"))

        wait_until(active, timeout, f"consumer group {group} to be active", interval=0.3)
    finally:
        admin.close()
    return time.monotonic() - started


# -- a webhook destination for the demo ------------------------------------------------------------------------


class DemoReceiver:
    """The demo's stand-in for a webhook destination of ``closedloop deliver`` (docs/DELIVERY.md): a local HTTP
    server that checks each request's signature (``X-Closedloop-Signature``, HMAC-SHA256 of ``"<t>." + body``) and
    counts messages per kind, and repeats by ``Idempotency-Key``. Its port and secret are kept in
    ``<data_dir>/demo-webhook.json`` (0600), so a ``closedloop deliver`` left running by an earlier demo still
    reaches the next one's receiver; between demos nobody answers and deliver retries, then dead-letters."""

    def __init__(self, data_dir: Path, port: int = 8099) -> None:
        import secrets

        self.path = Path(data_dir).expanduser().resolve() / "demo-webhook.json"
        stored = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.port = int(stored.get("port", port))
        self.secret = str(stored.get("secret") or secrets.token_hex(16))
        self.kinds: dict[str, int] = {}
        self.keys: set[str] = set()
        self.repeats = 0
        self.bad_signatures = 0
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/closedloop-demo"

    def environment(self) -> dict[str, str]:
        """What ``closedloop deliver`` needs to post to this receiver."""
        return {"CLOSEDLOOP_DELIVERY_WEBHOOK_URL": self.url, "CLOSEDLOOP_DELIVERY_WEBHOOK_SECRET": self.secret}

    def verified(self, header: str, body: bytes) -> bool:
        import hashlib
        import hmac

        parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        expected = hmac.new(self.secret.encode(), f"{parts.get('t', '')}.".encode() + body, hashlib.sha256)
        return hmac.compare_digest(expected.hexdigest(), parts.get("v1", ""))

    def _received(self, headers: Mapping[str, str], body: bytes) -> int:
        """One request (header names lower-cased): 200 when its signature holds, else 401."""
        if not self.verified(headers.get("x-closedloop-signature", ""), body):
            with self._lock:
                self.bad_signatures += 1
            return 401
        kind = str(json.loads(body).get("kind", "?"))
        key = headers.get("idempotency-key", "")
        with self._lock:
            if key in self.keys:
                self.repeats += 1
            else:
                self.keys.add(key)
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
        return 200

    def start(self) -> "DemoReceiver":
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from schemas.settings import make_private_dir

        receiver = self
        error: OSError | None = None

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver._received({k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        except OSError as bind_error:
            error = bind_error
            if not self.path.exists():  # a first demo: any free port will do
                self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self._server is None:
            raise StackError(
                f"Cannot start the demo's webhook receiver on 127.0.0.1:{self.port}: {error}. Free the port, or "
                f"delete {self.path} to pick another one (and restart `closedloop deliver`: `closedloop down`)."
            )
        self.port = int(self._server.server_address[1])
        make_private_dir(self.path.parent)
        self.path.write_text(json.dumps({"port": self.port, "secret": self.secret}))
        self.path.chmod(0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
