"""Broker faults under load, end to end from HTTP to ClickHouse: a real collector process (uvicorn) takes a steady
stream of page views while a Kafka node is SIGKILLed and restarted; a sink writes the events topic into a
ClickHouse database of the test's own. Every event the collector answered 200 for must be in ClickHouse once.

- Three nodes (replication factor 3, min.insync.replicas 2): the node leading most of the events topic's
  partitions dies; the others take over, the node comes back.
- One node: the broker dies, the collector spools to disk and keeps answering, the broker comes back, the spool
  drains; per visitor the events stand in the topic in the order they were accepted.

Deliveries are at least once by design: a record not acknowledged within the publish timeout is spooled and
replayed, and the producer may still deliver its own copy once the broker is back. The events table is a
ReplacingMergeTree on the event id, so the checks read it with FINAL; the copies in the topic are counted and
reported. The helpers are in ``support.py``, the stack in ``conftest.py``.
"""

from __future__ import annotations

import collections
import time

import pytest
from harness import wait_for

from .support import LoadGenerator, check_answer_times, check_clickhouse, check_topic_order, report

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.clickhouse]


# ---------------------------------------------------------------------------------------------------------------
# The tests


def test_three_nodes_leader_killed_under_load(stack_factory) -> None:
    stack = stack_factory(3)
    broker, collector = stack.broker, stack.collector
    topic = stack.settings.topics.events
    with LoadGenerator(collector.port) as generator:
        wait_for(lambda: generator.accepted_count() >= 500, 30, "the first 500 accepted events")
        leaders = collections.Counter(state.leader for state in broker.partitions(topic).values())
        victim = leaders.most_common(1)[0][0]
        killed_at = time.monotonic()
        broker.kill(victim)
        wait_for(
            lambda: all(s.leader not in (victim, -1) for s in broker.partitions(topic).values()),
            30,
            f"every partition of {topic} to have a leader other than node {victim}",
        )
        elected_s = time.monotonic() - killed_at
        stack.sink.check()
        wait_for(lambda: generator.answered_after(killed_at + 20), 90, "20 s of load with the node down")
        broker.start()
        restarted_at = time.monotonic()
        wait_for(
            lambda: all(victim in s.isr for s in broker.partitions(topic).values()),
            60,
            f"node {victim} back in the ISR of every partition of {topic}",
        )
        in_sync_s = time.monotonic() - restarted_at
        before = generator.accepted_count()
        wait_for(lambda: generator.accepted_count() >= before + 1000, 30, "1000 more events on the healed cluster")
        load = generator.stop()
    check_answer_times(load)
    wait_for(lambda: collector.metrics()["closedloop_collector_spool_bytes"] == 0, 60, "the spool to drain")
    metrics = collector.metrics()
    stored, raw_rows = check_clickhouse(stack, load)
    copies = check_topic_order(stack, load, stored)
    report(
        "3 nodes, leader killed",
        load,
        killed_node=f"{victim} (led {leaders[victim]} of {sum(leaders.values())} partitions of {topic})",
        leaders_moved_after_s=round(elected_s, 1),
        back_in_isr_after_restart_s=round(in_sync_s, 1),
        max_answer_s_during_failover=round(load.max_seconds(killed_at, restarted_at), 2),
        max_answer_s_overall=round(load.max_seconds(), 2),
        spooled=metrics["closedloop_collector_records_spooled_total"],
        replayed=metrics["closedloop_collector_records_replayed_total"],
        copies_in_topic=copies,
        events_rows_without_final=raw_rows,
    )


def test_single_broker_killed_under_load_spools_and_replays_in_order(stack_factory) -> None:
    stack = stack_factory(1)
    broker, collector = stack.broker, stack.collector
    with LoadGenerator(collector.port) as generator:
        wait_for(lambda: generator.accepted_count() >= 500, 30, "the first 500 accepted events")
        killed_at = time.monotonic()
        broker.kill(1)
        # The broker is gone: requests wait out the publish timeout, then everything goes to the spool and is
        # answered from there.
        wait_for(
            lambda: collector.metrics()["closedloop_collector_records_spooled_total"] > 0, 30, "the collector to spool"
        )
        before = generator.accepted_count()
        wait_for(lambda: generator.accepted_count() >= before + 1000, 30, "1000 more events accepted while spooling")
        stack.sink.check()
        broker.start()
        restarted_at = time.monotonic()
        wait_for(lambda: collector.metrics()["closedloop_collector_spool_bytes"] == 0, 60, "the spool to drain")
        drained_s = time.monotonic() - restarted_at
        before = generator.accepted_count()
        wait_for(lambda: generator.accepted_count() >= before + 500, 30, "500 more events accepted after the replay")
        load = generator.stop()
    check_answer_times(load)
    metrics = collector.metrics()
    assert metrics["closedloop_collector_spool_bytes"] == 0
    assert (
        metrics["closedloop_collector_records_replayed_total"] == metrics["closedloop_collector_records_spooled_total"]
    )
    stored, raw_rows = check_clickhouse(stack, load)
    copies = check_topic_order(stack, load, stored)
    report(
        "1 node, broker killed",
        load,
        outage_s=round(restarted_at - killed_at, 1),
        spool_drained_after_restart_s=round(drained_s, 1),
        max_answer_s_during_outage=round(load.max_seconds(killed_at, restarted_at), 2),
        max_answer_s_overall=round(load.max_seconds(), 2),
        spooled=metrics["closedloop_collector_records_spooled_total"],
        replayed=metrics["closedloop_collector_records_replayed_total"],
        copies_in_topic=copies,
        events_rows_without_final=raw_rows,
    )
