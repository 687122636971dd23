"""The log setup of the commands that run or start long-lived processes (``schemas.logs``): read once here."""

from __future__ import annotations

import os
from typing import Any

import click

from schemas.logs import FORMAT_ENV, LEVEL_ENV, LogSettingError, LogSettings, configure_logging

LOG_ENV = (LEVEL_ENV, FORMAT_ENV)


class LogSettingProblem(click.ClickException):
    exit_code = 2  # as a bad option or a bad CLOSEDLOOP_* setting elsewhere


def log_settings(level: str | None = None, level_source: str = "--log-level") -> LogSettings:
    """The settings from ``CLOSEDLOOP_LOG_LEVEL`` / ``CLOSEDLOOP_LOG_FORMAT``; ``level`` (a command's option) wins.
    A bad value is a readable error, not a traceback."""
    try:
        return LogSettings.from_env(os.environ, level=level, level_source=level_source)
    except LogSettingError as error:
        raise LogSettingProblem(str(error)) from None


def setup_logging(
    level: str | None = None, level_source: str = "--log-level", quiet_default: bool = False
) -> LogSettings:
    """Configure this process's logging; returns the settings, for the libraries that apply it again
    (``schemas.logs.logging_config``). ``quiet_default``: commands that print their own progress (up, down, status,
    demo) log only warnings unless ``CLOSEDLOOP_LOG_LEVEL`` asks for more, so the Kafka client's INFO lines do not
    bury it."""
    if quiet_default and not level and not os.environ.get(LEVEL_ENV):
        level, level_source = "warning", "the default"
    settings = log_settings(level, level_source)
    configure_logging(settings)
    return settings


def log_environment() -> dict[str, Any]:
    """The log settings of this process's environment, to hand to children started with an environment of their
    own (the demo's collector, worker and sink)."""
    return {name: os.environ[name] for name in LOG_ENV if os.environ.get(name)}
