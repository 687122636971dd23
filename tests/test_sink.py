"""The sink writer against the embedded broker and ClickHouse endpoint: rows arrive, replays collapse, an outage
loses nothing, malformed records are dead-lettered, tombstones erase leads."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from harness import EmbeddedClickHouse, unique, wait_for
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.topics import create_topics
from schemas import serde
from schemas.events import CrmStatusChange, Envelope, Identify, PageView, SpendRow
from schemas.outputs import Conversion, Credit, DeadLetter, IdentityLink, Lead, Touch
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.settings import SinkSettings
from sinks.writer import SinkWriter

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)


def _settings(kafka: str, clickhouse: str, **overrides) -> SinkSettings:
    name = unique("sink")
    values = dict(
        kafka_bootstrap_servers=kafka,
        clickhouse_url=f"{clickhouse}/{name}",
        topic_prefix=name,
        sink_consumer_group=name,
        sink_batch_seconds=0.2,
        partitions=2,
    )
    settings = SinkSettings(**(values | overrides))
    create_topics(settings, settings.topics.specs())
    migrate_up(settings)
    return settings


def _publish(settings: SinkSettings, records: list[tuple[str, str | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, acks="all")
    try:
        for topic, key, value in records:
            producer.send(topic, key=None if key is None else key.encode(), value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


class Running:
    """A SinkWriter running in a thread for the duration of a ``with`` block."""

    def __init__(self, settings: SinkSettings) -> None:
        self.writer = SinkWriter(settings)
        self.error: BaseException | None = None  # what ended run(), if it raised
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.writer.run()
        except BaseException as exc:  # noqa: BLE001 - reported by __exit__
            self.error = exc

    def __enter__(self) -> SinkWriter:
        self.thread.start()
        return self.writer

    def __exit__(self, *exc) -> None:
        self.writer.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the sink did not stop"
        self.writer.close()
        assert self.error is None, f"the sink's run() raised {self.error!r}"


def _query(settings: SinkSettings, sql: str) -> list[tuple]:
    client = connect(settings)
    try:
        return client.query(sql).result_rows
    finally:
        client.close()


def _committed(settings: SinkSettings, topic: str) -> int:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_servers, group_id=settings.sink_consumer_group, enable_auto_commit=False
    )
    try:
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(settings.partitions))
    finally:
        consumer.close()


def _one_of_each(settings: SinkSettings) -> list[tuple[str, str | None, bytes | None]]:
    topics = settings.topics

    def envelope(event_id: str, event) -> bytes:
        return serde.dumps(Envelope(event_id=event_id, site_id="site", received_at=T0, event=event))

    return [
        (
            topics.events,
            "v1",
            envelope(
                "e1", PageView(occurred_at=T0, visitor_id="v1", url="https://ex.com/?utm_source=google&utm_medium=cpc")
            ),
        ),
        (topics.events, "v1", envelope("e2", Identify(occurred_at=T0, visitor_id="v1", email="ann@ex.com"))),
        (
            topics.crm,
            "ann@ex.com",
            envelope(
                "e3",
                CrmStatusChange(
                    occurred_at=T0,
                    crm="hubspot",
                    crm_object_id="d1",
                    email="ann@ex.com",
                    stage="customer",
                    deal_value=Decimal("500.00"),
                    currency="EUR",
                ),
            ),
        ),
        (
            topics.spend,
            "k",
            envelope(
                "e4",
                SpendRow(occurred_at=T0, date=T0.date(), channel="Paid Search", cost=Decimal("80.00"), currency="EUR"),
            ),
        ),
        (
            topics.touches,
            "v1",
            serde.dumps(
                Touch(
                    touch_id="t1",
                    visitor_id="v1",
                    site_id="site",
                    occurred_at=T0,
                    channel="Paid Search",
                    source="google",
                    medium="cpc",
                    event_id="e1",
                )
            ),
        ),
        (
            topics.identity_links,
            "L1",
            serde.dumps(IdentityLink(visitor_id="v1", lead_id="L1", linked_at=T0, event_id="e2")),
        ),
        (topics.leads, "L1", serde.dumps(Lead(lead_id="L1", email="ann@ex.com", first_identified_at=T0))),
        (
            topics.conversions,
            "L1",
            serde.dumps(
                Conversion(
                    conversion_id="c1",
                    lead_id="L1",
                    stage="customer",
                    occurred_at=T0 + timedelta(days=1),
                    revenue=Decimal("500.00"),
                    currency="EUR",
                    touch_count=1,
                    first_channel="Paid Search",
                    last_channel="Paid Search",
                    event_id="e3",
                )
            ),
        ),
        (
            topics.credits,
            "c1",
            serde.dumps(
                Credit(
                    conversion_id="c1",
                    lead_id="L1",
                    stage="customer",
                    model="linear",
                    touch_id="t1",
                    touch_index=0,
                    touch_at=T0,
                    converted_at=T0 + timedelta(days=1),
                    channel="Paid Search",
                    source="google",
                    medium="cpc",
                    campaign="",
                    credit=Decimal("1"),
                    revenue=Decimal("500.00"),
                    currency="EUR",
                )
            ),
        ),
    ]


COUNTS = """SELECT
    (SELECT count() FROM events FINAL), (SELECT count() FROM spend FINAL), (SELECT count() FROM touches FINAL),
    (SELECT count() FROM identity_links FINAL), (SELECT count() FROM leads FINAL),
    (SELECT count() FROM conversions FINAL), (SELECT count() FROM credits FINAL)"""


def test_records_become_rows_and_a_replay_leaves_one_row_per_id(kafka_bootstrap, clickhouse_http_url):
    settings = _settings(kafka_bootstrap, clickhouse_http_url)
    batch = _one_of_each(settings)
    _publish(settings, batch)
    with Running(settings) as writer:
        wait_for(lambda: _query(settings, COUNTS) == [(4, 1, 1, 1, 1, 1, 1)], 60, "every record as a row")
        _publish(settings, batch)  # the same batch delivered twice
        wait_for(
            lambda: (
                writer.metrics.records == 2 * len(batch) and writer.metrics.lag == 0 and writer.metrics.batches >= 2
            ),
            60,
            "the replay to be written",
        )
    assert _query(settings, COUNTS) == [(4, 1, 1, 1, 1, 1, 1)]
    assert writer.metrics.total_rows == 2 * 10 and writer.metrics.dead_letters == 0
    assert _query(settings, "SELECT channel, credit, revenue, version FROM credits FINAL") == [
        ("Paid Search", Decimal("1.000000000"), Decimal("500.00"), 1)
    ]
    # Provenance: the copy kept is the last one written, i.e. the replay at the next offsets.
    assert _query(settings, "SELECT event_type, kafka_topic, kafka_offset FROM events FINAL ORDER BY event_id") == [
        ("page_view", settings.topics.events, 2),
        ("identify", settings.topics.events, 3),
        ("crm_status", settings.topics.crm, 1),
        ("spend", settings.topics.spend, 1),
    ]
    assert _query(settings, "SELECT count() FROM events WHERE position(event, 'ann@ex.com') > 0") == [(0,)]


def test_malformed_record_goes_to_dead_letters_and_the_rest_arrive(kafka_bootstrap, clickhouse_http_url):
    settings = _settings(kafka_bootstrap, clickhouse_http_url, partitions=1)
    good = [r for r in _one_of_each(settings) if r[0] == settings.topics.touches][0]
    _publish(settings, [(settings.topics.touches, "v9", b'{"touch_id": "broken"'), good])
    with Running(settings) as writer:
        wait_for(lambda: _query(settings, "SELECT touch_id FROM touches FINAL") == [("t1",)], 60, "the good touch")
        wait_for(lambda: writer.metrics.dead_letters == 1, 30, "the dead letter")
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        enable_auto_commit=False,
    )
    consumer.assign([TopicPartition(settings.topics.dead_letters, p) for p in range(settings.partitions)])
    letters = [serde.loads(m.value, DeadLetter) for m in consumer]
    consumer.close()
    assert len(letters) == 1
    letter = letters[0]
    assert (letter.component, letter.topic, letter.partition, letter.offset, letter.key, letter.value) == (
        "sink",
        settings.topics.touches,
        0,
        0,
        "v9",
        '{"touch_id": "broken"',
    )
    assert letter.reason.startswith("not a valid touch record: (record): Invalid JSON")


def test_rows_clickhouse_rejects_are_found_in_the_batch_and_dead_lettered(kafka_bootstrap, clickhouse_http_url):
    """A batch ClickHouse refuses because of some of its rows is split until those rows are found: they go to the
    dead-letter topic with ClickHouse's reason, the other rows of the batch are written. The table here was changed
    by hand so that one valid touch no longer fits (its utm_term in a UInt8 column)."""
    settings = _settings(kafka_bootstrap, clickhouse_http_url, partitions=1)
    client = connect(settings)
    client.command("ALTER TABLE touches MODIFY COLUMN term UInt8")  # an empty term reads as 0
    client.close()
    rejected = serde.dumps(
        Touch(
            touch_id="t5",
            visitor_id="v5",
            site_id="s",
            occurred_at=T0,
            channel="Direct",
            source="(direct)",
            medium="(none)",
            term="shoes",
            event_id="e5",
        )
    )
    _publish(settings, [(settings.topics.touches, f"v{i}", rejected if i == 5 else _direct_touch(i)) for i in range(8)])
    with Running(settings) as writer:
        wait_for(
            lambda: writer.metrics.dead_letters == 1 and writer.metrics.lag == 0 and writer.metrics.records == 8,
            60,
            "the batch written and the rejected row dead-lettered",
        )
    assert _query(settings, "SELECT touch_id FROM touches FINAL ORDER BY touch_id") == [
        (f"t{i}",) for i in (0, 1, 2, 3, 4, 6, 7)
    ]
    assert writer.metrics.rows_written["touches"] == 7
    # "ClickHouse said no" is not "ClickHouse is unreachable": counted as a rejected row, never retried.
    assert (
        writer.metrics.rejected_rows,
        writer.metrics.unreachable_retries,
        writer.metrics.refused_retries,
        writer.metrics.retries,
    ) == (1, 0, 0, 0)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        enable_auto_commit=False,
    )
    consumer.assign([TopicPartition(settings.topics.dead_letters, 0)])
    letters = [serde.loads(m.value, DeadLetter) for m in consumer]
    consumer.close()
    assert [(letter.offset, letter.key) for letter in letters] == [(5, "v5")]
    assert letters[0].reason.startswith("the row for touches was rejected:") and "Code: 27" in letters[0].reason


def test_tombstone_on_leads_topic_erases_the_email(kafka_bootstrap, clickhouse_http_url):
    settings = _settings(kafka_bootstrap, clickhouse_http_url, partitions=1)
    lead = Lead(lead_id="L1", email="ann@ex.com", first_identified_at=T0)
    other = Lead(lead_id="L2", email="bob@ex.com", first_identified_at=T0)
    _publish(
        settings,
        [
            (settings.topics.leads, "L1", serde.dumps(lead)),
            (settings.topics.leads, "L2", serde.dumps(other)),
            (settings.topics.leads, "L1", None),
        ],
    )
    with Running(settings) as writer:
        wait_for(
            lambda: writer.metrics.erasures == 1 and writer.metrics.lag == 0 and writer.metrics.records == 3,
            60,
            "the erasure",
        )
        wait_for(
            lambda: _query(settings, "SELECT lead_id, email FROM leads FINAL") == [("L2", "bob@ex.com")],
            30,
            "only the other lead to remain",
        )


def _direct_touch(i: int, occurred_at: datetime = T0) -> bytes:
    """The record of touch ``t{i}`` of visitor ``v{i}``: a direct visit."""
    return serde.dumps(
        Touch(
            touch_id=f"t{i}",
            visitor_id=f"v{i}",
            site_id="s",
            occurred_at=occurred_at,
            channel="Direct",
            source="(direct)",
            medium="(none)",
            event_id=f"e{i}",
        )
    )


def test_a_rebalance_while_records_wait_in_the_batch_leaves_the_sink_running(kafka_bootstrap, clickhouse_http_url):
    """kafka-python 3 calls rebalance listeners on its network thread, where a blocking commit raises and ends
    poll(): the sink crashed when a member joined while records waited in its batch. Now a member joins and leaves
    while 30 touches wait (the batch is not due for 5 minutes); the sink keeps running and every touch arrives."""
    settings = _settings(kafka_bootstrap, clickhouse_http_url, partitions=2, sink_batch_seconds=300)
    _publish(settings, [(settings.topics.touches, f"v{i}", _direct_touch(i)) for i in range(30)])
    running = Running(settings)
    with running as writer:
        wait_for(lambda: writer.metrics.records == 30, 60, "the touches read into the batch")
        other = KafkaConsumer(
            settings.topics.touches,
            bootstrap_servers=settings.kafka_servers,
            group_id=settings.sink_consumer_group,
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        try:
            wait_for(
                lambda: other.poll(timeout_ms=200) is not None and other.assignment(),
                60,
                "the second member to get a partition",
            )
        finally:
            other.close()
        assert running.error is None and running.thread.is_alive()
        assert writer.metrics.batches == 0  # the touches were still waiting in the batch
    assert _query(settings, "SELECT count(), uniqExact(touch_id) FROM touches FINAL") == [(30, 30)]
    assert writer.metrics.dead_letters == 0


def test_a_batch_is_sealed_by_its_bytes_when_they_are_bounded(kafka_bootstrap, clickhouse_http_url):
    """CLOSEDLOOP_SINK_BATCH_BYTES: with rows and seconds out of reach (10,000 rows, 5 minutes), a batch whose
    records' values reach the byte bound is written at once."""
    settings = _settings(kafka_bootstrap, clickhouse_http_url, partitions=1, sink_batch_seconds=300, sink_batch_bytes=1)
    _publish(settings, [(settings.topics.touches, f"v{i}", _direct_touch(i)) for i in range(5)])
    with Running(settings) as writer:
        wait_for(lambda: writer.metrics.batches >= 1 and writer.metrics.lag == 0, 60, "a batch sealed by its bytes")
    assert _query(settings, "SELECT count() FROM touches FINAL") == [(5,)]


def test_clickhouse_outage_loses_nothing(kafka_bootstrap, tmp_path):
    server = EmbeddedClickHouse(tmp_path / "clickhouse").start()
    try:
        settings = _settings(
            kafka_bootstrap,
            server.url,
            sink_retry_initial_seconds=0.1,
            sink_retry_max_seconds=0.5,
            clickhouse_connect_timeout=1.0,
            clickhouse_query_timeout=10.0,
        )

        def touches(start: int, count: int) -> list:
            return [
                (settings.topics.touches, f"v{i}", _direct_touch(i, T0 + timedelta(minutes=i)))
                for i in range(start, start + count)
            ]

        touch_count = "SELECT count() FROM touches FINAL"
        with Running(settings) as writer:
            _publish(settings, touches(0, 200))
            wait_for(lambda: _query(settings, touch_count) == [(200,)], 60, "the first 200 touches")
            server.stop()
            _publish(settings, touches(200, 300))
            wait_for(lambda: writer.metrics.retries >= 2, 60, "the sink to retry against the stopped endpoint")
            assert writer.metrics.records == 500  # read, held, not committed
            server.start()
            wait_for(lambda: _query(settings, touch_count) == [(500,)], 90, "every touch after the outage")
            wait_for(lambda: writer.metrics.lag == 0, 30, "the sink to catch up")
        assert _query(settings, "SELECT min(touch_id), max(toUInt32(substring(touch_id, 2))) FROM touches") == [
            ("t0", 499)
        ]
        # Offsets were committed only up to what is in ClickHouse: all of it now.
        assert _committed(settings, settings.topics.touches) == 500
    finally:
        server.stop()


def _read_and_write(writer: SinkWriter, records: int) -> None:
    """What run() does, one step at a time: poll until ``records`` more are read, seal, wait for the insert."""
    target = writer.metrics.records + records
    wait_for(lambda: writer.poll_once(200) >= 0 and writer.metrics.records >= target, 30, f"{records} records read")
    assert writer.metrics.records == target
    writer._seal_and_insert()
    writer._finish_inflight()


def test_offsets_wait_for_the_interval_under_load_and_commit_once_caught_up(kafka_bootstrap, clickhouse_http_url):
    """While batches keep coming, offsets wait for sink_commit_interval_seconds (rows never wait); a crash then
    replays the written records onto the same ids. A sink that has caught up commits at once, as does a flush."""
    settings = _settings(kafka_bootstrap, clickhouse_http_url, sink_batch_rows=10, sink_commit_interval_seconds=300)
    topic, touch_count = settings.topics.touches, "SELECT count() FROM touches FINAL"

    def touches(start: int, count: int) -> list:
        return [(topic, f"v{i}", _direct_touch(i, T0)) for i in range(start, start + count)]

    writer = SinkWriter(settings)
    try:
        _publish(settings, touches(0, 30))
        _read_and_write(writer, 30)
        assert _query(settings, touch_count) == [(30,)]
        assert _committed(settings, topic) == 0 and writer.metrics.lag == 30  # written, not committed yet
        _publish(settings, touches(30, 12))
        _read_and_write(writer, 12)
        assert _query(settings, touch_count) == [(42,)]
        assert _committed(settings, topic) == 0 and writer.metrics.lag == 42
    finally:
        writer.close()  # as a crash would: nothing committed

    with Running(settings) as writer:  # a restart replays the 42 records, then has caught up and commits
        wait_for(lambda: _committed(settings, topic) == 42, 30, "the caught-up sink to commit")
        assert writer.metrics.records == 42 and writer.metrics.lag == 0
    assert _query(settings, "SELECT count(), uniqExact(touch_id) FROM touches FINAL") == [(42, 42)]

    settings = _settings(kafka_bootstrap, clickhouse_http_url, sink_batch_rows=10, sink_commit_interval_seconds=0)
    topic = settings.topics.touches
    writer = SinkWriter(settings)
    try:
        _publish(settings, touches(0, 15))
        _read_and_write(writer, 15)
        assert _committed(settings, topic) == 15  # interval 0: every batch commits
        _publish(settings, touches(15, 5))
        wait_for(lambda: writer.poll_once(200) >= 0 and writer.metrics.records == 20, 30, "5 more records read")
        assert _committed(settings, topic) == 15
        writer.flush()
        assert _committed(settings, topic) == 20 and writer.metrics.lag == 0
    finally:
        writer.close()


def test_read_committed_skips_aborted_transactions(kafka_bootstrap, clickhouse_http_url):
    """Outputs of a transactional producer: committed records arrive, those of an aborted transaction never do."""
    settings = _settings(kafka_bootstrap, clickhouse_http_url, partitions=1)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_servers, transactional_id=unique("tx"))
    try:
        producer.init_transactions()
        for committed, ids in ((True, (1, 2)), (False, (3, 4)), (True, (5,))):
            producer.begin_transaction()
            for i in ids:
                producer.send(settings.topics.touches, key=f"v{i}".encode(), value=_direct_touch(i))
            producer.flush(timeout=30)
            (producer.commit_transaction if committed else producer.abort_transaction)()
    finally:
        producer.close()
    touch_ids = "SELECT touch_id FROM touches FINAL ORDER BY touch_id"
    with Running(settings) as writer:
        wait_for(lambda: _query(settings, touch_ids) == [("t1",), ("t2",), ("t5",)], 60, "the committed touches")
        wait_for(lambda: writer.metrics.lag == 0 and not writer._pending_records, 30, "the sink to catch up")
    assert writer.metrics.records == 3 and writer.metrics.dead_letters == 0
    assert _query(settings, touch_ids) == [("t1",), ("t2",), ("t5",)]


def test_two_sink_processes_share_the_group_and_stop_cleanly(kafka_bootstrap, clickhouse_http_url):
    """``closedloop sink --processes 2``: both members write their partitions' rows and commit; stop is clean."""
    from sinks.process_group import SinkGroup

    settings = _settings(kafka_bootstrap, clickhouse_http_url, partitions=2)
    _publish(settings, [(settings.topics.touches, f"v{i}", _direct_touch(i)) for i in range(40)])
    group = SinkGroup(settings, 2)
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", group.run()), daemon=True)
    thread.start()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_servers, group_id=settings.sink_consumer_group, enable_auto_commit=False
    )
    partitions = [TopicPartition(settings.topics.touches, p) for p in range(2)]
    try:
        wait_for(lambda: _query(settings, "SELECT count() FROM touches FINAL") == [(40,)], 90, "every touch")
        wait_for(lambda: sum(consumer.committed(tp) or 0 for tp in partitions) == 40, 30, "the offsets committed")
    finally:
        consumer.close()
        group.stop()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the sink processes did not stop"
    result = outcome["result"]
    # A rebalance while the second member joins may replay a batch (it collapses onto the same touch ids).
    assert result.failed == 0 and result.dead_letters == 0 and result.rows >= 40
    assert _query(settings, "SELECT count(), uniqExact(touch_id) FROM touches FINAL") == [(40, 40)]


def _page_view_in_month(i: int) -> bytes:
    """Page view ``pv{i}`` of visitor ``v{i}``, in the i-th month after January 1990 (500 of them reach 2031)."""
    occurred_at = datetime(1990 + i // 12, 1 + i % 12, 15, 12, tzinfo=timezone.utc)
    return serde.dumps(
        Envelope(
            event_id=f"pv{i}",
            site_id="site",
            received_at=T0,
            event=PageView(occurred_at=occurred_at, visitor_id=f"v{i}", url=f"https://ex.com/p{i}"),
        )
    )


def test_a_batch_spanning_500_months_is_written_whole_and_later_batches_follow(kafka_bootstrap, clickhouse_http_url):
    """ClickHouse refuses an INSERT block spanning more than 100 partitions (Code 252); events are partitioned
    by month. One request's page views from 500 months used to make every later insert fail, retried forever as
    "ClickHouse unreachable". Now the batch goes in as blocks of at most 100 months: every row, no dead letter."""
    settings = _settings(kafka_bootstrap, clickhouse_http_url, partitions=1, sink_batch_seconds=2.0)
    _publish(settings, [(settings.topics.events, f"v{i}", _page_view_in_month(i)) for i in range(500)])
    with Running(settings) as writer:
        wait_for(lambda: writer.metrics.batches >= 1 and writer.metrics.lag == 0, 60, "the 500 page views")
        assert (writer.metrics.records, writer.metrics.batches) == (500, 1)  # one batch of 500 months, as in the issue
        _publish(settings, [(settings.topics.touches, "v1", _direct_touch(1))])
        wait_for(lambda: _query(settings, "SELECT count() FROM touches FINAL") == [(1,)], 60, "a later batch")
    assert _query(settings, "SELECT count(), uniqExact(toYYYYMM(occurred_at)) FROM events FINAL") == [(500, 500)]
    assert (writer.metrics.dead_letters, writer.metrics.rejected_rows, writer.metrics.retries) == (0, 0, 0)
    assert writer.metrics.rows_written["events"] == 500


def test_a_ten_year_monthly_spend_import_is_stored_and_the_sink_goes_on(kafka_bootstrap, clickhouse_http_url, tmp_path):
    """``closedloop import spend`` of 120 monthly rows (ten years): 0 rejected by the import, 120 spend rows and
    120 events rows in ClickHouse (the events table is partitioned by month: 120 > 100 partitions)."""
    from collector.imports import ImportSummary, parse_file

    settings = _settings(kafka_bootstrap, clickhouse_http_url, partitions=1, sink_batch_seconds=2.0)
    today = datetime.now(timezone.utc).date()
    months = [(today.year - 10 + (today.month - 1 + i) // 12, 1 + (today.month - 1 + i) % 12) for i in range(1, 121)]
    csv_file = tmp_path / "spend.csv"
    csv_file.write_text(
        "date,channel,source,medium,cost,currency\n"
        + "".join(
            f"{year:04d}-{month:02d}-01,Paid Search,google,cpc,{100 + i}.50,EUR\n"
            for i, (year, month) in enumerate(months)
        )
    )
    summary = ImportSummary()
    records = list(parse_file(csv_file, "spend", settings.topics, summary))
    assert (summary.rows, summary.accepted, summary.rejected) == (120, 120, [])
    _publish(settings, [(r.topic, r.key.decode(), r.value) for r in records])
    with Running(settings) as writer:
        wait_for(lambda: writer.metrics.batches >= 1 and writer.metrics.lag == 0, 60, "the 120 spend records")
        assert writer.metrics.records == 120
        _publish(settings, [(settings.topics.touches, "v1", _direct_touch(1))])
        wait_for(lambda: _query(settings, "SELECT count() FROM touches FINAL") == [(1,)], 60, "a later batch")
    assert _query(settings, "SELECT count(), sum(cost) FROM spend FINAL") == [
        (120, sum(Decimal(f"{100 + i}.50") for i in range(120)))
    ]
    assert _query(settings, "SELECT count() FROM events FINAL WHERE event_type = 'spend'") == [(120,)]
    assert (writer.metrics.dead_letters, writer.metrics.retries) == (0, 0)
