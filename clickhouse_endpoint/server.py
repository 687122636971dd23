"""Embedded ClickHouse: ClickHouse's HTTP interface served from one chDB data directory.

chDB allows one process per data directory, so this process owns it and every other process (the
sinks, the CLI, curl, any ClickHouse tool) talks to it over HTTP as to a ClickHouse server::

    python -m clickhouse_endpoint.server --path .closedloop/clickhouse --host 127.0.0.1 --port 8123

A threaded HTTP/1.1 server: each connection has its own thread and chDB runs queries in parallel
without the GIL, so a slow query never holds up ``/ping`` or other clients. Request parsing, body
codecs and chDB sessions live in ``clickhouse_endpoint/``.

User ``default``, with the password in ``--password-file`` (made when missing; ``clickhouse_endpoint.access``).
Only requests addressed to a loopback name are answered, and statements that would reach files, hosts or
programs outside the data are refused (``clickhouse_endpoint.guard``). Results use UTC: the process sets
``TZ=UTC`` before chDB starts, and ``X-ClickHouse-Timezone`` always names the engine's ``timezone()``. It logs
like the pipeline's processes (``schemas.logs``: JSON lines unless stderr is a terminal, ``CLOSEDLOOP_LOG_LEVEL``,
``CLOSEDLOOP_LOG_FORMAT``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from clickhouse_endpoint import access, codec, guard, sqltext
from clickhouse_endpoint.engine import DataDirLocked, Engine
from clickhouse_endpoint.errors import ClickHouseError, codes
from clickhouse_endpoint.request import (
    RequestParams,
    Statement,
    credentials,
    read_multipart,
    read_statement,
    redact_request_line,
)
from schemas.logs import LEVEL_ENV, LogSettingError, LogSettings, configure_logging

log = logging.getLogger("closedloop.clickhouse_server")

PORT_ENV = "CLOSEDLOOP_EMBEDDED_CLICKHOUSE_PORT"
PID_HEADER = "X-Closedloop-Endpoint-Pid"  # on /ping: lets a starter tell its own child from another server
DEFAULT_SESSION_TIMEOUT = 60.0
MAX_SESSION_TIMEOUT = 3600.0
IDLE_KEEPALIVE_SECONDS = 300
EXIT_PORT_TAKEN, EXIT_DIR_LOCKED = 2, 3

_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "Native": "application/octet-stream",
    "RowBinary": "application/octet-stream",
    "RowBinaryWithNamesAndTypes": "application/octet-stream",
    "Arrow": "application/octet-stream",
    "ArrowStream": "application/octet-stream",
    "Parquet": "application/octet-stream",
}


class StartupError(RuntimeError):
    """The endpoint cannot start; the message says why and what to do. ``exit_code`` for the CLI."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class EndpointServer(ThreadingHTTPServer):
    """The HTTP server: owns the engine, counts requests in flight for a graceful stop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, engine: Engine, password: str, password_file: str = ""):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ClickHouseHandler)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.engine = engine
        self.password = password
        self.password_file = password_file  # named in the answer to a wrong password
        self.stopping = False
        self._in_flight = 0
        self._idle = threading.Condition()
        self._connections: set[socket.socket] = set()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a machine without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def request_started(self) -> None:
        with self._idle:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._idle:
            (self._connections.add if alive else self._connections.discard)(connection)

    def drain(self, timeout: float) -> bool:
        """Wait for requests in flight, then cut idle keep-alive connections. True when all finished."""
        with self._idle:
            finished = self._idle.wait_for(lambda: self._in_flight == 0, timeout)
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return finished


class ClickHouseHandler(BaseHTTPRequestHandler):
    """One HTTP connection; each request is parsed, run on chDB and answered as ClickHouse would."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = IDLE_KEEPALIVE_SECONDS
    server: EndpointServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if log.isEnabledFor(logging.DEBUG):  # once per request: build nothing when nobody reads it
            log.debug(
                "request",
                extra={
                    "client": self.address_string(),
                    "request": redact_request_line(self.requestline),
                    "status": code,
                    "bytes": size,
                },
            )

    def log_message(self, format, *args) -> None:
        log.debug(format, *args, extra={"client": self.address_string()})  # the base class's errors and timeouts

    def version_string(self) -> str:
        return "ClickHouse (chDB)"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        if not self._refused_origin():
            self._reply(204, b"", {"Allow": "GET, POST, HEAD, OPTIONS"})

    # -- request flow ----------------------------------------------------------------------------

    def _refused_origin(self) -> bool:
        """Answer 403 (and say so) when the request's Host or Origin is not this machine (``access``)."""
        reason = access.request_refusal(self.headers.get("Host"), self.headers.get("Origin"), self.server.server_port)
        if reason is None:
            return False
        self._drain_body()
        self._reply_error(ClickHouseError(codes.ACCESS_DENIED, reason, "ACCESS_DENIED"), "")
        return True

    def _serve(self) -> None:
        if self._refused_origin():
            return
        if self.server.stopping:
            self.close_connection = True
            self._reply(503, b"The ClickHouse endpoint is shutting down.\n", {"Connection": "close"})
            return
        url = urlsplit(self.path)
        if url.path in ("/ping", "/replicas_status") or (url.path == "/" and self.command != "POST" and not url.query):
            self._drain_body()
            self._reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8", PID_HEADER: str(os.getpid())})
            return
        if url.path != "/":
            self._drain_body()
            message = f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n"
            self._reply(404, message.encode(), {"Content-Type": "text/plain; charset=UTF-8"})
            return
        self.server.request_started()
        try:
            self._query(url.query)
        finally:
            self.server.request_finished()

    def _query(self, query_string: str) -> None:
        query_id = ""
        body = None
        try:
            params = RequestParams.parse(query_string)
            query_id = params.get("query_id") or self.headers.get("X-ClickHouse-Query-Id") or str(uuid.uuid4())
            self._authenticate(params)
            if params.flag("compress") or params.flag("decompress"):
                raise ClickHouseError(
                    codes.NOT_IMPLEMENTED,
                    "ClickHouse's native block compression (compress=1/decompress=1) is not supported by the "
                    "embedded endpoint: use HTTP compression (Accept-Encoding / Content-Encoding) instead",
                    "NOT_IMPLEMENTED",
                )
            if (
                self.command == "POST"
                and "Content-Length" not in self.headers
                and "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower()
            ):
                raise ClickHouseError(
                    codes.HTTP_LENGTH_REQUIRED,
                    "The Transfer-Encoding is not chunked and there is no Content-Length header for POST request",
                    "HTTP_LENGTH_REQUIRED",
                )
            body = codec.iter_request_body(self.rfile, self.headers)
            decoded = codec.decode_body(body, self.headers.get("Content-Encoding"))
            content_type = self.headers.get("Content-Type") or ""
            if content_type.startswith("multipart/form-data"):
                statement = Statement(sql=read_multipart(content_type, b"".join(decoded), params))
            else:
                statement = read_statement(params.get("query"), decoded)
            if not statement.sql.strip():
                raise ClickHouseError(codes.SYNTAX_ERROR, "Empty query", "SYNTAX_ERROR")
            self._execute(statement, params, query_id)
        except codec.BodyError as error:
            self.close_connection = True
            self._reply_error(error, query_id)
        except ClickHouseError as error:
            self._drain_body(body)
            self._reply_error(error, query_id)
        except Exception as exc:  # a bug here must still answer like a server, not drop the connection
            log.exception("unexpected error serving a query", extra={"query_id": query_id})
            self._drain_body(body)
            self._reply_error(ClickHouseError(codes.UNKNOWN_EXCEPTION, f"{type(exc).__name__}: {exc}"), query_id)

    def _authenticate(self, params: RequestParams) -> None:
        user, password = credentials(self.headers, params)
        if user != "default" or not access.password_matches(password, self.server.password):
            where = (
                f" The embedded endpoint's user is default, its password in {self.server.password_file}."
                if (self.server.password_file)
                else ""
            )
            raise ClickHouseError(
                codes.AUTHENTICATION_FAILED,
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name.{where}",
                "AUTHENTICATION_FAILED",
            )

    def _execute(self, statement: Statement, params: RequestParams, query_id: str) -> None:
        engine = self.server.engine
        session_id = params.get("session_id") or None
        try:
            timeout = float(params.get("session_timeout") or DEFAULT_SESSION_TIMEOUT)
        except ValueError:
            raise ClickHouseError(
                codes.BAD_ARGUMENTS, "session_timeout must be a number of seconds", "BAD_ARGUMENTS"
            ) from None
        if not 0 <= timeout <= MAX_SESSION_TIMEOUT:
            raise ClickHouseError(
                codes.BAD_ARGUMENTS, f"session_timeout must be between 0 and {MAX_SESSION_TIMEOUT:.0f}", "BAD_ARGUMENTS"
            )
        database = self.headers.get("X-ClickHouse-Database") or params.get("database") or None
        default_format = self.headers.get("X-ClickHouse-Format") or params.get("default_format") or "TabSeparated"
        engine.guard.check_settings(params.settings)
        with engine.lease(session_id, timeout, params.flag("session_check")) as (connection, session):
            if self.command != "POST" and engine.is_mutating(connection, statement.sql):
                raise ClickHouseError(
                    codes.READONLY,
                    "Cannot execute query in readonly mode. For queries over HTTP, method GET implies readonly. "
                    "You should use method POST for modifying queries",
                    "READONLY",
                )
            keyword = sqltext.first_keyword(statement.sql)
            if keyword == "SET":
                engine.reset_overrides(connection, session)  # the session's own SET, on its own values
            else:
                engine.prepare(connection, session, database, params.settings)
            insert_format = statement.insert.format if statement.insert is not None else None
            engine.check(connection, guard.statement_for_check(statement.sql, insert_format), params.binds)
            if statement.insert is not None:
                outcome = engine.insert(connection, statement.sql, statement.insert.format, statement.data or ())
                result_format = None
            else:
                outcome = engine.query(connection, statement.sql, default_format, params.binds)
                result_format = None
                if sqltext.produces_result(statement.sql):
                    result_format = sqltext.explicit_format(statement.sql) or default_format
            if session is not None and keyword == "USE":
                session.database = None  # the session chose its own database
        if session_id and params.flag("close_session"):
            engine.close_session(session_id)
        self._reply_result(outcome, result_format, query_id, params)

    # -- responses -------------------------------------------------------------------------------

    def _reply_result(self, outcome, result_format: str | None, query_id: str, params: RequestParams) -> None:
        timezone = params.settings.get("session_timezone") or self.server.engine.timezone
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": timezone,
            "X-ClickHouse-Summary": json.dumps(outcome.summary(), separators=(",", ":")),
            "Content-Type": _CONTENT_TYPES.get(result_format or "", "text/plain; charset=UTF-8"),
        }
        if result_format:
            headers["X-ClickHouse-Format"] = result_format
        body = outcome.body
        # chDB's default for enable_http_compression is 1 (system.settings tells clients so)
        if body and params.get("enable_http_compression", "1").strip().lower() in ("1", "true"):
            encoding = codec.choose_response_encoding(self.headers.get("Accept-Encoding"))
            if encoding:
                body = codec.encode_body(body, encoding)
                headers["Content-Encoding"] = encoding
        self._reply(200, body, headers)

    def _reply_error(self, error: ClickHouseError, query_id: str) -> None:
        engine = self.server.engine
        status = engine.status_by_code.get(error.code, 500)
        headers = {
            "X-ClickHouse-Exception-Code": str(error.code),
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Timezone": engine.timezone,
        }
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        if self.close_connection:
            headers["Connection"] = "close"
        self._reply(status, error.text(engine.version).encode("utf-8", "replace"), headers)

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        lines = [f"{self.protocol_version} {status} {self.responses.get(status, ('',))[0]}"]
        lines.append(f"Date: {self.date_time_string()}")
        lines.append("X-ClickHouse-Server-Display-Name: closedloop-chdb")
        for name, value in headers.items():
            lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            if "Connection" not in headers:
                lines.append("Connection: close")
        else:
            lines.append(f"Keep-Alive: timeout={IDLE_KEEPALIVE_SECONDS}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.log_request(status, len(body))
        try:
            if self.command == "HEAD" or len(body) > 65536:
                self.wfile.write(head)
                if self.command != "HEAD":
                    self.wfile.write(body)
            else:
                self.wfile.write(head + body)  # one segment for small answers
        except OSError:
            self.close_connection = True

    def _drain_body(self, body=None) -> None:
        """Read what is left of the request body so the connection stays usable and the client,
        still sending, reads the answer instead of a reset."""
        try:
            for _ in body if body is not None else codec.iter_request_body(self.rfile, self.headers):
                pass
        except (ClickHouseError, OSError, ValueError):
            self.close_connection = True


# -- running it --------------------------------------------------------------------------------


def _prefer_utc() -> None:
    # chDB fixes its server time zone when first imported; results and X-ClickHouse-Timezone must agree.
    if "chdb" not in sys.modules:
        os.environ["TZ"] = "UTC"
        time.tzset()


def create_server(
    path: str, host: str = "127.0.0.1", port: int = 8123, password: str = "", password_file: str = ""
) -> EndpointServer:
    """Bind ``host:port`` and open the chDB data directory; raise StartupError with a clear reason."""
    if not password:
        raise StartupError("the endpoint needs a password: without one anyone on this machine could use it")
    _prefer_utc()
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
            raise StartupError(
                f"port {port} on {host} is taken: stop the other process or set {PORT_ENV}", EXIT_PORT_TAKEN
            ) from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        probe.close()
    try:
        engine = Engine(path)
    except DataDirLocked as exc:
        raise StartupError(str(exc), EXIT_DIR_LOCKED) from None
    except Exception as exc:  # noqa: BLE001 - chDB raises plain RuntimeErrors and more; the start fails with the reason
        raise StartupError(f"cannot open the chDB data directory {path}: {exc}") from None
    try:
        return EndpointServer((host, port), engine, password, password_file)
    except OSError as exc:
        engine.close()
        raise StartupError(
            f"port {port} on {host} is taken: stop the other process or set {PORT_ENV} ({exc.strerror})",
            EXIT_PORT_TAKEN,
        ) from None


class EmbeddedClickHouse:
    """The endpoint running in this process, in a background thread: ``start()``, ``url``, ``stop()``."""

    def __init__(
        self, path: str, host: str = "127.0.0.1", port: int = 8123, password: str = "", password_file: str = ""
    ):
        self.server = create_server(path, host, port, password, password_file)
        bound_host, self.port = self.server.server_address[:2]
        self.host = bound_host if isinstance(bound_host, str) else bytes(bound_host).decode()
        self._thread = threading.Thread(target=self._run, name="clickhouse-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        reaper = threading.Thread(target=self._reap_sessions, name="clickhouse-sessions", daemon=True)
        reaper.start()
        self.server.serve_forever(poll_interval=0.25)

    def _reap_sessions(self) -> None:
        while not self.server.stopping:
            time.sleep(5)
            self.server.engine.expire_sessions()

    def start(self) -> "EmbeddedClickHouse":
        self._thread.start()
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace`` s), close chDB cleanly."""
        self.server.stopping = True
        self.server.shutdown()
        finished = self.server.drain(grace)
        if not finished:
            log.warning(
                "requests still running after the grace period; closing chDB anyway", extra={"grace_seconds": grace}
            )
        self.server.server_close()
        self.server.engine.close()


def serve(path: str, host: str = "127.0.0.1", port: int = 8123, password: str = "", password_file: str = "") -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly (requests finished, chDB closed)."""
    endpoint = EmbeddedClickHouse(path, host, port, password, password_file).start()
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    engine = endpoint.server.engine
    log.info(
        "ClickHouse endpoint serving",
        extra={
            "version": f"{engine.version} (chDB)",
            "path": str(engine.path),
            "url": endpoint.url,
            "timezone": engine.timezone,
        },
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        endpoint.stop()
        log.info("ClickHouse endpoint stopped; data directory closed", extra={"path": str(engine.path)})


# -- for the stack and the tests: run it as a child process ---------------------------------------


def start_server_process(
    path: str,
    port: int,
    host: str = "127.0.0.1",
    log_path: str | None = None,
    password_file: str | None = None,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.Popen:
    """Start ``python -m clickhouse_endpoint.server`` as a child process; pair with ``wait_until_ready``.

    Its output goes to ``log_path`` (appended; default ``<path>.log``). The returned Popen carries
    ``log_path`` and ``log_offset`` so ``wait_until_ready`` can quote the reason of an early exit. The password is
    in ``password_file`` (default ``<path>/password``, made by the endpoint when missing). ``preexec_fn`` runs in
    the child before exec (test fixtures tie the endpoint's life to theirs with it, so an aborted run leaks none).
    """
    path = os.path.abspath(path)
    log_path = os.path.abspath(log_path or f"{path.rstrip(os.sep)}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    command = [sys.executable, "-m", "clickhouse_endpoint.server", "--path", path, "--host", host, "--port", str(port)]
    if password_file:
        command += ["--password-file", os.path.abspath(password_file)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    with open(log_path, "ab") as log_file:
        offset = log_file.tell()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
    process.log_path = log_path  # type: ignore[attr-defined]
    process.log_offset = offset  # type: ignore[attr-defined]
    return process


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes via a proxy


def ping(host: str, port: int, timeout: float = 1.0, pid: int | None = None) -> bool:
    """True when ``GET /ping`` on host:port answers ``Ok.`` (from process ``pid``, when given)."""
    try:
        with _DIRECT.open(f"http://{host}:{port}/ping", timeout=timeout) as response:
            if pid is not None and response.headers.get(PID_HEADER) != str(pid):
                return False
            return response.status == 200 and response.read() == b"Ok.\n"
    except (OSError, urllib.error.URLError):
        return False


def wait_until_ready(process: subprocess.Popen, port: int, host: str = "127.0.0.1", timeout: float = 60.0) -> None:
    """Wait until the child answers /ping; raise StartupError with its own message if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartupError(_log_tail(process) or f"the ClickHouse endpoint exited with code {process.returncode}")
        if ping(host, port, timeout=0.5, pid=process.pid):
            return
        time.sleep(0.05)
    raise StartupError(f"the ClickHouse endpoint did not answer on {host}:{port} within {timeout:.0f} s")


def _log_tail(process: subprocess.Popen) -> str:
    try:
        with open(process.log_path, "rb") as log_file:  # type: ignore[attr-defined]
            log_file.seek(process.log_offset)  # type: ignore[attr-defined]
            text = log_file.read().decode(errors="replace")
    except (AttributeError, OSError):
        return ""
    marker = text.rfind("error: ")  # main() prints the reason last, after any engine noise
    return (text[marker + len("error: ") :] if marker >= 0 else text[-4000:]).strip()


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: ``python -m clickhouse_endpoint.server --path DIR [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(description="Serve ClickHouse's HTTP interface on a chDB data directory.")
    parser.add_argument("--path", required=True, help="chDB data directory (created if missing)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV, "8123")))
    parser.add_argument(
        "--password-file",
        default=None,
        help=f"file with the password of user default (default PATH/{access.PASSWORD_FILE}); "
        "a random one is written there when it is missing",
    )
    parser.add_argument(
        "--log-level", default=None, help=f"debug, info, warning or error (default from {LEVEL_ENV}, else info)"
    )
    args = parser.parse_args(argv)
    try:
        configure_logging(LogSettings.from_env(os.environ, level=args.log_level))
    except LogSettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = os.path.abspath(args.path)
    password_file = os.path.abspath(args.password_file or os.path.join(path, access.PASSWORD_FILE))
    try:
        password = access.load_password(password_file)
    except OSError as exc:
        print(f"error: cannot read or create the password file {password_file}: {exc}", file=sys.stderr)
        return 1
    try:
        # chDB's default database reads a table name as a file relative to the working directory: make that the
        # engine's own directory, never the directory it was started from.
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chdir(path)
        serve(path, args.host, args.port, password, password_file)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
