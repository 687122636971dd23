"""CRM events of a contact whose email never arrives wait at most CLOSEDLOOP_CONTACT_HOLD_SECONDS in the worker's
contacts table, then go to the dead-letter topic with the reason (a sweep record per contacts partition, sent by a
timer); an event that has not waited that long stays held."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from harness import wait_for
from test_worker import (
    Worker,
    as_records,
    create_all_topics,
    crm,
    read_all,
    send,
    worker_settings,
)

from schemas import serde
from schemas.outputs import DeadLetter
from stream_jobs.rules.contacts import ContactRecord
from stream_jobs.runtime.topology import crm_contacts_topic

pytestmark = pytest.mark.kafka


def test_a_contact_event_held_longer_than_the_hold_is_dead_lettered(kafka_bootstrap, unique_name, tmp_path):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    now = datetime.now(timezone.utc)
    old = crm("crm-old", now - timedelta(hours=2), "opportunity", contact="901")
    old = old.model_copy(update={"received_at": now - timedelta(hours=2)})
    fresh = crm("crm-fresh", now, "opportunity", contact="902")
    fresh = fresh.model_copy(update={"received_at": now})
    worker = Worker(
        settings,
        tmp_path / "worker.log",
        extra_env={"CLOSEDLOOP_CONTACT_HOLD_SECONDS": "3600", "CLOSEDLOOP_CONTACT_SWEEP_SECONDS": "1"},
    ).start()
    try:
        send(settings, as_records(settings, [old, fresh]))

        def dead() -> list[DeadLetter]:
            return [serde.loads(raw, DeadLetter) for raw in read_all(settings, settings.topics.dead_letters)]

        wait_for(dead, 60, lambda: f"the dead letter of crm-old:\n{worker.log_tail()}", interval=0.5)

        def sweeps() -> int:
            records = read_all(settings, crm_contacts_topic(settings.app_id))
            return sum(1 for raw in records if serde.loads(raw, ContactRecord).kind == "sweep")

        seen = sweeps()
        wait_for(lambda: sweeps() >= seen + 2 * settings.partitions, 60, "two more rounds of sweeps", interval=0.5)
        # wait_idle cannot tell with a sweep a second: wait until the worker has committed past these sweeps
        topic = crm_contacts_topic(settings.app_id)
        ends = end_offsets(settings, topic)
        wait_for(lambda: all(c >= ends[p] for p, c in committed(settings, topic).items()), 60, "the sweeps' commit")
        letters = dead()
        assert len(letters) == 1, letters
        letter = letters[0]
        assert letter.reason.startswith("CRM event crm-old for contact hubspot:901 waited more than 3600 s")
        assert "CLOSEDLOOP_CONTACT_HOLD_SECONDS" in letter.reason
        assert letter.topic == crm_contacts_topic(settings.app_id) and letter.key == "hubspot:901"
        assert '"event_id":"crm-old"' in letter.value
    finally:
        worker.stop()


def end_offsets(settings, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers)
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(settings.partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        consumer.close()


def committed(settings, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    servers = settings.kafka_servers
    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=settings.app_id, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(settings.partitions)}
    finally:
        consumer.close(autocommit=False)
