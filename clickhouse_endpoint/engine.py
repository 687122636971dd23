"""The chDB side of the endpoint: one engine per data directory, connections, HTTP sessions.

chDB hosts one embedded ClickHouse per process, bound to one path; any number of connections to it
may run queries in parallel (they release the GIL), and each connection keeps its own session state
(current database, SET settings). So: a root connection keeps the engine open for the server's
lifetime, a request without ``session_id`` gets a fresh connection (they are cheap), and an HTTP
session owns one connection, locked while a request uses it, exactly like ClickHouse's sessions.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from clickhouse_endpoint import guard
from clickhouse_endpoint.errors import ClickHouseError, codes, from_engine, status_table
from compat.chdb import raw_connection as chdb_raw

FORMATTED_KEPT = 1024  # statements whose formatted text the guard keeps (least recently used go first)
FORMATTED_MAX_CHARS = 16384  # longer statements (inline data) are formatted each time


class DataDirLocked(RuntimeError):
    """Another process has the chDB data directory open."""


def _setting_row(line: str) -> tuple[str, str]:
    name, value = line.split("\t", 1)
    return name, value


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def set_statement(settings: dict[str, str]) -> str:
    """``SET a = 'x', b = 'y'``; values are sent as strings, as HTTP URL parameters are."""
    for name in settings:
        if not _SETTING_NAME.match(name):
            raise ClickHouseError(codes.BAD_ARGUMENTS, f"Invalid setting name {name!r} in the URL", "BAD_ARGUMENTS")
    return "SET " + ", ".join(f"{name} = {_quote(value)}" for name, value in settings.items())


@dataclass
class Outcome:
    """What one statement produced, for the response body and the X-ClickHouse-Summary header."""

    body: bytes = b""
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    elapsed: float = 0.0

    def summary(self) -> dict[str, str]:
        return {
            "read_rows": str(self.read_rows),
            "read_bytes": str(self.read_bytes),
            "written_rows": str(self.written_rows),
            "written_bytes": str(self.written_bytes),
            "total_rows_to_read": str(self.read_rows),
            "result_rows": str(self.written_rows or self.read_rows),
            "result_bytes": str(len(self.body) or self.written_bytes),
            "elapsed_ns": str(int(self.elapsed * 1e9)),
        }


@dataclass
class Session:
    """An HTTP session (``session_id``): one chDB connection and the state ClickHouse keeps for it."""

    session_id: str
    connection: object
    timeout: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    database: str | None = None  # what the last USE we issued selected; None when unknown
    applied: dict[str, str] = field(default_factory=dict)  # URL settings in effect on the connection
    overridden: dict[str, str] = field(default_factory=dict)  # the session's own values they replaced


class Engine:
    """Owns the chDB engine for one data directory and hands out connections."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        import chdb  # imported late: importing chdb starts an engine and changes directory briefly

        self._chdb = chdb
        self._connect_lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._sessions_lock = threading.Lock()
        if self._status_file_locked():
            raise DataDirLocked(self._locked_message())
        try:
            self._root = chdb.connect(self.path)
        except Exception as exc:  # chDB raises RuntimeError; the lock reason may only reach stderr
            if "Cannot lock file" in str(exc) or self._status_file_locked():
                raise DataDirLocked(self._locked_message()) from None
            raise
        # INSERT bodies on their way in (see insert); inside the data directory, which this process now owns, so
        # a body left by a killed endpoint goes at the next start or with the data.
        self._bodies = os.path.join(self.path, "insert-bodies")
        shutil.rmtree(self._bodies, ignore_errors=True)
        os.makedirs(self._bodies)
        raw = chdb_raw(self._root)
        version, timezone = (
            raw.query("SELECT version(), timezone()", "TabSeparated", params={}).bytes().decode().split()
        )
        self.version = version
        self.timezone = timezone
        rows = raw.query(
            "SELECT DISTINCT name, code FROM system.errors SETTINGS system_events_show_zero_values = 1",
            "TabSeparated",
            params={},
        ).bytes()
        self.code_by_name = {
            name: int(code) for name, code in (line.split("\t") for line in rows.decode().splitlines())
        }
        self.status_by_code = status_table(self.code_by_name)
        catalogue = {
            table: raw.query(f"SELECT name FROM system.{table}", "TabSeparatedRaw", params={}).bytes().decode().split()
            for table in ("table_functions", "table_engines", "database_engines")
        }
        self.guard = guard.Guard(
            catalogue["table_functions"], catalogue["table_engines"], catalogue["database_engines"]
        )
        # Statements come again and again (the sink's INSERT heads, reports, health checks): their formatted text is
        # kept, so the guard costs an engine query only the first time.
        self._formatted: OrderedDict[str, str] = OrderedDict()
        self._formatted_lock = threading.Lock()

    def _status_file_locked(self) -> bool:
        """True when another process holds the flock ClickHouse keeps on ``<path>/status``."""
        try:
            fd = os.open(os.path.join(self.path, "status"), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing drops our probe lock, if we got it
        return False

    def _locked_message(self) -> str:
        owner = "another process"
        try:
            with open(os.path.join(self.path, "status"), encoding="utf-8") as status:
                pid = next((line.split(":", 1)[1].strip() for line in status if line.startswith("PID:")), None)
            if pid:
                owner = f"process {pid}"
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmd:
                        command = cmd.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    owner += f" ({command})"
                except OSError:
                    pass
        except OSError:
            pass
        return (
            f"ClickHouse data directory {self.path} is locked by {owner}: only one process may open it. "
            "Stop that process (closedloop down) or use another data directory."
        )

    # -- connections ---------------------------------------------------------------------------

    def _connect(self):
        with self._connect_lock:
            return self._chdb.connect(self.path)

    def _disconnect(self, connection) -> None:
        with self._connect_lock:
            connection.close()

    @contextmanager
    def lease(self, session_id: str | None, session_timeout: float, session_check: bool = False):
        """A connection for one request: the session's (locked) or a fresh one closed afterwards."""
        if not session_id:
            connection = self._connect()
            try:
                yield connection, None
            finally:
                self._disconnect(connection)
            return
        session = self._session(session_id, session_timeout, session_check)
        if not session.lock.acquire(blocking=False):
            raise ClickHouseError(
                codes.SESSION_IS_LOCKED,
                f"Session {session_id} is locked by a concurrent client",
                "SESSION_IS_LOCKED",
            )
        try:
            yield session.connection, session
        finally:
            session.last_used = time.monotonic()
            session.lock.release()

    def _session(self, session_id: str, timeout: float, check: bool) -> Session:
        self.expire_sessions()
        with self._sessions_lock:
            session = self._sessions.get(session_id)
            if session is None:
                if check:
                    raise ClickHouseError(372, f"Session {session_id} not found", "SESSION_NOT_FOUND")
                session = Session(session_id, self._connect(), timeout)
                self._sessions[session_id] = session
            session.timeout = timeout
            return session

    def close_session(self, session_id: str) -> None:
        """Forget a session (``close_session=1``) and close its connection."""
        with self._sessions_lock:
            session = self._sessions.pop(session_id, None)
        if session is not None:
            with session.lock:
                self._disconnect(session.connection)

    def expire_sessions(self) -> None:
        """Close sessions idle longer than their ``session_timeout``."""
        now = time.monotonic()
        expired = []
        with self._sessions_lock:
            for session_id, session in list(self._sessions.items()):
                if now - session.last_used > session.timeout and session.lock.acquire(blocking=False):
                    expired.append(self._sessions.pop(session_id))
        for session in expired:
            self._disconnect(session.connection)
            session.lock.release()

    # -- statements ----------------------------------------------------------------------------

    def prepare(self, connection, session: Session | None, database: str | None, settings: dict[str, str]) -> None:
        """Apply the request's database and URL settings to the connection it runs on.

        URL settings belong to the request, not to the session (ClickHouse copies the session
        context per query). A session remembers which of its values URL settings replaced
        (``overridden``) and puts them back when a later request stops sending them; clients send the
        same settings with every request, so the usual cost is nothing.
        """
        raw = chdb_raw(connection)
        if database and (session is None or session.database != database):
            self._run_raw(raw, f"USE {_quote_identifier(database)}")
            if session is not None:
                session.database = database
        if session is None:
            if settings:
                self._run_raw(raw, set_statement(settings))
            return
        restore = {name: value for name, value in session.overridden.items() if name not in settings}
        changed = {name: value for name, value in settings.items() if session.applied.get(name) != value}
        new_names = [name for name in changed if name not in session.overridden]
        if new_names:
            names = ", ".join(_quote(name) for name in new_names)
            rows = self._run_raw(raw, f"SELECT name, value FROM system.settings WHERE name IN ({names})").decode()
            session.overridden.update(_setting_row(line) for line in rows.splitlines())
        if restore or changed:
            self._run_raw(raw, set_statement({**restore, **changed}))
        for name in restore:
            session.overridden.pop(name, None)
            session.applied.pop(name, None)
        session.applied.update(changed)

    def reset_overrides(self, connection, session: Session | None) -> None:
        """Put back every session value URL settings replaced (before a session's own SET runs)."""
        if session is None or not session.overridden:
            return
        self._run_raw(chdb_raw(connection), set_statement(session.overridden))
        session.overridden.clear()
        session.applied.clear()

    def _run_raw(self, raw, sql: str) -> bytes:
        try:
            return raw.query(sql, "TabSeparated", params={}).bytes()
        except RuntimeError as exc:
            raise from_engine(exc) from None

    def check(self, connection, sql: str, binds: dict[str, str]) -> None:
        """Refuse (ACCESS_DENIED) a statement that would reach outside the engine's data (``guard``); run on the
        request's own connection, so it parses the statement with the settings it will run with."""
        with self._formatted_lock:
            canonical = self._formatted.get(sql)
            if canonical is not None:
                self._formatted.move_to_end(sql)
        if canonical is None:
            try:
                canonical = (
                    chdb_raw(connection)
                    .query(
                        "SELECT formatQuerySingleLine({statement:String})",
                        "TabSeparatedRaw",
                        params={"statement": _escaped(sql)},
                    )
                    .bytes()
                    .decode()
                    .rstrip("\n")
                )
            except RuntimeError as exc:  # the statement does not parse: the engine's own error, refused as it is
                raise guard.format_error(from_engine(exc)) from None
            if len(sql) <= FORMATTED_MAX_CHARS:
                with self._formatted_lock:
                    self._formatted[sql] = canonical
                    if len(self._formatted) > FORMATTED_KEPT:
                        self._formatted.popitem(last=False)
        self.guard.check(canonical, binds)  # every time: the binds of an Identifier parameter may change

    def is_mutating(self, connection, sql: str) -> bool:
        """True when chDB classifies the statement as changing data or schema (refused on GET)."""
        try:
            info = chdb_raw(connection).classify_query(sql)
        except Exception:  # noqa: BLE001 - a statement chDB cannot classify is treated as not read-only
            return False
        return int(info["query_class"]) == 1

    def query(self, connection, sql: str, default_format: str, params: dict[str, str]) -> Outcome:
        """Run one statement; its result comes back in ``default_format`` unless the SQL names one."""
        started = time.perf_counter()
        try:
            result = chdb_raw(connection).query(sql, default_format, params=params)
        except RuntimeError as exc:
            raise from_engine(exc) from None
        return Outcome(
            body=result.bytes(),
            read_rows=result.rows_read(),
            read_bytes=result.bytes_read(),
            written_rows=result.rows_written(),
            written_bytes=result.bytes_written(),
            elapsed=time.perf_counter() - started,
        )

    def insert(self, connection, statement: str, fmt: str, data: Iterable[bytes]) -> Outcome:
        """Write ``data`` (encoded in ``fmt``) into ``statement`` (an INSERT without FORMAT).

        Not through chDB's streaming insert (``send_insert``): it raises errors of parsing but swallows those
        raised while the rows are written (a CHECK constraint, TOO_MANY_PARTS, presumably a view that throws or a
        full disk), reporting the rows as written while it stores none. The body goes to a file instead and the
        INSERT reads it with ``file()``, taking the column types from the table as a streamed body would; that
        runs as a query, which raises like a server, and costs about what streaming does.
        """
        started = time.perf_counter()
        descriptor, path = tempfile.mkstemp(prefix="insert-", suffix=".body", dir=self._bodies)
        try:
            with os.fdopen(descriptor, "wb") as body:
                for piece in data:
                    body.write(piece)
            outcome = self.query(
                connection,
                f"{statement} SELECT * FROM file({_quote(path)}, {_quote(fmt)}) "
                "SETTINGS use_structure_from_insertion_table_in_table_functions = 1",
                "TabSeparated",
                {},
            )
        finally:
            os.unlink(path)
        outcome.elapsed = time.perf_counter() - started
        return outcome

    def close(self) -> None:
        """Close every session and the root connection: chDB then shuts the engine down cleanly."""
        with self._sessions_lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            acquired = session.lock.acquire(timeout=30)
            self._disconnect(session.connection)
            if acquired:
                session.lock.release()
        self._disconnect(self._root)


def _escaped(value: str) -> str:
    """A query parameter value as ClickHouse reads it (TSV escaping: backslash, tab and line breaks escaped)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def iter_with_prefix(prefix: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """Yield ``prefix`` (when non-empty), then everything from ``rest``."""
    if prefix:
        yield prefix
    yield from rest
