"""``closedloop demo``: a simulated month of marketing through the whole pipeline, on real components.

1. brings the stack up (embedded broker and ClickHouse endpoint, topics, migrations), like ``closedloop up``;
2. starts the collector, the stream worker(s), the sink and ``closedloop deliver`` as background processes (PID
   files in ``run/``, logs in ``logs/`` under the data directory), unless a previous demo left them running; with
   no ``CLOSEDLOOP_DELIVERY_*`` destination set, deliver posts to a local webhook receiver the demo runs itself;
3. sends the next days of the simulation (``--days``, 30 by default) through the collector's HTTP endpoints,
   with a delay probe watching ClickHouse;
4. waits until the worker and the sink have consumed every topic and every touch is in ClickHouse;
5. prints the measured ingestion throughput and end-to-end delay, and the channel report under first-touch,
   last-touch and linear attribution side by side, with spend and return on ad spend; the sales-ready leads, the
   lost reasons and the deliveries; then what to try next.

The services keep running until ``closedloop down`` (``--once`` stops them at the end). Running the demo again on
the same data directory sends the next days: nothing is counted twice.
"""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import click
from rich.console import Console

from closedloop.commands._stack_cli import console, stack_errors_readable

MODELS = (("first_touch", "first"), ("last_touch", "last"), ("linear", "linear"))


@click.command("demo")
@click.option(
    "--days",
    type=click.IntRange(1, 365),
    default=30,
    show_default=True,
    help="Days of marketing to simulate in this run.",
)
@click.option("--seed", type=int, default=None, help="Random seed of a new simulation (default 42).")
@click.option(
    "--visitors-per-day",
    type=click.IntRange(1, 100_000),
    default=None,
    help="New visitors on a weekday, for a new simulation (default 150).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 8),
    default=None,
    help="Stream worker processes, web ports from CLOSEDLOOP_WORKER_WEB_PORT up (default from "
    "CLOSEDLOOP_WORKER_PROCESSES, else 1; on 2 cores, 1 is fastest).",
)
@click.option("--once", is_flag=True, help="Stop every service (and the stack) at the end.")
@click.option(
    "--timeout",
    type=click.FloatRange(10, 3600),
    default=300,
    show_default=True,
    help="Seconds to wait for the pipeline to drain before reporting what is missing.",
)
def command(
    days: int, seed: int | None, visitors_per_day: int | None, workers: int | None, once: bool, timeout: float
) -> None:
    """Run a simulated month of marketing through the pipeline and print the attribution report."""
    from closedloop.commands._logs_cli import log_environment, setup_logging
    from collector.settings import CollectorSettings
    from dashboard.settings import DashboardSettings
    from deploy import stack
    from deploy.settings import StackSettings, read_settings
    from simulator.demo_harness import DemoReceiver, PipelinePorts, PipelineProcesses
    from simulator.runs import SimulationError, plan_run
    from sinks.settings import SinkSettings
    from stream_jobs.settings import WorkerSettings

    setup_logging(quiet_default=True)
    with stack_errors_readable():
        settings = read_settings(StackSettings)
        worker_settings = read_settings(WorkerSettings)
        sink_settings = read_settings(SinkSettings)
        collector_settings = read_settings(CollectorSettings)
        try:
            cursor, run = plan_run(settings.data_root, days, seed, visitors_per_day)
        except SimulationError as error:
            raise click.ClickException(str(error)) from None
        console.rule("[bold]closedloop demo[/bold]")
        console.print("[bold]1. The stack[/bold] (embedded Kafka broker and ClickHouse endpoint)")
        stack.up(settings, report=lambda line: console.print(f"   {line}"))
        console.print(
            "[bold]2. The pipeline[/bold] (collector -> Kafka -> stream worker -> sink -> ClickHouse; "
            "worker -> outbox -> deliver -> webhooks)"
        )
        # Your own destinations when set (docs/DELIVERY.md), else the demo's receiver stands in for a webhook.
        deliver_env = {k: v for k, v in os.environ.items() if k.startswith("CLOSEDLOOP_DELIVERY_")}
        receiver = None
        if not any(k.endswith(("_URL", "_TOKEN")) for k in deliver_env):
            receiver = DemoReceiver(settings.data_root).start()
            deliver_env.update(receiver.environment())
            console.print(f"   deliver posts sales-ready leads to the demo's webhook receiver at {receiver.url}")
        # The children get an environment of their own: the log settings are handed on explicitly.
        processes = PipelineProcesses(
            settings,
            PipelinePorts(
                collector_settings.port,
                worker_settings.worker_web_port,
                read_settings(DashboardSettings).dashboard_port,
            ),
            workers if workers is not None else worker_settings.worker_processes,
            extra_env=log_environment(),
            deliver_env=deliver_env,
        )
        deliver_group = deliver_env.get("CLOSEDLOOP_DELIVERY_CONSUMER_GROUP", "closedloop-deliver")
        try:
            _run(settings, worker_settings, sink_settings, processes, cursor, run, timeout, deliver_group, receiver)
        finally:
            if receiver is not None:
                receiver.stop()
            if once:
                console.print("[bold]--once:[/bold] stopping everything (the data stays in the data directory)")
                processes.stop(report=lambda line: console.print(f"   {line}"))
                stack.down(settings, report=lambda line: console.print(f"   {line}"))


def _run(
    settings, worker_settings, sink_settings, processes, cursor, run, timeout: float, deliver_group: str, receiver
) -> None:
    from deploy.daemons import StackError
    from schemas.kafka_security import kafka_python_security
    from simulator.demo_harness import (
        DelayProbe,
        delay_summary,
        wait_group_active,
        wait_until_drained,
    )
    from simulator.runs import record_run, send_run, simulation_dir
    from simulator.senders import Endpoint, Sender, SendError
    from simulator.truth import read_truth, summarize, write_truth
    from sinks.client import connect

    processes.start(report=lambda line: console.print(f"   {line}"))
    alive = processes.check_alive
    security = kafka_python_security(settings)
    waited = wait_group_active(settings.kafka_servers, worker_settings.app_id, alive=alive, client_kwargs=security)
    wait_group_active(settings.kafka_servers, sink_settings.sink_consumer_group, alive=alive, client_kwargs=security)
    console.print(
        f"   worker group {worker_settings.app_id} and sink group {sink_settings.sink_consumer_group} "
        f"are consuming (waited {waited:.1f} s)"
    )

    console.print(
        f"[bold]3. The simulation[/bold]: days {run.first_day}-{run.end_day - 1} of seed {cursor.seed} "
        f"({run.start.date()} to {(run.end - timedelta(days=1)).date()}), "
        f"{cursor.visitors_per_day} new visitors a weekday, through {processes.collector_url}"
    )
    endpoint = Endpoint(
        collector_url=processes.collector_url,
        kafka_servers=settings.kafka_servers,
        topic_prefix=settings.topic_prefix,
        csv_dir=simulation_dir(settings.data_root) / "spreadsheets",
    )
    sender = Sender(endpoint)
    probe = DelayProbe(lambda: connect(sink_settings), sender.stats.touch_sent_at).start()
    try:
        stats = send_run(run, endpoint, console, sender=sender)
    except SendError as error:
        probe.stop()
        raise StackError(str(error)) from None
    truth_name = f"truth-{run.first_day:04d}-{run.end_day:04d}.jsonl"
    truth_path = write_truth(run, simulation_dir(settings.data_root) / truth_name)
    record_run(settings.data_root, cursor, run, stats, truth_path)
    truth = summarize(read_truth(truth_path).journeys)
    console.print(
        f"   sent {stats.events:,} events in {stats.requests:,} requests in {stats.seconds:.1f} s; "
        f"accepted {stats.accepted:,}, rejected {stats.rejected}, retries {stats.retries}"
    )
    for problem in stats.problems[:5]:
        console.print(f"   [yellow]{problem}[/yellow]", markup=False, highlight=False)

    console.print(
        "[bold]4. Waiting[/bold] until the worker and the sink have consumed every topic and every touch is queryable"
    )
    client = connect(sink_settings)
    status = console.status("")
    status.start()

    def show(state) -> None:
        lag = sum(state.worker_lag.values()) + sum(state.sink_lag.values())
        status.update(
            f"   {state.seconds:5.1f} s: consumer lag {lag:,}; touches in ClickHouse "
            f"{state.rows.get('touches', 0):,} of {truth['touches']:,}"
        )

    try:
        drain = wait_until_drained(
            settings,
            worker_settings.app_id,
            sink_settings.sink_consumer_group,
            client,
            expected_touches=truth["touches"],
            timeout=timeout,
            on_poll=show,
            alive=alive,
            deliver_group=deliver_group,
            held=processes.held_reemissions,
        )
    finally:
        status.stop()
    finished = time.time()
    probe.stop(wait_for_all=2.0)
    if not drain.complete:
        console.print(
            f"   [red]not drained after {timeout:.0f} s[/red]: worker lag {drain.worker_lag}, sink lag "
            f"{drain.sink_lag}, rows {drain.rows}; see the logs in {processes.logs_dir}"
        )
    else:
        console.print(
            f"   drained {drain.seconds:.1f} s after the last event was sent; rows (after dedup): "
            + ", ".join(f"{table} {count:,}" for table, count in drain.rows.items())
        )

    _print_measurements(stats, probe, finished, delay_summary(probe.delays()))
    _print_report(client, cursor, run)
    _print_ads(client, cursor, run)
    _print_sales_loop(client, receiver)
    _print_next(settings, processes, worker_settings, run)


def _print_measurements(stats, probe, finished: float, delays: dict) -> None:
    console.print("[bold]5. Measured[/bold]")
    total = finished - stats.started
    console.print(
        f"   ingestion: {stats.events:,} events accepted by the collector in {stats.seconds:.1f} s = "
        f"[bold]{stats.events / stats.seconds:,.0f} events/s[/bold] "
        f"({stats.requests / stats.seconds:,.0f} requests/s)"
    )
    console.print(
        f"   end to end: {stats.events:,} events from first send to last row in ClickHouse "
        f"in {total:.1f} s = "
        f"[bold]{stats.events / total:,.0f} events/s[/bold]"
    )
    if delays["count"]:
        console.print(
            f"   delay, page view accepted -> its touch queryable in ClickHouse ({delays['count']:,} touches, "
            f"polled every {probe.interval:.2f} s): [bold]p50 {delays['p50']:.2f} s, p99 {delays['p99']:.2f} s"
            f"[/bold], max {delays['max']:.2f} s"
        )
    missing = len(probe.pending())
    if missing:
        console.print(f"   [yellow]{missing} sampled touches never became visible[/yellow]")


# The report output rules of sinks/reports.py (money 2 places, counts whole or 2 places, rates 4, ',' thousands).
def _money(value) -> str:
    return "-" if value is None else f"{Decimal(value):,.2f}"


def _count(value) -> str:
    if value is None:
        return "-"
    value = Decimal(value)
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.2f}"


def _ratio(value) -> str:
    return "-" if value is None else f"{value:,.4f}"


def _print_report(client, cursor, run) -> None:
    from rich.table import Table

    from sinks.reports import channels

    date_from = date.fromisoformat(cursor.epoch)
    date_to = run.end.date() - timedelta(days=1)
    by_model = {}
    for model, _ in MODELS:
        by_model[model] = {r["channel"]: r for r in channels(client, model, date_from, date_to).records()}
    names = sorted(
        {c for rows in by_model.values() for c in rows},
        key=lambda c: (-Decimal(by_model["linear"].get(c, {}).get("revenue") or 0), c),
    )
    table = Table(
        title=f"6. Channels, {date_from} to {date_to} (each cell: first touch / last touch / linear)",
        title_justify="left",
    )
    table.add_column("channel", no_wrap=True)
    for header in ("visitors", "spend", "leads", "customers", "revenue", "roas"):
        table.add_column(header, justify="right", no_wrap=True)
    total: dict[str, Any] = {"visitors": 0, "spend": Decimal(0)}
    for name in names:
        base = next(rows[name] for rows in by_model.values() if name in rows)
        total["visitors"] += int(base.get("visitors") or 0)
        total["spend"] += Decimal(base.get("spend") or 0)
        cells = [name, _count(base.get("visitors")), _money(base.get("spend"))]
        for key, fmt in (("leads", _count), ("customers", _count), ("revenue", _money), ("roas", _ratio)):
            cells.append(" / ".join(fmt(by_model[model].get(name, {}).get(key)) for model, _ in MODELS))
        table.add_row(*cells)
    wide = Console(width=max(console.width, 132)) if not console.is_terminal else console
    wide.print(table)
    console.print(
        f"   leads, customers and revenue are credited to channels by each model (first touch, last "
        f"non-direct touch, linear); roas = revenue / spend; total spend {_money(total['spend'])} EUR.",
        soft_wrap=True,
    )


def _print_sales_loop(client, receiver) -> None:
    """The loop's other half: sales-ready leads out (and delivered), lost reasons back."""
    console.print("[bold]7. The loop with sales[/bold] (every run so far; docs/SCORING.md, docs/DELIVERY.md)")
    ready = client.query(
        "SELECT reason, count() FROM sales_ready_leads FINAL GROUP BY reason ORDER BY count() DESC, reason"
    ).result_rows
    total = sum(int(count) for _, count in ready)
    reasons = ", ".join(f"{reason} {int(count):,}" for reason, count in ready)
    console.print(f"   sales-ready leads: [bold]{total:,}[/bold]" + (f" ({reasons})" if reasons else ""))
    lost = client.query(
        "SELECT reason, count() FROM conversions FINAL WHERE stage IN ('lost', 'disqualified') AND reason != '' "
        "GROUP BY reason ORDER BY count() DESC, reason LIMIT 3"
    ).result_rows
    if lost:
        console.print("   top lost reasons from the CRM: " + ", ".join(f"{r} {int(n):,}" for r, n in lost))
    deliveries = client.query(
        "SELECT destination, kind, status, count() FROM deliveries FINAL GROUP BY ALL ORDER BY ALL"
    ).result_rows
    if not deliveries:
        console.print("   deliveries: none yet (closedloop deliver: see its log; docs/DELIVERY.md)")
    for destination, kind, status, count in deliveries:
        console.print(f"   deliveries to {destination}: {kind} {status} {int(count):,}")
    if receiver is not None:
        got = ", ".join(f"{kind} {count:,}" for kind, count in sorted(receiver.kinds.items())) or "nothing"
        console.print(
            f"   the demo's webhook receiver, this run: {got}; signatures that failed {receiver.bad_signatures}, "
            f"repeats {receiver.repeats}"
        )


def _print_ads(client, cursor, run) -> None:
    """How many SQL and customer conversions of the simulated period may go back to each ad platform (docs/ADS.md):
    with the platform's click id (the simulated paid traffic carries them), within 90 days, with consent."""
    from sinks.ad_export import ready_counts

    date_from = date.fromisoformat(cursor.epoch)
    date_to = run.end.date() - timedelta(days=1)
    counts = ready_counts(client, date_from, date_to)
    console.print(
        "   ready for the ad platforms (SQL and customer conversions with the platform's click id and consent): "
        + ", ".join(f"{platform} {counts[platform]:,}" for platform in ("google", "microsoft", "meta", "linkedin")),
        soft_wrap=True,
        highlight=False,
    )
    console.print(
        f"   files: closedloop export ads --platform google --stage customer --from {date_from} --to {date_to}; "
        "Meta and LinkedIn: closedloop deliver with their tokens (docs/ADS.md)",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )


def _credentials_hint(settings) -> str:
    """What to give curl's -u: the data directory's password file for the embedded endpoint (the password itself
    stays out of the terminal's scrollback), the URL's user otherwise."""
    from urllib.parse import urlsplit

    if settings.clickhouse_is_embedded:
        return f'"default:$(cat {settings.local_password_file.resolve()})"'
    return f"'{urlsplit(settings.clickhouse).username or 'default'}:...'"


def _print_next(settings, processes, worker_settings, run) -> None:
    from urllib.parse import urlsplit

    ch = urlsplit(settings.clickhouse)
    console.print("[bold]8. What to try next[/bold] (the services keep running until `closedloop down`)")
    period = f"--from {run.start.date()} --to {(run.end - timedelta(days=1)).date()}"
    lines = [
        ("the other models", f"closedloop report compare-models {period}"),
        (
            "the dashboard",
            f"open {processes.dashboard_url}/?from={run.start.date()}&to={(run.end - timedelta(days=1)).date()}"
            "    (the same numbers as the reports, and the live counters)",
        ),
        ("what made them buy", f"closedloop report landing-pages {period}; closedloop report ideal-path {period}"),
        ("sales-ready leads", f"closedloop report ready-leads {period}"),
        ("cohort payback", f"closedloop report payback --from {run.start:%Y-%m} --to {run.end:%Y-%m}"),
        (
            "any SQL",
            'closedloop sql "SELECT channel, round(sum(revenue)) AS revenue FROM credits_current '
            "WHERE model = 'time_decay' AND stage = 'customer' GROUP BY channel ORDER BY revenue DESC\"",
        ),
        (
            "ClickHouse over HTTP",
            f"curl -u {_credentials_hint(settings)} "
            f"'{ch.scheme}://{ch.hostname}:{ch.port or 8123}"
            f"/?query=SELECT%20channel,count()%20FROM%20{settings.clickhouse_database}.touches"
            "%20GROUP%20BY%20channel'",
        ),
        (
            "send an event",
            f"curl -X POST {processes.collector_url}/v1/events -H 'X-Closedloop-Key: demo-write-key' "
            '-H \'Content-Type: application/json\' -d \'{"type": "page_view", "visitor_id": "me", '
            '"url": "https://example.com/?utm_source=linkedin&utm_medium=social"}\'',
        ),
        ("live counters", f"closedloop watch    (JSON: curl {processes.worker_url()}/counters/?window=1h)"),
        ("more days", "closedloop demo    (continues with the next days; nothing is counted twice)"),
        ("stop", "closedloop down    (the data stays in " + str(settings.data_root) + ")"),
    ]
    for label, text in lines:
        console.print(f"   {label + ':':<22}", text, markup=False, highlight=False, soft_wrap=True)
