"""``closedloop worker``: run the stream jobs (Faust worker) against the configured broker.

Creates every topic first (pipeline and internal ones: the worker itself never auto-creates), then runs until
SIGTERM/SIGINT. Settings come from ``CLOSEDLOOP_*`` environment variables (see ``stream_jobs.settings``).
``--processes N`` (``CLOSEDLOOP_WORKER_PROCESSES``) starts N worker processes in one consumer group instead, on
web ports ``--web-port`` + n (``deploy.worker_processes``).
"""

from __future__ import annotations

import logging
from typing import Any

import click

log = logging.getLogger("closedloop.worker")


@click.command("worker")
@click.option("--web-port", type=int, default=None, help="Port of the worker's web server (counters JSON).")
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=None,
    help="Worker processes on this machine, one consumer group (default from CLOSEDLOOP_WORKER_PROCESSES, else 1).",
)
@click.option(
    "--loglevel",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level of the worker (default from CLOSEDLOOP_LOG_LEVEL, else info).",
)
def command(web_port: int | None, processes: int | None, loglevel: str | None) -> None:
    """Run the stream jobs: touches, identity stitching, conversions, credits and live counters."""
    _use_uvloop()
    from pydantic import ValidationError

    from closedloop.commands._kafka_cli import refuse_unless_kafka_accepts
    from closedloop.commands._logs_cli import setup_logging
    from deploy.topics import create_topics
    from schemas.logs import logging_config
    from stream_jobs.settings import WorkerSettings

    logs = setup_logging(loglevel, level_source="--loglevel")

    try:
        overrides: dict[str, Any] = {"worker_web_port": web_port} if web_port is not None else {}
        settings = WorkerSettings(**overrides)
    except ValidationError as error:
        raise click.ClickException(f"invalid worker settings (CLOSEDLOOP_* environment variables): {error}") from None

    refuse_unless_kafka_accepts(settings)
    try:
        result = create_topics(settings)
    except Exception as error:  # noqa: BLE001 - kafka-python raises several unrelated types for an unreachable broker
        raise click.ClickException(
            f"cannot create topics on the broker at {settings.kafka_servers}: {error}. "
            f"Is it running? Start the embedded one with `closedloop up`, or set CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS."
        ) from None
    if result.created:
        log.info("topics created", extra={"count": len(result.created)})

    count = processes if processes is not None else settings.worker_processes
    if count > 1:
        from deploy import worker_processes

        if count > settings.partitions:
            log.warning(
                "more worker processes than partitions: some will idle",
                extra={"processes": count, "partitions": settings.partitions},
            )
        raise SystemExit(worker_processes.run(count, settings.worker_web_port, loglevel))

    try:
        from stream_jobs.runtime.app import create_app

        app = create_app(settings)
    except (OSError, ValueError) as error:
        raise click.ClickException(f"cannot start the worker: {error}") from None

    import faust

    log.info(
        "worker starting",
        extra={
            "app_id": settings.app_id,
            "kafka_servers": settings.kafka_servers,
            "counters": f"{settings.web_url}/counters/",
        },
    )
    # mode (Faust's service library) sets logging up again when the worker starts: with this setup's dict, so
    # Faust's lines share its format instead of mode's coloured ones on stdout.
    worker = faust.Worker(app, loglevel=logs.level, logfile=None, quiet=True, logging_config=logging_config(logs))
    # No terminal spinner: at warning level and above it would set the root logger to DEBUG to be told of every
    # line, so every library's debug line would be built and dropped.
    worker.spinner = None
    worker.execute_from_commandline()


def _use_uvloop() -> None:
    """Run Faust on uvloop (installed with uvicorn[standard]) when it is there: it cuts the framework's own cost
    per event by about 40% (bench/worker.md). Must run before any event loop exists."""
    try:
        import mode.loop

        mode.loop.use("uvloop")
    except ImportError:  # uvloop is optional (not built for every platform): asyncio's default loop works too
        pass
