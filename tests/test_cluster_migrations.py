"""ClickHouse cluster mode (sinks/cluster_sql.py): every migration rendered in both modes; the cluster form's
statements parsed by ClickHouse's own parser (chDB, through the embedded endpoint). The single-server mode is applied
on the embedded ClickHouse by tests/test_migrations.py."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from schemas.settings import PipelineSettings
from sinks.client import connect
from sinks.cluster_sql import (
    SHARDING_KEYS,
    ClusterSQLError,
    render,
    render_statement,
)
from sinks.migrate import load_migrations, rendered, state_table_sql
from sinks.settings import SinkSettings

CLUSTER, DATABASE = "closedloop_cluster", "closedloop"
MIGRATIONS = load_migrations()
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)\s")
_ORDER_BY = re.compile(r"\nORDER BY \(?([\w, ]+?)\)?\n")


def _all_statements(cluster: str | None) -> list[tuple[str, str]]:
    return [
        (f"{m.label} {direction}", statement)
        for m in MIGRATIONS
        for direction, section in (("up", m.up), ("down", m.down))
        for statement in render(section, cluster, DATABASE)
    ]


def _created_tables() -> dict[str, str]:
    """Table name -> its CREATE statement, over every up section (single-server form)."""
    return {
        match.group(1): statement for m in MIGRATIONS for statement in m.up if (match := _CREATE_TABLE.match(statement))
    }


# -- unit: rendering -----------------------------------------------------------------------------------------


def test_without_a_cluster_every_statement_is_unchanged_byte_for_byte():
    for m in MIGRATIONS:
        assert render(m.up, None, DATABASE) == list(m.up)
        assert render(m.down, None, DATABASE) == list(m.down)
        assert rendered(m.up, SinkSettings(clickhouse_url="http://u:p@h:8123/db")) == list(m.up)
    assert "ON CLUSTER" not in state_table_sql() and "Replicated" not in state_table_sql()


def test_every_migration_renders_for_a_cluster_and_every_ddl_runs_on_it():
    statements = _all_statements(CLUSTER)
    assert len(statements) > sum(len(m.up) + len(m.down) for m in MIGRATIONS)  # tables became two each
    for where, statement in statements:
        if statement.startswith("INSERT"):
            assert "ON CLUSTER" not in statement, where  # runs once, through the Distributed tables
        else:
            assert f"ON CLUSTER {CLUSTER}" in statement.split("\n")[0], where


def test_each_table_becomes_a_replicated_local_table_and_a_distributed_table_over_it():
    for table, create in _created_tables().items():
        local, distributed = render_statement(create, CLUSTER, DATABASE)
        engine = re.search(r"ENGINE = (\w*)MergeTree(?:\(([^()]*)\))?", create)
        assert engine is not None
        kind, args = engine.groups()
        replica = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
        expected = f"ENGINE = Replicated{kind}MergeTree({replica}" + (f", {args})" if args else ")")
        assert local.startswith(f"CREATE TABLE IF NOT EXISTS {table}_local ON CLUSTER {CLUSTER}\n"), table
        assert expected in local, table  # the ReplacingMergeTree version column stays its argument
        # everything but the name and the engine is the single-server statement's
        # the rest (columns, comments, partitioning, order, settings) is the single-server statement's
        single_rest = create.replace(engine.group(0), "ENGINE").split("\n", 1)[1]
        assert re.sub(r"ENGINE = \w+\([^()]*\)", "ENGINE", local).split("\n", 1)[1] == single_rest, table
        assert distributed.startswith(f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER {CLUSTER} AS {table}_local\n")
        assert (
            f"ENGINE = Distributed({CLUSTER}, '{DATABASE}', {table}_local, {SHARDING_KEYS[table].expression})"
            in distributed
        )
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version)"
        in (render_statement(_created_tables()["conversions"], CLUSTER, DATABASE)[0])
    )


def test_every_sharding_key_is_fixed_by_the_dedup_key_so_a_replay_lands_on_the_same_shard():
    tables = _created_tables()
    assert set(SHARDING_KEYS) == set(tables), "every table has a sharding key, and only those"
    for table, key in SHARDING_KEYS.items():
        order_by = _ORDER_BY.search(tables[table])
        assert order_by is not None, table
        dedup_key = {column.strip() for column in order_by.group(1).split(",")}
        allowed = dedup_key | ({c for c in key.columns} if key.fixed_by in dedup_key else set())
        assert set(key.columns) <= allowed, f"{table}: {key.columns} not fixed by ORDER BY {sorted(dedup_key)}"
        assert key.expression == f"cityHash64({', '.join(key.columns)})"
    # tables read together per visitor / per conversion share their key
    assert SHARDING_KEYS["touches"].columns == SHARDING_KEYS["visitor_days"].columns == ("visitor_id",)
    assert SHARDING_KEYS["credits"].columns == SHARDING_KEYS["credit_versions"].columns == ("conversion_id",)


def test_materialized_views_read_and_write_the_local_tables():
    views = [s for _, s in _all_statements(CLUSTER) if s.startswith("CREATE MATERIALIZED VIEW")]
    assert len(views) >= 5
    for view in views:
        target = re.search(r" TO (\w+) AS", view)
        assert target is not None and target.group(1).endswith("_local"), view[:80]
        sources = re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", view)
        assert sources and all(name.endswith("_local") for name in sources), view[:200]
    # aliases that happen to be table names (touches_daily's `AS touches`) are left alone
    assert "uniqExactState(touch_id) AS touches" in next(v for v in views if "touches_daily_mv" in v)


def test_alter_and_drop_reach_both_tables():
    add = render_statement("ALTER TABLE conversions ADD COLUMN IF NOT EXISTS r String", CLUSTER, DATABASE)
    assert add == [
        f"ALTER TABLE conversions_local ON CLUSTER {CLUSTER} ADD COLUMN IF NOT EXISTS r String",
        f"ALTER TABLE conversions ON CLUSTER {CLUSTER} ADD COLUMN IF NOT EXISTS r String",
    ]
    drop_column = render_statement("ALTER TABLE touches DROP COLUMN IF EXISTS v", CLUSTER, DATABASE)
    assert [s.split(" ON ")[0] for s in drop_column] == ["ALTER TABLE touches", "ALTER TABLE touches_local"]
    assert render_statement("DROP TABLE IF EXISTS leads", CLUSTER, DATABASE) == [
        f"DROP TABLE IF EXISTS leads ON CLUSTER {CLUSTER} SYNC",
        f"DROP TABLE IF EXISTS leads_local ON CLUSTER {CLUSTER} SYNC",
    ]
    assert render_statement("DROP VIEW IF EXISTS journeys", CLUSTER, DATABASE) == [
        f"DROP VIEW IF EXISTS journeys ON CLUSTER {CLUSTER} SYNC"
    ]


def test_a_statement_without_a_cluster_form_and_bad_names_are_refused():
    with pytest.raises(ClusterSQLError, match="no cluster form for 'TRUNCATE TABLE touches'"):
        render(("TRUNCATE TABLE touches",), CLUSTER, DATABASE)
    with pytest.raises(ClusterSQLError, match="table nope has no sharding key"):
        render(("CREATE TABLE IF NOT EXISTS nope (x UInt8) ENGINE = MergeTree ORDER BY x",), CLUSTER, DATABASE)
    with pytest.raises(ClusterSQLError, match="only \\*MergeTree engines"):
        render(("CREATE TABLE IF NOT EXISTS leads (x UInt8) ENGINE = Memory",), CLUSTER, DATABASE)
    with pytest.raises(ClusterSQLError, match="cluster name 'a;b'"):
        render(("SELECT 1",), "a;b", DATABASE)
    with pytest.raises(ValidationError, match="clickhouse_cluster"):
        PipelineSettings(clickhouse_cluster="prod; DROP")
    assert PipelineSettings(clickhouse_cluster="prod").clickhouse_cluster == "prod"


def test_cluster_state_table_is_one_replicated_table_for_the_whole_cluster():
    sql = state_table_sql(CLUSTER)
    assert f"schema_migrations ON CLUSTER {CLUSTER}" in sql
    assert "ReplicatedMergeTree('/clickhouse/tables/{database}/schema_migrations', '{shard}-{replica}')" in sql


class _RecordingClient:
    """Stands in for clickhouse-connect's client: records each statement; nothing is applied yet."""

    def __init__(self, statements: list[str]) -> None:
        self.statements = statements

    def command(self, statement: str, parameters: object = None) -> None:
        self.statements.append(statement)

    def query(self, statement: str, parameters: object = None) -> object:
        self.statements.append(statement)
        return type("Result", (), {"result_rows": []})()

    def close(self) -> None:
        pass


def test_migrate_up_and_down_run_the_cluster_form_when_the_setting_is_given(monkeypatch: pytest.MonkeyPatch):
    import sinks.migrate

    statements: list[str] = []
    monkeypatch.setattr(sinks.migrate, "connect", lambda *args, **kwargs: _RecordingClient(statements))
    settings = SinkSettings(clickhouse_url="http://u:p@ch:8123/analytics", clickhouse_cluster=CLUSTER)
    labels = sinks.migrate.migrate_up(settings, target=2)
    assert labels == ["0001_events", "0002_touches_identity_links"]
    assert statements[0] == f"CREATE DATABASE IF NOT EXISTS `analytics` ON CLUSTER {CLUSTER}"
    assert statements[1] == state_table_sql(CLUSTER)
    ddl = [s for s in statements if s.startswith(("CREATE TABLE IF NOT EXISTS e", "CREATE TABLE IF NOT EXISTS t"))]
    assert [s.split("\n")[0] for s in ddl] == [
        f"CREATE TABLE IF NOT EXISTS events_local ON CLUSTER {CLUSTER}",
        f"CREATE TABLE IF NOT EXISTS events ON CLUSTER {CLUSTER} AS events_local",
        f"CREATE TABLE IF NOT EXISTS touches_local ON CLUSTER {CLUSTER}",
        f"CREATE TABLE IF NOT EXISTS touches ON CLUSTER {CLUSTER} AS touches_local",
    ]
    assert f"Distributed({CLUSTER}, 'analytics', events_local, cityHash64(event_id))" in ddl[1]

    statements.clear()
    single = SinkSettings(clickhouse_url="http://u:p@ch:8123/analytics")
    sinks.migrate.migrate_up(single, target=1)
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS `analytics`"
    assert statements[1] == state_table_sql(None)
    assert MIGRATIONS[0].up[0] in statements  # the file's statement, byte for byte


# -- ClickHouse's own parser (chDB behind the embedded endpoint) -------------------------------------------------


@pytest.mark.clickhouse
def test_every_statement_of_both_modes_parses_with_clickhouses_parser(clickhouse_http_url):
    """formatQuery parses each statement with ClickHouse's parser (a syntax error raises) and prints it back;
    printing the printed text again gives the same text, and the cluster clauses survived the parse."""
    client = connect(SinkSettings(clickhouse_url=f"{clickhouse_http_url}/default"))
    try:

        def parsed(sql: str) -> str:
            return str(client.query("SELECT formatQuery({sql:String})", parameters={"sql": sql}).result_rows[0][0])

        cluster_statements = [*_all_statements(CLUSTER), ("state table", state_table_sql(CLUSTER))]
        for where, statement in cluster_statements + _all_statements(None):
            text = parsed(statement)
            assert parsed(text) == text, where
        for where, statement in cluster_statements:
            text = parsed(statement)
            if not statement.startswith("INSERT"):
                assert f"ON CLUSTER {CLUSTER}" in text, where
            if " ENGINE = Replicated" in statement.replace("\n", " "):
                assert "'{replica}'" in text or "'{shard}-{replica}'" in text, where
            if "ENGINE = Distributed" in statement:
                assert re.search(r"ENGINE = Distributed\(\w+, '\w+', \w+_local, cityHash64\(", text), where
        with pytest.raises(Exception, match="SYNTAX_ERROR|Syntax error"):
            parsed("CREATE TABLE IF NOT EXISTS t ON CLUSTER c (x UInt8) ENGINE = ReplicatedMergeTree(")
    finally:
        client.close()


# -- erasure on a cluster: a Distributed table takes no mutation, a local table holds one shard ----------------------


class _ErasureClient:
    """Records erasure's statements and answers its two reads: the String columns (as a cluster's system.columns
    lists them, or a single server's) and one count per column, all 1."""

    def __init__(self, tables: dict[str, list[tuple[str, bool]]]) -> None:
        self.tables = tables
        self.statements: list[str] = []

    def command(self, statement: str, parameters: object = None, settings: object = None) -> None:
        self.statements.append(statement)

    def query(self, statement: str, parameters: object = None) -> object:
        self.statements.append(statement)
        if "FROM system.columns" in statement:
            rows = [(t, c, k) for t, columns in self.tables.items() for c, k in columns]
        else:
            rows = [tuple(1 for _ in range(statement.count("countIf(")))]
        return type("Result", (), {"result_rows": rows})()


def _erase_statements(cluster: str | None) -> list[str]:
    from closedloop.erasure import _delete_leads, _replace_everywhere

    suffix = "_local" if cluster else ""
    client = _ErasureClient(
        {f"leads{suffix}": [("email", False)], f"events{suffix}": [("event_json", False), ("crm_object_id", True)]}
    )
    _delete_leads(client, "l1", cluster)
    removed = _replace_everywhere(client, "ann@example.com", "l1", cluster)
    assert removed == {
        "ClickHouse leads rows with it in email (deleted)": 1,
        "ClickHouse events.event_json (replaced by the lead id)": 1,
        "ClickHouse events rows with it in crm_object_id (deleted)": 1,
    }
    return [s for s in client.statements if "system.columns" not in s]


def test_erasure_mutates_every_shards_local_tables_and_reads_the_distributed_ones_on_a_cluster():
    statements = _erase_statements(CLUSTER)
    heads = [re.sub(r" (DELETE|UPDATE) .*", r" \1", s, flags=re.S) for s in statements]
    assert heads == [
        f"ALTER TABLE `leads_local` ON CLUSTER {CLUSTER} DELETE",
        "SELECT countIf(positionCaseInsensitive(ifNull(toString(`email`), ''), {address:String}) > 0) FROM `leads`",
        "SELECT countIf(positionCaseInsensitive(ifNull(toString(`event_json`), ''), {address:String}) > 0), "
        "countIf(positionCaseInsensitive(ifNull(toString(`crm_object_id`), ''), {address:String}) > 0) FROM `events`",
        f"ALTER TABLE `leads_local` ON CLUSTER {CLUSTER} DELETE",
        f"ALTER TABLE `events_local` ON CLUSTER {CLUSTER} UPDATE",
        f"ALTER TABLE `events_local` ON CLUSTER {CLUSTER} DELETE",
    ]


def test_erasure_on_one_server_mutates_the_tables_themselves():
    statements = _erase_statements(None)
    assert [s.split(" WHERE")[0].split(" = ")[0] for s in statements if s.startswith("ALTER")] == [
        "ALTER TABLE `leads` DELETE",
        "ALTER TABLE `leads` DELETE",
        "ALTER TABLE `events` UPDATE `event_json`",
        "ALTER TABLE `events` DELETE",
    ]


@pytest.mark.clickhouse
def test_erasure_statements_of_both_modes_parse_with_clickhouses_parser(clickhouse_http_url):
    """The sink's DELETE on a tombstone and erase's mutations, as ClickHouse's parser reads them: ON CLUSTER
    survives on the local table."""
    from sinks.cluster_sql import mutation_target

    client = connect(SinkSettings(clickhouse_url=f"{clickhouse_http_url}/default"))
    try:
        sink_delete = "DELETE FROM {t} WHERE lead_id = 'l1'"
        for cluster in (CLUSTER, None):
            statements = [sink_delete.format(t=mutation_target("leads", cluster))]
            statements += [re.sub(r"\{(\w+):String\}", "'x'", s) for s in _erase_statements(cluster)]
            for statement in statements:
                text = client.query("SELECT formatQuery({sql:String})", parameters={"sql": statement})
                printed = str(text.result_rows[0][0])
                if statement.startswith(("ALTER", "DELETE")):
                    expected = f"_local ON CLUSTER {CLUSTER}" if cluster else "ON CLUSTER"
                    assert (expected in printed) == bool(cluster), printed
    finally:
        client.close()
