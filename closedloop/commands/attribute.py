"""``closedloop attribute``: run a data-driven model (Markov removal effect, Shapley) over a period's journeys."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import click

from schemas.events import STAGES


@click.command("attribute")
@click.option("--model", type=click.Choice(["markov", "shapley"]), required=True)
@click.option("--order", type=click.IntRange(1, 3), default=1, show_default=True, help="Markov chain order.")
@click.option("--stage", type=click.Choice(STAGES), default="customer", show_default=True)
@click.option(
    "--from",
    "date_from",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="First day, inclusive (YYYY-MM-DD).  [default: 30 days ago]",
)
@click.option(
    "--to",
    "date_to",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Last day, inclusive.  [default: today (UTC)]",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(0, 10_000),
    default=100,
    show_default=True,
    help="Resamples of the journeys for the 95% intervals (0: none).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the resampling (same seed, same run).")
@click.option(
    "--lookback-days",
    type=click.IntRange(1, 3650),
    default=90,
    show_default=True,
    help="A converting journey's touches go back this far (CLOSEDLOOP_LOOKBACK_DAYS of the worker).",
)
@click.option("--dry-run", is_flag=True, help="Compute and print, write nothing.")
def command(
    model: str,
    order: int,
    stage: str,
    date_from: datetime | None,
    date_to: datetime | None,
    bootstrap: int,
    seed: int,
    lookback_days: int,
    dry_run: bool,
) -> None:
    """Credit a stage's conversions and revenue to channels over all journeys of a period, converting and not,
    and store them in data_driven_credits (shown by `closedloop report data-driven` and `report compare-models`).
    """
    from closedloop.commands._clickhouse_cli import (
        clickhouse_errors_readable,
        errors,
        print_text_or_table,
        sink_settings,
    )
    from sinks.client import connect
    from sinks.data_driven_job import check_run, run
    from sinks.reports import ReportResult, render

    today = datetime.now(timezone.utc).date()
    first = date_from.date() if date_from else today - timedelta(days=29)
    last = date_to.date() if date_to else today
    try:
        check_run(model, order, stage, first, last, bootstrap)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    with clickhouse_errors_readable():
        client = connect(sink_settings())
        try:
            result = run(
                client,
                model,
                stage=stage,
                date_from=first,
                date_to=last,
                order=order,
                bootstrap=bootstrap,
                seed=seed,
                lookback_days=lookback_days,
                write=not dry_run,
            )
        finally:
            client.close()
    a = result.attribution
    table = ReportResult(
        name=result.name,
        columns=("channel", "share", "conversions", "ci_low", "ci_high", "revenue", "removal_effect"),
        rows=tuple(
            (
                c.channel,
                round(c.share, 6),
                round(c.conversions, 4),
                round(c.ci_low, 4),
                round(c.ci_high, 4),
                round(c.revenue, 2),
                round(c.removal_effect, 6),
            )
            for c in sorted(a.credits, key=lambda c: (-c.conversions, c.channel))
        ),
    )
    print_text_or_table(render(table, "table", title=f"{result.name} · {stage} · {first} .. {last}"))
    errors.print(
        f"{a.journeys} journeys ({a.conversions} converting), {result.touchless_conversions} converting without "
        f"a touch left out; P(conversion) {a.conversion_probability:.6f}; read {result.read_seconds:.2f} s, "
        f"computed {result.compute_seconds:.2f} s" + ("; dry run, nothing written" if dry_run else ""),
        highlight=False,
    )
