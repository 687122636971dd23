"""``closedloop migrate``: apply, list or reverse the ClickHouse migrations of ``sinks/migrations/``."""

from __future__ import annotations

import click

from closedloop.commands._clickhouse_cli import clickhouse_errors_readable, console, sink_settings


@click.command("migrate")
@click.option("--list", "list_only", is_flag=True, help="Show every migration and whether it is applied.")
@click.option("--dry-run", is_flag=True, help="Say what would run; change nothing.")
@click.option(
    "--down",
    "down",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Reverse the N newest applied migrations (drops their tables: data is lost).",
)
@click.option(
    "--to", "target", type=click.IntRange(min=1), default=None, metavar="N", help="Apply only up to migration number N."
)
def command(list_only: bool, dry_run: bool, down: int | None, target: int | None) -> None:
    """Create the database if missing and apply pending migrations (what `closedloop up` does)."""
    from sinks import migrate

    with clickhouse_errors_readable():
        settings = sink_settings()
        where = f"{settings.clickhouse_database} on {settings.clickhouse.split('@')[-1]}"
        if list_only:
            from rich.table import Table

            table = Table(title=f"migrations of {where}", title_justify="left")
            for column in ("number", "name", "state", "applied at"):
                table.add_column(column)
            for item in migrate.status(settings):
                state = "applied" if item.applied else "pending"
                if item.changed:
                    state += " (file changed since)"
                table.add_row(
                    f"{item.migration.id:04d}",
                    item.migration.name,
                    state,
                    item.applied_at.isoformat(timespec="seconds") if item.applied_at else "-",
                )
            console.print(table)
            return
        if down is not None:
            labels = migrate.migrate_down(settings, down, dry_run=dry_run)
            verb = "would reverse" if dry_run else "reversed"
        else:
            labels = migrate.migrate_up(settings, target=target, dry_run=dry_run)
            verb = "would apply" if dry_run else "applied"
        if not labels:
            console.print(f"Nothing to do: {where} is up to date.")
        for label in labels:
            console.print(f"{verb} {label}")
