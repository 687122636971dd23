"""Who may reach the local stack, without services: the data directory's password and mode, the embedded
endpoint's loopback check and its statement guard (``clickhouse_endpoint.access``, ``clickhouse_endpoint.guard``,
``schemas.settings``). The endpoint itself is tested against real requests in ``test_clickhouse_server.py``."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from clickhouse_endpoint import access
from clickhouse_endpoint.errors import ClickHouseError
from clickhouse_endpoint.guard import Guard, format_error
from schemas.settings import PipelineSettings, ensure_local_password, make_private_dir, read_local_password


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the data directory and its password -------------------------------------------------------------------------


def test_the_data_directory_is_created_for_its_owner_only_and_an_open_one_is_tightened(tmp_path):
    fresh = tmp_path / "fresh" / "data"
    assert make_private_dir(fresh) is None and mode(fresh) == 0o700
    opened = tmp_path / "opened"
    opened.mkdir(mode=0o755)
    opened.chmod(0o755)
    assert make_private_dir(opened) == 0o755 and mode(opened) == 0o700
    assert make_private_dir(opened) is None  # nothing to say the second time


def test_the_local_password_is_made_once_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "data" / "local-password"
    first = ensure_local_password(path)
    assert len(first) >= 24 and mode(path) == 0o600 and mode(path.parent) == 0o700
    assert ensure_local_password(path) == first == read_local_password(path)
    path.chmod(0o644)
    assert ensure_local_password(path) == first and mode(path) == 0o600
    path.write_text("\n")  # emptied by hand: a new one replaces it
    assert ensure_local_password(path) not in ("", first)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert read_local_password(tmp_path / "missing") is None


def test_the_embedded_clickhouse_url_carries_the_data_directory_password(tmp_path):
    embedded = PipelineSettings(data_dir=tmp_path / "data", clickhouse_url=None, embedded_clickhouse_port=8124)
    assert urlsplit(embedded.clickhouse).password == ""  # before `closedloop up` made one: the endpoint says so
    password = ensure_local_password(embedded.local_password_file)
    url = urlsplit(embedded.clickhouse)
    assert (url.username, url.password, url.hostname, url.port, url.path) == (
        "default",
        password,
        "127.0.0.1",
        8124,
        "/closedloop",
    )
    real = PipelineSettings(data_dir=tmp_path / "data", clickhouse_url="http://me:secret@ch.example:8123/db")
    assert real.clickhouse == "http://me:secret@ch.example:8123/db"  # a real server: its own credentials


def test_the_endpoint_makes_its_own_password_file_when_run_by_hand(tmp_path):
    path = tmp_path / "chdb" / access.PASSWORD_FILE
    password = access.load_password(str(path))
    assert password and mode(path) == 0o600 and access.load_password(str(path)) == password
    assert access.password_matches(password, password)
    assert not access.password_matches("", "") and not access.password_matches("x", password)


# -- loopback names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST:8123",
        "127.0.0.1",
        "127.0.0.1:8123",
        "127.255.0.9:1",
        "[::1]",
        "[::1]:8123",
        "localhost.",
    ],
)
def test_loopback_names_are_answered(host):
    assert access.is_loopback_name(host)
    assert access.request_refusal(host, None, 8123) is None
    assert access.request_refusal(host, f"http://{host}", 8123) is None


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:8123",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "10.0.0.1",
        "0.0.0.0",
        "[::2]",
        "[::1",
        "::1",
        "127.0.0.1:x",
        "",
        "127.1",
    ],
)
def test_other_names_are_refused_with_the_reason(host):
    assert not access.is_loopback_name(host)
    reason = access.request_refusal(host, None, 8123)
    assert reason is not None and "DNS rebinding" in reason and "http://127.0.0.1:8123/" in reason


def test_a_request_from_a_web_page_of_another_site_is_refused():
    for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example", "file://"):
        reason = access.request_refusal("127.0.0.1:8123", origin, 8123)
        assert reason is not None and f"Origin: {origin}" in reason
    assert access.request_refusal(None, None, 8123) is None  # no Host: not a browser


# -- the statement guard ----------------------------------------------------------------------------------------

GUARD = Guard(
    table_functions=["file", "url", "s3", "remote", "numbers", "format", "merge", "values", "executable"],
    table_engines=["MergeTree", "ReplacingMergeTree", "Memory", "File", "URL", "Kafka", "MaterializedView"],
    database_engines=["Atomic", "Filesystem", "MySQL"],
)


def refused(canonical: str, binds: dict[str, str] | None = None) -> str:
    with pytest.raises(ClickHouseError) as denied:
        GUARD.check(canonical, binds or {})
    assert denied.value.code == 497 and denied.value.name == "ACCESS_DENIED"
    return denied.value.message


@pytest.mark.parametrize(
    "canonical, named",
    [
        ("SELECT * FROM file('/etc/hostname', 'LineAsString')", "file(...)"),
        ("SELECT * FROM FILE('/etc/hostname')", "FILE(...)"),
        ("SELECT file('/etc/hostname')", "file(...)"),
        ("SELECT * FROM `url`('http://x/', 'CSV')", "`url`(...)"),
        ("INSERT INTO FUNCTION s3('http://x/b/k') SELECT 1", "s3(...)"),
        ("CREATE TABLE t (`a` String) ENGINE = File(CSV)", "File"),
        ("CREATE TABLE t (`a` String) ENGINE = Kafka SETTINGS kafka_broker_list = 'x:9'", "engine Kafka"),
        ("CREATE DATABASE d ENGINE = Filesystem('/etc')", "Filesystem"),
        (
            "CREATE TABLE t (`a` UInt8) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = '/')",
            "disk",
        ),
        ("CREATE DICTIONARY d (`a` String) PRIMARY KEY a SOURCE(CLICKHOUSE(TABLE 't')) LAYOUT(FLAT())", "CLICKHOUSE"),
        ("SELECT 1 INTO OUTFILE 'x.csv'", "INTO OUTFILE"),
        ("INSERT INTO t FROM INFILE '/etc/hostname' FORMAT LineAsString", "FROM INFILE"),
        ("BACKUP TABLE t TO Disk('backups', 'x')", "BACKUP"),
        ("RESTORE TABLE t FROM File('x')", "RESTORE"),
        ("ATTACH TABLE t FROM '/var/data/t' (`a` UInt8) ENGINE = MergeTree ORDER BY a", "ATTACH"),
        ("SELECT * FROM default.`/etc/hostname`", "`/etc/hostname`"),
        ("SET format_schema = '/etc/hostname:M'", "format_schema"),
        ("SELECT 1 FORMAT Template SETTINGS format_template_row = '/etc/passwd'", "format_template_row"),
        ("SET dialect = 'kusto'", "dialect"),
    ],
)
def test_the_guard_names_what_it_refuses(canonical, named):
    message = refused(canonical)
    assert named in message and "docs/CLICKHOUSE.md" in message


def test_an_identifier_parameter_holding_a_path_is_refused():
    assert "param" in refused("SELECT * FROM {t:Identifier}", {"t": "/etc/hostname"}).lower()
    GUARD.check("SELECT * FROM {t:Identifier}", {"t": "touches"})
    GUARD.check("SELECT {t:String}", {"t": "/a/path/as/a/value"})


@pytest.mark.parametrize(
    "canonical",
    [
        "SELECT url, file, `format` FROM pages WHERE url = '/etc/hostname' AND file LIKE '%/%'",
        "SELECT * FROM numbers(10)",
        "SELECT count() FROM format(CSV, 'a String', '1')",
        "SELECT * FROM merge('db', '^t$')",
        "CREATE TABLE t (`a` String COMMENT 'see file(x)') ENGINE = ReplacingMergeTree ORDER BY a COMMENT 'tbl'",
        "CREATE MATERIALIZED VIEW mv TO t2 AS SELECT a FROM t",
        "CREATE TABLE t (`a` String) ENGINE = Memory",
        "INSERT INTO db.t (`a`, `b`) FORMAT JSONCompactColumns",
        "SET dialect = 'clickhouse'",
        "SELECT 1 SETTINGS max_threads = 1, do_not_merge_across_partitions_select_final = 1",
        "SELECT dialect FROM t WHERE dialect = 'kusto'",
        "SYSTEM STOP MERGES t",
        "CREATE DATABASE IF NOT EXISTS closedloop",
        "CREATE DICTIONARY d (`a` String) PRIMARY KEY a SOURCE(NULL()) LAYOUT(FLAT())",
    ],
)
def test_the_guard_lets_ordinary_statements_run(canonical):
    GUARD.check(canonical, {})


def test_url_settings_that_name_files_or_change_the_dialect_are_refused():
    GUARD.check_settings({"max_threads": "2", "dialect": "clickhouse", "date_time_input_format": "best_effort"})
    for settings in ({"format_schema": "/etc/hostname:M"}, {"output_format_schema": "/tmp/x"}, {"dialect": "prql"}):
        with pytest.raises(ClickHouseError):
            GUARD.check_settings(settings)


def test_a_statement_that_does_not_parse_keeps_the_engines_message_about_it():
    engine_error = ClickHouseError(
        62,
        "DB::Exception: Syntax error: failed at position 1 (SELEC): SELEC 1. "
        "Expected one of: ...: In scope SELECT formatQuerySingleLine('SELEC 1'). "
        "(SYNTAX_ERROR)",
    )
    cleaned = format_error(engine_error)
    assert cleaned.code == 62
    assert cleaned.message == (
        "DB::Exception: Syntax error: failed at position 1 (SELEC): SELEC 1. Expected one of: ... (SYNTAX_ERROR)"
    )


# -- the commands that create the data directory ----------------------------------------------------------------


def test_the_collector_command_makes_the_data_directory_and_the_spool_private(tmp_path, capsys):
    from closedloop.commands.collector import _private_directories
    from collector.settings import CollectorSettings

    data = tmp_path / "data"
    spool = tmp_path / "elsewhere" / "spool"
    spool.mkdir(parents=True)
    spool.chmod(0o755)
    _private_directories(CollectorSettings(data_dir=data, spool_dir=spool))
    assert mode(data) == 0o700 and mode(spool) == 0o700
    assert f"{spool}: was open to other users (mode 0755), now 0700" in capsys.readouterr().err


def test_the_demo_processes_find_the_embedded_password_in_the_data_directory_not_in_their_environment(tmp_path):
    from simulator.demo_harness import PipelinePorts, pipeline_environment

    embedded = PipelineSettings(data_dir=tmp_path / "data", clickhouse_url=None, embedded_clickhouse_port=8125)
    password = ensure_local_password(embedded.local_password_file)
    env = pipeline_environment(embedded, PipelinePorts())
    assert "CLOSEDLOOP_CLICKHOUSE_URL" not in env and env["CLOSEDLOOP_EMBEDDED_CLICKHOUSE_PORT"] == "8125"
    assert not any(password in value for value in env.values())
    assert (
        PipelineSettings(
            data_dir=Path(env["CLOSEDLOOP_DATA_DIR"]), embedded_clickhouse_port=8125, clickhouse_url=None
        ).clickhouse
        == embedded.clickhouse
    )
    real = PipelineSettings(data_dir=tmp_path / "data", clickhouse_url="http://u:p@ch.example:8123/db")
    assert pipeline_environment(real, PipelinePorts())["CLOSEDLOOP_CLICKHOUSE_URL"] == "http://u:p@ch.example:8123/db"
