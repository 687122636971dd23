"""Shared output of the stack commands (up, down, status, demo): the status table and readable errors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

from deploy.daemons import StackError
from deploy.settings import SettingsError

console = Console()
errors = Console(stderr=True)


@contextmanager
def stack_errors_readable() -> Iterator[None]:
    """Print a bad setting or a stack problem as a message (no traceback) and exit with status 1 or 2."""
    try:
        yield
    except SettingsError as error:
        errors.print(str(error), style="red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except StackError as error:
        errors.print(f"Error: {error}", style="red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)


def report_line(line: str) -> None:
    """One progress line of up/down, never wrapped (paths stay copyable)."""
    console.print(f"  {line}", soft_wrap=True, highlight=False)


def print_status(status) -> None:  # deploy.stack.StackStatus, imported lazily by the commands
    """The status as a table: one row per service."""
    table = Table(title=f"closedloop stack · data in {status.data_dir}", title_justify="left")
    for column in ("service", "mode", "address", "PID", "health"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail")
    for service in status.services:
        health = "[green]healthy[/green]" if service.healthy else "[red]down[/red]"
        table.add_row(service.name, service.mode, service.address, str(service.pid or "-"), health, service.detail)
    console.print(table)
