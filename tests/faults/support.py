"""What the fault tests share: the collector as a process, a load generator of page views with unique ids, the
sink as a thread or as a ``closedloop sink`` process, and the checks that compare ClickHouse with what was
accepted (every accepted event once, none refused, none invented).

Deliveries are at least once by design; the tables are ReplacingMergeTrees on their ids, so the checks read them
with FINAL (``count()`` and ``uniqExact`` of the id must both equal the accepted count), and report how many raw
rows (copies not yet merged away) there were.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import orjson
from collector_support import read_topic
from harness import EmbeddedKafka, free_port, wait_for

from deploy.daemons import log_tail, start_detached
from sinks.client import connect
from sinks.settings import SinkSettings
from sinks.writer import SinkWriter

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
WRITE_KEY = "demo-write-key"
BATCH_SIZES = (1, 1, 1, 4)  # a visitor's requests: mostly single page views, every fourth a batch
PUBLISH_TIMEOUT_S = 10.0  # the collector's default: a record not acknowledged by then is spooled
ANSWER_MARGIN_S = 5.0  # on top of it: the spool's fsync and a busy machine
ANSWER_TIMEOUT_S = 60.0  # the client's own bound

# ---------------------------------------------------------------------------------------------------------------
# The collector, as `closedloop collector` runs it


class CollectorProcess:
    """``closedloop collector`` on a free loopback port with its own data (and so spool) directory."""

    def __init__(self, root: Path, bootstrap: str, prefix: str, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = free_port(HOST)
        self.log = root / "collector.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
        env.update(
            CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            CLOSEDLOOP_TOPIC_PREFIX=prefix,
            CLOSEDLOOP_DATA_DIR=str(root),
            CLOSEDLOOP_SPOOL_DIR=str(root / "spool"),
            CLOSEDLOOP_PUBLISH_TIMEOUT_S=str(PUBLISH_TIMEOUT_S),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env or {})
        self._argv = [
            sys.executable,
            "-m",
            "closedloop.cli",
            "collector",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self._env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> CollectorProcess:
        self.process = start_detached(self._argv, self.log, cwd=ROOT, env=self._env, die_with_parent=True)
        wait_for(lambda: self.ready() or self._check_alive(), 60, "the collector to answer /readyz")
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def _check_alive(self) -> bool:
        assert self.process is not None and self.process.poll() is None, (
            f"the collector exited ({self.process and self.process.returncode}):\n{log_tail(self.log, 30)}"
        )
        return False

    def _get(self, path: str) -> tuple[int, bytes]:
        import http.client

        connection = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def ready(self) -> bool:
        try:
            return self._get("/readyz")[0] == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """The collector's counters, summed per metric name (labels dropped)."""
        status, body = self._get("/metrics")
        assert status == 200
        values: dict[str, float] = collections.defaultdict(float)
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name.split("{")[0]] += float(value)
        return values


# ---------------------------------------------------------------------------------------------------------------
# The load


@dataclass
class Answer:
    sent_at: float  # time.monotonic() when the request went out
    seconds: float
    status: int | None  # None: no answer (connection lost, client timeout)
    events: int
    reason: str = ""


@dataclass
class Load:
    """What the load generator saw: accepted events in the order accepted, the ids refused, every answer."""

    accepted: list[tuple[str, str]] = field(default_factory=list)  # (visitor, event id)
    refused: set[str] = field(default_factory=set)  # answered with a status other than 200
    unanswered: set[str] = field(default_factory=set)  # no answer at all: fate unknown to the client
    answers: list[Answer] = field(default_factory=list)

    def reasons(self) -> collections.Counter:
        return collections.Counter(f"{a.status} {a.reason}".strip() for a in self.answers if a.status != 200)

    def max_seconds(self, start: float = float("-inf"), end: float = float("inf")) -> float:
        """The longest answer among the requests under way at some moment between ``start`` and ``end``."""
        return max(
            (a.seconds for a in self.answers if a.sent_at <= end and a.sent_at + a.seconds >= start), default=0.0
        )


class LoadGenerator:
    """Visitors posting page views with unique event ids over keep-alive HTTP/1.1 connections, from a thread.

    Each visitor has one request out at a time, so the order in which its events were accepted is defined; each
    paces itself to ``requests_per_second`` (a blocked request delays only its own visitor). Bounded by
    ``max_seconds`` and ``max_events`` whatever happens to ``stop()``.
    """

    def __init__(
        self,
        port: int,
        visitors: int = 20,
        requests_per_second: float = 10.0,
        max_seconds: float = 150.0,
        max_events: int = 150_000,
    ) -> None:
        self.port = port
        self.visitors = visitors
        self.interval = 1.0 / requests_per_second
        self.max_seconds = max_seconds
        self.max_events = max_events
        self.load = Load()
        self._sent = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Load:
        self._stop.set()
        self._thread.join(timeout=ANSWER_TIMEOUT_S + 30)
        assert not self._thread.is_alive(), "the load generator did not stop"
        if self._error is not None:
            raise AssertionError(f"the load generator failed: {self._error!r}") from self._error
        return self.load

    def accepted_count(self) -> int:
        return len(self.load.accepted)

    def answered_after(self, moment: float) -> bool:
        """Whether a request sent at ``moment`` or later has been answered (the load went on until then)."""
        return any(answer.sent_at >= moment for answer in reversed(self.load.answers[-200:]))

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self._error = error

    async def _main(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        await asyncio.gather(*(self._visitor(f"vis-{n:02d}", deadline) for n in range(self.visitors)))

    def _request(self, visitor: str, ids: list[str]) -> bytes:
        pages = [
            {
                "type": "page_view",
                "visitor_id": visitor,
                "event_id": event_id,
                "url": f"https://acme.test/p/{event_id}?utm_source=google&utm_medium=cpc",
            }
            for event_id in ids
        ]
        body = orjson.dumps(pages[0] if len(pages) == 1 else pages)
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nX-Closedloop-Key: {WRITE_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head + body

    async def _visitor(self, visitor: str, deadline: float) -> None:
        load = self.load
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        seq = requests = 0
        next_at = time.monotonic() + random.random() * self.interval
        try:
            while not self._stop.is_set() and time.monotonic() < deadline and self._sent < self.max_events:
                pause = next_at - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                next_at = max(next_at + self.interval, time.monotonic())
                size = BATCH_SIZES[requests % len(BATCH_SIZES)]
                requests += 1
                ids = [f"{visitor}-{seq + i:06d}" for i in range(size)]
                seq += size
                self._sent += size
                sent_at = time.monotonic()
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), 5)
                    assert reader is not None
                    status, body = await asyncio.wait_for(
                        exchange(reader, writer, self._request(visitor, ids)), ANSWER_TIMEOUT_S
                    )
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
                    load.unanswered.update(ids)
                    load.answers.append(Answer(sent_at, time.monotonic() - sent_at, None, size, type(error).__name__))
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                seconds = time.monotonic() - sent_at
                answer = orjson.loads(body) if body else {}
                if status == 200:
                    assert answer.get("event_ids") == ids, f"a 200 that does not accept {ids}: {answer!r}"
                    load.accepted.extend((visitor, event_id) for event_id in ids)
                    load.answers.append(Answer(sent_at, seconds, 200, size))
                else:
                    load.refused.update(ids)
                    load.answers.append(Answer(sent_at, seconds, status, size, str(answer.get("error", ""))))
        finally:
            if writer is not None:
                writer.close()


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request on a keep-alive connection; (status, body) of the answer."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


# ---------------------------------------------------------------------------------------------------------------
# The sink and ClickHouse


class RunningSink:
    """A SinkWriter running in a thread; ``check()`` fails the test if run() ended or raised."""

    def __init__(self, settings: SinkSettings) -> None:
        self.writer = SinkWriter(settings)
        self.error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.writer.run()
        except BaseException as error:  # noqa: BLE001 - reported by check()
            self.error = error

    def check(self) -> None:
        assert self.error is None, f"the sink's run() raised:\n{self._trace()}"
        assert self._thread.is_alive(), "the sink's run() returned without being stopped"

    def stop(self) -> None:
        """Stop run() (it flushes and commits first) and close the writer; again: nothing more."""
        if not self._closed:
            self.writer.stop()
            self._thread.join(timeout=60)
            assert not self._thread.is_alive(), "the sink did not stop"
            self._closed = True
            self.writer.close()
        assert self.error is None, f"the sink's run() raised:\n{self._trace()}"

    def _trace(self) -> str:
        return "".join(traceback.format_exception(self.error)) if self.error else ""


def query(settings: SinkSettings, sql: str) -> list[tuple]:
    client = connect(settings)
    try:
        return client.query(sql).result_rows
    finally:
        client.close()


@dataclass
class Stack:
    broker: EmbeddedKafka
    settings: SinkSettings
    collector: CollectorProcess
    sink: RunningSink
    cleanups: list[Callable[[], object]] = field(default_factory=list)  # run last first at the test's end


def check_answer_times(load: Load) -> None:
    """Every request was answered, and none waited much longer than the publish timeout: a record the broker
    does not acknowledge in time is spooled, and the request answered from there."""
    slowest = load.max_seconds()
    assert slowest <= PUBLISH_TIMEOUT_S + ANSWER_MARGIN_S, f"an answer took {slowest:.1f} s"
    assert not load.unanswered, f"{len(load.unanswered)} events got no answer: {load.reasons()}"


def check_clickhouse(stack: Stack, load: Load) -> tuple[set[str], int]:
    """Wait until every accepted event is in ClickHouse, then compare the sets: each accepted id once, none
    missing, none refused. Returns the ids stored and the raw row count (copies not yet merged away)."""
    accepted = {event_id for _, event_id in load.accepted}
    assert len(accepted) == len(load.accepted), "the load generator sent an event id twice"
    assert not accepted & load.refused, "an event id was both accepted and refused"
    settings = stack.settings

    def arrived() -> bool:
        stack.sink.check()
        return query(settings, "SELECT uniqExact(event_id) FROM events")[0][0] >= len(accepted)

    try:
        wait_for(arrived, 120, f"{len(accepted)} accepted events in ClickHouse", interval=0.5)
    except AssertionError as timed_out:
        raise AssertionError(f"{timed_out}; {where_missing(stack, accepted)}") from None
    stack.sink.stop()  # flushes and commits what it read: nothing more is coming
    [(rows, unique)] = query(settings, "SELECT count(), uniqExact(event_id) FROM events FINAL")
    [(raw_rows,)] = query(settings, "SELECT count() FROM events")
    stored = {row[0] for row in query(settings, "SELECT event_id FROM events FINAL")}
    missing = accepted - stored
    assert not missing, f"{len(missing)} accepted events never reached ClickHouse, e.g. {sorted(missing)[:5]}"
    refused = stored & load.refused
    assert not refused, f"{len(refused)} events answered with an error are in ClickHouse, e.g. {sorted(refused)[:5]}"
    assert stored == accepted, f"ClickHouse holds events nobody sent: {sorted(stored - accepted)[:5]}"
    assert rows == unique == len(accepted), (rows, unique, len(accepted))
    assert stack.sink.writer.metrics.dead_letters == 0, "the sink dead-lettered events"
    return stored, raw_rows


def where_missing(stack: Stack, accepted: set[str]) -> str:
    """Why a wait for ClickHouse timed out: how many accepted events are missing, and whether the events topic
    holds them (the sink is behind or stuck) or not (the collector lost them)."""
    stored = {row[0] for row in query(stack.settings, "SELECT event_id FROM events")}
    missing = accepted - stored
    in_topic = {
        value["event_id"]
        for _, value in read_topic(stack.broker.bootstrap, stack.settings.topics.events, len(accepted), timeout_s=30)
    }
    metrics = stack.sink.writer.metrics
    return (
        f"{len(missing)} missing, of which {len(missing & in_topic)} are in the events topic and "
        f"{len(missing - in_topic)} are not (e.g. {sorted(missing)[:3]}); sink metrics {vars(metrics)}"
    )


def check_topic_order(stack: Stack, load: Load, stored: set[str]) -> int:
    """Per visitor, the events topic holds the accepted events in the order they were accepted. An event spooled
    after the publish timeout may be there twice (the producer's copy and the spool's replay): the first copy
    counts. Returns how many copies the topic holds."""
    records = read_topic(stack.broker.bootstrap, stack.settings.topics.events, len(stored), timeout_s=60)
    in_topic: dict[str, list[str]] = collections.defaultdict(list)
    seen: set[str] = set()
    copies = 0
    for key, value in records:
        event_id = value["event_id"]
        if event_id in seen:
            copies += 1
            continue
        seen.add(event_id)
        in_topic[key].append(event_id)
    assert seen == stored, "the events topic and ClickHouse hold different events"
    accepted: dict[str, list[str]] = collections.defaultdict(list)
    for visitor, event_id in load.accepted:
        accepted[visitor].append(event_id)
    assert set(in_topic) == set(accepted)
    for visitor, ids in accepted.items():
        assert in_topic[visitor] == ids, f"{visitor}'s events are not in the order they were accepted"
    return copies


def report(title: str, load: Load, **facts: object) -> None:
    not_ok = sum(1 for answer in load.answers if answer.status != 200)
    lines = [
        (
            f"{title}: {len(load.accepted)} events accepted in {len(load.answers)} requests; {not_ok} answers "
            f"not 200 {dict(load.reasons())}"
        )
    ]
    lines += [f"  {key}: {value}" for key, value in facts.items()]
    print("\n" + "\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
# Faults behind the broker: page views produced straight into the events topic, the sink as a process


def page_view_record(event_id: str, visitor: str) -> bytes:
    """The events topic's record of one page view, as the collector writes it."""
    from datetime import datetime, timezone

    from schemas import serde
    from schemas.events import Envelope, PageView

    now = datetime.now(timezone.utc)
    return serde.dumps(
        Envelope(
            event_id=event_id,
            site_id="faults",
            received_at=now,
            event=PageView(occurred_at=now, visitor_id=visitor, url=f"https://acme.test/p/{event_id}"),
        )
    )


class EventProducer:
    """Page views with unique ids produced into the events topic at a steady rate from a thread (acks=all);
    ``acknowledged`` holds the ids the broker acknowledged. Bounded by ``max_seconds`` and ``max_events``."""

    def __init__(
        self, settings: SinkSettings, per_second: float = 300.0, max_seconds: float = 120.0, max_events: int = 40_000
    ) -> None:
        self.settings = settings
        self.per_second = per_second
        self.max_seconds = max_seconds
        self.max_events = max_events
        self.acknowledged: set[str] = set()
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="event-producer", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> set[str]:
        """Stop producing, wait for every acknowledgement; the ids acknowledged."""
        self._stop.set()
        self._thread.join(timeout=90)
        assert not self._thread.is_alive(), "the event producer did not stop"
        if self._error is not None:
            raise AssertionError(f"the event producer failed: {self._error!r}") from self._error
        assert not self.failed, f"{len(self.failed)} page views were not acknowledged, e.g. {self.failed[:3]}"
        return set(self.acknowledged)

    def _run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_servers, acks="all", linger_ms=5)
        try:
            started = time.monotonic()
            sent = 0
            while not self._stop.is_set() and sent < self.max_events:
                pause = started + sent / self.per_second - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if time.monotonic() - started > self.max_seconds:
                    break
                event_id, visitor = f"pv-{sent:07d}", f"vis-{sent % 97:02d}"
                future = producer.send(
                    self.settings.topics.events, key=visitor.encode(), value=page_view_record(event_id, visitor)
                )
                future.add_callback(lambda _, event_id=event_id: self.acknowledged.add(event_id))
                future.add_errback(lambda _, event_id=event_id: self.failed.append(event_id))
                sent += 1
            producer.flush(timeout=60)
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self._error = error
        finally:
            producer.close(timeout=10)


def sink_env(settings: SinkSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env.update(
        CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS=settings.kafka_servers,
        CLOSEDLOOP_CLICKHOUSE_URL=settings.clickhouse,
        CLOSEDLOOP_TOPIC_PREFIX=settings.topic_prefix,
        CLOSEDLOOP_PARTITIONS=str(settings.partitions),
        CLOSEDLOOP_SINK_CONSUMER_GROUP=settings.sink_consumer_group,
        CLOSEDLOOP_SINK_BATCH_SECONDS=str(settings.sink_batch_seconds),
        CLOSEDLOOP_SINK_SESSION_TIMEOUT_SECONDS=str(settings.sink_session_timeout_seconds),
        PYTHONUNBUFFERED="1",
    )
    return env


class SinkProcess:
    """``closedloop sink`` on the test's topics and database, started, SIGKILLed and restarted by PID."""

    def __init__(self, settings: SinkSettings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> SinkProcess:
        argv = [sys.executable, "-m", "closedloop.cli", "sink", "--no-migrate"]
        self.process = start_detached(argv, self.log, cwd=ROOT, env=sink_env(self.settings), die_with_parent=True)
        return self

    def check(self) -> None:
        assert self.process is not None and self.process.poll() is None, (
            f"the sink exited ({self.process and self.process.returncode}):\n{log_tail(self.log, 30)}"
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would: no flush, no commit, no leave-group."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def group_members(settings: SinkSettings) -> tuple[str, list[str]]:
    """(state, member ids) of the sink's consumer group, as the group coordinator reports them."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers, client_id="closedloop-test-group")
    try:
        group = admin.describe_groups([settings.sink_consumer_group])[settings.sink_consumer_group]
    finally:
        admin.close()
    return group["group_state"], [member["member_id"] for member in group["members"]]


def check_events_exact(settings: SinkSettings, accepted: set[str], timeout: float, check: Callable[[], None]) -> int:
    """Wait until every accepted page view is in ClickHouse, then: each exactly once (``count()`` and
    ``uniqExact(event_id)`` of ``events FINAL`` both equal the accepted count), none missing, none invented.
    Returns the raw row count (copies a replay wrote that the ReplacingMergeTree has not merged away yet)."""

    def arrived() -> bool:
        check()
        return query(settings, "SELECT uniqExact(event_id) FROM events")[0][0] >= len(accepted)

    def missing() -> str:
        stored = {row[0] for row in query(settings, "SELECT event_id FROM events")}
        gone = sorted(accepted - stored)
        return f"{len(accepted)} page views in ClickHouse: {len(gone)} are missing, e.g. {gone[:5]}"

    wait_for(arrived, timeout, missing, interval=0.5)
    [(rows, unique)] = query(settings, "SELECT count(), uniqExact(event_id) FROM events FINAL")
    stored = {row[0] for row in query(settings, "SELECT event_id FROM events FINAL")}
    assert stored == accepted, (
        f"ClickHouse and the acknowledged page views differ: missing {sorted(accepted - stored)[:5]}, "
        f"never sent {sorted(stored - accepted)[:5]}"
    )
    assert rows == unique == len(accepted), f"events FINAL: {rows} rows, {unique} ids, {len(accepted)} sent"
    [(raw_rows,)] = query(settings, "SELECT count() FROM events")
    return raw_rows


def report_facts(title: str, **facts: object) -> None:
    """Print what a fault test measured (shown with ``-s``, and by ``-ra`` when it fails)."""
    print("\n" + "\n".join([f"{title}:"] + [f"  {key}: {value}" for key, value in facts.items()]))
