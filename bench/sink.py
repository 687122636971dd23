"""Benchmark of the ClickHouse side: sink throughput through Kafka beside a raw insert of the same rows, and report
latency at full size.

Three measurements (method and results in bench/sink.md):

1. Sink rows/s: publish a mix of records (page views, touches, conversions, credits in the proportions of the
   full data set) to the embedded Apache Kafka, run ``SinkWriter`` from a fresh consumer group until every row is
   in ClickHouse, and divide.
2. Its ceiling, in the same run: the same records converted to rows beforehand (untimed), grouped by table in
   inserts of the sink's batch size, then inserted with the sink's own insert (clickhouse-connect,
   JSONCompactColumns) one after another, no Kafka: what the ClickHouse endpoint takes of these rows. Sink and
   raw runs alternate.
3. Report latency: load the full-size data set (``--events``, default 10 million page views, plus touches,
   identity links, conversions, credits of 7 models, spend) into the embedded ClickHouse with server-side
   ``INSERT ... SELECT FROM numbers()`` (the materialized views fill the roll-ups as they would from the sink),
   then time every report from the raw tables and the channel report from the roll-ups (median of 5 runs).

Run: ``.venv/bin/python -m bench.sink --events 10000000 --sink-records 300000 --sink-runs 3``. It starts its own
Kafka node and ClickHouse endpoint (``deploy.stack``, as ``closedloop up`` runs them) in a temporary directory on
free ports and stops them by PID at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from kafka import KafkaProducer

from bench.support import EmbeddedStack, rss_bytes, wait_for_quiet
from deploy.topics import create_topics
from schemas import serde
from schemas.events import Envelope, PageView
from schemas.outputs import AttributionModel, Conversion, Credit, Touch
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.reports import channels, run_report
from sinks.rows import Provenance, rows_for, topic_kinds
from sinks.rows import insert as insert_rows
from sinks.settings import SinkSettings
from sinks.writer import SinkWriter, tune_gc_for_throughput
from stream_jobs.rules.visitors import visitor_number

CHANNELS = ["Paid Search", "Organic Search", "Paid Social", "Organic Social", "Email", "Referral", "Direct", "Display"]
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
MODELS = [m.value for m in AttributionModel]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (and its waited-for children) from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _wait(condition, timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise TimeoutError(f"timed out waiting for {what}")


# -- 1. the sink through Kafka ------------------------------------------------------------------------------


def sink_records(settings: SinkSettings, count: int) -> list[tuple[str, str, bytes]]:
    """``count`` records: 74% page views, 15% touches, 10% credits, 1% conversions (the full set's mix)."""
    topics = settings.topics
    records = []
    for i in range(count):
        kind = i % 100
        at = T0 + timedelta(seconds=i)
        channel = CHANNELS[i % len(CHANNELS)]
        if kind < 74:
            value = serde.dumps(
                Envelope(
                    event_id=f"e{i}",
                    site_id="site",
                    received_at=at,
                    event=PageView(
                        occurred_at=at,
                        visitor_id=f"v{i % 50_000}",
                        referrer="https://www.google.com/",
                        url=f"https://example.com/p{i % 40}?utm_source=google&utm_medium=cpc&utm_campaign=c{i % 20}",
                    ),
                )
            )
            records.append((topics.events, f"v{i % 50_000}", value))
        elif kind < 89:
            visitor = i % 50_000
            value = serde.dumps(
                Touch(
                    touch_id=f"t{i}",
                    visitor_id=f"v{visitor}",
                    visitor_number=visitor_number(visitor % 4, visitor // 4 * 20),
                    site_id="site",
                    occurred_at=at,
                    channel=channel,
                    source="google",
                    medium="cpc",
                    campaign=f"c{i % 20}",
                    event_id=f"e{i}",
                )
            )
            records.append((topics.touches, f"v{i % 50_000}", value))
        elif kind < 99:
            value = serde.dumps(
                Credit(
                    conversion_id=f"c{i // 100}",
                    lead_id=f"L{i // 100}",
                    stage="lead",
                    model=MODELS[i % 7],
                    touch_id=f"t{i}",
                    touch_index=i % 3,
                    touch_at=at,
                    converted_at=at,
                    channel=channel,
                    source="google",
                    medium="cpc",
                    campaign=f"c{i % 20}",
                    credit=Decimal("0.333333333"),
                    revenue=Decimal("10.00"),
                    currency="EUR",
                )
            )
            records.append((topics.credits, f"c{i // 100}", value))
        else:
            value = serde.dumps(
                Conversion(
                    conversion_id=f"c{i // 100}",
                    lead_id=f"L{i // 100}",
                    stage="lead",
                    occurred_at=at,
                    touch_count=3,
                    event_id=f"e{i}",
                )
            )
            records.append((topics.conversions, f"L{i // 100}", value))
    return records


def publish(settings: SinkSettings, records: list[tuple[str, str, bytes]]) -> float:
    """Publish the records once (every sink run re-reads them from a fresh consumer group); seconds taken."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_servers, acks=1, linger_ms=20, batch_size=512 * 1024, compression_type="lz4"
    )
    started = time.perf_counter()
    for topic, key, value in records:
        producer.send(topic, key=key.encode(), value=value)
    producer.flush(timeout=600)
    producer.close()
    return time.perf_counter() - started


def _truncate(settings: SinkSettings) -> None:
    client = connect(settings)
    for table in (
        "events",
        "touches",
        "identity_links",
        "leads",
        "conversions",
        "credits",
        "spend",
        "touches_daily",
        "credits_daily",
    ):
        client.command(f"TRUNCATE TABLE {table}")
    client.close()


def _sink_process(settings_json: str, stop) -> None:
    """One member of the sink's consumer group, in its own process (bench_sink_processes)."""
    writer = SinkWriter(SinkSettings.model_validate_json(settings_json))
    tune_gc_for_throughput()
    threading.Thread(target=lambda: (stop.wait(), writer.stop()), daemon=True).start()
    try:
        writer.run()
    finally:
        writer.close()


def bench_sink_processes(
    settings: SinkSettings, count: int, processes: int, endpoint_pid: int, broker_pid: int
) -> dict:
    """Like bench_sink with ``processes`` SinkWriter processes in one consumer group (they share the partitions).

    The clock stops when ClickHouse holds every row (each record of the mix is one row); a process commits its
    offsets right after its insert.
    """
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    client = connect(settings)
    sql = (
        "SELECT sum(rows) FROM system.parts WHERE database = currentDatabase() AND active "
        "AND table IN ('events', 'touches', 'credits', 'conversions')"
    )
    endpoint_before, broker_before = cpu_seconds(endpoint_pid), cpu_seconds(broker_pid)
    started = time.perf_counter()
    children = [
        context.Process(target=_sink_process, args=(settings.model_dump_json(), stop)) for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        _wait(lambda: int(client.query(sql).result_rows[0][0] or 0) >= count, 3600, "every row in ClickHouse")
        seconds = time.perf_counter() - started
        endpoint_cpu = cpu_seconds(endpoint_pid) - endpoint_before
        broker_cpu = cpu_seconds(broker_pid) - broker_before
        sink_cpu = sum(cpu_seconds(child.pid) for child in children)
    finally:
        stop.set()
        for child in children:
            child.join(timeout=120)
            if child.is_alive():
                child.terminate()
        client.close()
    return {
        "records": count,
        "processes": processes,
        "seconds": round(seconds, 2),
        "rows_per_second": count / seconds,
        # read while the children still run: includes their start-up (imports, group join)
        "sink_cpu_s_per_1000": round(sink_cpu * 1000 / count, 4),
        "endpoint_cpu_s_per_1000": round(endpoint_cpu * 1000 / count, 4),
        "broker_cpu_s_per_1000": round(broker_cpu * 1000 / count, 4),
    }


def bench_sink(settings: SinkSettings, count: int, endpoint_pid: int, broker_pid: int) -> dict:
    """Run a SinkWriter of a fresh consumer group until all ``count`` records are written; rows/s and CPU."""
    writer = SinkWriter(settings)
    tune_gc_for_throughput()  # as `closedloop sink` does
    thread = threading.Thread(target=writer.run, daemon=True)
    cpu_before, endpoint_before, broker_before = time.process_time(), cpu_seconds(endpoint_pid), cpu_seconds(broker_pid)
    started = time.perf_counter()
    thread.start()
    _wait(lambda: writer.metrics.records > 0, 120, "the first record", poll=0.01)
    first_record = time.perf_counter() - started
    _wait(
        lambda: (
            writer.metrics.records >= count
            and writer.metrics.lag == 0
            and writer.metrics.batches > 0
            and not writer._pending_records
        ),
        3600,
        "the sink to write every record",
        poll=0.01,
    )
    seconds = time.perf_counter() - started
    sink_cpu, endpoint_cpu = time.process_time() - cpu_before, cpu_seconds(endpoint_pid) - endpoint_before
    broker_cpu = cpu_seconds(broker_pid) - broker_before
    writer.stop()
    thread.join(timeout=120)
    writer.close()
    per_1000 = 1000 / writer.metrics.total_rows
    return {
        "records": count,
        "rows": writer.metrics.total_rows,
        "seconds": round(seconds, 2),
        "sink_cpu_s_per_1000": round(sink_cpu * per_1000, 4),
        "endpoint_cpu_s_per_1000": round(endpoint_cpu * per_1000, 4),
        "broker_cpu_s_per_1000": round(broker_cpu * per_1000, 4),
        "rows_per_second": writer.metrics.total_rows / seconds,
        "first_record_after": round(first_record, 2),
        "after_first_record": round(writer.metrics.total_rows / (seconds - first_record)),
        "batches": writer.metrics.batches,
        "dead_letters": writer.metrics.dead_letters,
    }


def prepared_inserts(settings: SinkSettings, records: list[tuple[str, str, bytes]]) -> list[tuple[str, list[tuple]]]:
    """The rows the sink makes of ``records`` (``rows_for``, made-up partitions and offsets), grouped by table and
    cut into inserts of ``sink_batch_rows`` rows: the fewest inserts of the sink's size for these rows.

    (Batches cut in the records' order, every table in each, cost the endpoint about twice the CPU a row: an
    insert's fixed cost is 10-50 ms whatever its size, and the credits' 1,000 rows a batch paid it 30 times. The
    sink's own batches follow Kafka's fetches, a partition at a time, so one topic fills most of a batch.)"""
    kinds = topic_kinds(settings.topics)
    tables: dict[str, list[tuple]] = {}
    for offset, (topic, _key, value) in enumerate(records):
        for table, row in rows_for(kinds[topic], value, Provenance(topic, offset % 4, offset)):
            tables.setdefault(table, []).append(row)
    size = settings.sink_batch_rows
    return [
        (table, rows[start : start + size]) for table, rows in tables.items() for start in range(0, len(rows), size)
    ]


def bench_raw_insert(settings: SinkSettings, inserts: list[tuple[str, list[tuple]]], endpoint_pid: int) -> dict:
    """The sink's ceiling: insert prepared rows one insert after another (the sink's own insert: clickhouse-connect,
    JSONCompactColumns), no Kafka, no conversion; rows/s and CPU per row of this process (JSON encoding, HTTP)
    and the endpoint."""
    client = connect(settings)
    rows = sum(len(table_rows) for _, table_rows in inserts)
    cpu_before, endpoint_before = time.process_time(), cpu_seconds(endpoint_pid)
    started = time.perf_counter()
    for table, table_rows in inserts:
        insert_rows(client, table, table_rows)
    seconds = time.perf_counter() - started
    client_cpu, endpoint_cpu = time.process_time() - cpu_before, cpu_seconds(endpoint_pid) - endpoint_before
    client.close()
    per_1000 = 1000 / rows
    return {
        "rows": rows,
        "inserts": len(inserts),
        "seconds": round(seconds, 2),
        "rows_per_second": rows / seconds,
        "client_cpu_s_per_1000": round(client_cpu * per_1000, 4),
        "endpoint_cpu_s_per_1000": round(endpoint_cpu * per_1000, 4),
    }


# -- 2. full-size data set, server-side ---------------------------------------------------------------------

REATTRIBUTED = 7  # leads with lead % 100 == 7 (1%) get a second credit version on other touches
CHANNEL_ARRAY = "[" + ", ".join(f"'{c}'" for c in CHANNELS) + "]"


def visitor_number_sql(visitor: str) -> str:
    """The stream worker's number of visitor ``v{visitor}`` (stream_jobs.rules.visitors.visitor_number; sink_records
    numbers its visitors the same way), as if its first event were one of every 20 of its partition's events
    (the data set's visitors per event, evenly spread): as sparse as this data set allows, so the bitmaps are no
    denser than a live site's."""
    return f"bitShiftLeft(toUInt64(({visitor}) % 4), 40) + intDiv({visitor}, 4) * 20 + 1"


def load_full(client, events: int) -> dict:
    """Generate the data set in ClickHouse: events/20 visitors, 4 touches each, 1 in 10 visitors a lead."""
    visitors = events // 20
    touches = visitors * 4
    leads = visitors // 10
    timed = {}

    def run(name: str, sql: str) -> None:
        started = time.perf_counter()
        client.command(sql, settings={"max_insert_threads": 2})
        timed[name] = round(time.perf_counter() - started, 1)

    run(
        "events",
        f"""
        INSERT INTO events (event_id, event_type, site_id, occurred_at, received_at, visitor_id, url, path, referrer,
            utm_source, utm_medium, utm_campaign, schema_version, event, kafka_topic, kafka_partition, kafka_offset)
        SELECT concat('e', toString(number)), 'page_view', 'site',
               toDateTime64('2024-01-01 00:00:00', 3, 'UTC') + toIntervalSecond(number * 3),
               toDateTime64('2024-01-01 00:00:00', 3, 'UTC') + toIntervalSecond(number * 3),
               concat('v', toString(number % {visitors})), concat('https://example.com/p', toString(number % 40)),
               concat('/p', toString(number % 40)), 'https://www.google.com/', 'google', 'cpc',
               concat('c', toString(number % 20)), 1, '{{}}', 'bench.events', number % 4, intDiv(number, 4)
        FROM numbers({events})""",
    )
    # Touches in 5 inserts, each over the whole year, so the visitor roll-ups get 5 parts that overlap everywhere
    # (what a back-fill in chunks or a sink's batches leave before merges).
    for chunk in range(5):
        run(
            f"touches {chunk + 1}/5",
            f"""
            INSERT INTO touches (touch_id, visitor_id, visitor_number, lead_id, lead_known, site_id, occurred_at,
                channel, source, medium, campaign, term, content, click_id, referrer_host, landing_path, event_id)
            SELECT concat('t', toString(number)), concat('v', toString(number % {visitors})),
                   {visitor_number_sql(f"number % {visitors}")}, '', 0, 'site',
                   toDateTime64('2024-01-01 00:00:00', 3, 'UTC') + toIntervalSecond(number * 15),
                   {CHANNEL_ARRAY}[1 + cityHash64(number) % {len(CHANNELS)}], 'google', 'cpc',
                   concat('c', toString(cityHash64(number, 1) % 20)), '', '', '', 'www.google.com', '/',
                   concat('e', toString(number))
            FROM numbers({touches}) WHERE number % 5 = {chunk}""",
        )
    run(
        "identity_links",
        f"""
        INSERT INTO identity_links SELECT concat('v', toString(number * 10)), concat('L', toString(number)),
               toDateTime64('2024-01-01 00:00:00', 3, 'UTC') + toIntervalSecond(number * 600), '', ''
        FROM numbers({leads})""",
    )
    # Stages per lead: lead always; mql 1/2; sql 1/4; customer 1/10; lost 1/10 (stage index s of 5).
    stages = "['lead', 'mql', 'sql', 'customer', 'lost']"
    keep = "[1, number % 2 = 0, number % 4 = 0, number % 10 = 0, number % 10 = 5]"
    conversions_select = f"""
        SELECT number AS lead, s AS stage,
               toDateTime64('2024-01-01 00:00:00', 3, 'UTC')
                   + toIntervalSecond(number * 600 + indexOf({stages}, s) * 86400) AS at
        FROM numbers({leads}) ARRAY JOIN arrayFilter((x, k) -> k, {stages}, {keep}) AS s"""
    run(
        "conversions",
        f"""
        INSERT INTO conversions
        SELECT concat('c', toString(lead), '-', stage), concat('L', toString(lead)), stage, at,
               if(stage = 'customer', toDecimal64(1000 + lead % 9000, 2), NULL), if(stage = 'customer', 'EUR', ''),
               3, 'Paid Search', 'Paid Search', '', 1
        FROM ({conversions_select})""",
    )
    # Credits: 3 touches per journey; first/last touch credit one touch, the other 5 models share 3 ways.
    models = "['first_touch', 'last_touch', 'linear', 'time_decay', 'u_shaped', 'w_shaped', 'full_path']"

    def credits_sql(version: int, where: str) -> str:
        # Version 2 (a re-attribution) credits other touches (t...+10) on other channels: the exact report must
        # drop the version-1 rows of those conversions.
        shift = 10 * (version - 1)
        return f"""
        INSERT INTO credits
        SELECT concat('c', toString(lead), '-', stage), concat('L', toString(lead)), stage, model,
               concat('t', toString(lead * 40 + i + {shift})), i, at - toIntervalDay(3 - i), at,
               {CHANNEL_ARRAY}[1 + cityHash64(lead, i, {version}) % {len(CHANNELS)}], 'google', 'cpc',
               concat('c', toString(cityHash64(lead, i, 1) % 20)),
               if(model IN ('first_touch', 'last_touch'), toDecimal64(1, 9),
                  toDecimal64(if(i = 2, '0.333333334', '0.333333333'), 9)),
               if(stage = 'customer',
                  toDecimal64((1000 + lead % 9000) / if(model IN ('first_touch', 'last_touch'), 1, 3), 2),
                  toDecimal64(0, 2)),
               if(stage = 'customer', 'EUR', ''), {version}
        FROM ({conversions_select})
        ARRAY JOIN {models} AS model
        ARRAY JOIN range(3) AS i
        WHERE NOT (model = 'first_touch' AND i > 0) AND NOT (model = 'last_touch' AND i < 2) AND {where}"""

    run("credits", credits_sql(1, "1"))
    run("credits_v2", credits_sql(2, f"lead % 100 = {REATTRIBUTED}"))
    run(
        "spend",
        f"""
        INSERT INTO spend
        SELECT toDate('2024-01-01') + intDiv(number, 160), {CHANNEL_ARRAY}[1 + intDiv(number, 20) % 8], 'google',
               'cpc', concat('c', toString(number % 20)), toDecimal64(50 + number % 100, 2), 'EUR',
               now64(3), concat('s', toString(number))
        FROM numbers(365 * 160)""",
    )
    counts = client.query(
        "SELECT (SELECT count() FROM events), (SELECT count() FROM touches), (SELECT count() FROM conversions), "
        "(SELECT count() FROM credits), (SELECT count() FROM spend)"
    ).result_rows[0]
    return {
        "seconds": timed,
        "rows": dict(zip(("events", "touches", "conversions", "credits", "spend"), counts, strict=False)),
    }


def time_reports(client, runs: int = 5, only: str = "") -> dict[str, float]:
    period = {"date_from": date(2024, 1, 1), "date_to": date(2024, 12, 31)}
    cases = {
        "channels (raw, linear)": lambda: channels(client, "linear", **period),
        "channels --by campaign (raw)": lambda: channels(client, "linear", by_campaign=True, **period),
        # Not whole months: the bitmaps of the days at both ends are merged too.
        "channels (raw, linear, 15 Jan .. 20 Nov)": lambda: channels(
            client, "linear", date(2024, 1, 15), date(2024, 11, 20)
        ),
        "channels (roll-up, linear)": lambda: channels(client, "linear", source="rollup", **period),
        "channels --by campaign (roll-up)": lambda: channels(
            client, "linear", by_campaign=True, source="rollup", **period
        ),
        "funnel": lambda: run_report(client, "funnel", model="first_touch", **period),
        "paths": lambda: run_report(client, "paths", stage="customer", limit=10, **period),
        "page-paths": lambda: run_report(client, "page-paths", pages=5, limit=10, **period),
        "time-to-convert": lambda: run_report(client, "time-to-convert", **period),
        "compare-models": lambda: run_report(client, "compare-models", **period),
    }
    results = {}
    for name, case in cases.items():
        if not name.startswith(only):
            continue
        case()  # warm-up: first run reads marks and caches
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            case()
            samples.append(time.perf_counter() - started)
        results[name] = round(statistics.median(samples) * 1000, 1)
        print(f"  {name}: {results[name]} ms", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--sink-records", type=int, default=200_000)
    parser.add_argument("--skip-sink", action="store_true")
    parser.add_argument("--skip-reports", action="store_true")
    parser.add_argument(
        "--sink-processes",
        type=int,
        default=1,
        help="SinkWriter processes in the consumer group (1: one writer in this process)",
    )
    parser.add_argument(
        "--sink-runs",
        type=int,
        default=1,
        help="repeat the sink measurement (fresh consumer group each time) and report the median",
    )
    parser.add_argument(
        "--no-raw-insert",
        dest="raw_insert",
        action="store_false",
        help="skip the ceiling (the same rows inserted without Kafka) after each sink run",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=180.0,
        help="wait at most this many seconds for a load average under 1.5 before measuring",
    )
    args = parser.parse_args()
    if not (
        0 < args.sink_records <= 2_000_000
        and 1 <= args.sink_runs <= 10
        and 0 <= args.quiet_wait <= 600
        and 0 < args.events <= 50_000_000
    ):
        parser.error("keep it bounded: sink records <= 2,000,000, runs <= 10, events <= 50,000,000")

    with tempfile.TemporaryDirectory(prefix="closedloop-bench-") as tmp:
        stack = EmbeddedStack(Path(tmp) / "stack")
        try:
            stack.start("clickhouse", *(() if args.skip_sink else ("kafka",)))
            settings = SinkSettings(
                clickhouse_url=stack.clickhouse_url("bench"),
                kafka_bootstrap_servers=stack.bootstrap,
                topic_prefix="bench",
                sink_consumer_group="bench-sink",
                partitions=4,
            )
            migrate_up(settings)
            if not args.skip_sink:
                create_topics(settings, settings.topics.specs())
                print(f"sink: {args.sink_records} records through Kafka ...", flush=True)
                records = sink_records(settings, args.sink_records)
                print(f"  published in {publish(settings, records):.1f} s", flush=True)
                inserts = prepared_inserts(settings, records) if args.raw_insert else []
                wait_for_quiet(args.quiet_wait)
                rates, raw_rates, ratios = [], [], []
                for run in range(args.sink_runs):
                    _truncate(settings)  # each run writes into empty tables, as the first did
                    run_settings = settings.model_copy(update={"sink_consumer_group": f"bench-sink-{run}"})
                    sink = (
                        bench_sink(run_settings, len(records), stack.clickhouse_pid, stack.kafka_pid)
                        if args.sink_processes == 1
                        else bench_sink_processes(
                            run_settings, len(records), args.sink_processes, stack.clickhouse_pid, stack.kafka_pid
                        )
                    )
                    rates.append(sink["rows_per_second"])
                    print(f"  run {run + 1}: {sink}; load average {os.getloadavg()[0]:.2f}", flush=True)
                    if inserts:
                        _truncate(settings)
                        raw = bench_raw_insert(settings, inserts, stack.clickhouse_pid)
                        raw_rates.append(raw["rows_per_second"])
                        ratios.append(sink["rows_per_second"] / raw["rows_per_second"])
                        print(f"  raw insert {run + 1}: {raw}; load average {os.getloadavg()[0]:.2f}", flush=True)
                print(f"  median: {statistics.median(rates):,.0f} rows/s of {[round(r) for r in rates]}", flush=True)
                if raw_rates:
                    print(
                        f"  raw insert median: {statistics.median(raw_rates):,.0f} rows/s of "
                        f"{[round(r) for r in raw_rates]}; sink / raw, run by run: "
                        f"{statistics.median(ratios):.2f} of {[round(r, 2) for r in ratios]}",
                        flush=True,
                    )
                print(
                    f"  broker at the end: data {stack.kafka_data_bytes() / 1e6:.0f} MB on disk, resident "
                    f"{rss_bytes(stack.kafka_pid) / 1e6:.0f} MB",
                    flush=True,
                )
                stack.stop("kafka")  # the reports need only ClickHouse
            if args.skip_reports:
                return
            full = SinkSettings(clickhouse_url=stack.clickhouse_url("bench_full"))
            migrate_up(full)
            client = connect(full, query_timeout=3600)
            print(f"loading {args.events} events and their touches, conversions, credits ...", flush=True)
            # No background merges until the first timing: the report's worst case (every part the load made).
            client.command("SYSTEM STOP MERGES")
            print(f"  {load_full(client, args.events)}", flush=True)
            parts = client.query(
                "SELECT table, count() FROM system.parts WHERE database = currentDatabase() AND active "
                "AND table IN ('touches', 'credits', 'visitor_days', 'channel_visitors', 'credit_versions') "
                "GROUP BY table ORDER BY table"
            ).result_rows
            print(
                f"report latency right after the load, merges stopped (active parts: {dict(parts)}; "
                f"median of 5, after one warm-up):",
                flush=True,
            )
            time_reports(client, only="channels")
            client.command("SYSTEM START MERGES")
            for table in ("credits", "touches", "visitor_days", "channel_visitors", "credit_versions"):
                client.command(f"OPTIMIZE TABLE {table} FINAL")
            print("report latency after OPTIMIZE FINAL (median of 5, after one warm-up):", flush=True)
            time_reports(client)
            # A live sink keeps adding small parts that background merges fold in later: time the channel
            # report with one fresh sink-sized part on top of the merged ones (10,000 touches of existing
            # visitors; credits untouched).
            client.command(f"""
                INSERT INTO touches SELECT concat('tx', toString(number)),
                       concat('v', toString(cityHash64(number) % {args.events // 20})),
                       {visitor_number_sql(f"cityHash64(number) % {args.events // 20}")}, '', 0, 'site',
                       toDateTime64('2024-06-01 00:00:00', 3, 'UTC') + toIntervalSecond(number * 15),
                       {CHANNEL_ARRAY}[1 + number % {len(CHANNELS)}], 'google', 'cpc', 'c1', '', '', '', '', '/', ''
                FROM numbers(10000)""")
            print("report latency with one fresh 10,000-touch part (median of 5, after one warm-up):", flush=True)
            time_reports(client, only="channels")
            client.close()
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
