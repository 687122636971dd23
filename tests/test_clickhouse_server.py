"""The embedded ClickHouse endpoint (clickhouse_endpoint/server.py) against the clients that use it.

Integration tests (marker ``clickhouse``) start the real server as a child process on a free port with
a temporary chDB data directory and talk to it with clickhouse-connect, curl and plain HTTP, with the password the
endpoint made in its data directory (``PASSWORDS``; ``http`` and ``curl`` send it unless told otherwise). The SQL
scanning tests at the end need no service.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal

import pytest
from harness import free_port, unique, wait_for

from clickhouse_endpoint import sqltext
from clickhouse_endpoint.request import redact_request_line
from clickhouse_endpoint.server import StartupError, ping, start_server_process, wait_until_ready
from deploy.daemons import term_when_parent_dies

HOST = "127.0.0.1"
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PASSWORDS: dict[int, str] = {}  # port -> the password of the endpoint listening there


def started(data_dir, port: int, timeout: float = 90) -> subprocess.Popen:
    """An endpoint on ``data_dir`` and ``port``, ready, its password (``<data_dir>/password``) in ``PASSWORDS``."""
    process = start_server_process(str(data_dir), port, preexec_fn=term_when_parent_dies)
    try:
        wait_until_ready(process, port, timeout=timeout)
    except BaseException:
        stop(process)
        raise
    PASSWORDS[port] = (data_dir / "password").read_text().strip()
    return process


def connect(port: int, **kwargs):
    """A clickhouse-connect client of the endpoint on ``port``, with its password."""
    import clickhouse_connect

    return clickhouse_connect.get_client(host=HOST, port=port, username="default", password=PASSWORDS[port], **kwargs)


def stop(process: subprocess.Popen) -> int:
    """SIGTERM the server and wait for it; returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise
    return process.returncode


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """(host, port, data_dir, process) of a server started for this module."""
    data_dir = tmp_path_factory.mktemp("chdb") / "data"
    port = free_port()
    process = started(data_dir, port)
    try:
        yield HOST, port, data_dir, process
    finally:
        assert stop(process) == 0


@pytest.fixture(scope="module")
def client(endpoint):
    _, port, _, _ = endpoint
    return connect(port)


@pytest.fixture
def database(client):
    name = unique("t")
    client.command(f"CREATE DATABASE {name}")
    yield name
    client.command(f"DROP DATABASE IF EXISTS {name}")


def basic_auth(password: str, user: str = "default") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def http(
    port: int, path: str = "/", body: bytes | None = None, headers: dict | None = None, method=None, auth: bool = True
):
    """(status, headers, body) of one plain HTTP request (with the endpoint's password unless ``auth`` is False or
    ``headers`` carry credentials); errors are returned, not raised."""
    headers = dict(headers or {})
    if auth and port in PASSWORDS and not {"Authorization", "X-ClickHouse-User", "X-ClickHouse-Key"} & set(headers):
        headers.update(basic_auth(PASSWORDS[port]))
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body, headers=headers, method=method)
    try:
        with DIRECT.open(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def curl(*args: str) -> str:
    """curl's output; with the password of the endpoint whose port the URL names."""
    port = next(int(m.group(1)) for arg in args if (m := re.match(rf"http://{HOST}:(\d+)/", arg)))
    auth = ["-u", f"default:{PASSWORDS[port]}"] if port in PASSWORDS else []
    return subprocess.run(
        ["curl", "-s", "--noproxy", "*", *auth, *args], capture_output=True, check=True, timeout=60
    ).stdout.decode()


def q(text: str) -> str:
    return urllib.parse.quote(text)


# -- HTTP basics -----------------------------------------------------------------------------------


@pytest.mark.clickhouse
def test_ping_and_root_answer_ok(endpoint):
    _, port, _, _ = endpoint
    assert http(port, "/ping")[::2] == (200, b"Ok.\n")
    assert http(port, "/")[::2] == (200, b"Ok.\n")
    status, _, body = http(port, "/nowhere")
    assert status == 404
    assert body.startswith(b"There is no handle /nowhere")


@pytest.mark.clickhouse
def test_curl_select_in_url_and_in_body(endpoint):
    _, port, _, _ = endpoint
    url = f"http://{HOST}:{port}/"
    assert curl(f"{url}?query={q('SELECT version()')}") == "26.9.2.1\n"
    assert curl(f"{url}?query={q('SELECT 1 + 1, timezone()')}") == "2\tUTC\n"
    assert curl("--data-binary", "SELECT number * 2 FROM numbers(3)", url) == "0\n2\n4\n"
    assert curl("--data-binary", "SELECT 7 AS x FORMAT JSONEachRow", url) == '{"x":7}\n'
    assert curl(f"{url}?default_format=CSV", "--data-binary", "SELECT 'a', 3") == '"a",3\n'


@pytest.mark.clickhouse
def test_headers_of_a_result_set_and_of_a_statement(endpoint):
    _, port, _, _ = endpoint
    status, headers, body = http(port, f"/?query={q('SELECT 1 FORMAT JSONEachRow')}&query_id=qid-1")
    assert (status, body) == (200, b'{"1":1}\n')
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert headers["X-ClickHouse-Timezone"] == "UTC"
    assert headers["X-ClickHouse-Query-Id"] == "qid-1"
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"] == "1"
    status, headers, body = http(port, "/", b"CREATE TEMPORARY TABLE x (a UInt8)")
    assert (status, body) == (200, b"")
    assert "X-ClickHouse-Format" not in headers


@pytest.mark.clickhouse
def test_errors_are_clickhouse_errors(endpoint):
    _, port, _, _ = endpoint
    status, headers, body = http(port, f"/?query={q('SELECT * FROM nowhere.nothing')}")
    assert status == 404
    assert headers["X-ClickHouse-Exception-Code"] in ("60", "81")
    assert body.startswith(f"Code: {headers['X-ClickHouse-Exception-Code']}. DB::Exception: ".encode())
    assert body.rstrip().endswith(b"(version 26.9.2.1)")
    status, headers, body = http(port, "/", b"SELEC 1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    assert body.startswith(b"Code: 62. DB::Exception: Syntax error")
    status, headers, body = http(port, f"/?query={q('CREATE TABLE t_get (a UInt8) ENGINE = Memory')}")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")
    assert b"method GET implies readonly" in body
    status, headers, _ = http(port, "/?query=SELECT%201", headers={"X-ClickHouse-User": "nobody"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    status, headers, _ = http(port, "/", b"SELECT 1", headers={"Content-Encoding": "snappy"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "89")


@pytest.mark.clickhouse
def test_error_codes_the_endpoint_raises_match_the_engine(client):
    from clickhouse_endpoint.errors import codes

    rows = client.query(
        "SELECT DISTINCT name, code FROM system.errors WHERE name IN {names:Array(String)}",
        parameters={"names": list(vars(codes))},
        settings={"system_events_show_zero_values": 1},
    ).result_rows
    assert dict(rows) == vars(codes)


# -- access: the password, loopback names, statements that reach outside ---------------------------


@pytest.mark.clickhouse
def test_every_query_needs_the_password_the_endpoint_keeps_in_its_data_directory(endpoint, client):
    _, port, data_dir, _ = endpoint
    password_file = data_dir / "password"
    assert password_file.stat().st_mode & 0o777 == 0o600 and len(PASSWORDS[port]) >= 24
    client.command("CREATE TABLE IF NOT EXISTS guarded (n UInt8) ENGINE = Memory")
    for headers in (
        {},
        basic_auth("wrong"),
        basic_auth(PASSWORDS[port], user="other"),
        {"X-ClickHouse-User": "default", "X-ClickHouse-Key": "wrong"},
    ):
        status, answer, body = http(port, "/", b"DROP TABLE guarded", headers=headers, auth=False)
        assert (status, answer["X-ClickHouse-Exception-Code"]) == (403, "516"), body
        assert body.startswith(b"Code: 516. DB::Exception: ") and b"(AUTHENTICATION_FAILED)" in body
    assert f"its password in {password_file}".encode() in body  # the answer says where the password is
    assert client.command("EXISTS TABLE guarded") == 1  # nothing ran
    # the three ways ClickHouse's HTTP interface takes credentials
    assert http(port, "/?query=SELECT%201", headers=basic_auth(PASSWORDS[port]))[::2] == (200, b"1\n")
    assert http(
        port, "/?query=SELECT%202", headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": PASSWORDS[port]}
    )[::2] == (200, b"2\n")
    assert http(port, f"/?user=default&password={q(PASSWORDS[port])}&query=SELECT%203", auth=False)[::2] == (
        200,
        b"3\n",
    )
    assert http(port, "/ping", auth=False)[::2] == (200, b"Ok.\n")  # health checks need none, as on a server
    client.command("DROP TABLE guarded")


@pytest.mark.clickhouse
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8123", "127.0.0.1.nip.io", "10.0.0.1", "[::2]:1"])
def test_a_request_not_addressed_to_a_loopback_name_is_refused(endpoint, host):
    _, port, _, _ = endpoint
    for path, body in (("/?query=SELECT%201", None), ("/", b"SELECT 1"), ("/ping", None)):
        status, headers, answer = http(port, path, body, headers={"Host": host})
        assert (status, headers.get("X-ClickHouse-Exception-Code")) == (403, "497"), answer
        assert b"DNS rebinding" in answer and f"Host: {host}".encode() in answer


@pytest.mark.clickhouse
def test_a_cross_site_request_is_refused_and_loopback_names_are_answered(endpoint, client):
    _, port, _, _ = endpoint
    client.command("CREATE TABLE IF NOT EXISTS kept_from_pages (n UInt8) ENGINE = Memory")
    # What a page on another site can send without a preflight: a text/plain POST, here even with the password.
    status, headers, answer = http(
        port,
        "/",
        b"DROP TABLE kept_from_pages",
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
    )
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "497")
    assert b"Origin: https://evil.example" in answer
    assert http(port, "/", b"SELECT 1", headers={"Origin": "null"})[0] == 403
    assert http(port, "/", method="OPTIONS", headers={"Origin": "https://evil.example"})[0] == 403
    assert client.command("EXISTS TABLE kept_from_pages") == 1
    for host in (f"localhost:{port}", "LOCALHOST", f"127.0.0.1:{port}", "127.1.2.3", f"[::1]:{port}"):
        assert http(port, "/", b"SELECT 1", headers={"Host": host})[::2] == (200, b"1\n"), host
    assert http(port, "/", b"SELECT 1", headers={"Origin": f"http://localhost:{port}"})[::2] == (200, b"1\n")
    client.command("DROP TABLE kept_from_pages")


REACHING_OUTSIDE = [
    "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    "SELECT file('/etc/hostname')",
    "SELECT * FROM /* hidden? */ FILE('/etc/hostname', 'LineAsString')",
    "SELECT * FROM `fi\\x6ce`('/etc/hostname', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/', 'CSV', 'a String')",
    "SELECT * FROM s3('http://127.0.0.1:9/bucket/key.csv')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:5432', 'db', 't', 'u', 'p')",
    "SELECT * FROM sqlite('/etc/hostname', 't')",
    "SELECT * FROM executable('ls', 'LineAsString', 'a String')",
    "SELECT * FROM hdfs('hdfs://127.0.0.1:9000/x', 'CSV', 'a String')",
    "SELECT * FROM azureBlobStorage('http://127.0.0.1:9', 'c', 'b', 'CSV')",
    "SELECT * FROM default.`/etc/hostname`",
    "SELECT * FROM '/etc/hostname'",
    "SELECT 1 INTO OUTFILE 'outfile.csv'",
    "SELECT $$ ' $$ INTO OUTFILE 'outfile.csv'",
    "INSERT INTO FUNCTION file('written.csv', 'CSV') SELECT 1",
    "CREATE TABLE reading (line String) ENGINE = File(LineAsString, '/etc/hostname')",
    "CREATE TABLE fetching (a String) ENGINE = URL('http://127.0.0.1:9/', CSV)",
    "CREATE TABLE consuming (a String) ENGINE = Kafka SETTINGS kafka_broker_list = '127.0.0.1:9', "
    "kafka_topic_list = 't', kafka_group_name = 'g', kafka_format = 'CSV'",
    "CREATE TABLE spread (a String) ENGINE = Distributed('c', 'db', 't')",
    "CREATE TABLE elsewhere (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = '/tmp/')",
    "CREATE TABLE copy AS file('/etc/hostname', 'LineAsString')",
    "CREATE DATABASE etc ENGINE = Filesystem('/etc')",
    "CREATE DICTIONARY lines (line String) PRIMARY KEY line SOURCE(FILE(path '/etc/hostname' format 'LineAsString')) "
    "LAYOUT(FLAT()) LIFETIME(0)",
    "BACKUP DATABASE default TO File('backup')",
    "RESTORE DATABASE default FROM File('backup')",
    "SELECT * FROM numbers(1) FORMAT Protobuf SETTINGS format_schema = '/etc/hostname:M'",
    "SET dialect = 'prql'",
]


@pytest.mark.clickhouse
@pytest.mark.parametrize("statement", REACHING_OUTSIDE)
def test_a_statement_that_reaches_outside_the_data_is_refused(endpoint, statement):
    _, port, data_dir, _ = endpoint
    status, headers, body = http(port, "/", statement.encode())
    assert (status, headers.get("X-ClickHouse-Exception-Code")) == (403, "497"), body
    assert body.startswith(b"Code: 497. DB::Exception: The embedded ClickHouse endpoint does not run ")
    assert body.rstrip().endswith(b"(ACCESS_DENIED) (version 26.9.2.1)")
    assert not (data_dir / "outfile.csv").exists() and not (data_dir / "written.csv").exists()


@pytest.mark.clickhouse
def test_ways_out_through_parameters_settings_and_streamed_inserts_are_refused(endpoint):
    _, port, _, _ = endpoint
    by_name = f"/?database=system&query={q('SELECT count() FROM {t:Identifier}')}&param_t="
    assert http(port, by_name + "one")[::2] == (200, b"1\n")
    assert http(port, by_name + q("/etc/hostname"))[0] == 403  # the same statement again: its binds are checked
    streamed = q("INSERT INTO FUNCTION file('streamed.csv', 'CSV', 'a String') FORMAT CSV")
    assert http(port, f"/?query={streamed}", b"x\n")[0] == 403
    assert http(port, "/", b"INSERT INTO FUNCTION file('streamed.csv', 'CSV', 'a String') FORMAT CSV\nx\n")[0] == 403
    for setting in ("format_schema=%2Fetc%2Fhostname%3AM", "dialect=kusto", "output_format_schema=%2Ftmp%2Fx"):
        status, headers, _ = http(port, f"/?{setting}", b"SELECT 1")
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "497"), setting
    status, headers, body = http(port, "/", b"SELECT 1; SELECT * FROM numbers(1)")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62") and b"Multi-statements" in body


@pytest.mark.clickhouse
def test_a_bare_table_name_never_reads_a_file_of_the_directory_the_endpoint_was_started_in(tmp_path, monkeypatch):
    # chDB's default database reads a table name it does not know as a file relative to the working directory
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.csv").write_text("kept\n")
    port = free_port()
    process = started(tmp_path / "data", port)
    try:
        status, headers, body = http(port, "/", b"SELECT * FROM default.`secret.csv`")
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "60") and b"kept" not in body
    finally:
        assert stop(process) == 0


@pytest.mark.clickhouse
def test_ordinary_statements_still_run(client, database):
    table = f"{database}.pages"
    client.command(
        f"CREATE TABLE {table} (url String COMMENT 'a page', file String, at DateTime) "
        "ENGINE = ReplacingMergeTree ORDER BY url SETTINGS index_granularity = 1024 COMMENT 'pages'"
    )
    client.command(f"INSERT INTO {table} VALUES ('/pricing', '/etc/hostname', '2024-03-01 00:00:00')")
    client.raw_insert(table, ["url", "file", "at"], insert_block=b'"/a","b","2024-03-02 00:00:00"\n', fmt="CSV")
    client.command(f"INSERT INTO {table} SELECT concat('/p', toString(number)), '', now() FROM numbers(3)")
    client.command(
        f"CREATE MATERIALIZED VIEW {database}.per_day ENGINE = SummingMergeTree ORDER BY day "
        f"AS SELECT toDate(at) AS day, count() AS pages FROM {table} GROUP BY day"
    )
    client.command(
        f"CREATE VIEW {database}.by_prefix AS SELECT count() AS n FROM {table} WHERE startsWith(url, {{prefix:String}})"
    )
    assert client.command(f"SELECT n FROM {database}.by_prefix(prefix = '/p')") == 4  # /pricing, /p0, /p1, /p2
    rows = client.query(
        f"SELECT url, file FROM {table} FINAL WHERE url IN {{urls:Array(String)}} ORDER BY url",
        parameters={"urls": ["/pricing", "/a"]},
    ).result_rows
    assert rows == [("/a", "b"), ("/pricing", "/etc/hostname")]  # paths as values are data, not a way out
    assert client.command("SELECT count() FROM format(CSV, 'a String', '1\n2')") == 2
    assert client.command(f"SELECT count() FROM merge('{database}', '^pages$')") == 5


# -- clickhouse-connect ------------------------------------------------------------------------------

UTC = datetime.timezone.utc
BASE = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
ROWS = [
    (
        i,
        BASE + datetime.timedelta(milliseconds=i),
        Decimal(i) / 100,
        f"channel_{i % 3}",
        None if i % 2 else f"note {i}",
        [f"tag{j}" for j in range(i % 4)],
    )
    for i in range(6000)
]
COLUMNS = ["id", "at", "amount", "channel", "note", "tags"]


def create_touches(client, database: str) -> str:
    table = f"{database}.touches"
    client.command(
        f"""CREATE TABLE {table} (
            id UInt32, at DateTime64(3, 'UTC'), amount Decimal(18, 2), channel LowCardinality(String),
            note Nullable(String), tags Array(String)
        ) ENGINE = MergeTree ORDER BY id"""
    )
    return table


@pytest.mark.clickhouse
def test_client_connects_and_reads_server_info(client):
    assert client.server_version == "26.9.2.1"
    assert client.command("SELECT timezone()") == "UTC"


@pytest.mark.clickhouse
def test_insert_compressed_native_and_read_back(client, database):
    table = create_touches(client, database)
    summary = client.insert(table, ROWS, column_names=COLUMNS)  # default: lz4, Native, chunked
    assert summary.written_rows == 6000
    assert client.command(f"SELECT count() FROM {table}") == 6000
    totals = client.query(
        f"SELECT sum(amount), countIf(note IS NOT NULL), sum(length(tags)), toString(max(at)), uniqExact(channel) "
        f"FROM {table}"
    ).result_rows
    assert totals == [(Decimal("179970.00"), 3000, 9000, "2024-03-01 12:00:05.999", 3)]
    first = client.query(f"SELECT * FROM {table} ORDER BY id LIMIT 2").result_rows
    assert first == [
        (0, datetime.datetime(2024, 3, 1, 12, 0), Decimal("0.00"), "channel_0", "note 0", []),
        (1, datetime.datetime(2024, 3, 1, 12, 0, 0, 1000), Decimal("0.01"), "channel_1", None, ["tag0"]),
    ]


@pytest.mark.clickhouse
def test_insert_that_fails_while_writing_is_refused_and_stores_nothing(client, database):
    """chDB's streaming insert swallows errors raised while rows are written (it reported rows that break a CHECK
    constraint as written and stored none, and raised nothing at TOO_MANY_PARTS); the endpoint's inserts give the
    client ClickHouse's error, as a server does, in text and binary formats."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    table = f"{database}.checked"
    client.command(
        f"CREATE TABLE {table} (id UInt32, channel String, CONSTRAINT known CHECK channel != 'bad') "
        "ENGINE = MergeTree ORDER BY id"
    )
    with pytest.raises(DatabaseError) as json_refused:
        client.raw_insert(table, ["id", "channel"], insert_block=b'[[1, 2], ["ok", "bad"]]', fmt="JSONCompactColumns")
    with pytest.raises(DatabaseError) as native_refused:
        client.insert(table, [(3, "ok"), (4, "bad")], column_names=["id", "channel"])  # Native, lz4
    for refused in (json_refused, native_refused):
        assert "Code: 469" in str(refused.value) and "known" in str(refused.value)
    assert client.command(f"SELECT count() FROM {table}") == 0

    summary = client.raw_insert(table, ["id", "channel"], insert_block=b'1,"ok"\n2,"007"\n', fmt="CSV")
    assert summary.written_rows == 2
    client.raw_insert(table, ["channel", "id"], insert_block=b'{"channel": "0.10", "id": 3}\n', fmt="JSONEachRow")
    # The column types come from the table, never from the data ("007" and "0.10" stay strings as sent).
    assert client.query(f"SELECT id, channel FROM {table} ORDER BY id").result_rows == [
        (1, "ok"),
        (2, "007"),
        (3, "0.10"),
    ]

    crowded = f"{database}.crowded"
    client.command(
        f"CREATE TABLE {crowded} (id UInt32) ENGINE = MergeTree ORDER BY id "
        "SETTINGS parts_to_throw_insert = 1, parts_to_delay_insert = 1"
    )
    client.command(f"SYSTEM STOP MERGES {crowded}")
    client.raw_insert(crowded, ["id"], insert_block=b"1\n", fmt="CSV")
    with pytest.raises(DatabaseError) as too_many:
        client.raw_insert(crowded, ["id"], insert_block=b"2\n", fmt="CSV")
    assert "Code: 252" in str(too_many.value)
    assert client.command(f"SELECT count() FROM {crowded}") == 1


@pytest.mark.clickhouse
def test_query_df_and_arrow(client, database):
    table = create_touches(client, database)
    client.insert(table, ROWS[:10], column_names=COLUMNS)
    frame = client.query_df(f"SELECT id, channel, amount FROM {table} WHERE id < 4 ORDER BY id")
    assert list(frame.columns) == ["id", "channel", "amount"]
    assert frame["id"].tolist() == [0, 1, 2, 3]
    assert frame["channel"].tolist() == ["channel_0", "channel_1", "channel_2", "channel_0"]
    assert [Decimal(str(v)) for v in frame["amount"]] == [
        Decimal("0"),
        Decimal("0.01"),
        Decimal("0.02"),
        Decimal("0.03"),
    ]
    arrow = client.query_arrow(f"SELECT id, channel FROM {table} WHERE id < 3 ORDER BY id")
    assert arrow.column("id").to_pylist() == [0, 1, 2]
    assert [str(v) for v in arrow.column("channel").to_pylist()] == ["channel_0", "channel_1", "channel_2"]


@pytest.mark.clickhouse
def test_parameterized_queries(client, database):
    table = create_touches(client, database)
    client.insert(table, ROWS[:100], column_names=COLUMNS)
    server_side = client.query(
        f"SELECT count() FROM {table} WHERE channel = {{ch:String}} AND id < {{limit:UInt32}}",
        parameters={"ch": "channel_1", "limit": 10},
    )
    assert server_side.result_rows == [(3,)]
    client_side = client.query(
        f"SELECT count() FROM {table} WHERE channel = %(ch)s AND id IN %(ids)s",
        parameters={"ch": "channel_2", "ids": [2, 5, 6, 8]},
    )
    assert client_side.result_rows == [(3,)]
    quoted = client.query(
        "SELECT {s:String}, {a:Array(String)}", parameters={"s": "it's\ta \\ test", "a": ["x'y", "z"]}
    )
    assert quoted.result_rows == [("it's\ta \\ test", ["x'y", "z"])]
    big = "x" * 200_000  # large binds switch clickhouse-connect to multipart/form-data
    assert client.query("SELECT length({big:String})", parameters={"big": big}).result_rows == [(200_000,)]


@pytest.mark.clickhouse
def test_database_errors_carry_the_clickhouse_code(client):
    from clickhouse_connect.driver.exceptions import DatabaseError

    with pytest.raises(DatabaseError) as missing:
        client.query("SELECT * FROM no_such_db.no_such_table")
    assert missing.value.code in (60, 81)
    with pytest.raises(DatabaseError) as syntax:
        client.command("CREATE TABLE (")
    assert syntax.value.code == 62
    assert "Code: 62. DB::Exception: Syntax error" in str(syntax.value)


@pytest.mark.clickhouse
def test_session_settings_and_per_request_settings(endpoint):
    _, port, _, _ = endpoint
    session = connect(port)
    other = connect(port)
    session.command("SET max_threads = 3")
    assert session.command("SELECT getSetting('max_threads')") == 3
    assert other.command("SELECT getSetting('max_threads')") != 3
    per_request = session.query("SELECT getSetting('max_threads')", settings={"max_threads": 2})
    assert per_request.result_rows == [(2,)]
    assert session.command("SELECT getSetting('max_threads')") == 3  # the URL setting did not stick
    session.command("CREATE TEMPORARY TABLE scratch (a UInt8)")
    session.command("INSERT INTO scratch VALUES (1), (2)")
    assert session.command("SELECT sum(a) FROM scratch") == 3


@pytest.mark.clickhouse
def test_database_parameter_selects_the_database(endpoint, client, database):
    _, port, _, _ = endpoint
    table = create_touches(client, database)
    client.insert(table, ROWS[:5], column_names=COLUMNS)
    scoped = connect(port, database=database)
    assert scoped.command("SELECT currentDatabase()") == database
    scoped.insert("touches", ROWS[5:8], column_names=COLUMNS)
    assert scoped.command("SELECT count() FROM touches") == 8
    _, _, body = http(port, f"/?database={database}&query={q('SELECT count() FROM touches')}")
    assert body == b"8\n"


# -- inserts over plain HTTP ---------------------------------------------------------------------


@pytest.mark.clickhouse
def test_insert_formats_over_plain_http(endpoint, client, database):
    _, port, _, _ = endpoint
    client.command(f"CREATE TABLE {database}.visits (id UInt32, page String) ENGINE = MergeTree ORDER BY id")
    json_rows = b'{"id": 1, "page": "/a"}\n{"id": 2, "page": "/b"}\n'
    insert = q(f"INSERT INTO {database}.visits FORMAT JSONEachRow")
    assert http(port, f"/?query={insert}", json_rows)[0] == 200
    csv_body = f'INSERT INTO {database}.visits FORMAT CSV\n3,"/c"\n4,"/d"\n'.encode()
    assert http(port, "/", csv_body)[0] == 200
    tsv_gzip = gzip.compress(f"INSERT INTO {database}.visits FORMAT TSV\n5\t/e\n".encode())
    assert http(port, "/", tsv_gzip, {"Content-Encoding": "gzip"})[0] == 200
    assert http(port, "/", f"INSERT INTO {database}.visits VALUES (6, '/f')".encode())[0] == 200
    assert (
        curl(
            f"http://{HOST}:{port}/?query={q(f'INSERT INTO {database}.visits FORMAT JSONEachRow')}",
            "--data-binary",
            '{"id": 7, "page": "/g"}',
        )
        == ""
    )
    rows = client.query(f"SELECT id, page FROM {database}.visits ORDER BY id").result_rows
    assert rows == [(1, "/a"), (2, "/b"), (3, "/c"), (4, "/d"), (5, "/e"), (6, "/f"), (7, "/g")]
    status, headers, body = http(port, f"/?query={insert}", b'{"id": "not a number"}\n')
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] in ("27", "117", "6", "72")
    assert body.startswith(f"Code: {headers['X-ClickHouse-Exception-Code']}. DB::Exception: ".encode())
    assert client.command(f"SELECT count() FROM {database}.visits") == 7


@pytest.mark.clickhouse
def test_lz4_frames_split_across_chunks(endpoint, client, database):
    import lz4.frame

    _, port, _, _ = endpoint
    client.command(f"CREATE TABLE {database}.nums (n UInt64) ENGINE = MergeTree ORDER BY n")
    frames = lz4.frame.compress(f"INSERT INTO {database}.nums FORMAT CSV\n".encode() + b"1\n2\n") + lz4.frame.compress(
        b"3\n4\n5\n"
    )

    def chunks():
        for start in range(0, len(frames), 7):  # chunk edges fall inside frames and headers
            yield frames[start : start + 7]

    request = urllib.request.Request(
        f"http://{HOST}:{port}/", data=chunks(), headers={"Content-Encoding": "lz4", **basic_auth(PASSWORDS[port])}
    )
    with DIRECT.open(request, timeout=60) as response:
        assert response.status == 200
    assert client.command(f"SELECT sum(n) FROM {database}.nums") == 15


# -- concurrency ---------------------------------------------------------------------------------


@pytest.mark.clickhouse
def test_concurrent_inserts_and_queries(endpoint, client, database):
    _, port, _, _ = endpoint
    table = create_touches(client, database)
    errors: list[BaseException] = []

    def writer(worker: int) -> None:
        try:
            own = connect(port)
            for batch in range(5):
                rows = [(worker * 10_000 + batch * 1000 + i, *ROWS[i][1:]) for i in range(1000)]
                own.insert(table, rows, column_names=COLUMNS)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def reader() -> None:
        try:
            own = connect(port)
            for _ in range(20):
                assert own.command(f"SELECT count() FROM {table}") % 1000 == 0
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)] + [
        threading.Thread(target=reader) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert client.query(f"SELECT count(), uniqExact(id) FROM {table}").result_rows == [(20_000, 20_000)]


def run_in_session(port: int, session: str, sql: bytes, tries: int = 500) -> None:
    """Run ``sql`` in ``session``, again while the session is busy (code 373): the poller of
    ``wait_until_session_busy`` may hold the session for a moment when this request arrives."""
    for _ in range(tries):
        status, headers, _ = http(port, session, sql)
        if (status, headers.get("X-ClickHouse-Exception-Code")) != (500, "373"):
            return
        time.sleep(0.01)


def wait_until_session_busy(port: int, session: str, timeout: float) -> bytes:
    """The body of the first answer that says ``session`` is running another request (ClickHouse's code 373),
    which is how a test knows a slow query has reached the engine without sleeping a guessed time."""

    def locked() -> bytes | None:
        status, headers, body = http(port, session, b"SELECT 1")
        return body if (status, headers.get("X-ClickHouse-Exception-Code")) == (500, "373") else None

    return wait_for(locked, timeout, f"session {session} never answered 'locked by a concurrent client'", 0.02)


@pytest.mark.clickhouse
def test_slow_query_does_not_block_ping(endpoint):
    _, port, _, _ = endpoint
    session = f"/?session_id={unique('s')}"
    slow = threading.Thread(target=run_in_session, args=(port, session, b"SELECT sleep(2)"))
    slow.start()
    try:
        wait_until_session_busy(port, session, timeout=10)  # the slow query has reached the engine
        started = time.monotonic()
        assert ping(HOST, port, timeout=1.5)
        assert time.monotonic() - started < 0.5
    finally:
        slow.join(timeout=30)


# -- lifecycle -----------------------------------------------------------------------------------


@pytest.mark.clickhouse
def test_port_taken_is_reported(endpoint, tmp_path):
    _, port, _, _ = endpoint
    process = start_server_process(str(tmp_path / "other"), port, preexec_fn=term_when_parent_dies)
    try:
        with pytest.raises(StartupError) as failure:
            wait_until_ready(process, port, timeout=60)
    finally:
        stop(process)
    assert (
        f"port {port} on 127.0.0.1 is taken: stop the other process or set CLOSEDLOOP_EMBEDDED_CLICKHOUSE_PORT"
        in str(failure.value)
    )
    assert process.returncode == 2


@pytest.mark.clickhouse
def test_restart_keeps_data_and_second_server_on_the_directory_fails(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    first = started(data_dir, port)
    try:
        writer = connect(port)
        writer.command("CREATE TABLE kept (n UInt32) ENGINE = MergeTree ORDER BY n")
        writer.insert("kept", [(i,) for i in range(1234)], column_names=["n"])

        second_port = free_port()
        second = start_server_process(str(data_dir), second_port, preexec_fn=term_when_parent_dies)
        try:
            with pytest.raises(StartupError) as failure:
                wait_until_ready(second, second_port, timeout=90)
        finally:
            stop(second)
        message = str(failure.value)
        assert f"ClickHouse data directory {data_dir} is locked by process {first.pid}" in message
        assert "Stop that process (closedloop down) or use another data directory." in message
        assert second.returncode == 3
    finally:
        assert stop(first) == 0
    assert not ping(HOST, port, timeout=0.5)

    again = started(data_dir, port)  # the same password: it stays in the data directory
    try:
        reader = connect(port)
        assert reader.query("SELECT count(), sum(n) FROM kept").result_rows == [(1234, sum(range(1234)))]
    finally:
        assert stop(again) == 0


# -- SQL scanning (no service) ---------------------------------------------------------------------


def test_split_insert_finds_the_data():
    text = "INSERT INTO db.t (a, `format`) SETTINGS async_insert = 0 FORMAT Native\n\x09rest"
    head = sqltext.split_insert(text, complete=True)
    assert head == sqltext.InsertHead(
        "INSERT INTO db.t (a, `format`) SETTINGS async_insert = 0", "Native", text.index("\x09")
    )
    assert sqltext.split_insert("INSERT INTO t VALUES (1)", complete=True) == sqltext.NOT_STREAMABLE
    assert sqltext.split_insert("INSERT INTO t SELECT 1", complete=True) == sqltext.NOT_STREAMABLE
    assert sqltext.split_insert("INSERT INTO t FORM", complete=False) == sqltext.NEED_MORE
    assert sqltext.split_insert("INSERT INTO t FORMAT CSV", complete=False) == sqltext.NEED_MORE
    assert sqltext.split_insert("INSERT INTO t FORMAT CSV 1,2", complete=True) == sqltext.InsertHead(
        "INSERT INTO t", "CSV", len("INSERT INTO t FORMAT CSV ")
    )
    quoted = "INSERT INTO FUNCTION file('x FORMAT y', 'CSV') FORMAT TSV\n1"
    assert sqltext.split_insert(quoted, complete=True).format == "TSV"


def test_request_lines_are_logged_without_the_password():
    line = "POST /?database=d&password=s3cret%26x&query=SELECT+1 HTTP/1.1"
    assert redact_request_line(line) == "POST /?database=d&password=***&query=SELECT+1 HTTP/1.1"
    assert redact_request_line("GET /?PASSWORD=a HTTP/1.1") == "GET /?PASSWORD=*** HTTP/1.1"
    assert redact_request_line("GET /?user_password=a HTTP/1.1") == "GET /?user_password=a HTTP/1.1"


def test_output_format_and_result_detection():
    assert sqltext.explicit_format("SELECT 1\n FORMAT Native") == "Native"
    assert sqltext.explicit_format("SELECT 1 FORMAT JSON SETTINGS max_threads = 1") == "JSON"
    assert sqltext.explicit_format("SELECT format FROM t") is None
    assert sqltext.explicit_format("SELECT 'FORMAT CSV'") is None
    assert sqltext.explicit_format("SELECT 1 -- FORMAT CSV") is None
    assert sqltext.produces_result("  /* c */ select 1")
    assert sqltext.produces_result("(SELECT 1) UNION ALL (SELECT 2)")
    assert sqltext.produces_result("SHOW TABLES")
    assert not sqltext.produces_result("CREATE TABLE t (a UInt8) ENGINE = Memory")
    assert not sqltext.produces_result("SET max_threads = 1")
    assert not sqltext.produces_result("INSERT INTO t VALUES (1)")


@pytest.mark.clickhouse
def test_url_settings_reach_streamed_inserts(endpoint, client, database):
    _, port, _, _ = endpoint
    client.command(f"CREATE TABLE {database}.pages (id UInt32) ENGINE = MergeTree ORDER BY id")
    insert = q(f"INSERT INTO {database}.pages FORMAT JSONEachRow")
    body = b'{"id": 1, "extra": "x"}\n'
    status, headers, _ = http(port, f"/?query={insert}&input_format_skip_unknown_fields=0", body)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "117")
    status, _, _ = http(port, f"/?query={insert}&input_format_skip_unknown_fields=1", body)
    assert status == 200
    status, headers, _ = http(port, f"/?query={q('SELECT 1')}&no_such_setting=1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "115")
    assert client.command(f"SELECT count() FROM {database}.pages") == 1


@pytest.mark.clickhouse
def test_a_session_runs_one_request_at_a_time(endpoint):
    _, port, _, _ = endpoint
    session = f"/?session_id={unique('s')}"
    slow = threading.Thread(target=run_in_session, args=(port, session, b"SELECT sleep(1.5)"))
    slow.start()
    try:
        body = wait_until_session_busy(port, session, timeout=10)
    finally:
        slow.join(timeout=30)
    assert b"is locked by a concurrent client" in body
    assert http(port, session, b"SELECT 1")[::2] == (200, b"1\n")


@pytest.mark.clickhouse
def test_datetime_columns_come_back_as_utc(client, database):
    client.command(
        f"CREATE TABLE {database}.times (id UInt8, plain DateTime('UTC'), precise DateTime64(6, 'UTC')) "
        "ENGINE = MergeTree ORDER BY id"
    )
    instant = datetime.datetime(2024, 10, 27, 1, 30, 15, 123456, tzinfo=UTC)
    client.insert(f"{database}.times", [(1, instant, instant)], column_names=["id", "plain", "precise"])
    rows = client.query(f"SELECT plain, precise, toUnixTimestamp(plain) FROM {database}.times").result_rows
    assert rows == [
        (datetime.datetime(2024, 10, 27, 1, 30, 15), datetime.datetime(2024, 10, 27, 1, 30, 15, 123456), 1729992615)
    ]
