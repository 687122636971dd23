"""``closedloop down``: stop what ``closedloop up`` started; the data stays on disk."""

from __future__ import annotations

import click

from closedloop.commands._stack_cli import report_line, stack_errors_readable
from deploy.settings import StackSettings, read_settings


@click.command("down")
def command() -> None:
    """Stop the demo's collector, worker and sink, then the embedded broker and ClickHouse endpoint started by
    `closedloop up` (data is kept)."""
    from closedloop.commands._logs_cli import setup_logging
    from deploy import stack

    setup_logging(quiet_default=True)
    from simulator.demo_harness import stop_demo_processes

    with stack_errors_readable():
        settings = read_settings(StackSettings)
        # The pipeline processes first: they would otherwise retry against a broker that is going away.
        stop_demo_processes(settings.data_root, report=report_line)
        stack.down(settings, report=report_line)
