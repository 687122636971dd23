"""Shared parts of the ClickHouse commands (migrate, sink, report, sql): settings, readable errors, output."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from deploy.settings import SettingsError, read_settings
from sinks.settings import SinkSettings

console = Console()
errors = Console(stderr=True)
FORMATS = ("table", "csv", "json")

# clickhouse-connect logs every failed request with a traceback; our commands report failures themselves.
logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)


def sink_settings(**overrides: object) -> SinkSettings:
    """The settings from ``CLOSEDLOOP_*`` variables, with the command's options on top."""
    return read_settings(SinkSettings, **{k: v for k, v in overrides.items() if v is not None})


@contextmanager
def clickhouse_errors_readable(settings_hint: str = "CLOSEDLOOP_CLICKHOUSE_URL") -> Iterator[None]:
    """Print configuration, connection and SQL problems as one message (no traceback), exit status 1 or 2."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    from sinks.client import ClickHouseUrlError
    from sinks.migrate import MigrationError
    from sinks.reports import ReportError

    try:
        yield
    except SettingsError as error:
        _fail(str(error), 2)
    except (ClickHouseUrlError, ReportError) as error:
        _fail(f"Error: {error}", 2)
    except OperationalError as error:
        reason = "connection refused" if "refused" in str(error) else _first_line(error, 160)
        _fail(
            f"Error: ClickHouse is not reachable ({reason}). Start it with `closedloop up`, or point "
            f"{settings_hint} at a running server.",
            1,
        )
    except (MigrationError, DatabaseError) as error:
        _fail(f"Error: {_first_line(error, 600)}", 1)


def print_text_or_table(rendered) -> None:
    """csv/json text goes to stdout as is (pipe-friendly); a rich table is printed by the console."""
    if isinstance(rendered, str):
        sys.stdout.write(rendered if rendered.endswith("\n") else rendered + "\n")
    elif console.is_terminal:
        console.print(rendered)
    else:
        # Piped or captured: no terminal width to respect, so never squeeze the columns.
        Console(width=240).print(rendered)


def _first_line(error: Exception, limit: int = 300) -> str:
    text = str(error).strip()
    return text[:limit]


def _fail(message: str, code: int) -> None:
    errors.print(message, style="red", highlight=False, markup=False)
    sys.exit(code)
