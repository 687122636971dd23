"""``closedloop erase --email X`` / ``--lead-id Y``: erase a person everywhere the product keeps them (GDPR).

What it removes and what Kafka still holds: docs/PRIVACY.md; how: ``closedloop.erasure``. Exit status: 0 when
everything was erased, 1 when a part is still pending (the worker or the sink not running, traces found again):
run it again later; 2 when nothing was done (bad input, a service unreachable).
"""

from __future__ import annotations

import json
import sys

import click


@click.command("erase")
@click.option("--email", help="The person's email address (any case; it is normalised).")
@click.option("--lead-id", "lead_id", help="The person's lead id (32 hex characters), e.g. from a report.")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the worker and the sink to apply it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(email: str | None, lead_id: str | None, wait_s: float, as_json: bool) -> None:
    """Erase a person: the leads row, the worker's state, outputs with the email; prints what was removed."""
    from rich.console import Console

    from closedloop.commands._clickhouse_cli import clickhouse_errors_readable, sink_settings
    from closedloop.erasure import OUTBOUND_DELIVERIES, erase
    from deploy.settings import read_settings
    from stream_jobs.settings import WorkerSettings

    console = Console(stderr=True)
    if (email is None) == (lead_id is None):
        raise click.UsageError("give exactly one of --email or --lead-id")
    with clickhouse_errors_readable():
        worker, sink = read_settings(WorkerSettings), sink_settings()
        try:
            report = erase(
                worker,
                sink,
                email=email,
                lead_id=lead_id,
                wait_s=wait_s,
                progress=lambda line: console.print(line, highlight=False),
            )
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        except Exception as error:  # kafka-python raises several unrelated types for an unreachable broker
            if type(error).__module__.startswith("kafka") or isinstance(error, RuntimeError):
                console.print(
                    f"[red]cannot erase through Kafka at {worker.kafka_servers}: {error}[/]. Is it "
                    "running? (`closedloop up`, or set CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS)"
                )
                sys.exit(2)
            raise
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        console.print(f"erased lead {report.lead_id} (request {report.request_id}):", highlight=False)
        for place, count in report.removed.items():
            console.print(f"  {place}: {count}", highlight=False)
        console.print(f"  outbound deliveries: {OUTBOUND_DELIVERIES}", highlight=False)
        remaining = ", ".join(f"{place} ({count})" for place, count in report.remaining.items())
        console.print(f"  left in ClickHouse: {remaining or 'nothing'}", highlight=False)
        for note in report.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
    sys.exit(0 if report.complete else 1)
