"""The stream-jobs worker against the embedded broker: a scripted journey, replays, dead letters, and the live
counters (JSON and the ``closedloop watch`` terminal view in tmux); its SIGKILL restart is in the fault suite
(tests/faults/test_worker_kill.py), which uses this harness.

The worker runs as a subprocess (``python -m closedloop.cli worker``) with its own topic prefix, data dir and web
port; it is stopped by PID. Waiting is bounded and by condition: "the worker's consumer group has committed every
offset of its input topics" (:func:`wait_idle`), never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from harness import free_port, unique, wait_for

from schemas import serde
from schemas.events import CrmStatusChange, Envelope, Identify, PageView
from schemas.outputs import AttributionModel, Conversion, DeadLetter, Touch
from stream_jobs.rules.attribution import Milestones, attribute
from stream_jobs.rules.identity import lead_id_for
from stream_jobs.rules.lifecycle import conversion_id_for
from stream_jobs.rules.visitors import visitor_number
from stream_jobs.runtime.diagnostics import summarize
from stream_jobs.runtime.topology import crm_contacts_topic, erasures_topic
from stream_jobs.settings import WorkerSettings

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-lead-key"
BASE = datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc)
SITE = "https://shop.example.com"


# -- harness ------------------------------------------------------------------------------------------------------


def worker_settings(bootstrap: str, prefix: str, data_dir: Path) -> WorkerSettings:
    return WorkerSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=2,
        data_dir=data_dir,
        worker_web_port=free_port(),
        lead_id_key=KEY,
    )


def worker_env(settings: WorkerSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_servers,
            "CLOSEDLOOP_TOPIC_PREFIX": settings.topic_prefix,
            "CLOSEDLOOP_PARTITIONS": str(settings.partitions),
            "CLOSEDLOOP_DATA_DIR": str(settings.data_dir),
            "CLOSEDLOOP_WORKER_WEB_PORT": str(settings.worker_web_port),
            "CLOSEDLOOP_LEAD_ID_KEY": KEY,
            "CLOSEDLOOP_PROCESSING_GUARANTEE": settings.processing_guarantee,
        }
    )
    return env


def get_json(url: str, timeout: float = 2.0, password: str | None = None) -> dict:
    """The JSON at ``url``; with ``password`` sent as HTTP Basic auth (the worker's /diagnostics/ asks for it)."""
    request = urllib.request.Request(url, headers=basic_auth(password) if password is not None else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def basic_auth(password: str, user: str = "default") -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def web_status(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    """(status, body) of one request to the worker's web server; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}, method=method), timeout=5
        ) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Worker:
    """One ``closedloop worker`` subprocess."""

    def __init__(
        self,
        settings: WorkerSettings,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        module: str = "closedloop.cli",
        args: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self.module = module  # tests.slow_seek_worker: the same worker with a slower seek
        self.args = args  # more options of `closedloop worker` (--processes)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "Worker":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "worker", "--loglevel", "info", *self.args],
            cwd=ROOT,
            env={**worker_env(self.settings), **self.extra_env},
            stdout=log,
            stderr=log,
        )
        wait_for(self._answers, timeout, lambda: f"the worker's web server:\n{self.log_tail()}", interval=0.2)
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            get_json(f"{self.settings.web_url}/counters/?window=1m", timeout=1)
            return True
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def running_worker(settings: WorkerSettings, tmp_path: Path) -> Iterator[Worker]:
    worker = Worker(settings, tmp_path / f"worker-{settings.topic_prefix}.log").start()
    try:
        yield worker
    finally:
        worker.stop()


def create_all_topics(settings: WorkerSettings) -> None:
    from deploy.topics import create_topics

    create_topics(settings)


def send(settings: WorkerSettings, records: list[tuple[str, str | None, bytes]]) -> None:
    """Send (topic, key, value) records and wait for the broker to acknowledge them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all", linger_ms=5)
    try:
        for topic, key, value in records:
            producer.send(topic, key=None if key is None else key.encode(), value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def topic_records(settings: WorkerSettings, topic: str, timeout: float = 30.0) -> Iterator:
    """Every committed record of a topic (kafka-python ``ConsumerRecord``), from the beginning to its current end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_servers, isolation_level="read_committed", enable_auto_commit=False
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout} s")
            for records in consumer.poll(timeout_ms=500, max_records=50_000).values():
                yield from records
    finally:
        consumer.close()


def read_all(settings: WorkerSettings, topic: str) -> list[bytes]:
    """Every committed record's value of a topic, from the beginning."""
    return [record.value for record in topic_records(settings, topic)]


def wait_idle(settings: WorkerSettings, timeout: float = 90.0, worker: Worker | None = None, rounds: int = 3) -> None:
    """Wait until the worker's group has committed every offset of all its input topics and ``worker`` holds no
    re-emission back (``rounds`` times in a row).

    Transaction markers are not records: under ``exactly_once`` a partition's end offset counts the marker after
    the worker's last transaction, which no consumer commits past. So a partition at most two offsets behind is
    read (``read_committed``) and counts as done when no record lies in between; a record short is never slack.
    """
    from kafka import KafkaConsumer, TopicPartition

    inputs = [
        settings.topics.events,
        settings.topics.crm,
        crm_contacts_topic(settings.app_id),
        settings.topics.lead_events,
    ]
    partitions = [TopicPartition(t, p) for t in inputs for p in range(settings.partitions)]
    # A consumer with the worker's group id that never subscribes: it only fetches the group's committed offsets.
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_servers, group_id=settings.app_id, enable_auto_commit=False
    )
    reader = KafkaConsumer(
        bootstrap_servers=settings.kafka_servers, isolation_level="read_committed", enable_auto_commit=False
    )
    lagging: dict = {}
    idle_rounds = 0

    def idle() -> bool:
        nonlocal lagging, idle_rounds
        ends = consumer.end_offsets(partitions)
        behind = {tp: ends[tp] - (consumer.committed(tp) or 0) for tp in partitions}
        lagging = {
            tp: lag
            for tp, lag in behind.items()
            if lag > 2 or (lag > 0 and _records_between(reader, tp, ends[tp] - lag, ends[tp]))
        }
        if not lagging and worker is not None:  # held re-emissions are output still to come (docs/STREAMS.md)
            held = get_json(f"{worker.settings.web_url}/counters/?window=1m", timeout=2)["held_reemissions"]
            if held:
                lagging = {"held re-emissions": held}
        idle_rounds = idle_rounds + 1 if not lagging else 0
        return idle_rounds >= rounds

    try:
        tail = worker.log_tail if worker else lambda: ""
        wait_for(idle, timeout, lambda: f"the worker to catch up (behind: {lagging})\n{tail()}", interval=0.5)
    finally:
        consumer.close(autocommit=False)
        reader.close()


def _records_between(reader, tp, start: int, end: int) -> int:
    """Committed records in offsets [start, end) of one partition (``end - start`` when it cannot tell in 2 s)."""
    reader.assign([tp])
    reader.seek(tp, start)
    found = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        found += sum(1 for record in reader.poll(timeout_ms=200).get(tp, []) if record.offset < end)
        if reader.position(tp) >= end:
            return found
    return end - start


def latest(records: list[bytes], model, key) -> dict:
    """The newest version of each record (by ``key``), e.g. conversions by conversion id."""
    newest: dict = {}
    for raw in records:
        record = serde.loads(raw, model)
        k = key(record)
        if k not in newest or record.version > newest[k].version:
            newest[k] = record
    return newest


def final_credits(settings: WorkerSettings) -> dict:
    """(conversion id, model, touch id) -> credit of the newest version of each conversion (version dropped)."""
    conversions = latest(read_all(settings, settings.topics.conversions), Conversion, lambda c: c.conversion_id)
    result = {}
    for conversion in conversions.values():  # an attributed conversion carries its credits
        for credit in conversion.credit_records():
            result[(credit.conversion_id, credit.model.value, credit.touch_id)] = credit.model_copy(
                update={"version": 1}
            )
    return result


# -- the scripted journey -----------------------------------------------------------------------------------------


def at(days: float, hours: float = 0) -> datetime:
    return BASE + timedelta(days=days, hours=hours)


def envelope(event_id: str, event, site: str = "shop") -> Envelope:
    return Envelope(event_id=event_id, site_id=site, received_at=event.occurred_at, event=event)


def page_view(event_id: str, visitor: str, when: datetime, url: str, referrer: str | None = None) -> Envelope:
    return envelope(event_id, PageView(occurred_at=when, visitor_id=visitor, url=url, referrer=referrer))


def identify(event_id: str, visitor: str, when: datetime, email: str) -> Envelope:
    return envelope(event_id, Identify(occurred_at=when, visitor_id=visitor, email=email, form_id="demo"))


def crm(
    event_id: str,
    when: datetime,
    stage: str,
    email: str | None = None,
    contact: str | None = None,
    value: str | None = None,
) -> Envelope:
    change = CrmStatusChange(
        occurred_at=when,
        crm="hubspot",
        crm_object_id=f"obj-{event_id}",
        email=email,
        crm_contact_id=contact,
        stage=stage,
        deal_value=Decimal(value) if value else None,
        currency="EUR" if value else None,
    )
    return envelope(event_id, change, site="hubspot")


def as_records(settings: WorkerSettings, envelopes: list[Envelope]) -> list[tuple[str, str, bytes]]:
    records = []
    for env in envelopes:
        event = env.event
        topic = settings.topics.crm if isinstance(event, CrmStatusChange) else settings.topics.events
        key = event.lead_key if isinstance(event, CrmStatusChange) else event.visitor_id
        records.append((topic, key, serde.dumps(env)))
    return records


EMAIL = "ann@example.com"
LAPTOP, PHONE = "laptop-1", "phone-1"


def journey() -> list[Envelope]:
    """Two devices, anonymous visits through three channels, a form, MQL, opportunity, won with 12,000 EUR."""
    return [
        page_view("pv-1", LAPTOP, at(0), f"{SITE}/?utm_source=google&utm_medium=cpc&utm_campaign=spring"),
        page_view("pv-2", LAPTOP, at(0, 0.1), f"{SITE}/pricing", referrer=f"{SITE}/"),
        page_view("pv-3", PHONE, at(2), f"{SITE}/blog", referrer="https://www.linkedin.com/"),
        page_view("pv-4", LAPTOP, at(5), f"{SITE}/demo?utm_source=newsletter&utm_medium=email&utm_campaign=may"),
        identify("form-1", LAPTOP, at(5, 0.05), " Ann@Example.com "),
        identify("login-1", PHONE, at(6), EMAIL),
        crm("crm-mql", at(6, 3), "mql", email=EMAIL, contact="501"),
        page_view("pv-5", PHONE, at(8), f"{SITE}/pricing"),
        crm("crm-opp", at(10), "opportunity", contact="501"),  # contact id only: mapped through crm-mql
        crm("crm-won", at(20), "customer", email=EMAIL, value="12000.00"),
    ]


def expected_touches() -> list[tuple[str, str]]:
    from stream_jobs.rules.sessions import touch_id_for

    return [
        (touch_id_for(LAPTOP, "pv-1"), "Paid Search"),
        (touch_id_for(PHONE, "pv-3"), "Organic Social"),
        (touch_id_for(LAPTOP, "pv-4"), "Email"),
        (touch_id_for(PHONE, "pv-5"), "Direct"),
    ]


def test_scripted_journey_yields_exact_conversions_and_credits(kafka_bootstrap, unique_name, tmp_path):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    lead = lead_id_for(EMAIL, KEY.encode())
    with running_worker(settings, tmp_path) as worker:
        send(settings, as_records(settings, journey()))
        wait_idle(settings, worker=worker)
        # A record of a valid journey that fails on the way (it once did: the first conversion's credits on a
        # fresh producer) is dead-lettered, and the conversions below are then wrong in ways that hide why.
        assert read_all(settings, settings.topics.dead_letters) == [], worker.log_tail()

        conversions = latest(read_all(settings, settings.topics.conversions), Conversion, lambda c: c.conversion_id)
        touches = expected_touches()
        expected = {
            "lead": (at(5, 0.05), "form-1", 3, None),
            "mql": (at(6, 3), "crm-mql", 3, None),
            "opportunity": (at(10), "crm-opp", 4, None),
            "customer": (at(20), "crm-won", 4, Decimal("12000.00")),
        }
        assert set(conversions) == {conversion_id_for(lead, stage) for stage in expected}
        for stage, (when, event_id, count, revenue) in expected.items():
            c = conversions[conversion_id_for(lead, stage)]
            assert (c.lead_id, c.stage.value, c.occurred_at, c.event_id, c.touch_count, c.revenue) == (
                lead,
                stage,
                when,
                event_id,
                count,
                revenue,
            )
            assert c.first_channel == "Paid Search"
            assert c.last_channel == "Email"  # the direct visit on day 8 does not steal last touch
            assert c.currency == ("EUR" if revenue else None)

        credits = final_credits(settings)
        customer = conversion_id_for(lead, "customer")
        t1, t2, t3, t4 = (touch_id for touch_id, _ in touches)
        hand_made = {  # 4 touches; lead created on t3 (email), opportunity and customer on t4 (direct)
            "first_touch": {t1: ("1", "12000.00"), t2: ("0", "0.00"), t3: ("0", "0.00"), t4: ("0", "0.00")},
            "last_touch": {t1: ("0", "0.00"), t2: ("0", "0.00"), t3: ("1", "12000.00"), t4: ("0", "0.00")},
            "linear": {t: ("0.25", "3000.00") for t in (t1, t2, t3, t4)},
            "u_shaped": {
                t1: ("0.4", "4800.00"),
                t2: ("0.1", "1200.00"),
                t3: ("0.4", "4800.00"),
                t4: ("0.1", "1200.00"),
            },
            "w_shaped": {
                t1: ("0.3", "3600.00"),
                t2: ("0.1", "1200.00"),
                t3: ("0.3", "3600.00"),
                t4: ("0.3", "3600.00"),
            },
            "full_path": {
                t1: ("0.225", "2700.00"),
                t2: ("0.1", "1200.00"),
                t3: ("0.225", "2700.00"),
                t4: ("0.45", "5400.00"),
            },
        }
        for model, by_touch in hand_made.items():
            got = {
                touch: (credits[(customer, model, touch)].credit, credits[(customer, model, touch)].revenue)
                for touch in by_touch
                if (customer, model, touch) in credits
            }
            want = {
                touch: (Decimal(share), Decimal(revenue))
                for touch, (share, revenue) in by_touch.items()
                if Decimal(share) or (customer, model, touch) in credits
            }
            assert got == want, model

        # Every model of every conversion: exactly the pure attribution of the expected journey.
        journey_touches = sorted(
            {c.touch_id: c for c in credits.values() if c.touch_id != "(none)"}.values(), key=lambda c: c.touch_at
        )
        assert [(c.touch_id, c.channel) for c in journey_touches] == touches
        assert {k[1] for k in credits} == {m.value for m in AttributionModel}
        by_conversion: dict = {}
        for (conversion_id, _model, _touch), credit in credits.items():
            by_conversion.setdefault(conversion_id, set()).add(credit)
        assert set(by_conversion) == set(conversions)
        for conversion_id, got in by_conversion.items():
            for model in AttributionModel:
                total = sum(c.credit for c in got if c.model == model)
                assert total == Decimal(1), (conversion_id, model)
            revenue = conversions[conversion_id].revenue or Decimal("0")
            for model in AttributionModel:
                assert sum(c.revenue for c in got if c.model == model) == revenue

        # a touch is sent again with its lead id when its visitor is identified: one per touch id
        sent = [serde.loads(raw, Touch) for raw in read_all(settings, settings.topics.touches)]
        journey_of_touches = list({touch.touch_id: touch for touch in sent}.values())
        milestones = Milestones(lead_at=at(5, 0.05), opportunity_at=at(10), customer_at=at(20))
        for conversion in conversions.values():
            want = {
                (c.conversion_id, c.model.value, c.touch_id): c.model_copy(update={"version": 1})
                for c in attribute(journey_of_touches, conversion, milestones, settings.lookback)
            }
            got = {k: c for k, c in credits.items() if k[0] == conversion.conversion_id}
            assert got == want, conversion.stage

        # The same input again: no new conversion id, no new version (credits travel in the conversions).
        before = len(read_all(settings, settings.topics.conversions))
        send(settings, as_records(settings, journey()))
        wait_idle(settings, worker=worker)
        assert len(read_all(settings, settings.topics.conversions)) == before
        assert read_all(settings, settings.topics.credits) == []  # the worker no longer writes the credits topic


def test_bad_records_become_dead_letters_and_the_worker_goes_on(kafka_bootstrap, unique_name, tmp_path):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    events = settings.topics.events
    junk_visitor = serde.dumps(page_view("pv-ok", "v-1", at(0), f"{SITE}/")).replace(b'"v-1"', b'"undefined"')
    wrong_topic = serde.dumps(crm("crm-x", at(0), "mql", email=EMAIL))
    good = page_view("pv-good", "v-2", at(0), f"{SITE}/?utm_source=bing&utm_medium=cpc")
    with running_worker(settings, tmp_path) as worker:
        send(
            settings,
            [
                (events, "v-0", b"\xff not json"),
                (events, "v-1", junk_visitor),
                (events, EMAIL, wrong_topic),
                (events, "v-2", serde.dumps(good)),
            ],
        )
        wait_idle(settings, worker=worker)
        letters = [serde.loads(raw, DeadLetter) for raw in read_all(settings, settings.topics.dead_letters)]
        assert sorted(letter.key for letter in letters) == sorted(["v-0", "v-1", EMAIL])
        by_key = {letter.key: letter for letter in letters}
        assert by_key["v-0"].reason.startswith("invalid Envelope: (record): Invalid JSON")
        assert "event.page_view.visitor_id" in by_key["v-1"].reason and "placeholder" in by_key["v-1"].reason
        assert "'crm_status' event on the events topic" in by_key[EMAIL].reason
        assert all(letter.topic == events and letter.component == "stream_jobs" for letter in letters)
        assert by_key["v-0"].value == b"\xff not json".decode("utf-8", errors="replace")
        assert {(letter.partition, letter.offset) for letter in letters} == {
            (r.partition, r.offset) for r in topic_records(settings, events) if (r.key or b"").decode() != "v-2"
        }
        touches = [serde.loads(raw, Touch) for raw in read_all(settings, settings.topics.touches)]
        assert [(t.visitor_id, t.channel) for t in touches] == [("v-2", "Paid Search")]
        assert get_json(f"{settings.web_url}/counters/?window=1m")["dead_letters"] == 3


def test_the_web_port_serves_counters_and_health_to_anyone_diagnostics_with_the_password_and_nothing_else(
    kafka_bootstrap, unique_name, tmp_path
):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    with running_worker(settings, tmp_path) as worker:
        send(settings, as_records(settings, journey()))  # the contacts table gets a ContactState for EMAIL
        wait_idle(settings, worker=worker)
        base = settings.web_url
        password = settings.local_password_file.read_text().strip()
        assert settings.local_password_file.stat().st_mode & 0o777 == 0o600  # made by the worker at start
        assert settings.data_dir.stat().st_mode & 0o777 == 0o700
        assert web_status(f"{base}/")[0] == 200  # Faust's index: {"status": "OK"}, the health check
        assert web_status(f"{base}/counters/?window=1m")[0] == 200
        assert web_status(f"{base}/counters/?window=never")[0] == 400
        status, body = web_status(f"{base}/diagnostics/")
        assert status == 401 and str(settings.local_password_file.resolve()).encode() in body
        assert web_status(f"{base}/diagnostics/", basic_auth("wrong"))[0] == 401
        assert web_status(f"{base}/diagnostics/", {"Authorization": "Basic !!"})[0] == 401
        assert web_status(f"{base}/diagnostics/", basic_auth(password))[0] == 200
        # Faust's own pages: table data, the cluster's layout, statistics, the service graph
        for path in (
            "/table/",
            "/table/contacts/",
            f"/table/contacts/{EMAIL}/",
            "/table/visitors/laptop-1/",
            "/router/",
            "/router/contacts/",
            f"/router/contacts/{EMAIL}/",
            "/graph/",
            "/stats/",
            "/assignment/",
            "/performance/",
            "/nowhere/",
        ):
            assert web_status(f"{base}{path}")[0] == 404, path
        assert web_status(f"{base}/counters/", method="POST")[0] == 405
        worker.stop()
        assert "Traceback" not in worker.log_tail(400)


def test_metrics_count_what_the_worker_read_and_show_no_lag_when_idle(kafka_bootstrap, unique_name, tmp_path):
    """``GET /metrics``: Prometheus text, public like the counters; the records read per topic are exactly the ones
    sent, a bad record is one dead letter, and once idle no source partition lags."""
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    records = as_records(settings, journey())
    bad = (settings.topics.events, "v-bad", b"{not json")
    with running_worker(settings, tmp_path) as worker:
        send(settings, [*records, bad])
        wait_idle(settings, worker=worker)
        with urllib.request.urlopen(f"{settings.web_url}/metrics", timeout=5) as response:
            content_type, body = response.headers["Content-Type"], response.read()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format
    samples: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    sent_to = Counter(topic for topic, _, _ in [*records, bad])
    for topic in (settings.topics.events, settings.topics.crm):
        assert samples[f'closedloop_worker_messages_received_total{{topic="{topic}"}}'] == sent_to[topic], topic
        lags = [v for k, v in samples.items() if k.startswith(f'closedloop_worker_partition_lag{{topic="{topic}"')]
        # the partitions the worker fetched records from (the others have no offsets to report yet)
        assert 1 <= len(lags) <= settings.partitions and set(lags) == {0}, (topic, lags)
    assert samples["closedloop_worker_dead_letters_total"] == 1
    # one process owns every partition of its inputs
    for topic in (settings.topics.events, settings.topics.crm, settings.topics.lead_events):
        assert samples[f'closedloop_worker_assigned_partitions{{topic="{topic}"}}'] == settings.partitions
    assert samples["closedloop_worker_events_total"] >= len(records)


def tmux_screen(session: str) -> str:
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
    ).stdout


def wait_for_screen(session: str, text: str, timeout: float = 30.0) -> str:
    screen = ""

    def shown() -> str | None:
        nonlocal screen
        screen = tmux_screen(session)
        return screen if text in screen else None

    return wait_for(shown, timeout, lambda: f"{text!r} on the screen, which shows:\n{screen}", interval=0.3)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install -y tmux)")
def test_counters_json_and_watch_view_show_counts_moving(kafka_bootstrap, unique_name, tmp_path):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    session = unique("watch")
    with running_worker(settings, tmp_path) as worker:
        empty = get_json(f"{settings.web_url}/counters/?window=1m")
        assert (empty["window"], empty["rows"], empty["dead_letters"]) == ("1m", [], 0)
        subprocess.run(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                session,
                "-x",
                "150",
                "-y",
                "45",
                f"{sys.executable} -m closedloop.cli watch --url {settings.web_url}",
            ],
            cwd=ROOT,
            check=True,
            env=worker_env(settings),
        )
        try:
            wait_for_screen(session, "(no conversions yet)")
            sent_at = time.time()
            send(settings, as_records(settings, journey()))
            wait_idle(settings, worker=worker)
            for window in ("1m", "today"):
                # Counted on the wall clock while the worker ran: if a window boundary fell in between, the
                # counts are split between the window of the send and the current one.
                size, now = {"1m": 60, "today": 86400}[window], time.time()
                snapshots = {}
                for at in [*range(int(sent_at), int(now), size), now]:
                    snapshot = get_json(f"{settings.web_url}/counters/?window={window}&at={at}")
                    snapshots[snapshot["window_start"]] = snapshot
                last, first, customers = Counter(), Counter(), Counter()
                for snapshot in snapshots.values():
                    for r in snapshot["rows"]:
                        counts = last if r["model"] == "last_touch" else first
                        counts[(r["stage"], r["channel"])] += r["conversions"]
                        if r["model"] == "last_touch" and r["stage"] == "customer":
                            customers[r["revenue"]] += r["conversions"]
                # Counted once each, under the channels of their newest version (a conversion emitted before
                # the phone's touches arrived moved to its final channels), as in the credits.
                stages = ("lead", "mql", "opportunity", "customer")
                assert last == Counter({(stage, "Email"): 1 for stage in stages}), snapshots
                assert first == Counter({(stage, "Paid Search"): 1 for stage in stages}), snapshots
                assert customers == Counter({"12000.00": 1})
                assert [s["totals"]["customer"] for s in snapshots.values() if "customer" in s["totals"]] == [
                    {"conversions": 1, "revenue": "12000.00"}
                ]
                assert {s["time"] for s in snapshots.values()} == {"processing"}
            with pytest.raises(urllib.error.HTTPError) as refused:
                get_json(f"{settings.web_url}/counters/?window=1m&at=yesterday")
            assert refused.value.code == 400 and "seconds since 1970" in refused.value.read().decode()
            screen = wait_for_screen(session, "12,000.00")
            assert "today" in screen and "customer" in screen
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_counters_follow_a_reattributed_conversion(kafka_bootstrap, unique_name, tmp_path):
    """The CRM reports the sale before the form: counted on (none); then the form carries the visitor's touches
    and re-attributes it. The sale moves to its new channels inside the window it was first counted in."""
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    won = crm("crm-won", at(20), "customer", email=EMAIL, value="12000.00")
    with running_worker(settings, tmp_path) as worker:
        send(settings, as_records(settings, [won]))
        wait_idle(settings, worker=worker)
        before = get_json(f"{settings.web_url}/counters/?window=today")
        assert [(r["model"], r["stage"], r["channel"], r["conversions"]) for r in before["rows"]] == [
            ("first_touch", "customer", "(none)", 1),
            ("last_touch", "customer", "(none)", 1),
        ]
        send(settings, as_records(settings, [e for e in journey() if e.event_id in ("pv-1", "pv-4", "form-1")]))
        wait_idle(settings, worker=worker)
        windows = {}
        for at_ in (datetime.fromisoformat(before["window_start"]).timestamp(), time.time()):
            snapshot = get_json(f"{settings.web_url}/counters/?window=today&at={at_}")
            windows[snapshot["window_start"]] = snapshot
    rows = Counter()
    for snapshot in windows.values():
        for r in snapshot["rows"]:
            rows[(r["model"], r["stage"], r["channel"], r["revenue"])] += r["conversions"]
    assert rows == Counter(
        {
            ("first_touch", "customer", "Paid Search", "12000.00"): 1,
            ("last_touch", "customer", "Email", "12000.00"): 1,
            ("first_touch", "lead", "Paid Search", "0.00"): 1,
            ("last_touch", "lead", "Email", "0.00"): 1,
        }
    ), windows
    # The sale stays in the window it was first counted in (even if a day ended in between), never twice.
    sale_window = windows[before["window_start"]]
    assert [(r["model"], r["channel"]) for r in sale_window["rows"] if r["stage"] == "customer"] == [
        ("first_touch", "Paid Search"),
        ("last_touch", "Email"),
    ]
    assert sale_window["totals"]["customer"] == {"conversions": 1, "revenue": "12000.00"}


def generated_stream(visitors: int = 400, seed: int = 7) -> list[Envelope]:
    """A deterministic mix: visitors over several channels, a third identify (some two devices per email),
    CRM stages by email and by contact id only. Shared by the SIGKILL fault test and bench/worker.py."""
    import random

    rng = random.Random(seed)
    landings = [
        f"{SITE}/?utm_source=google&utm_medium=cpc&utm_campaign=c{{n}}",
        f"{SITE}/?utm_source=newsletter&utm_medium=email",
        f"{SITE}/?utm_source=facebook&utm_medium=paid_social",
        f"{SITE}/pricing",
        f"{SITE}/blog",
    ]
    referrers = [None, "https://www.google.com/", "https://www.linkedin.com/", "https://news.example.org/a"]
    out: list[Envelope] = []
    crm_events: list[Envelope] = []
    for v in range(visitors):
        visitor = f"v{v}"
        start = at(rng.uniform(0, 20))
        for p in range(4):
            when = start + timedelta(hours=p * rng.choice([0.1, 2, 30]))
            url = rng.choice(landings).format(n=rng.randrange(3))
            out.append(page_view(f"pv-{v}-{p}", visitor, when, url, rng.choice(referrers)))
        if v % 3 == 0:
            email = f"lead{v // 6}@example.com"  # visitors 6k and 6k+3 share an email: two devices
            out.append(identify(f"id-{v}", visitor, start + timedelta(hours=3), email))
            if v % 6 == 0:
                contact = f"c{v}"
                crm_events.append(crm(f"mql-{v}", start + timedelta(days=1), "mql", email=email, contact=contact))
                crm_events.append(crm(f"opp-{v}", start + timedelta(days=2), "opportunity", contact=contact))
                if v % 12 == 0:
                    crm_events.append(
                        crm(f"won-{v}", start + timedelta(days=5), "customer", email=email, value=f"{1000 + v}.50")
                    )
    rng.shuffle(crm_events)
    return out + crm_events


def test_records_waiting_at_a_restart_are_all_processed_even_when_the_seek_is_slow(
    kafka_bootstrap, unique_name, tmp_path
):
    """Faust 0.15.3 resumed the stream partitions before seeking them to the committed offsets, then cleared the
    stream buffers: records fetched in between were dropped, never processed, and the group's committed offset
    stuck below them for good (in CI: 33 CRM records never processed after a restart), or, when the first record
    after the seek was the one dropped, moved past it (Faust commits from the lowest acknowledged offset). A slow
    seek makes the window wide; with the fix every record is processed once and the group catches up.

    The seek is slowed by 2 s: Kafka holds the fetch that is in flight at the end of recovery (the changelogs are
    read to their ends, so it waits for data) for up to Faust's 1.5 s fetch wait, and records of the resumed
    partitions only come with the next one. Without the fix, 2 of 7 runs lost a page view this way; with 0.3 s,
    none of 3."""
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    events = settings.topics.events
    first = [
        page_view(f"pv-a{i}", f"v-{i % 50}", at(0, i / 60), f"{SITE}/?utm_source=bing&utm_medium=cpc")
        for i in range(100)
    ]
    with running_worker(settings, tmp_path) as worker:  # the tables get a changelog: the restart recovers them
        send(settings, [(events, view.event.visitor_id, serde.dumps(view)) for view in first])
        wait_idle(settings, worker=worker)
    waiting = [
        page_view(f"pv-b{i}", f"w-{i}", at(1, i / 600), f"{SITE}/?utm_source=google&utm_medium=cpc")
        for i in range(2000)
    ]
    send(settings, [(events, view.event.visitor_id, serde.dumps(view)) for view in waiting])
    slow = Worker(
        settings,
        tmp_path / "slow-seek-worker.log",
        module="tests.slow_seek_worker",
        extra_env={"CLOSEDLOOP_TEST_SEEK_DELAY_S": "2.0"},
    ).start()
    try:
        wait_idle(settings, worker=slow, timeout=120)
    finally:
        slow.stop()
    touches = [serde.loads(raw, Touch) for raw in read_all(settings, settings.topics.touches)]
    assert Counter(t.visitor_id[0] for t in touches) == {"v": 100, "w": 2000}
    assert len({t.touch_id for t in touches}) == len(touches)
    # Every touch carries its visitor's number: the partition and offset of the visitor's first event, also for
    # the v- visitors whose states the restarted worker recovered from the changelog.
    first_event: dict[str, tuple[int, int]] = {}
    for record in topic_records(settings, events):
        first_event.setdefault(record.key.decode(), (record.partition, record.offset))
    assert {(t.visitor_id, t.visitor_number) for t in touches} == {
        (visitor, visitor_number(*where)) for visitor, where in first_event.items()
    }


def _is_idle(settings: WorkerSettings) -> bool:
    """Whether the group has committed every input offset right now (one look, no waiting)."""
    try:
        wait_idle(settings, timeout=0, rounds=1)
        return True
    except AssertionError:
        return False


def test_diagnostics_page_shows_each_partition_and_what_each_agent_awaits(kafka_bootstrap, unique_name, tmp_path):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    events = settings.topics.events
    views = [page_view(f"pv-{i}", f"v-{i}", at(i), f"{SITE}/?utm_source=bing&utm_medium=cpc") for i in range(5)]
    with running_worker(settings, tmp_path) as worker:
        send(settings, [(events, view.event.visitor_id, serde.dumps(view)) for view in views])
        wait_idle(settings, worker=worker)
        password = settings.local_password_file.read_text().strip()
        diagnostics = get_json(f"{settings.web_url}/diagnostics/", password=password)
    records = Counter(record.partition for record in topic_records(settings, events))
    assert sum(records.values()) == 5 and len(records) == 2  # both partitions hold records
    sources = [
        settings.topics.events,
        settings.topics.crm,
        settings.topics.lead_events,
        crm_contacts_topic(settings.app_id),
        erasures_topic(settings.app_id),
    ]
    partitions = diagnostics["partitions"]
    assert sorted(partitions) == sorted(f"{topic}[{p}]" for topic in sources for p in range(2))
    for p, count in records.items():
        assert {
            key: partitions[f"{events}[{p}]"][key]
            for key in (
                "read",
                "committed",
                "position",
                "highwater",
                "acked_pending",
                "gaps",
                "fetching",
                "paused",
                "buffered",
                "client_paused",
            )
        } == {
            "read": count - 1,
            "committed": count,
            "position": count,
            "highwater": count,
            "acked_pending": 0,
            "gaps": [],
            "fetching": True,
            "paused": False,
            "buffered": False,
            "client_paused": False,
        }
    assert partitions[f"{settings.topics.crm}[0]"]["committed"] is None  # nothing read yet
    assert diagnostics["streams"][events] == {"queued": 0, "maxsize": 4096}
    assert diagnostics["app"] == {
        "in_recovery": False,
        "rebalancing": False,
        "flow_control_active": True,
        "consumer_flow_active": True,
        "unacked_messages": 0,
    }
    # Each idle agent waits for its next record in its stream's queue, and the page shows the whole chain.
    agents = {
        chain[1].split(" ")[-1]: chain
        for chain in (task["awaiting"] for task in diagnostics["tasks"]["worker"])
        if len(chain) > 2 and chain[1].startswith("stream_jobs/runtime/agents.py")
    }
    assert sorted(agents) == ["_contacts_agent", "_crm_agent", "_erasures_agent", "_leads_agent", "_visitors_agent"]
    for chain in agents.values():
        assert chain[0].startswith("faust/agents/agent.py") and chain[2].startswith("stream_jobs/runtime/agents.py")
        assert chain[2].endswith(" _each") and chain[-1].startswith("asyncio/queues.py") and chain[-1].endswith(" get")
    fetch_loops = [
        task
        for task in diagnostics["tasks"]["consumer_thread"]
        if task["awaiting"][0].startswith("aiokafka/consumer/fetcher.py")
    ]
    # The fetch loop, and (one broker) at most one fetch in flight: Kafka holds an empty fetch for up to its wait.
    fetch_tasks = sorted(task["awaiting"][0].split(" ")[-1] for task in fetch_loops)
    assert fetch_tasks in (["_fetch_requests_routine"], ["_fetch_requests_routine", "_proc_fetch_request"])
    # The summary for a person names no partition (none is behind or held back) and shows the four agents.
    summary = summarize(diagnostics).splitlines()
    assert not [line for line in summary if " behind; " in line]
    assert sorted(
        line.split(" > ")[1].split(" ")[-1] for line in summary if "stream_jobs/runtime/agents.py" in line
    ) == ["_contacts_agent", "_crm_agent", "_erasures_agent", "_leads_agent", "_visitors_agent"]
