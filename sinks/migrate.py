"""Numbered ClickHouse migrations: ``migrations/NNNN_name.sql`` files with an up and a down section.

A file holds ``-- migrate:up`` and ``-- migrate:down`` markers; each section is a list of statements, each
ending with ``;`` at the end of a line. Statements use table names without a database: they run in the
database of the settings. What was applied is kept in the append-only table ``schema_migrations`` of that
database (one row per apply or reverse; the newest row per id tells the state), so no mutation is needed.

With ``CLOSEDLOOP_CLICKHOUSE_CLUSTER`` set, every statement runs in its cluster form (``sinks/cluster_sql.py``:
``ON CLUSTER``, replicated local tables, Distributed tables under the original names), the database is created on
every node, and ``schema_migrations`` is one replicated table shared by every node of the cluster. Unset, the
statements run exactly as written in the files.

Two ``migrate`` runs at the same time are not locked against each other: run one (``closedloop up`` does).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from clickhouse_connect.driver.client import Client

from schemas.settings import PipelineSettings
from sinks.client import connect
from sinks.cluster_sql import render

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
STATE_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_UP, _DOWN = "-- migrate:up", "-- migrate:down"
_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MigrationError(Exception):
    """A migration file is malformed, or the database state does not allow the requested step."""


@dataclass(frozen=True)
class Migration:
    """One numbered migration: its statements forwards (``up``) and backwards (``down``)."""

    id: int
    name: str
    up: tuple[str, ...]
    down: tuple[str, ...]
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.id:04d}_{self.name}"


@dataclass(frozen=True)
class MigrationStatus:
    """A migration and whether (and when) it is applied to the database."""

    migration: Migration
    applied: bool
    applied_at: datetime | None
    changed: bool  # applied from a file whose text differs from the current one


def split_statements(sql: str) -> list[str]:
    """Split a section into statements: each ends with ';' at the end of a line; ``--`` comment lines dropped."""
    statements, current = [], []
    for line in sql.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";").strip())
            current = []
    if current:
        raise MigrationError(f"statement without a closing ';': {' '.join(current)[:80]!r}")
    return statements


def parse_migration(path: Path) -> Migration:
    """Read one migration file; raise MigrationError naming the file and what is wrong."""
    match = _FILE_NAME.match(path.name)
    if not match:
        raise MigrationError(f"{path}: migration files are named NNNN_lower_case_name.sql")
    text = path.read_text(encoding="utf-8")
    if text.count(_UP) != 1 or text.count(_DOWN) != 1 or text.index(_UP) > text.index(_DOWN):
        raise MigrationError(f"{path}: needs one '{_UP}' line followed by one '{_DOWN}' line")
    up_text = text[text.index(_UP) + len(_UP) : text.index(_DOWN)]
    down_text = text[text.index(_DOWN) + len(_DOWN) :]
    try:
        up, down = split_statements(up_text), split_statements(down_text)
    except MigrationError as exc:
        raise MigrationError(f"{path}: {exc}") from None
    if not up or not down:
        raise MigrationError(f"{path}: both the up and the down section need at least one statement")
    return Migration(
        id=int(match.group(1)),
        name=match.group(2),
        up=tuple(up),
        down=tuple(down),
        checksum=hashlib.sha256(text.encode()).hexdigest()[:16],
    )


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration of ``directory``, in order; numbers must run 1, 2, 3 ... without gaps."""
    migrations = [parse_migration(path) for path in sorted(directory.glob("*.sql"))]
    for expected, migration in enumerate(migrations, start=1):
        if migration.id != expected:
            raise MigrationError(
                f"{directory}: migration {migration.label} should be numbered {expected:04d} (no gaps, no repeats)"
            )
    return migrations


def state_table_sql(cluster: str | None = None) -> str:
    """The DDL of ``schema_migrations``. On a cluster: one table replicated to every node of every shard (a Keeper
    path without ``{shard}``), so any node knows what is applied; its replica names must then be unique across the
    cluster, hence ``'{shard}-{replica}'``."""
    where, engine = "", "MergeTree"
    if cluster:
        where = f" ON CLUSTER {cluster}"
        engine = f"ReplicatedMergeTree('/clickhouse/tables/{{database}}/{STATE_TABLE}', '{{shard}}-{{replica}}')"
    return f"""CREATE TABLE IF NOT EXISTS {STATE_TABLE}{where}
        (
            id         UInt32                 COMMENT 'Migration number',
            name       String                 COMMENT 'Migration name (file name without number and .sql)',
            direction  LowCardinality(String) COMMENT 'up = applied, down = reversed',
            checksum   String                 COMMENT 'sha256 prefix of the migration file when it ran',
            applied_at DateTime64(6, 'UTC')   COMMENT 'When it ran (UTC)'
        )
        ENGINE = {engine} ORDER BY (id, applied_at)
        COMMENT 'Log of applied and reversed migrations; the newest row per id is the state'"""


def _ensure_state_table(client: Client, cluster: str | None = None) -> None:
    client.command(state_table_sql(cluster))


def _applied(client: Client) -> dict[int, tuple[str, datetime]]:
    """Migration id -> (checksum, applied_at) for every migration currently applied."""
    result = client.query(
        f"SELECT id, argMax(direction, applied_at), argMax(checksum, applied_at), max(applied_at) "
        f"FROM {STATE_TABLE} GROUP BY id"
    )
    return {row[0]: (row[2], row[3]) for row in result.result_rows if row[1] == "up"}


def _record(client: Client, migration: Migration, direction: str) -> None:
    client.command(
        f"INSERT INTO {STATE_TABLE} (id, name, direction, checksum, applied_at) "
        "VALUES ({id:UInt32}, {name:String}, {direction:String}, {checksum:String}, now64(6))",
        parameters={"id": migration.id, "name": migration.name, "direction": direction, "checksum": migration.checksum},
    )


def database_client(settings: PipelineSettings, *, create: bool = True) -> Client:
    """A client on the settings' database, creating the database first when ``create``."""
    database = settings.clickhouse_database
    if not _DATABASE_NAME.match(database):
        raise MigrationError(f"database name {database!r} must match {_DATABASE_NAME.pattern} (see the ClickHouse URL)")
    if create:
        server = connect(settings, database=None)
        try:
            on_cluster = f" ON CLUSTER {settings.clickhouse_cluster}" if settings.clickhouse_cluster else ""
            server.command(f"CREATE DATABASE IF NOT EXISTS `{database}`{on_cluster}")
        finally:
            server.close()
    return connect(settings)


def status(settings: PipelineSettings, migrations: list[Migration] | None = None) -> list[MigrationStatus]:
    """Every known migration and whether it is applied (the database is created when missing)."""
    migrations = load_migrations() if migrations is None else migrations
    client = database_client(settings)
    try:
        _ensure_state_table(client, settings.clickhouse_cluster)
        applied = _applied(client)
    finally:
        client.close()
    return [
        MigrationStatus(
            migration=m,
            applied=m.id in applied,
            applied_at=applied[m.id][1] if m.id in applied else None,
            changed=m.id in applied and applied[m.id][0] != m.checksum,
        )
        for m in migrations
    ]


def migrate_up(
    settings: PipelineSettings,
    *,
    target: int | None = None,
    dry_run: bool = False,
    migrations: list[Migration] | None = None,
) -> list[str]:
    """Create the database if missing and apply every pending migration (up to ``target``), in order.

    Returns the labels of the migrations applied (with ``dry_run``: that would be applied; nothing runs).
    """
    migrations = load_migrations() if migrations is None else migrations
    client = database_client(settings)
    try:
        _ensure_state_table(client, settings.clickhouse_cluster)
        applied = _applied(client)
        pending = [m for m in migrations if m.id not in applied and (target is None or m.id <= target)]
        for migration in pending if not dry_run else []:
            for statement in rendered(migration.up, settings):
                _run(client, migration, statement)
            _record(client, migration, "up")
        return [m.label for m in pending]
    finally:
        client.close()


def migrate_down(
    settings: PipelineSettings,
    steps: int = 1,
    *,
    dry_run: bool = False,
    migrations: list[Migration] | None = None,
) -> list[str]:
    """Reverse the ``steps`` newest applied migrations, newest first. Returns their labels."""
    if steps < 1:
        raise MigrationError(f"steps must be at least 1, got {steps}")
    migrations = load_migrations() if migrations is None else migrations
    client = database_client(settings)
    try:
        _ensure_state_table(client, settings.clickhouse_cluster)
        applied = _applied(client)
        by_id = {m.id: m for m in migrations}
        unknown = sorted(set(applied) - set(by_id))
        if unknown:
            raise MigrationError(
                f"applied migrations {unknown} have no file here: reverse them with the code that applied them"
            )
        to_reverse = [by_id[i] for i in sorted(applied, reverse=True)[:steps]]
        for migration in to_reverse if not dry_run else []:
            for statement in rendered(migration.down, settings):
                _run(client, migration, statement)
            _record(client, migration, "down")
        return [m.label for m in to_reverse]
    finally:
        client.close()


def rendered(statements: tuple[str, ...], settings: PipelineSettings) -> list[str]:
    """The statements as they run with these settings: as written, or for the cluster of
    ``CLOSEDLOOP_CLICKHOUSE_CLUSTER``."""
    return render(statements, settings.clickhouse_cluster, settings.clickhouse_database)


def _run(client: Client, migration: Migration, statement: str) -> None:
    try:
        client.command(statement)
    except Exception as exc:
        raise MigrationError(f"migration {migration.label} failed at: {statement[:120]!r}: {exc}") from exc
