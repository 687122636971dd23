"""``closedloop sql "SELECT ..."``: run any SQL against the configured ClickHouse and print the result."""

from __future__ import annotations

import click

from closedloop.commands._clickhouse_cli import (
    FORMATS,
    clickhouse_errors_readable,
    print_text_or_table,
    sink_settings,
)


@click.command("sql")
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="Server-side parameter for {NAME:Type} in the query; repeatable.",
)
def command(query: str, fmt: str, params: tuple[str, ...]) -> None:
    """Run QUERY in the pipeline's database, e.g. closedloop sql "SELECT channel, count() FROM touches GROUP BY 1"."""
    from sinks.client import connect
    from sinks.reports import ReportResult, render

    values = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: write --param name=value", param_hint="--param")
        values[name] = value
    with clickhouse_errors_readable():
        client = connect(sink_settings())
        try:
            result = client.query(query, parameters=values or None)
        finally:
            client.close()
        rows = ReportResult(
            "sql",
            tuple(result.column_names),
            tuple(map(tuple, result.result_rows)),
            tuple(t.name for t in result.column_types),
        )
        print_text_or_table(render(rows, fmt))
