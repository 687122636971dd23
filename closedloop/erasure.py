"""``closedloop erase``: remove a person from everywhere the product keeps them, and say what was removed where.

Order of work, and why:

1. The visitors ClickHouse knows are linked to the lead (``identity_links``) are looked up, so the worker reaches
   them even when its lead state predates the visitor list it now keeps.
2. A tombstone for the lead goes to the compacted ``{p}.leads`` topic (the sink deletes the ``leads`` row when it
   reads it; compaction drops the email from Kafka), and an erase command (``LeadEvent`` of kind ``erase``) to
   ``{p}.lead-events``, where the worker applies it in order with the lead's other events
   (``stream_jobs.rules.erasure``): lead state, visitor links and CRM contact mappings go, as tombstones in the
   tables' changelogs, so a restarted worker does not bring them back.
3. The command waits (``wait_s``) for the worker's answers and for the sink to read past the tombstone: a ``Lead``
   record the sink had not written yet is then written before the rows are deleted below, not after.
4. ClickHouse: the ``leads`` rows go (a mutation, waited for: the parts are rewritten, not only masked), and every
   other String column of every table is searched for the address; where it is found (events stored before ids
   became lead ids, a page URL carrying the address) it is replaced by the lead id, or the row deleted where the
   column is part of the table's key. A final scan counts what is left (nothing, unless the sink wrote a row back
   meanwhile: run the command again).

A worker that is not running applies the command when it starts (it waits in its topic); the command then says
so and exits with 1. Re-running is harmless: every step is idempotent.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from schemas import serde
from schemas.identity import lead_id_for, normalize_email
from schemas.kafka_security import kafka_python_security
from schemas.outbox import LeadErased
from sinks.cluster_sql import mutation_target, scanned_table
from sinks.settings import SinkSettings
from stream_jobs.rules.erasure import EraseResult
from stream_jobs.rules.lifecycle import LeadEvent
from stream_jobs.runtime.topology import erasure_results_topic
from stream_jobs.settings import WorkerSettings

# The worker's inputs: a record still waiting there may be about the person (see ``Report.worker_backlog``).
OUTBOUND_DELIVERIES = (
    "the ad feed forgets the email with the leads tombstone, and closedloop deliver sends none of the messages "
    "queued for the lead before now (the erased-leads topic); what was already sent to CRMs, webhooks and ad "
    "platforms (docs/DELIVERY.md, docs/ADS.md) stays there: erase it there too"
)


@dataclass
class Report:
    """What an erasure removed, per place (``removed``: place -> count), and what is still pending."""

    lead_id: str
    request_id: str
    removed: dict[str, int] = field(default_factory=dict)
    remaining: dict[str, int] = field(default_factory=dict)  # "table.column" -> values still holding the email
    worker_done: bool = False
    sink_done: bool = False
    worker_backlog: int = 0  # records on the worker's inputs not processed when the command was sent
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.worker_done and self.sink_done and not self.remaining

    def as_dict(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "request_id": self.request_id,
            "removed": self.removed,
            "remaining": self.remaining,
            "worker_done": self.worker_done,
            "sink_done": self.sink_done,
            "worker_backlog": self.worker_backlog,
            "outbound_deliveries": OUTBOUND_DELIVERIES,
            "notes": self.notes,
            "complete": self.complete,
        }


def lead_id_of(email: str | None, lead_id: str | None, key: bytes) -> tuple[str, str | None]:
    """(lead id, normalised email or None); ValueError saying what is wrong with the input."""
    if email is not None:
        normalized = normalize_email(email)
        return lead_id_for(normalized, key), normalized
    if lead_id is None or not re.fullmatch(r"[0-9a-f]{32}", lead_id):
        raise ValueError("--lead-id must be a lead id: 32 lower-case hex characters (or give --email)")
    return lead_id, None


def erase(
    worker: WorkerSettings,
    sink: SinkSettings,
    *,
    email: str | None = None,
    lead_id: str | None = None,
    wait_s: float = 60.0,
    progress: Callable[[str], None] = lambda line: None,
) -> Report:
    """Erase one person (by email or lead id) everywhere; see the module docstring."""
    from sinks.client import connect

    lead, address = lead_id_of(email, lead_id, worker.lead_key_bytes)
    report = Report(lead_id=lead, request_id=f"erase-{uuid.uuid4().hex}")
    client = connect(sink)
    try:
        if address is None:
            address = _email_of(client, lead)  # by lead id: the address, if the leads table still has it
        visitors = [
            row[0]
            for row in client.query(
                "SELECT DISTINCT visitor_id FROM identity_links WHERE lead_id = {lead:String}",
                parameters={"lead": lead},
            ).result_rows
        ]
        progress(f"lead {lead}: {len(visitors)} visitor(s) linked in ClickHouse")
        leads_rows = _count_leads(client, lead)  # counted now: the sink may delete them first, on the tombstone
        _through_kafka(worker, sink, report, visitors, wait_s, progress)
        cluster = sink.clickhouse_cluster
        _delete_leads(client, lead, cluster)
        report.removed["ClickHouse leads"] = leads_rows
        if address is not None:
            for place, count in _replace_everywhere(client, address, lead, cluster).items():
                report.removed[place] = count
            report.remaining = _scan(client, address, cluster)
        else:
            report.notes.append(
                "no email known for this lead id (not in the leads table): only the lead id was "
                "erased; give --email to search ClickHouse for the address too"
            )
    finally:
        client.close()
    return report


def _email_of(client: Any, lead: str) -> str | None:
    rows = client.query(
        "SELECT any(email) FROM leads WHERE lead_id = {lead:String} HAVING count() > 0", parameters={"lead": lead}
    ).result_rows
    return rows[0][0] if rows and rows[0][0] else None


def _through_kafka(
    worker: WorkerSettings,
    sink: SinkSettings,
    report: Report,
    visitors: list[str],
    wait_s: float,
    progress: Callable[[str], None],
) -> None:
    """Steps 2 and 3 of the module docstring."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from simulator.demo_harness import consumer_lag
    from stream_jobs.runtime.topology import crm_contacts_topic

    topics = worker.topics
    inputs = [topics.events, topics.crm, crm_contacts_topic(worker.app_id), topics.lead_events]
    report.worker_backlog = sum(
        consumer_lag(worker.kafka_servers, worker.app_id, inputs, client_kwargs=kafka_python_security(worker)).values()
    )
    results_topic = erasure_results_topic(worker.app_id)
    reader = KafkaConsumer(
        bootstrap_servers=worker.kafka_servers.split(","),
        enable_auto_commit=False,
        isolation_level="read_committed",
        client_id="closedloop-erase",
        **kafka_python_security(worker),
    )
    producer = KafkaProducer(
        bootstrap_servers=worker.kafka_servers.split(","), acks="all", **kafka_python_security(worker)
    )
    try:
        partitions = [
            TopicPartition(results_topic, p) for p in sorted(reader.partitions_for_topic(results_topic) or ())
        ]
        if not partitions:
            raise RuntimeError(
                f"topic {results_topic} does not exist: run `closedloop up` (or start the worker "
                "once) with these settings to create the worker's topics"
            )
        reader.assign(partitions)
        for tp, end in reader.end_offsets(partitions).items():
            reader.seek(tp, end)
        key = report.lead_id.encode()
        tombstone = producer.send(topics.leads, key=key, value=None).get(timeout=30)
        erased = LeadErased(lead_id=report.lead_id, request_id=report.request_id, erased_at=datetime.now(timezone.utc))
        producer.send(topics.erased_leads, key=key, value=serde.dumps(erased)).get(timeout=30)
        report.removed[f"Kafka {topics.erased_leads} (deliver drops what was queued)"] = 1
        command = LeadEvent(
            kind="erase", lead_id=report.lead_id, event_id=report.request_id, visitor_ids=tuple(visitors)
        )
        producer.send(topics.lead_events, key=key, value=serde.dumps(command)).get(timeout=30)
        report.removed[f"Kafka {topics.leads} (tombstone)"] = 1
        progress(f"erase command sent to {topics.lead_events}; waiting up to {wait_s:g} s for the worker and the sink")
        deadline = time.monotonic() + wait_s
        places: dict[str, int] = {}
        expected: int | None = None  # answers still to come, once the leads table answered
        seen = 0
        while time.monotonic() < deadline and (expected is None or seen < expected + 1):
            for records in reader.poll(timeout_ms=200).values():
                for record in records:
                    result = serde.loads(record.value, EraseResult)
                    if result.request_id != report.request_id:
                        continue
                    seen += 1
                    places[result.place] = places.get(result.place, 0) + result.removed
                    if result.place == "leads table":
                        expected = result.follow_ups
        report.worker_done = expected is not None and seen >= expected + 1
        for place in ("leads table", "visitors table", "contacts table"):
            report.removed[f"worker {place}"] = places.get(place, 0)
        tombstone_tp = TopicPartition(tombstone.topic, tombstone.partition)
        report.sink_done = _wait_committed(sink, tombstone_tp, tombstone.offset + 1, deadline)
    finally:
        producer.close(timeout=10)
        reader.close()
    if not report.worker_done:
        report.notes.append(
            f"the worker has not applied the erase within {wait_s:g} s (is `closedloop worker` "
            f"running?): the command waits in {topics.lead_events} and is applied when it "
            "reads it; run `closedloop erase` again afterwards to see its counts"
        )
    if not report.sink_done:
        report.notes.append(
            "the sink has not read the tombstone yet: the leads row was deleted directly, but a "
            "lead record it had not written yet could bring the row back until it does; run "
            "`closedloop erase` again once the sink runs"
        )
    if report.worker_backlog:
        report.notes.append(
            f"the worker had {report.worker_backlog} record(s) to read when the command was sent: "
            "records about this person among them (a form, a CRM update) bring the lead back; "
            "run `closedloop erase` again once the worker has caught up"
        )


def _wait_committed(sink: SinkSettings, tp: Any, offset: int, deadline: float) -> bool:
    """Whether the sink's group committed ``offset`` (or later) on ``tp`` before ``deadline``."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=sink.kafka_servers.split(","), client_id="closedloop-erase", **kafka_python_security(sink)
    )
    try:
        while True:
            done = admin.list_group_offsets([sink.sink_consumer_group]).get(sink.sink_consumer_group, {}).get(tp)
            if done is not None and done.offset >= offset:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)
    finally:
        admin.close()


def _count_leads(client: Any, lead: str) -> int:
    return int(
        client.query(
            "SELECT count() FROM leads FINAL WHERE lead_id = {lead:String}", parameters={"lead": lead}
        ).result_rows[0][0]
    )


def _delete_leads(client: Any, lead: str, cluster: str | None) -> None:
    # A mutation, waited for, even when no row shows: the sink's lightweight DELETE (on the tombstone) only masks
    # the row until the next merge, and a mutation rewrites the parts without it. On a cluster it runs on every
    # shard's local table (sinks.cluster_sql.mutation_target); mutations_sync=2 waits for every replica.
    client.command(
        f"ALTER TABLE {mutation_target('leads', cluster)} DELETE WHERE lead_id = {{lead:String}}",
        parameters={"lead": lead},
        settings={"mutations_sync": 2},
    )


def _string_columns(client: Any, cluster: str | None) -> dict[str, list[tuple[str, bool]]]:
    """table -> [(column, is a key column)] for every String column of every table of the database. On a cluster
    the MergeTree tables listed are the shard-local ones: each is named by the Distributed table that reads every
    shard (the key flags are the local table's; a Distributed table has none)."""
    rows = client.query(
        "SELECT c.table, c.name, c.is_in_sorting_key OR c.is_in_partition_key OR c.is_in_primary_key "
        "FROM system.columns AS c INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table "
        "WHERE c.database = currentDatabase() AND t.engine LIKE '%MergeTree' "
        "AND match(c.type, '^(LowCardinality\\\\()?(Nullable\\\\()?String\\\\)*$') "
        "ORDER BY c.table, c.position"
    ).result_rows
    columns: dict[str, list[tuple[str, bool]]] = {}
    for table, column, is_key in rows:
        columns.setdefault(scanned_table(table, cluster), []).append((column, bool(is_key)))
    return columns


def _found(client: Any, address: str, cluster: str | None) -> dict[tuple[str, str, bool], int]:
    """(table, column, is key) -> rows whose column holds the address (any case)."""
    found = {}
    for table, columns in _string_columns(client, cluster).items():
        counts = ", ".join(
            f"countIf(positionCaseInsensitive(ifNull(toString(`{c}`), ''), {{address:String}}) > 0)" for c, _ in columns
        )
        row = client.query(f"SELECT {counts} FROM `{table}`", parameters={"address": address}).result_rows[0]
        for (column, is_key), count in zip(columns, row, strict=True):
            if count:
                found[(table, column, is_key)] = int(count)
    return found


def _replace_everywhere(client: Any, address: str, lead: str, cluster: str | None) -> dict[str, int]:
    """Replace the address by the lead id in every String column holding it (rows deleted where the column is
    part of the table's key, which a mutation cannot change); place -> rows changed."""
    changed: dict[str, int] = {}
    pattern = "(?i)" + re.escape(address)
    for (table, column, is_key), count in _found(client, address, cluster).items():
        where = f"positionCaseInsensitive(ifNull(toString(`{column}`), ''), {{address:String}}) > 0"
        target = mutation_target(table, cluster)
        if table == "leads" or is_key:
            client.command(
                f"ALTER TABLE {target} DELETE WHERE {where}",
                parameters={"address": address},
                settings={"mutations_sync": 2},
            )
            changed[f"ClickHouse {table} rows with it in {column} (deleted)"] = count
        else:
            client.command(
                f"ALTER TABLE {target} UPDATE `{column}` = replaceRegexpAll(`{column}`, {{pattern:String}}, "
                f"{{lead:String}}) WHERE {where}",
                parameters={"address": address, "pattern": pattern, "lead": lead},
                settings={"mutations_sync": 2},
            )
            changed[f"ClickHouse {table}.{column} (replaced by the lead id)"] = count
    return changed


def _scan(client: Any, address: str, cluster: str | None) -> dict[str, int]:
    """'table.column' -> rows still holding the address (any case), over every String column."""
    return {f"{table}.{column}": count for (table, column, _), count in _found(client, address, cluster).items()}
