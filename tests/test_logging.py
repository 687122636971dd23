"""The one log setup (schemas/logs.py): both line formats, the structured fields in each, exceptions, the two
settings and their errors, and real entry points whose stderr must be JSON lines.

The formatter tests log through a private logger into a string; the setup tests restore the root logger after
themselves, so pytest's own log capture is untouched.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from harness import free_port

from clickhouse_endpoint import access
from schemas.logs import (
    FORMAT_ENV,
    LEVEL_ENV,
    JsonFormatter,
    LogSettingError,
    LogSettings,
    RepeatedLines,
    TextFormatter,
    configure_logging,
    logging_config,
)

ROOT = Path(__file__).resolve().parent.parent
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def logged(formatter: logging.Formatter, emit) -> str:
    """What ``emit(logger)`` writes through ``formatter``, on a logger of its own."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test_logging.{id(out)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Unprintable:
    def __str__(self) -> str:
        return "<unprintable as JSON>"


# -- JSON lines ------------------------------------------------------------------------------------------------


def test_a_json_line_has_the_record_and_its_fields() -> None:
    text = logged(
        JsonFormatter(),
        lambda log: log.info(
            "conversion emitted", extra={"conversion_id": "c0ffee", "event_id": "ev-1", "rows": 3, "topics": ["a", "b"]}
        ),
    )
    [line] = json_lines(text)
    assert ISO_UTC.match(line["time"])
    assert line["level"] == "INFO"
    assert line["logger"].startswith("test_logging.")
    assert line["message"] == "conversion emitted"
    assert line["process"] == "MainProcess" and line["pid"] == os.getpid()
    assert (line["conversion_id"], line["event_id"], line["rows"], line["topics"]) == ("c0ffee", "ev-1", 3, ["a", "b"])
    assert "exception" not in line


def test_a_json_line_renders_what_json_cannot_hold_with_str() -> None:
    text = logged(
        JsonFormatter(),
        lambda log: log.warning(
            "odd values",
            extra={"amount": Decimal("12.50"), "thing": Unprintable(), "ratio": float("nan"), "by_pair": {(1, 2): "x"}},
        ),
    )
    [line] = json_lines(text)  # still one valid JSON object
    assert line["amount"] == "12.50"
    assert line["thing"] == "<unprintable as JSON>"
    assert line["ratio"] == "nan"
    assert line["by_pair"] == "{(1, 2): 'x'}"


def test_a_field_named_like_a_line_key_does_not_overwrite_it() -> None:
    [line] = json_lines(logged(JsonFormatter(), lambda log: log.info("m", extra={"level": "mine", "pid": 1})))
    assert line["level"] == "INFO" and line["pid"] == os.getpid()
    assert line["extra.level"] == "mine" and line["extra.pid"] == 1


def test_a_json_line_carries_the_exception_text() -> None:
    def emit(log: logging.Logger) -> None:
        try:
            raise ValueError("bad row 7")
        except ValueError:
            log.exception("insert failed", extra={"event_id": "ev-9"})

    [line] = json_lines(logged(JsonFormatter(), emit))
    assert line["level"] == "ERROR" and line["event_id"] == "ev-9"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: bad row 7")


def test_uvicorn_s_coloured_copy_of_the_message_is_not_a_field() -> None:
    [line] = json_lines(
        logged(
            JsonFormatter(),
            lambda log: log.info(
                "Started server process [%d]", 42, extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"}
            ),
        )
    )
    assert line["message"] == "Started server process [42]"
    assert "color_message" not in line


# -- readable lines --------------------------------------------------------------------------------------------


def test_a_readable_line_shows_the_fields_as_key_value_pairs() -> None:
    text = logged(
        TextFormatter(),
        lambda log: log.info(
            "batch written", extra={"rows": 120, "table": "touches", "reason": "a b=c", "empty": "", "ids": ["x", "y"]}
        ),
    )
    assert text.count("\n") == 1
    time_part, rest = text.rstrip("\n").split(" ", 1)
    assert ISO_UTC.match(time_part)
    assert re.match(rf"INFO +test_logging\.\d+\[{os.getpid()}\]: batch written ", rest)
    assert rest.endswith(' rows=120 table=touches reason="a b=c" empty="" ids=["x","y"]')


def test_a_readable_line_ends_with_the_traceback() -> None:
    def emit(log: logging.Logger) -> None:
        try:
            {}["conversion"]
        except KeyError:
            log.exception("failed", extra={"conversion_id": "c1"})

    first, *rest = logged(TextFormatter(), emit).rstrip("\n").splitlines()
    assert first.endswith(": failed conversion_id=c1")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "KeyError: 'conversion'"


def test_a_stream_record_s_ids_are_read_for_its_log_lines_without_validating_it() -> None:
    from stream_jobs.runtime.deadletters import record_ids

    envelope = {"event_id": "ev-1", "event": {"type": "page_view"}}
    assert record_ids(json.dumps(envelope).encode()) == {"event_id": "ev-1"}
    assert record_ids(b'{"kind": "crm", "lead_id": "L1", "event_id": "ev-2"}') == {"event_id": "ev-2", "lead_id": "L1"}
    assert record_ids(json.dumps({"kind": "event", "envelope": envelope}).encode()) == {"event_id": "ev-1"}
    assert record_ids(b"not json") == record_ids(b"[1]") == record_ids(None) == record_ids(b'{"event_id": 7}') == {}


# -- the settings ------------------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_unless_stderr_is_a_terminal_and_info_by_default() -> None:
    assert LogSettings.from_env({}, stream=io.StringIO()) == LogSettings(level="INFO", format="json")
    assert LogSettings.from_env({}, stream=Terminal()) == LogSettings(level="INFO", format="text")


def test_the_environment_chooses_format_and_level_and_an_option_wins() -> None:
    env = {FORMAT_ENV: "json", LEVEL_ENV: "Debug"}
    assert LogSettings.from_env(env, stream=Terminal()) == LogSettings(level="DEBUG", format="json")
    assert LogSettings.from_env({FORMAT_ENV: "TEXT"}, stream=io.StringIO()).format == "text"
    assert LogSettings.from_env(env, stream=io.StringIO(), level="warning").level == "WARNING"
    assert LogSettings.from_env({LEVEL_ENV: "", FORMAT_ENV: ""}, stream=io.StringIO()) == LogSettings()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {LEVEL_ENV: "loud"},
            (
                "CLOSEDLOOP_LOG_LEVEL='loud' is not a log level: use one of debug, info, warning, "
                "error, critical (unset, it is info)"
            ),
        ),
        (
            {FORMAT_ENV: "xml"},
            (
                "CLOSEDLOOP_LOG_FORMAT='xml' is not a log format: use json or text (unset, it is json "
                "unless stderr is a terminal)"
            ),
        ),
    ],
)
def test_a_bad_setting_says_which_what_and_how_to_fix_it(env: dict, expected: str) -> None:
    with pytest.raises(LogSettingError) as raised:
        LogSettings.from_env(env, stream=io.StringIO())
    assert str(raised.value) == expected


def test_a_bad_level_option_is_named_as_the_option() -> None:
    with pytest.raises(LogSettingError, match=r"^--log-level='verbose' is not a log level"):
        LogSettings.from_env({}, stream=io.StringIO(), level="verbose")


# -- the setup ---------------------------------------------------------------------------------------------------


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put back the root logger and uvicorn's loggers as they were (pytest's capture handler included)."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = [
        (
            logging.getLogger(n),
            logging.getLogger(n).handlers[:],
            logging.getLogger(n).level,
            logging.getLogger(n).propagate,
        )
        for n in names
    ]
    yield
    for logger, handlers, level, propagate in saved:
        for handler in logger.handlers[:]:
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_the_setup_sends_every_logger_uvicorn_s_too_through_one_handler(restored_logging, capsys) -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.StreamHandler(io.StringIO()))  # as uvicorn's own config leaves it
    configure_logging(LogSettings(level="WARNING", format="json"))
    logging.getLogger("sinks.writer").warning("dead-lettered", extra={"event_id": "ev-3"})
    logging.getLogger("sinks.writer").info("below the level")
    uvicorn_error.warning("Invalid HTTP request received.")
    lines = json_lines(capsys.readouterr().err)
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("sinks.writer", "dead-lettered"),
        ("uvicorn.error", "Invalid HTTP request received."),
    ]
    assert lines[0]["event_id"] == "ev-3"
    assert uvicorn_error.handlers == []


def test_the_setup_dict_names_the_formatter_of_the_format() -> None:
    json_config = logging_config(LogSettings(format="json"))
    text_config = logging_config(LogSettings(level="DEBUG", format="text"))
    assert json_config["formatters"]["closedloop"]["()"] == "schemas.logs.JsonFormatter"
    assert text_config["formatters"]["closedloop"]["()"] == "schemas.logs.TextFormatter"
    assert text_config["root"]["level"] == "DEBUG"
    json.dumps(json_config)  # plain data: it crosses to spawned processes (uvicorn workers, sink children)


# -- real entry points -------------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_LOG_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**env, **extra}


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "closedloop.cli", "sink"],
        [sys.executable, "-m", "clickhouse_endpoint.server", "--path", "unused"],
    ],
)
def test_a_bad_setting_stops_an_entry_point_with_the_message_and_no_traceback(argv: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        argv,
        env=_env(CLOSEDLOOP_LOG_LEVEL="chatty"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        "CLOSEDLOOP_LOG_LEVEL='chatty' is not a log level: use one of debug, info, warning, error, critical"
        in done.stderr
    )
    assert not (tmp_path / "unused").exists()


@pytest.mark.clickhouse
def test_the_clickhouse_endpoint_logs_json_lines_with_its_fields(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "clickhouse_endpoint.server", "--path", str(tmp_path / "chdb"), "--port", str(port)],
        env=_env(CLOSEDLOOP_LOG_LEVEL="debug"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                # the endpoint writes its password file before it listens (clickhouse_endpoint.access)
                password = (tmp_path / "chdb" / access.PASSWORD_FILE).read_text().strip()
                query = urllib.request.Request(
                    f"http://127.0.0.1:{port}/?query=SELECT%201&query_id=q-42",
                    headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": password},
                )
                with DIRECT.open(query, timeout=1) as answer:
                    assert answer.read() == b"1\n"
                break
            except OSError:
                assert time.monotonic() < deadline, "the endpoint did not answer"
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line JSON: stderr is a pipe
    for line in lines:
        assert {"time", "level", "logger", "message", "process", "pid"} <= set(line)
        assert line["pid"] == process.pid and ISO_UTC.match(line["time"])
    by_message = {line["message"]: line for line in lines}
    serving = by_message["ClickHouse endpoint serving"]
    assert serving["level"] == "INFO" and serving["url"] == f"http://127.0.0.1:{port}"
    assert serving["path"] == str(tmp_path / "chdb")
    request = by_message["request"]
    assert request["level"] == "DEBUG" and request["status"] == 200
    assert request["request"] == "GET /?query=SELECT%201&query_id=q-42 HTTP/1.1"
    assert by_message["ClickHouse endpoint stopped; data directory closed"]["path"] == str(tmp_path / "chdb")


def test_the_collector_and_its_uvicorn_workers_log_json_lines(tmp_path: Path) -> None:
    """uvicorn applies the setup again in each worker process: its lines and the app's are JSON there too."""
    port = free_port()
    env = _env(CLOSEDLOOP_DATA_DIR=str(tmp_path), CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    process = subprocess.Popen(
        [sys.executable, "-m", "closedloop.cli", "collector", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                with DIRECT.open(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the collector did not answer"
                time.sleep(0.1)
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    lines = [json.loads(line) for line in stderr.splitlines()]
    starting = next(line for line in lines if line["message"] == "collector starting")
    assert starting["logger"] == "closedloop.collector" and starting["workers"] == 2
    assert starting["url"] == f"http://127.0.0.1:{port}"
    started = [
        line
        for line in lines
        if line["logger"] == "uvicorn.error" and line["message"].startswith("Started server process")
    ]
    assert len({line["pid"] for line in started}) == 2  # one per worker process
    assert all(line["pid"] != process.pid for line in started)


def test_a_librarys_repeated_warnings_pass_once_a_window_and_the_next_line_counts_the_rest():
    now = [0.0]
    repeats = RepeatedLines(window_s=30.0, clock=lambda: now[0])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(repeats)
    loggers = {name: logging.getLogger(name) for name in ("aiokafka.conn", "closedloop.sink")}
    for logger in loggers.values():
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
    try:
        for second in range(70):  # a 70-second broker outage: two reconnect lines a second
            now[0] = float(second)
            for node in (1, 2):
                loggers["aiokafka.conn"].error("Unable connect to node with id %s: %s", node, "refused")
            loggers["aiokafka.conn"].info("Reconnecting to %s", node)
        loggers["closedloop.sink"].warning("Kafka unreachable; retrying", extra={"attempt": 1})
        loggers["closedloop.sink"].warning("Kafka unreachable; retrying", extra={"attempt": 2})
    finally:
        for logger in loggers.values():
            logger.removeHandler(handler)
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    errors = [(line["message"], line.get("repeated")) for line in lines if line["level"] == "ERROR"]
    # seconds 0, 30 and 60 open a window: 2 x 30 - 1 = 59 lines left out of each of the first two
    assert errors == [
        ("Unable connect to node with id 1: refused", None),
        ("Unable connect to node with id 1: refused", 59),
        ("Unable connect to node with id 1: refused", 59),
    ]
    assert sum(line["level"] == "INFO" for line in lines) == 70  # below warning: never held back
    assert [line["attempt"] for line in lines if line["logger"] == "closedloop.sink"] == [1, 2]  # the product's own


def test_the_setup_filters_repeated_library_lines_on_its_handler():
    config = logging_config(LogSettings())
    assert config["handlers"]["stderr"]["filters"] == ["repeated"]
    assert config["filters"]["repeated"]["()"] == "schemas.logs.RepeatedLines"
