"""The broker SIGKILLed under collector load while the whole pipeline runs: a collector process, the stream
worker (``closedloop worker``) and the sink, none of them restarted, on a private one-node Kafka that is killed
mid-load and started again on the same data directory.

The input is deterministic (``journeys.py``): per visitor, sessions of page views over several channels, a form,
an MQL and a won deal from the CRM, a visit after the deal, all with fixed times and event ids. It goes through
the pipeline twice: first as the reference run, uninterrupted; then as a copy with other visitor ids, event ids
and emails, during which the broker dies. What the product promises, and what is checked:

- Every event the collector answered 200 for is in ClickHouse once: ``events FINAL`` holds exactly the accepted
  ids of both runs, ``count() = uniqExact(event_id) = accepted`` (raw copies not merged yet are printed).
- The fault changes no outcome: the touches, identity links, conversions and credits of the faulted run, with its
  ids renamed to the reference run's, equal the reference run's exactly. The contract is what the docs tell users
  to read (docs/CLICKHOUSE.md): ``touches FINAL``, ``identity_links FINAL``, ``conversions FINAL`` and the view
  ``credits_current`` (the newest version's credits per conversion and model). Left out: ``version`` (a conversion
  reached before a late touch arrived is re-emitted with ``version + 1``, in either run) and
  ``visitor_number`` (made from a Kafka offset).
- The processes recover by themselves: the sink writes again within ``SINK_RESUMES_S`` of the broker's restart
  (measured 2-4 s). Before the sink capped kafka-python's reconnect back-off (``sinks/writer.py``,
  ``RECONNECT_BACKOFF_MAX_MS``) it sat idle for 25-60 s after the broker was back: its metadata refresh waited out
  a back-off of up to 30 s that the outage had built up, and until then every fetch failed with
  FencedLeaderEpoch (the restarted broker had bumped the leader epochs). This wait failed on that code.

Delivery is at least once: the collector spools what the broker does not acknowledge within its publish timeout
and replays it once the broker is back, and the producer may still deliver its own copy; the worker reads what
it had not committed again. The tables are ReplacingMergeTrees on stable ids, so copies collapse in ``FINAL``.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from harness import free_port, wait_for
from test_worker import Worker

from simulator.demo_harness import wait_group_active, wait_until_drained
from sinks.client import connect
from stream_jobs.settings import WorkerSettings

from .journeys import (
    LEAD_KEY,
    SERVER_KEY,
    TOUCHES_PER_VISITOR,
    ScriptedLoad,
    combined,
    default_base,
    differences,
    email_of,
    journeys,
    pipeline_state,
    renaming,
)
from .support import check_answer_times, check_clickhouse, query, report

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.clickhouse]

VISITORS = 60
PUBLISH_TIMEOUT_S = 5.0  # the collector spools what the broker has not acknowledged by then (default 10 s)
SINK_RESUMES_S = 20.0  # the sink writing again after the restart; 25-60 s with kafka-python's 30 s back-off
DRAIN_TIMEOUT_S = 180.0  # the worker and the sink back on the restarted broker, and caught up, on a busy machine


def records_in(bootstrap: str, topics: list[str]) -> int:
    """Records in ``topics`` (end offsets: the collector's producer writes no transaction markers)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def test_single_broker_killed_under_load_with_worker_and_sink_running_changes_no_outcome(
    stack_factory, tmp_path
) -> None:
    stack = stack_factory(
        1,
        collector_env={
            "CLOSEDLOOP_SERVER_KEYS": json.dumps({SERVER_KEY: "crm"}),
            "CLOSEDLOOP_LEAD_ID_KEY": LEAD_KEY,
            "CLOSEDLOOP_PUBLISH_TIMEOUT_S": str(PUBLISH_TIMEOUT_S),
        },
    )
    broker, collector, settings = stack.broker, stack.collector, stack.settings
    worker_settings = WorkerSettings(
        kafka_bootstrap_servers=broker.bootstrap,
        topic_prefix=settings.topic_prefix,
        partitions=settings.partitions,
        data_dir=tmp_path / "worker",
        worker_web_port=free_port(),
        lead_id_key=LEAD_KEY,
    )
    worker = Worker(worker_settings, tmp_path / "worker.log", extra_env={"CLOSEDLOOP_LEAD_ID_KEY": LEAD_KEY})
    stack.cleanups.append(worker.stop)
    worker.start()
    worker_pid = worker.process.pid

    def alive() -> None:
        assert worker.process.poll() is None, f"the worker exited ({worker.process.returncode}):\n{worker.log_tail()}"
        stack.sink.check()

    client = connect(settings)
    stack.cleanups.append(client.close)

    def drained(what: str) -> None:
        result = wait_until_drained(
            settings, worker_settings.app_id, settings.sink_consumer_group, client, timeout=DRAIN_TIMEOUT_S, alive=alive
        )
        assert result.complete, f"{what}: not drained within {DRAIN_TIMEOUT_S:g} s: {result}\n{worker.log_tail()}"

    wait_group_active(broker.bootstrap, worker_settings.app_id, alive=alive)
    wait_group_active(broker.bootstrap, settings.sink_consumer_group, alive=alive)

    def rows(sql: str) -> list[tuple]:
        return query(settings, sql)

    # The reference: the same journeys, uninterrupted.
    reference_at = time.monotonic()
    base = default_base()
    reference_scripts = journeys("ref", VISITORS, base)
    with ScriptedLoad(collector.port, reference_scripts, interval=0.0) as reference_load:
        reference = reference_load.finish(timeout=120)
    assert not reference.refused and not reference.unanswered, reference.reasons()
    drained("the reference run")
    reference_s = time.monotonic() - reference_at
    expected = pipeline_state(rows, "ref")
    sizes = {table: len(found) for table, found in expected.items()}
    leads = [n for n in range(VISITORS) if email_of("ref", n)]
    won = [n for n in leads if n % 2 == 0]
    assert sizes["touches"] == TOUCHES_PER_VISITOR * VISITORS, sizes  # the scripts' own numbers: no empty check
    assert sizes["identity_links"] == len(leads) and sizes["conversions"] == 2 * len(leads) + len(won), sizes
    assert sizes["credits"] > 1000, sizes

    # The same journeys again under other names; the broker dies while they come in.
    scripts = journeys("kill", VISITORS, base)
    with ScriptedLoad(collector.port, scripts, interval=0.4) as generator:
        wait_for(
            lambda: len(generator.load.accepted) >= generator.head_events // 3,
            60,
            "a third of the scripts' first parts accepted",
        )
        killed_at = time.monotonic()
        broker.kill(1)
        wait_for(
            lambda: collector.metrics()["closedloop_collector_records_spooled_total"] > 0, 30, "the collector to spool"
        )
        wait_for(lambda: generator.heads_done == VISITORS, 60, "the scripts' first parts answered, broker down")
        alive()
        in_clickhouse = rows("SELECT count() FROM events")[0][0]  # before the restart: the sink may be quick
        restarting_at = time.monotonic()
        broker.start()
        restarted_at = time.monotonic()
        wait_for(
            lambda: alive() or rows("SELECT count() FROM events")[0][0] > in_clickhouse,
            SINK_RESUMES_S,
            "the sink's first events after the broker's restart",
            interval=0.2,
        )
        sink_resumed_s = time.monotonic() - restarted_at
        load = generator.finish(timeout=120)
    check_answer_times(load)
    assert not load.refused, load.reasons()
    wait_for(lambda: collector.metrics()["closedloop_collector_spool_bytes"] == 0, 60, "the spool to drain")
    drained("the run with the broker killed")
    caught_up_s = time.monotonic() - restarted_at
    assert worker.process.pid == worker_pid and worker.process.poll() is None

    # The clients' reconnect lines pass once per template and 30 s (schemas.logs.RepeatedLines): the libraries'
    # warnings and errors in this outage were 3,797 lines before it, 30 after.
    logged = [json.loads(text) for text in worker.log_path.read_text().splitlines() if text.startswith("{")]
    library_lines = Counter(
        (line["logger"], line["message"])
        for line in logged
        if line["level"] in ("WARNING", "ERROR") and not line["logger"].startswith("closedloop")
    )
    assert sum(library_lines.values()) <= 60, library_lines.most_common(10)

    found = pipeline_state(rows, "kill", renaming("kill", "ref", VISITORS, scripts, LEAD_KEY.encode()))
    assert found == expected, differences(found, expected)
    metrics = collector.metrics()
    stored, raw_rows = check_clickhouse(stack, combined(reference, load))  # stops the sink
    in_topics = records_in(broker.bootstrap, [settings.topics.events, settings.topics.crm])
    report(
        "1 node killed under load, worker and sink running",
        load,
        reference_run_s=round(reference_s, 1),
        outage_s=round(restarted_at - killed_at, 1),
        broker_start_s=round(restarted_at - restarting_at, 1),
        sink_wrote_again_after_restart_s=round(sink_resumed_s, 1),
        drained_after_restart_s=round(caught_up_s, 1),
        max_answer_s_during_outage=round(load.max_seconds(killed_at, restarted_at), 2),
        spooled=metrics["closedloop_collector_records_spooled_total"],
        replayed=metrics["closedloop_collector_records_replayed_total"],
        events_in_clickhouse=len(stored),
        copies_in_source_topics=in_topics - len(stored),
        events_rows_without_final=raw_rows,
        rows_per_run=sizes,
    )
