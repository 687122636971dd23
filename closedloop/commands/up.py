"""``closedloop up``: start the embedded broker and ClickHouse endpoint, create the topics, apply migrations."""

from __future__ import annotations

import click

from closedloop.commands._stack_cli import print_status, report_line, stack_errors_readable
from deploy.settings import StackSettings, read_settings


@click.command("up")
@click.option("--migrate/--no-migrate", default=True, show_default=True, help="Apply the ClickHouse migrations.")
@click.option(
    "--kafka-brokers",
    type=click.Choice(["1", "3"]),
    default=None,
    help="Nodes of the embedded Kafka (CLOSEDLOOP_KAFKA_BROKERS); default: what the data directory has, else 1.",
)
def command(migrate: bool, kafka_brokers: str | None) -> None:
    """Start the single-machine stack (idempotent: what already runs is left running)."""
    from closedloop.commands._kafka_cli import refuse_unless_kafka_accepts
    from closedloop.commands._logs_cli import setup_logging
    from deploy import stack

    setup_logging(quiet_default=True)

    with stack_errors_readable():
        overrides = {"kafka_brokers": int(kafka_brokers)} if kafka_brokers else {}
        settings = read_settings(StackSettings, **overrides)
        refuse_unless_kafka_accepts(settings)  # a real Kafka's refusal in one line, not as a topic-creation timeout
        stack.up(settings, migrate=migrate, report=report_line)
        print_status(stack.status(settings))
