"""``closedloop down``: stop what ``closedloop up`` started; the data stays on disk."""

from __future__ import annotations

import click

from closedloop.commands._stack_cli import report_line, stack_errors_readable
from deploy.settings import StackSettings, read_settings


@click.command("down")
def command() -> None:
    """Stop the embedded broker and ClickHouse endpoint started by `closedloop up` (data is kept)."""
    from deploy import stack

    with stack_errors_readable():
        settings = read_settings(StackSettings)
        stack.down(settings, report=report_line)
