"""``closedloop import crm FILE.csv`` / ``closedloop import spend FILE.csv``: close the loop from a spreadsheet.

Publishes the same records as the CRM webhooks (``crm`` topic, ``spreadsheet`` CRM) and the spend model
(``spend`` topic), with a progress bar, a summary, and the line number and reason of every rejected row.
Exit status: 0 when every row was published, 1 when some rows were rejected or not acknowledged (the good
ones are published anyway), 2 when nothing could be done (missing file, columns or broker).
"""

from __future__ import annotations

from pathlib import Path

import click

COLUMNS = {
    "crm": "email (or contact_id), stage, date; optional value, currency, reason, id",
    "spend": "date, channel, cost, currency; optional source, medium, campaign",
}


def _run(kind: str, file: Path, dry_run: bool) -> None:
    from pydantic import ValidationError
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from collector import imports
    from collector.settings import CollectorSettings
    from schemas.kafka_security import kafka_python_security

    # soft_wrap: a rejection stays one line ("file:line: rejected: ...") at any width, for grep and for logs
    console = Console(stderr=True, soft_wrap=True)
    try:
        settings = CollectorSettings()
    except ValidationError as error:
        raise click.ClickException(f"invalid settings (CLOSEDLOOP_* environment variables): {error}") from None
    problem = imports.header_problem(file)
    if problem:
        console.print(f"[red]{file}:1: {problem}[/]; expected the columns {COLUMNS[kind]}")
        raise SystemExit(2)
    missing = imports.missing_columns(file, kind)  # type: ignore[arg-type]
    if missing:
        console.print(f"[red]{file}: missing column(s) {', '.join(missing)}[/]; expected {COLUMNS[kind]}")
        raise SystemExit(2)
    total = sum(1 for _ in imports.read_rows(file))
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"{'checking' if dry_run else 'importing'} {file.name}", total=total)
        advance = lambda line: progress.advance(task)  # noqa: E731 - a tiny callback
        if dry_run:
            summary = imports.ImportSummary()
            for _ in imports.parse_file(
                file,
                kind,  # type: ignore[arg-type]  # click's Choice gives one of the two
                settings.topics,
                summary,
                advance,
                settings.import_accepted_times,
                settings.lead_key_bytes,
                settings.import_day_zone,
            ):
                pass
        else:
            try:
                summary = imports.publish_file(
                    file,
                    kind,  # type: ignore[arg-type]  # click's Choice gives one of the two
                    settings.kafka_servers,
                    settings.topics,
                    advance,
                    accepted_times=settings.import_accepted_times,
                    lead_key=settings.lead_key_bytes,
                    day_zone=settings.import_day_zone,
                    client_kwargs=kafka_python_security(settings),
                )
            except Exception as error:  # noqa: BLE001 - kafka-python raises several unrelated types for an unreachable broker
                console.print(
                    f"[red]cannot publish to the broker at {settings.kafka_servers}: {error}[/]. "
                    "Is it running? (`closedloop up`, or set CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS)"
                )
                raise SystemExit(2) from None
    for line, errors in summary.rejected:
        reasons = "; ".join(f"{e['loc']}: {e['msg']}" if e["loc"] else e["msg"] for e in errors)
        console.print(f"[yellow]{file}:{line}[/]: rejected: {reasons}")
    verb = "valid" if dry_run else "published"
    count = summary.accepted if dry_run else summary.published
    console.print(
        f"{summary.rows} rows: {count} {verb}, {len(summary.rejected)} rejected"
        + (f", {summary.publish_failures} not acknowledged by the broker" if summary.publish_failures else "")
        + ("" if dry_run else f" -> topic {settings.topics.crm if kind == 'crm' else settings.topics.spend}")
    )
    if summary.rejected or summary.publish_failures:
        raise SystemExit(1)


@click.group("import")
def command() -> None:
    """Import CSV files: CRM status changes or marketing spend."""


@command.command("crm")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row, publish nothing.")
def crm(file: Path, dry_run: bool) -> None:
    """CRM stages from a spreadsheet: email, stage, value, currency, date."""
    _run("crm", file, dry_run)


@command.command("spend")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row, publish nothing.")
def spend(file: Path, dry_run: bool) -> None:
    """Marketing spend: date, channel, source, medium, campaign, cost, currency."""
    _run("spend", file, dry_run)
