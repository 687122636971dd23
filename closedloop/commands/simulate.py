"""``closedloop simulate``: send simulated days of a company's marketing through a running collector.

The simulation continues where the last one in the data directory stopped (``{data_dir}/simulation/cursor.json``)
and writes its ground truth next to it. Credentials default to the demo's (``closedloop demo`` starts a collector
that accepts them); against your own collector, set the same ``CLOSEDLOOP_*`` variables the collector reads
(``CLOSEDLOOP_SITE_KEYS``, ``CLOSEDLOOP_SERVER_KEYS``, ``CLOSEDLOOP_HUBSPOT_CLIENT_SECRET``,
``CLOSEDLOOP_PIPEDRIVE_USER`` / ``_PASSWORD``, ``CLOSEDLOOP_CRM_WEBHOOK_SECRET``).
"""

from __future__ import annotations

import click


def endpoint_from_settings(collector_url: str | None, concurrency: int = 8, batch: int = 20):
    """The sender's endpoint: the collector's URL and credentials from the collector's own settings."""
    from collector.settings import CollectorSettings
    from simulator import senders

    settings = CollectorSettings()
    secret = lambda value, default: value.get_secret_value() if value is not None else default  # noqa: E731
    return senders.Endpoint(
        collector_url=collector_url or f"http://{settings.host}:{settings.port}",
        write_key=next(iter(settings.site_keys), senders.DEMO_WRITE_KEY),
        server_key=next(iter(settings.server_keys), senders.DEMO_SERVER_KEY),
        hubspot_secret=secret(settings.hubspot_client_secret, senders.DEMO_HUBSPOT_SECRET),
        pipedrive_user=settings.pipedrive_user or senders.DEMO_PIPEDRIVE_USER,
        pipedrive_password=secret(settings.pipedrive_password, senders.DEMO_PIPEDRIVE_PASSWORD),
        crm_secret=secret(settings.crm_webhook_secret, senders.DEMO_CRM_SECRET),
        concurrency=concurrency,
        web_batch=batch,
        kafka_servers=settings.kafka_servers,
        topic_prefix=settings.topic_prefix,
        csv_dir=settings.data_dir / "simulation" / "spreadsheets",
    ), settings.data_dir


def print_summary(console, run, stats, truth_path) -> None:
    """What was sent, the collector's verdict, and where the ground truth is."""
    from simulator.truth import read_truth, summarize

    kinds = ", ".join(f"{count:,} {kind}" for kind, count in stats.sent.items() if count)
    console.print(
        f"Sent {stats.events:,} events ({kinds}) in {stats.requests:,} requests, {stats.seconds:.1f} s: "
        f"[bold]{stats.events / stats.seconds:,.0f} events/s[/bold]; accepted {stats.accepted:,}, "
        f"duplicates {stats.duplicates}, ignored {stats.ignored}, rejected {stats.rejected}, "
        f"retries {stats.retries}"
    )
    for problem in stats.problems[:10]:
        console.print(f"  [yellow]{problem}[/yellow]", highlight=False, markup=False)
    totals = summarize(read_truth(truth_path).journeys)
    console.print(
        f"Ground truth so far (days 0-{run.end_day - 1}): {totals['journeys']:,} people, "
        f"{totals['visitors']:,} visitor ids, {totals['touches']:,} touches, {totals['leads']:,} leads, "
        f"{totals['customers']:,} customers -> {truth_path}"
    )


@click.command("simulate")
@click.option("--days", type=click.IntRange(1, 3650), default=30, show_default=True, help="Days to simulate.")
@click.option("--seed", type=int, default=None, help="Random seed (first run only; default 42).")
@click.option(
    "--visitors-per-day",
    type=click.IntRange(1, 100_000),
    default=None,
    help="New visitors on a weekday (first run only; default 150).",
)
@click.option(
    "--start-date",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Day 0 of the simulation (first run only; default: 3 runs' worth of days before today).",
)
@click.option(
    "--collector",
    "collector_url",
    default=None,
    help="Collector URL (default http://CLOSEDLOOP_HOST:CLOSEDLOOP_PORT, i.e. http://127.0.0.1:8000).",
)
@click.option(
    "--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True, help="Requests in flight at once."
)
@click.option(
    "--batch",
    type=click.IntRange(1, 500),
    default=20,
    show_default=True,
    help="A visitor's website events per request (1 = one request per event, like sendBeacon).",
)
def command(
    days: int,
    seed: int | None,
    visitors_per_day: int | None,
    start_date,
    collector_url: str | None,
    concurrency: int,
    batch: int,
) -> None:
    """Send the next DAYS of simulated website traffic, CRM updates and ad spend through the collector."""
    from pydantic import ValidationError
    from rich.console import Console

    from schemas.settings import make_private_dir
    from simulator.runs import SimulationError, simulate
    from simulator.senders import SendError

    console = Console()
    try:
        endpoint, data_dir = endpoint_from_settings(collector_url, concurrency, batch)
    except ValidationError as error:
        raise click.ClickException(f"invalid settings (CLOSEDLOOP_* environment variables): {error}") from None
    epoch = start_date.date() if start_date else None
    make_private_dir(data_dir.expanduser())  # the ground truth holds every simulated email
    try:
        run, stats, truth = simulate(
            data_dir, days, endpoint, console, seed=seed, visitors_per_day=visitors_per_day, epoch=epoch
        )
    except (SimulationError, SendError) as error:
        raise click.ClickException(str(error)) from None
    print_summary(console, run, stats, truth)
    if stats.rejected:
        raise SystemExit(1)
