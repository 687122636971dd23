"""``closedloop export ads``: the offline conversion files of Google Ads and Microsoft Advertising (docs/ADS.md)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from closedloop.commands._clickhouse_cli import clickhouse_errors_readable, errors, sink_settings


@click.group("export")
def command() -> None:
    """Files for other systems, from ClickHouse."""


@command.command("ads")
@click.option("--platform", type=click.Choice(["google", "microsoft"]), required=True)
@click.option("--stage", type=click.Choice(["sql", "customer"]), required=True, help="Which conversions.")
@click.option(
    "--from",
    "date_from",
    type=click.DateTime(["%Y-%m-%d"]),
    default=str(datetime.now(timezone.utc).date() - timedelta(days=6)),
    show_default="7 days ago",
    help="First day of the conversions, inclusive (UTC).",
)
@click.option(
    "--to",
    "date_to",
    type=click.DateTime(["%Y-%m-%d"]),
    default=str(datetime.now(timezone.utc).date()),
    show_default="today (UTC)",
    help="Last day, inclusive.",
)
@click.option(
    "--conversion-name",
    default=None,
    help="The platform's conversion action (goal) name, exactly as set up there.  [default: the stage: sql, customer]",
)
@click.option(
    "--timezone",
    "timezone_name",
    default="+0000",
    show_default=True,
    help="Time zone of the file's times: an IANA name (America/New_York) or +hhmm; written in its parameters row.",
)
@click.option("--adjustments", is_flag=True, help="Google only: the retractions and restatements file instead.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the file here instead of to stdout.",
)
def ads(
    platform: str,
    stage: str,
    date_from: datetime,
    date_to: datetime,
    conversion_name: str | None,
    timezone_name: str,
    adjustments: bool,
    output: Path | None,
) -> None:
    """Write a platform's offline conversion upload file: one row per SQL or customer conversion of the period
    with the platform's click id (at most 90 days before it) and the lead's consent. Each row written is recorded
    in ClickHouse's ad_feedback table (closedloop report ads-feedback)."""
    from sinks import ad_export
    from sinks.client import connect

    if adjustments and platform != "google":
        errors.print(
            "Error: --adjustments writes Google's adjustments template; use it with --platform google", soft_wrap=True
        )
        sys.exit(2)
    try:
        zone = ad_export.zone_of(timezone_name)
    except ad_export.AdExportError as error:
        errors.print(f"Error: {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    name = conversion_name or stage
    now = datetime.now(timezone.utc)
    with clickhouse_errors_readable():
        client = connect(sink_settings())
        try:
            try:
                if adjustments:
                    uploaded, current = ad_export.read_uploaded(client, stage, date_from.date(), date_to.date())
                    made = ad_export.adjustment_rows(uploaded, current, zone, now)
                    text = ad_export.adjustments_file(made, timezone_name)
                    skipped: dict[str, int] = {}
                else:
                    candidates = ad_export.read_candidates(client, [stage], date_from.date(), date_to.date())
                    retracted = ad_export.read_retracted(client, platform)
                    made, skipped = ad_export.upload_rows(candidates, platform, name, zone, now, retracted)
                    text = ad_export.upload_file(platform, made, timezone_name)
            except ad_export.AdExportError as error:
                errors.print(f"Error: {error}", highlight=False, soft_wrap=True)
                sys.exit(2)
            if output is None:
                sys.stdout.write(text)
            else:
                output.write_text(text, encoding="utf-8")
            ad_export.record(client, made)
        finally:
            client.close()
    what = "adjustments" if adjustments else "conversions"
    left_out = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())) or "none"
    where = f" to {output}" if output is not None else ""
    errors.print(f"{len(made)} {what} written{where}; left out: {left_out}", highlight=False, soft_wrap=True)
