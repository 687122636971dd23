"""The worker's table state on disk (RocksDB, the default store; ``compat/faust_rocksdb.py``).

- After a stop, each table partition's RocksDB holds exactly the newest changelog record of every key, and the
  changelog offset it keeps (where a restart's recovery starts) is the partition's last record: a restart reads
  nothing again. Then the restarted worker goes on from that state: a CRM stage of a known contact reaches its
  lead, whose journey has its touches, and a known visitor's new touch is linked to its lead.
- After a SIGKILL in the middle of the stream, RocksDB holds no state Kafka did not keep: every value is one the
  changelog has committed for that key, at an offset the restart reads again or below the kept offset. Faust's own
  store wrote every assignment at once, so the killed worker's files held states of events whose outputs and
  offsets were never committed (docs/STREAMS.md, "Table state on disk").
"""

from __future__ import annotations

import pytest
from harness import wait_for
from test_worker import (
    SITE,
    Worker,
    as_records,
    at,
    create_all_topics,
    crm,
    generated_stream,
    page_view,
    read_all,
    running_worker,
    send,
    topic_records,
    wait_idle,
    worker_settings,
)

from schemas import serde
from schemas.outputs import Conversion, Touch
from stream_jobs.rules.identity import lead_id_for
from stream_jobs.rules.lifecycle import LeadEvent
from stream_jobs.runtime.topology import CONTACTS_TABLE, LEADS_TABLE, VISITORS_TABLE, changelog_topic

pytestmark = pytest.mark.kafka

TABLES = (VISITORS_TABLE, CONTACTS_TABLE, LEADS_TABLE)
OFFSET_KEY = b"__faust\0offset__"  # where Faust's RocksDB store keeps a partition's changelog offset


def on_disk(settings, table: str, partition: int) -> tuple[dict[bytes, bytes], int | None]:
    """(key -> value, kept changelog offset) of one table partition's RocksDB, opened read-only."""
    from rocksdict import AccessType, Options, Rdict

    path = settings.state_dir / "v1" / "tables" / f"{table}-{partition}.db"
    assert path.is_dir(), f"no RocksDB at {path}: {sorted(p.name for p in path.parent.iterdir())}"
    db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        values = dict(db.items())
    finally:
        db.close()
    offset = values.pop(OFFSET_KEY, None)
    return values, None if offset is None else int(offset)


def committed_events(settings) -> int:
    """Events the worker's group has committed: the state they made is on disk once the commit returned (under
    at_least_once the first commit comes a commit interval after the first events, so conversions alone can
    show before anything was written)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers)
    try:
        offsets = admin.list_group_offsets([settings.app_id]).get(settings.app_id, {})
    finally:
        admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == settings.topics.events)


def changelog(settings, table: str, partition: int) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) of every committed record of one changelog partition."""
    return [
        (record.offset, record.key, record.value)
        for record in topic_records(settings, changelog_topic(settings.app_id, table))
        if record.partition == partition
    ]


def test_a_stopped_worker_leaves_each_table_on_disk_as_its_changelog_holds_it_and_goes_on_from_there(
    kafka_bootstrap, unique_name, tmp_path
):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    with running_worker(settings, tmp_path) as worker:
        send(settings, as_records(settings, generated_stream(visitors=120)))
        wait_idle(settings, worker=worker, timeout=180)
    for table in TABLES:
        for partition in range(settings.partitions):
            records = changelog(settings, table, partition)
            newest = {key: value for _, key, value in records}
            values, offset = on_disk(settings, table, partition)
            assert values == {key: value for key, value in newest.items() if value is not None}, (table, partition)
            assert offset == (records[-1][0] if records else None), (table, partition)
    assert len(on_disk(settings, LEADS_TABLE, 0)[0]) + len(on_disk(settings, LEADS_TABLE, 1)[0]) > 10

    # visitors 6 and 9 share lead1@example.com; contact c6 maps to it (generated_stream)
    lead = lead_id_for("lead1@example.com", settings.lead_key_bytes)
    touches_before = {
        t.touch_id
        for t in map(lambda raw: serde.loads(raw, Touch), read_all(settings, settings.topics.touches))
        if t.visitor_id in ("v6", "v9")
    }
    assert touches_before
    after = [
        page_view("pv-again", "v9", at(39), f"{SITE}/?utm_source=bing&utm_medium=cpc&utm_campaign=back"),
        crm("sql-again", at(39.5), "sql", contact="c6"),
        crm("won-again", at(40), "customer", email="lead1@example.com", value="500.00"),
    ]
    with running_worker(settings, tmp_path) as worker:
        send(settings, as_records(settings, after[:1]))
        wait_idle(settings, worker=worker, timeout=120)
        send(settings, as_records(settings, after[1:]))
        wait_idle(settings, worker=worker, timeout=120)
    new_touch = [
        t
        for t in map(lambda raw: serde.loads(raw, Touch), read_all(settings, settings.topics.touches))
        if t.event_id == "pv-again"
    ]
    assert [t.lead_id for t in new_touch] == [lead]  # the visitors table knew v9's lead
    conversions = [serde.loads(raw, Conversion) for raw in read_all(settings, settings.topics.conversions)]
    released = [serde.loads(raw, LeadEvent) for raw in read_all(settings, settings.topics.lead_events)]
    assert [e.lead_id for e in released if e.event_id == "sql-again"] == [lead]  # the contacts table knew c6
    won = max((c for c in conversions if c.lead_id == lead and c.stage.value == "customer"), key=lambda c: c.version)
    credited = {credit.touch_id for credit in won.credit_records() if credit.model.value == "linear"}
    assert credited == touches_before | {new_touch[0].touch_id}  # the leads table kept lead1's journey


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_after_a_sigkill_the_files_on_disk_hold_only_states_the_changelogs_committed(
    kafka_bootstrap, unique_name, tmp_path, guarantee
):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data").model_copy(
        update={"processing_guarantee": guarantee}
    )
    create_all_topics(settings)
    worker = Worker(settings, tmp_path / "killed-worker.log").start()
    try:
        send(settings, as_records(settings, generated_stream()))
        wait_for(
            lambda: len(read_all(settings, settings.topics.conversions)) > 20 and committed_events(settings) > 100,
            120,
            lambda: f"conversions and a commit of over 100 events:\n{worker.log_tail()}",
            interval=0.2,
        )
        worker.kill()
    finally:
        worker.kill()
    written = 0
    for table in TABLES:
        for partition in range(settings.partitions):
            values, offset = on_disk(settings, table, partition)
            records = changelog(settings, table, partition)
            states: dict[bytes, set[bytes]] = {}
            for _, key, value in records:
                if value is not None:
                    states.setdefault(key, set()).add(value)
            ahead = sorted(key for key, value in values.items() if value not in states.get(key, set()))
            assert not ahead, f"{table}[{partition}]: {len(ahead)} keys hold a state no committed record has"
            if offset is not None:
                assert records and offset <= records[-1][0], (table, partition)
            written += len(values)
    assert written > 100  # commits happened before the kill: the check above saw real files
