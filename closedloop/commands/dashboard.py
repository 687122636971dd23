"""``closedloop dashboard``: serve the web dashboard over the report SQL (docs/DASHBOARD.md).

Bound to 127.0.0.1:8080 by default (``CLOSEDLOOP_DASHBOARD_HOST``, ``_PORT``); any other address needs
``CLOSEDLOOP_DASHBOARD_TOKEN`` and is refused without it.
"""

from __future__ import annotations

import logging
from typing import Any

import click

log = logging.getLogger("closedloop.dashboard")


@click.command("dashboard")
@click.option("--host", default=None, help="Bind address (default from CLOSEDLOOP_DASHBOARD_HOST, else 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from CLOSEDLOOP_DASHBOARD_PORT, else 8080).")
@click.option(
    "--counters-url",
    default=None,
    help="The worker's web server for the live page (default: CLOSEDLOOP_DASHBOARD_COUNTERS_URL, else the worker's "
    "settings, http://127.0.0.1:6066).",
)
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level (default from CLOSEDLOOP_LOG_LEVEL, else info).",
)
def command(host: str | None, port: int | None, counters_url: str | None, log_level: str | None) -> None:
    """A web dashboard of the reports (overview, channels, funnel, paths, live counters) for marketers."""
    import uvicorn
    from pydantic import ValidationError

    from closedloop.commands._logs_cli import setup_logging
    from dashboard.access import DashboardAccessError, check_binding
    from dashboard.app import create_app
    from dashboard.settings import DashboardSettings
    from schemas.logs import logging_config
    from stream_jobs.settings import WorkerSettings

    logs = setup_logging(log_level)
    overrides: dict[str, Any] = {
        k: v
        for k, v in {"dashboard_host": host, "dashboard_port": port, "dashboard_counters_url": counters_url}.items()
        if v is not None
    }
    try:
        settings = DashboardSettings(**overrides)
        if settings.dashboard_counters_url is None:
            settings = settings.model_copy(update={"dashboard_counters_url": WorkerSettings().web_url})
    except ValidationError as error:
        raise click.ClickException(
            f"invalid dashboard settings (CLOSEDLOOP_* environment variables): {error}"
        ) from None
    try:
        check_binding(settings.dashboard_host, settings.token)
    except DashboardAccessError as error:
        raise click.ClickException(str(error)) from None
    url = f"http://{settings.dashboard_host}:{settings.dashboard_port}/"
    log.info("dashboard starting", extra={"url": url, "token": settings.token is not None})
    click.echo(f"dashboard: {url}", err=True)
    uvicorn.run(
        create_app(settings),
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        log_config=logging_config(logs),
        log_level=logs.level.lower(),
        server_header=False,
        access_log=False,
    )
