"""``closedloop journey --email X`` / ``--lead-id Y``: one lead's whole path, as ClickHouse holds it."""

from __future__ import annotations

import json
import sys

import click


@click.command("journey")
@click.option("--email", help="The lead's email address (any case; it is normalised).")
@click.option("--lead-id", "lead_id", help="The lead id (32 hex characters), e.g. from a report.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="At most this many page views and forms.",
)
def command(email: str | None, lead_id: str | None, fmt: str, limit: int) -> None:
    """Print a lead's visitors, every page view and form in order with its touch and channel, its stages with
    the CRM's reasons, and each model's credits."""
    from closedloop.commands._clickhouse_cli import (
        clickhouse_errors_readable,
        console,
        errors,
        print_text_or_table,
        sink_settings,
    )
    from closedloop.erasure import lead_id_of
    from sinks.client import connect
    from sinks.journey import SECTIONS, read_journey
    from sinks.reports import to_json, to_table

    if (email is None) == (lead_id is None):
        raise click.UsageError("give exactly one of --email or --lead-id")
    with clickhouse_errors_readable():
        settings = sink_settings()
        try:
            lead, _ = lead_id_of(email, lead_id, settings.lead_key_bytes)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        journey = read_journey(connect(settings), lead, page_limit=limit)
    if not journey.found:
        who = f"email {email}" if email else f"lead id {lead}"
        errors.print(
            f"no lead with {who} in ClickHouse (lead id {lead}); check the address, or whether the sink has caught "
            "up (closedloop status)",
            highlight=False,
        )
        sys.exit(1)
    if fmt == "json":
        document = {
            "lead_id": journey.lead_id,
            "email": journey.email,
            **{name: json.loads(to_json(journey.sections[name])) for name in SECTIONS},
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    console.print(f"lead {journey.lead_id}  email {journey.email or '(not known)'}", highlight=False)
    titles = {
        "visitors": "visitors (devices)",
        "pages": "page views and forms",
        "stages": "stages",
        "credits": "credits per model",
    }
    for name in SECTIONS:
        result = journey.sections[name]
        if result.rows:
            print_text_or_table(to_table(result, title=titles[name]))
        else:
            console.print(f"{titles[name]}: none", highlight=False)
    if len(journey.sections["pages"].rows) == limit:
        errors.print(f"only the first {limit} page views and forms are shown (--limit)", highlight=False)
