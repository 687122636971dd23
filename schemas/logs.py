"""The shape of a log line, and the one logging setup every long-lived process uses.

A line is JSON when stderr is not a terminal (a file, a pipe, a log shipper) or ``CLOSEDLOOP_LOG_FORMAT=json``;
on a terminal, or with ``CLOSEDLOOP_LOG_FORMAT=text``, it is a readable line. ``CLOSEDLOOP_LOG_LEVEL`` (default
``info``) sets the level. JSON keys: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
``process`` (name), ``pid``, then one key per structured field, then ``exception`` / ``stack`` when there is one.

Structured fields are what callers pass with ``extra={...}``: every attribute a ``LogRecord`` does not have by
itself is a field, shown as a JSON key or as ``key=value`` after the readable message. The message stays a fixed
phrase; ids and counts go in fields, and a line about one record carries its ``event_id`` or ``conversion_id``::

    log.warning("dead letter", extra={"event_id": envelope.event_id, "topic": topic, "offset": offset})

Why here: the line's shape is a contract between every process (collector, stream worker, sink, ClickHouse
endpoint) and whatever reads their logs, and ``schemas`` is the one package all of them may import
(``clickhouse_endpoint`` may import ``schemas`` for this alone). Standard library only. The settings are read by
the entry points (``LogSettings.from_env``), like every other setting; library code only logs.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

LEVEL_ENV = "CLOSEDLOOP_LOG_LEVEL"
FORMAT_ENV = "CLOSEDLOOP_LOG_FORMAT"
LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("json", "text")

# The line's own keys; a field of the same name is kept as "extra.<name>" instead of overwriting them.
LINE_KEYS = frozenset({"time", "level", "logger", "message", "process", "pid", "exception", "stack"})
# Attributes every LogRecord has (Python 3.12 adds taskName), and uvicorn's copy of the message with terminal
# colours: not fields.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_NOT_FIELDS = _RECORD_ATTRIBUTES | {"color_message"}


class LogSettingError(ValueError):
    """A log setting with a bad value; the message names the setting, the value and the accepted ones."""


def parse_level(value: str, where: str = LEVEL_ENV) -> str:
    """``value`` as a ``logging`` level name (``"INFO"``); ``where`` names its source in the error."""
    name = value.strip().lower()
    if name not in LEVELS:
        raise LogSettingError(
            f"{where}={value!r} is not a log level: use one of {', '.join(LEVELS)} (unset, it is info)"
        )
    return name.upper()


def parse_format(value: str, where: str = FORMAT_ENV) -> str:
    name = value.strip().lower()
    if name not in FORMATS:
        raise LogSettingError(
            f"{where}={value!r} is not a log format: use json or text (unset, it is json unless stderr is a terminal)"
        )
    return name


@dataclass(frozen=True)
class LogSettings:
    """Level (a ``logging`` level name) and format (``json`` or ``text``) of one process's log."""

    level: str = "INFO"
    format: str = "json"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        stream: IO[str] | None = None,
        level: str | None = None,
        level_source: str = "--log-level",
    ) -> LogSettings:
        """Read ``CLOSEDLOOP_LOG_LEVEL`` and ``CLOSEDLOOP_LOG_FORMAT``; ``level`` (a command's option, named by
        ``level_source`` in errors) wins over the variable. An unset format is text when ``stream`` (default
        stderr) is a terminal. Raises LogSettingError."""
        if level:
            parsed_level = parse_level(level, level_source)
        else:
            parsed_level = parse_level(environ.get(LEVEL_ENV) or "info")
        chosen = environ.get(FORMAT_ENV, "").strip()
        if chosen:
            parsed_format = parse_format(chosen)
        else:
            parsed_format = "text" if _is_terminal(sys.stderr if stream is None else stream) else "json"
        return cls(level=parsed_level, format=parsed_format)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by a proxy, or closed
        return False


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: what the caller passed with ``extra=``."""
    return {key: value for key, value in vars(record).items() if key not in _NOT_FIELDS}


def _utc_time(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _jsonable(value: Any) -> Any:
    """``value`` if it makes valid JSON (unknown types inside it as str()), else str(value)."""
    try:
        json.dumps(value, default=str, allow_nan=False)
    except (TypeError, ValueError, RecursionError):  # non-string keys, NaN, a cycle
        return str(value)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
            "pid": record.process,
        }
        for key, value in fields_of(record).items():
            line[f"extra.{key}" if key in LINE_KEYS else key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(line, default=str, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return json.dumps({key: _jsonable(value) for key, value in line.items()}, default=str)


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(_jsonable(value), default=str, separators=(",", ":"))
    else:
        text = str(value)
    if not text or text.startswith('"') or any(char.isspace() or char == "=" for char in text):
        return json.dumps(text)  # quoted, so the pairs still split on spaces
    return text


class TextFormatter(logging.Formatter):
    """``time LEVEL logger[pid]: message key=value ...``, then the traceback, for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_utc_time(record)} {record.levelname:<7} {record.name}[{record.process}]: {record.getMessage()}"
        fields = fields_of(record)
        if fields:
            text += " " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


class RepeatedLines(logging.Filter):
    """Lets one line per ``window_s`` through for each warning or error template of a library's logger, and gives
    the next line it lets through a ``repeated`` field: how many were left out since.

    Why: while a broker is down, aiokafka and kafka-python log a line per reconnect attempt per node (a stream
    worker wrote about 2,700 in one outage), which buries the product's own lines. The product's loggers
    (``closedloop.*``) and lines below warning are never held back. The count of the last window of an outage is
    not reported when no line of the template follows it."""

    OWN = "closedloop"

    def __init__(self, window_s: float = 30.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # template -> [window start, left out]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.name == self.OWN or record.name.startswith(self.OWN + "."):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.window_s:
                seen[1] += 1
                return False
            if len(self._seen) >= 1024:  # templates are few; a library formatting its own messages is not
                self._seen.clear()
            self._seen[key] = [now, 0]
        if seen is not None and seen[1]:
            record.repeated = int(seen[1])
        return True


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def logging_config(settings: LogSettings) -> dict[str, Any]:
    """The setup as a ``logging.config.dictConfig`` dict: what uvicorn (``log_config``, applied again in each of
    its worker processes) and Faust (``logging_config``) take, so they log through the same handler."""
    formatter = JsonFormatter if settings.format == "json" else TextFormatter
    # uvicorn's own loggers come with handlers of their own: none here, so their records reach the root's.
    own_handlers = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"closedloop": {"()": _path(formatter)}},
        "filters": {"repeated": {"()": _path(RepeatedLines)}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "closedloop",
                "filters": ["repeated"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": settings.level, "handlers": ["stderr"]},
        "loggers": {name: dict(own_handlers) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def configure_logging(settings: LogSettings) -> dict[str, Any]:
    """Apply the setup to this process; returns its dictConfig dict for the libraries that apply it again."""
    config = logging_config(settings)
    logging.config.dictConfig(config)
    return config
