"""Shared part of the commands that run a Kafka client for long (collector, worker, sink, deliver): stop at start,
with one line saying which setting to fix, when the brokers refuse the login or the TLS handshake. Without this a
wrong password shows as endless reconnects in the log (the libraries retry authentication failures like outages)."""

from __future__ import annotations

import click

from schemas.settings import PipelineSettings


def refuse_unless_kafka_accepts(settings: PipelineSettings) -> None:
    """Raise a ClickException (exit status 1, no traceback) when the brokers refuse these security settings.
    A no-op with PLAINTEXT, and when no broker answers (each process waits for an absent broker its own way)."""
    from schemas.kafka_security import login_problem

    problem = login_problem(settings)
    if problem is not None:
        raise click.ClickException(problem)
