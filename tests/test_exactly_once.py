"""Under ``exactly_once`` the tables a restarted worker recovers hold every committed table write.

1. A transaction that commits an event's offset holds the table writes that event made.

Faust 0.15.3 queues a table write in its producer buffer and hands it to the transactional producer later, from
its own task; its transactional commit did not wait for that buffer (only the ``at_least_once`` commit flushes the
producer). Under load thousands of table writes were still queued when the offsets of the events that made them
were committed: they went into the next transaction, and a SIGKILL before that one committed lost them while the
events were never delivered again (the SIGKILL restart series: leads restarted with journeys short of touches;
docs/STREAMS.md, "The lost table writes of December 2026"). ``compat.faust_patches`` (fault 5) flushes the buffer
before the commit. Here every table write reaches Kafka 15 s late (``tests/slow_changelog_worker.py``), far longer
than Faust's 2.8 s commit interval, so without the fix the offset is committed first, every time.

2. Recovery reads every committed record of the changelogs. Under ``exactly_once`` a changelog ends with a
transaction marker, which a ``read_committed`` consumer never receives, so Faust 0.15.3 ends a partition's recovery
when its recovery loop has waited twice 5 s for a record and the Kafka client's position has reached the end. Its
count of those waits starts when the worker starts, not when the recovery begins reading, and the client's position
moves as soon as it hands a batch over, before the records reach the loop: records on their way were then skipped,
and the tables started (nearly) empty (the second SIGKILL series, run 13: the restarted worker gave up on 10
changelog partitions 1.9 s after it began reading them; docs/STREAMS.md, "The skipped recovery of December
2026"). ``compat.faust_patches`` (fault 6) does not let the client's position count while records it handed over
have not reached the loop. Here the first changelog batch reaches Faust 12 s late (``tests/slow_recovery_worker.py``),
long enough for two of those waits.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_worker import (
    SITE,
    Worker,
    at,
    create_all_topics,
    page_view,
    read_all,
    running_worker,
    send,
    topic_records,
    wait_idle,
    worker_settings,
)

from schemas import serde
from schemas.outputs import Touch
from stream_jobs.runtime.topology import VISITORS_TABLE, changelog_topic

pytestmark = pytest.mark.kafka

CHANGELOG_DELAY_S = 15.0
VISITOR = "v-late-write"


def test_a_committed_event_keeps_its_table_write_after_a_sigkill(kafka_bootstrap, unique_name, tmp_path):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data").model_copy(
        update={"processing_guarantee": "exactly_once"}
    )
    create_all_topics(settings)
    events = settings.topics.events
    landing = page_view("pv-1", VISITOR, at(0), f"{SITE}/?utm_source=google&utm_medium=cpc")
    slow = Worker(
        settings,
        tmp_path / "slow-changelog-worker.log",
        module="tests.slow_changelog_worker",
        extra_env={"CLOSEDLOOP_TEST_CHANGELOG_DELAY_S": str(CHANGELOG_DELAY_S)},
    ).start()
    try:
        send(settings, [(events, VISITOR, serde.dumps(landing))])
        wait_idle(settings, worker=slow, timeout=90, rounds=1)  # the landing's offset is committed
        slow.kill()  # SIGKILL by PID: nothing queued in the worker survives
    finally:
        slow.kill()

    visitors_changelog = changelog_topic(settings.app_id, VISITORS_TABLE)
    states = [record.key for record in topic_records(settings, visitors_changelog)]  # read_committed
    assert states, (
        f"the landing's offset was committed without its visitor state: {visitors_changelog} holds no committed "
        "record (the transaction that committed the offset did not wait for Faust's producer buffer)"
    )

    # What that loss does: the restarted worker takes the visitor's next page view, 10 minutes later and without a
    # referrer, for a first visit (a Direct touch) instead of the same session.
    with running_worker(settings, tmp_path) as worker:
        later = page_view("pv-2", VISITOR, at(0) + timedelta(minutes=10), f"{SITE}/pricing")
        send(settings, [(events, VISITOR, serde.dumps(later))])
        wait_idle(settings, worker=worker, timeout=120)
    touches = [serde.loads(raw, Touch) for raw in read_all(settings, settings.topics.touches)]
    assert [(t.visitor_id, t.channel) for t in touches] == [(VISITOR, "Paid Search")]


RECOVERY_DELAY_S = 12.0


def test_recovery_waits_for_changelog_records_the_client_has_handed_over(kafka_bootstrap, unique_name, tmp_path):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data").model_copy(
        update={"processing_guarantee": "exactly_once"}
    )
    create_all_topics(settings)
    events = settings.topics.events
    landing = page_view("pv-1", VISITOR, at(0), f"{SITE}/?utm_source=google&utm_medium=cpc")
    with running_worker(settings, tmp_path) as worker:
        send(settings, [(events, VISITOR, serde.dumps(landing))])
        wait_idle(settings, worker=worker)
    # stopped (SIGTERM): the visitor's state is committed in the visitors changelog

    slow = Worker(
        settings,
        tmp_path / "slow-recovery-worker.log",
        module="tests.slow_recovery_worker",
        extra_env={"CLOSEDLOOP_TEST_RECOVERY_DELAY_S": str(RECOVERY_DELAY_S)},
    ).start()
    try:
        later = page_view("pv-2", VISITOR, at(0) + timedelta(minutes=10), f"{SITE}/pricing")
        send(settings, [(events, VISITOR, serde.dumps(later))])
        wait_idle(settings, worker=slow, timeout=120)
    finally:
        slow.stop()
    touches = [serde.loads(raw, Touch) for raw in read_all(settings, settings.topics.touches)]
    assert [(t.visitor_id, t.channel) for t in touches] == [(VISITOR, "Paid Search")], (
        "the restarted worker took the visitor's second page view for a first visit: its recovered visitors table "
        f"lacked the state committed before the restart\n{slow.log_tail()}"
    )
