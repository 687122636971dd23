"""The migrations rendered for a ClickHouse cluster (``CLOSEDLOOP_CLICKHOUSE_CLUSTER``).

The files in ``migrations/`` are written for one server. On a cluster each statement becomes:

- ``CREATE TABLE t (...) ENGINE = XMergeTree(args)``: ``t_local ON CLUSTER c`` with
  ``ReplicatedXMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', args)`` (the
  ReplacingMergeTree version column stays its argument), then ``t ON CLUSTER c AS t_local`` with
  ``ENGINE = Distributed(c, 'database', t_local, <sharding key>)``: what the sink inserts into and the reports read,
  under the table's own name, so neither changes;
- ``CREATE MATERIALIZED VIEW v TO t AS SELECT ... FROM s``: ``ON CLUSTER``, ``TO t_local``, ``FROM s_local``: a view
  sees the blocks inserted into its shard's local table and writes to that shard's roll-up;
- ``CREATE VIEW``: ``ON CLUSTER``, reading the Distributed tables;
- ``ALTER TABLE t``: the same change ``ON CLUSTER`` on ``t_local`` and on ``t``;
- ``DROP TABLE t``: ``t`` and ``t_local``, ``ON CLUSTER ... SYNC`` (so a table made again at once finds its Keeper
  path free); ``DROP VIEW``: ``ON CLUSTER ... SYNC``;
- ``INSERT``: unchanged; it runs once, through the Distributed tables.

A statement of another kind has no cluster form: rendering it raises, so a new migration cannot silently apply to
one node only (tests/test_cluster_migrations.py renders every shipped migration).

**Sharding keys.** A replay must land on the shard that holds the first copy, or ``FINAL`` (which collapses
duplicates within a shard) would count it twice. So every key below is a function of the table's deduplication
key (its ``ORDER BY``) or of a column that key fixes; the tests check that. Where two tables are read together
per visitor or per conversion, they share the key so a roll-up written by a view on one shard agrees with a
back-fill routed by the Distributed table: touches, identity links and ``visitor_days`` by visitor; credits and
``credit_versions`` by conversion.

Without a cluster name ``render`` returns the statements unchanged, byte for byte.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass

LOCAL_SUFFIX = "_local"
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
REPLICA_NAME = "{replica}"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClusterSQLError(Exception):
    """A statement has no cluster form, or a table has no sharding key."""


@dataclass(frozen=True)
class ShardingKey:
    """How a table's rows are spread over the shards, and why every copy of a row lands on the same one."""

    expression: str
    columns: tuple[str, ...]
    fixed_by: str  # the dedup key (ORDER BY) column that fixes these columns, when they are not in it


def _key(*columns: str, fixed_by: str = "") -> ShardingKey:
    return ShardingKey(f"cityHash64({', '.join(columns)})", columns, fixed_by)


SHARDING_KEYS: dict[str, ShardingKey] = {
    "events": _key("event_id"),
    # touch_id = sha1(visitor_id|event_id): a touch's visitor never changes; a visitor's touches stay on one shard
    "touches": _key("visitor_id", fixed_by="touch_id"),
    "identity_links": _key("visitor_id"),
    "leads": _key("lead_id"),
    "conversions": _key("conversion_id"),
    "credits": _key("conversion_id"),
    "spend": _key("date", "channel", "source", "medium", "campaign"),
    "touches_daily": _key("day", "channel", "source", "medium", "campaign"),
    "credits_daily": _key("model", "stage", "day", "channel", "source", "medium", "campaign"),
    "visitor_days": _key("visitor_id"),  # as touches: the view on a shard's touches writes that shard's rows
    "credit_versions": _key("conversion_id"),  # as credits
    "channel_visitors": _key("grouping", "period", "starts", "channel", "campaign"),
    "data_driven_credits": _key("model", "stage", "period_from", "period_to"),  # one run's rows together
    "lead_scores": _key("lead_id"),
    # ready_id = '<lead_id>:<cycle>'
    "sales_ready_leads": _key("lead_id", fixed_by="ready_id"),
    "free_mail_domains": _key("domain"),
    "deliveries": _key("delivery_key"),
    "ad_feedback": _key("feedback_id"),
}

_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)(\s)", re.IGNORECASE)
_ENGINE = re.compile(r"ENGINE = (\w*)MergeTree(?:\(([^()]*)\))?")
_TABLE_COMMENT = re.compile(r"\nCOMMENT '((?:[^']|'')*)'\s*$")
_CREATE_MV = re.compile(r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (\w+) TO (\w+)(\s)", re.IGNORECASE)
_CREATE_VIEW = re.compile(r"^CREATE VIEW IF NOT EXISTS (\w+)(\s)", re.IGNORECASE)
_ALTER_TABLE = re.compile(r"^ALTER TABLE (\w+)(\s)", re.IGNORECASE)
_DROP = re.compile(r"^DROP (TABLE|VIEW) IF EXISTS (\w+)$", re.IGNORECASE)
_INSERT = re.compile(r"^INSERT INTO \w+", re.IGNORECASE)
_SOURCE = re.compile(r"\b(FROM|JOIN)(\s+)(\w+)\b", re.IGNORECASE)


def check_name(name: str, what: str) -> str:
    """``name`` if it is a plain ClickHouse identifier (it goes into DDL unquoted), else ClusterSQLError."""
    if not _NAME.match(name):
        raise ClusterSQLError(f"{what} {name!r} must match {_NAME.pattern}")
    return name


def mutation_target(table: str, cluster: str | None) -> str:
    """Where a mutation or a lightweight DELETE of ``table``'s rows runs: the table on one server; on a cluster its
    replicated local tables on every shard, since a Distributed table takes neither (erasure must reach them)."""
    if not cluster:
        return _quoted(table)
    return f"{_quoted(_local_of(table))} ON CLUSTER {check_name(cluster, 'cluster name')}"


def _quoted(name: str) -> str:
    # any table of the database may hold an address, whatever its name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def scanned_table(table: str, cluster: str | None) -> str:
    """The table to read for all of ``table``'s rows: on a cluster a local table (``t_local``, what
    ``system.tables`` lists as MergeTree) holds one shard only, so the Distributed table over it is read."""
    if cluster and table.endswith(LOCAL_SUFFIX):
        return table[: -len(LOCAL_SUFFIX)]
    return table


def render(statements: Sequence[str], cluster: str | None, database: str) -> list[str]:
    """The statements to run: unchanged without ``cluster``, else each in its cluster form (module docstring)."""
    if not cluster:
        return list(statements)
    check_name(cluster, "cluster name")
    check_name(database, "database name")
    return [rendered for statement in statements for rendered in render_statement(statement, cluster, database)]


def render_statement(statement: str, cluster: str, database: str) -> list[str]:
    """One single-server statement as the statements that do the same on ``cluster``."""
    on = f"ON CLUSTER {cluster}"
    if match := _CREATE_TABLE.match(statement):
        return _create_table(statement, match, cluster, database)
    if match := _CREATE_MV.match(statement):
        name, target, space = match.groups()
        body = _SOURCE.sub(_to_local, statement[match.end() :])
        return [f"CREATE MATERIALIZED VIEW IF NOT EXISTS {name} {on} TO {_local_of(target)}{space}{body}"]
    if match := _CREATE_VIEW.match(statement):
        return [f"CREATE VIEW IF NOT EXISTS {match.group(1)} {on}{statement[match.end(1) :]}"]
    if match := _ALTER_TABLE.match(statement):
        table, rest = match.group(1), statement[match.end(1) :]
        local, distributed = f"ALTER TABLE {_local_of(table)} {on}{rest}", f"ALTER TABLE {table} {on}{rest}"
        # a Distributed table may name a column its local tables lack only while nothing reads it
        return [distributed, local] if re.search(r"\bDROP COLUMN\b", rest, re.IGNORECASE) else [local, distributed]
    if match := _DROP.match(statement):
        kind, name = match.groups()
        if kind.upper() == "VIEW":
            return [f"DROP VIEW IF EXISTS {name} {on} SYNC"]
        return [f"DROP TABLE IF EXISTS {name} {on} SYNC", f"DROP TABLE IF EXISTS {_local_of(name)} {on} SYNC"]
    if _INSERT.match(statement):
        return [statement]
    raise ClusterSQLError(
        f"no cluster form for {statement[:80]!r}: sinks/cluster_sql.py renders CREATE TABLE/VIEW/MATERIALIZED VIEW "
        "IF NOT EXISTS, ALTER TABLE, DROP TABLE/VIEW IF EXISTS and INSERT; write the migration with those, or "
        "teach the renderer the new kind"
    )


def _create_table(statement: str, match: re.Match[str], cluster: str, database: str) -> list[str]:
    table, space = match.groups()
    key = sharding_key(table)
    engine = _ENGINE.search(statement)
    if engine is None:
        raise ClusterSQLError(f"table {table}: only *MergeTree engines have a replicated form")
    kind, args = engine.groups()
    replicated_args = ", ".join([f"'{REPLICA_PATH}'", f"'{REPLICA_NAME}'", *([args.strip()] if args else [])])
    local = (
        f"CREATE TABLE IF NOT EXISTS {_local_of(table)} ON CLUSTER {cluster}{space}"
        + statement[match.end() : engine.start()]
        + f"ENGINE = Replicated{kind}MergeTree({replicated_args})"
        + statement[engine.end() :]
    )
    comment = _TABLE_COMMENT.search(statement)
    distributed = (
        f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {cluster} AS {_local_of(table)}\n"
        f"ENGINE = Distributed({cluster}, '{database}', {_local_of(table)}, {key.expression})"
        + (f"\nCOMMENT '{comment.group(1)}'" if comment else "")
    )
    return [local, distributed]


def sharding_key(table: str) -> ShardingKey:
    """The sharding key of a table the migrations create; ClusterSQLError when it has none."""
    try:
        return SHARDING_KEYS[table]
    except KeyError:
        raise ClusterSQLError(
            f"table {table} has no sharding key: add it to SHARDING_KEYS in sinks/cluster_sql.py, a function of its "
            "ORDER BY key so that a replayed row lands on the shard of its first copy"
        ) from None


def _local_of(table: str) -> str:
    return table + LOCAL_SUFFIX if table in SHARDING_KEYS else table


def _to_local(match: re.Match[str]) -> str:
    keyword, space, name = match.groups()
    return f"{keyword}{space}{_local_of(name)}"


def main(argv: Sequence[str] | None = None) -> None:
    """Print every migration's statements as they would run on a cluster (for review before ``migrate``)."""
    from sinks.migrate import load_migrations

    parser = argparse.ArgumentParser(prog="python -m sinks.cluster_sql", description=main.__doc__)
    parser.add_argument("--cluster", required=True, help="the cluster name of the servers' remote_servers")
    parser.add_argument("--database", default="closedloop")
    parser.add_argument("--down", action="store_true", help="the down sections instead")
    args = parser.parse_args(argv)
    for migration in load_migrations():
        print(f"-- {migration.label} ({'down' if args.down else 'up'})")
        for statement in render(migration.down if args.down else migration.up, args.cluster, args.database):
            print(f"{statement};\n")


if __name__ == "__main__":
    main()
