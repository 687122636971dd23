"""``closedloop demo``: for now, bring the stack up and show its status (the full demo replaces this)."""

from __future__ import annotations

import click

from closedloop.commands._stack_cli import console, print_status, stack_errors_readable
from deploy.settings import StackSettings, read_settings


@click.command("demo")
def command() -> None:
    """Bring the embedded stack up and show what runs."""
    from deploy import stack

    with stack_errors_readable():
        settings = read_settings(StackSettings)
        console.print("[bold]Starting the closedloop stack[/bold]")
        stack.up(settings, report=lambda line: console.print(f"  {line}"))
        print_status(stack.status(settings))
    console.print("Stop it with [bold]closedloop down[/bold] (the data stays in the data directory).")
