"""``closedloop collector``: serve the collector (uvicorn with uvloop and httptools).

Host, port and workers come from settings (``CLOSEDLOOP_HOST``, ``CLOSEDLOOP_PORT``, ``CLOSEDLOOP_WORKERS``;
default 127.0.0.1:8000, one worker); the options override them. See docs/COLLECTOR.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import click

log = logging.getLogger("closedloop.collector")


@click.command("collector")
@click.option("--host", default=None, help="Bind address (default from CLOSEDLOOP_HOST, else 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from CLOSEDLOOP_PORT, else 8000).")
@click.option("--workers", type=int, default=None, help="Worker processes (default from CLOSEDLOOP_WORKERS, else 1).")
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level (default from CLOSEDLOOP_LOG_LEVEL, else info).",
)
def command(host: str | None, port: int | None, workers: int | None, log_level: str | None) -> None:
    """Receive website events and CRM webhooks and publish them to Kafka."""
    import uvicorn
    from pydantic import ValidationError

    from closedloop.commands._kafka_cli import refuse_unless_kafka_accepts
    from closedloop.commands._logs_cli import setup_logging
    from collector.settings import CollectorSettings
    from schemas.logs import logging_config

    logs = setup_logging(log_level)

    overrides: dict[str, Any] = {
        k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None
    }
    try:
        settings = CollectorSettings(**overrides)
    except ValidationError as error:
        raise click.ClickException(
            f"invalid collector settings (CLOSEDLOOP_* environment variables): {error}"
        ) from None
    _private_directories(settings)
    refuse_unless_kafka_accepts(settings)
    missing = [
        name
        for name, value in [
            ("CLOSEDLOOP_HUBSPOT_CLIENT_SECRET", settings.hubspot_client_secret),
            ("CLOSEDLOOP_PIPEDRIVE_USER", settings.pipedrive_user),
            ("CLOSEDLOOP_CRM_WEBHOOK_SECRET", settings.crm_webhook_secret),
        ]
        if value is None
    ]
    log.info(
        "collector starting",
        extra={
            "url": f"http://{settings.host}:{settings.port}",
            "workers": settings.workers,
            "kafka_servers": settings.kafka_servers,
            "topic_prefix": settings.topic_prefix,
            "spool": str(settings.spool_path),
        },
    )
    if missing:
        log.warning("webhooks disabled until set", extra={"missing": missing})
    # uvicorn applies log_config again in each worker process, so its loggers and the app's share the setup.
    common: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=logging_config(logs),
        log_level=logs.level.lower(),
        proxy_headers=settings.trust_forwarded_headers,
        server_header=False,
        access_log=False,
    )
    if settings.workers == 1:
        from collector.app import create_served_app

        uvicorn.run(create_served_app(settings), **common)
    else:
        # Workers are separate processes: each re-reads the same settings from the environment.
        for name, value in overrides.items():
            os.environ[f"CLOSEDLOOP_{name.upper()}"] = str(value)
        uvicorn.run("collector.app:app_from_env", factory=True, workers=settings.workers, **common)


def _private_directories(settings) -> None:
    """The data directory and the spool hold every raw event: owner only (0700), an open one tightened and said."""
    from schemas.settings import make_private_dir

    for directory in (settings.data_dir.expanduser(), settings.spool_path):
        loose = make_private_dir(directory)
        if loose is not None:
            click.echo(
                f"{directory}: was open to other users (mode {loose:04o}), now 0700 (owner only: it holds raw events)",
                err=True,
            )
