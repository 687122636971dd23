"""``closedloop sink``: write the pipeline's topics into ClickHouse until stopped (Ctrl-C or SIGTERM)."""

from __future__ import annotations

import signal

import click

from closedloop.commands._clickhouse_cli import clickhouse_errors_readable, console, sink_settings


@click.command("sink")
@click.option("--batch-rows", type=click.IntRange(min=1), default=None, help="Flush after this many rows.")
@click.option("--batch-seconds", type=click.FloatRange(min=0.01), default=None, help="...or after this long.")
@click.option("--group", default=None, help="Kafka consumer group (default closedloop-sink).")
@click.option(
    "--migrate/--no-migrate", default=True, show_default=True, help="Apply pending migrations before consuming."
)
@click.option(
    "--processes",
    type=click.IntRange(min=1, max=64),
    default=1,
    show_default=True,
    help="Sink processes in the consumer group (each takes a share of the partitions).",
)
def command(
    batch_rows: int | None, batch_seconds: float | None, group: str | None, migrate: bool, processes: int
) -> None:
    """Consume events, crm, spend, touches, identity-links, leads, conversions and credits into ClickHouse."""
    from closedloop.commands._kafka_cli import refuse_unless_kafka_accepts
    from closedloop.commands._logs_cli import setup_logging
    from schemas.logs import logging_config
    from sinks.migrate import migrate_up

    logs = setup_logging()
    with clickhouse_errors_readable():
        settings = sink_settings(
            sink_batch_rows=batch_rows, sink_batch_seconds=batch_seconds, sink_consumer_group=group
        )
        refuse_unless_kafka_accepts(settings)
        if migrate:
            for label in migrate_up(settings):
                console.print(f"applied {label}")
        schedule = _start_attribution_schedule(settings, logging_config(logs))
        try:
            if processes > 1:
                _run_group(settings, processes, logging_config(logs))
            else:
                _run_one(settings)
        finally:
            if schedule is not None:
                schedule.stop()


def _start_attribution_schedule(settings, log_config: dict):
    """The data-driven models on the trailing period, every CLOSEDLOOP_ATTRIBUTE_EVERY_HOURS (0: off)."""
    if not settings.attribute_every_hours:
        return None
    from sinks.attribution_schedule import AttributionSchedule

    return AttributionSchedule(settings, log_config=log_config).start()


def _run_one(settings) -> None:
    """One SinkWriter in this process until Ctrl-C / SIGTERM."""
    from sinks.writer import SinkWriter, tune_gc_for_throughput

    writer = SinkWriter(settings)
    tune_gc_for_throughput()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: writer.stop())
    if settings.sink_metrics_port:
        _serve_metrics(writer, settings.sink_metrics_port, settings.sink_metrics_host)
    console.print(f"sink: {settings.kafka_servers} -> {settings.clickhouse_database}; Ctrl-C stops")
    try:
        metrics = writer.run()
    finally:
        writer.close()
    console.print(
        f"sink stopped: {metrics.total_rows} rows in {metrics.batches} batches, "
        f"{metrics.retries} retries, {metrics.dead_letters} dead letters"
    )


def _run_group(settings, processes: int, log_config: dict) -> None:
    """``processes`` SinkWriter processes in one consumer group until Ctrl-C / SIGTERM; each applies
    ``log_config``, this process's log setup."""
    from sinks.process_group import SinkGroup

    if settings.sink_metrics_port:
        raise click.UsageError(
            "CLOSEDLOOP_SINK_METRICS_PORT serves one process's metrics: unset it with "
            "--processes > 1 (each process logs its rows, lag and retries per batch)"
        )
    group = SinkGroup(settings, processes, log_config=log_config)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: group.stop())
    console.print(
        f"sink: {settings.kafka_servers} -> {settings.clickhouse_database} with {processes} processes; Ctrl-C stops"
    )
    result = group.run()
    console.print(
        f"sink stopped: {result.rows} rows in {result.batches} batches, {result.retries} retries, "
        f"{result.dead_letters} dead letters"
    )
    if result.failed:
        raise click.ClickException(f"{result.failed} of {processes} sink processes failed (see the log above)")


def _serve_metrics(writer, port: int, host: str) -> None:
    """Prometheus metrics on host:port (CLOSEDLOOP_SINK_METRICS_HOST, 127.0.0.1 unless set): rows written,
    batches, retries (unreachable or refused), rows rejected, dead letters, lag."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    m = writer.metrics
    for name, doc, read in (
        ("closedloop_sink_rows_written", "Rows inserted into ClickHouse", lambda: m.total_rows),
        ("closedloop_sink_batches", "Batches written and committed", lambda: m.batches),
        ("closedloop_sink_retries", "ClickHouse retries after failures (unreachable + refused)", lambda: m.retries),
        (
            "closedloop_sink_unreachable_retries",
            "Retries because ClickHouse did not answer",
            lambda: m.unreachable_retries,
        ),
        (
            "closedloop_sink_refused_retries",
            "Retries because ClickHouse refused for its own state (missing table, memory, too many parts)",
            lambda: m.refused_retries,
        ),
        (
            "closedloop_sink_rejected_rows",
            "Rows ClickHouse rejected, dead-lettered with its reason",
            lambda: m.rejected_rows,
        ),
        ("closedloop_sink_dead_letters", "Records sent to the dead-letter topic", lambda: m.dead_letters),
        ("closedloop_sink_lag", "Records behind the end of the assigned partitions", lambda: m.lag),
    ):
        Gauge(name, doc, registry=registry).set_function(read)
    start_http_server(port, addr=host, registry=registry)
