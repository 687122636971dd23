"""``closedloop status``: what runs, on which ports, with which PIDs, where the data is, whether it answers."""

from __future__ import annotations

import json
import sys

import click

from closedloop.commands._stack_cli import print_status, stack_errors_readable
from deploy.settings import StackSettings, read_settings


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def command(as_json: bool) -> None:
    """Show the stack's services and their health; exit code 1 when something is not healthy."""
    from closedloop.commands._logs_cli import setup_logging
    from deploy import stack

    setup_logging(quiet_default=True)

    with stack_errors_readable():
        settings = read_settings(StackSettings)
        current = stack.status(settings)
    if as_json:
        click.echo(json.dumps(current.as_dict(), indent=2))
    else:
        print_status(current)
    sys.exit(0 if current.healthy else 1)
