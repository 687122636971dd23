"""Migrations: file parsing (unit) and apply all / reverse all / apply again against the ClickHouse endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import unique

from sinks.client import connect
from sinks.data_driven_job import DECLARED as DATA_DRIVEN_TABLES
from sinks.migrate import (
    MigrationError,
    load_migrations,
    migrate_down,
    migrate_up,
    parse_migration,
    split_statements,
    status,
)
from sinks.reports import ACCOUNT_TABLES
from sinks.rows import ROLLUP_TABLES, TABLES
from sinks.settings import SinkSettings

VIEWS = {
    "touches_daily_mv",
    "credits_daily_mv",
    "visitor_days_mv",
    "credit_versions_mv",
    "credits_current",
    "channel_visitors_mv",
    "channel_visitor_counts",
    "journeys",
    "customer_cohorts",
    "account_people",
    "account_touches",
    "account_stages",
}


# -- unit: files ---------------------------------------------------------------------------------------------


def test_shipped_migrations_parse_in_order():
    migrations = load_migrations()
    assert [m.id for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.up and m.down for m in migrations)


def test_split_statements_needs_semicolons():
    assert split_statements("-- note\nCREATE TABLE a (x UInt8)\nENGINE = Memory;\nDROP TABLE b;\n") == [
        "CREATE TABLE a (x UInt8)\nENGINE = Memory",
        "DROP TABLE b",
    ]
    with pytest.raises(MigrationError, match="without a closing ';'"):
        split_statements("CREATE TABLE a (x UInt8) ENGINE = Memory")


def test_file_without_down_section_is_rejected(tmp_path: Path):
    path = tmp_path / "0001_only_up.sql"
    path.write_text("-- migrate:up\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n")
    with pytest.raises(MigrationError, match="0001_only_up.sql: needs one '-- migrate:up' line followed by one"):
        parse_migration(path)


def test_numbering_gap_is_rejected(tmp_path: Path):
    for name in ("0001_a.sql", "0003_c.sql"):
        (tmp_path / name).write_text("-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 1;\n")
    with pytest.raises(MigrationError, match="0003_c should be numbered 0002"):
        load_migrations(tmp_path)


def test_bad_file_name_is_rejected(tmp_path: Path):
    (tmp_path / "1_x.sql").write_text("-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 1;\n")
    with pytest.raises(MigrationError, match="NNNN_lower_case_name.sql"):
        load_migrations(tmp_path)


# -- against ClickHouse --------------------------------------------------------------------------------------


def _schema(settings: SinkSettings) -> tuple[dict, set]:
    client = connect(settings)
    try:
        columns = client.query(
            "SELECT table, name, type, comment FROM system.columns WHERE database = currentDatabase() "
            "ORDER BY table, position"
        ).result_rows
        tables = {
            row[0]
            for row in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows
        }
    finally:
        client.close()
    by_table: dict[str, list[tuple[str, str, str]]] = {}
    for table, name, type_, comment in columns:
        by_table.setdefault(table, []).append((name, type_, comment))
    return by_table, tables


@pytest.mark.clickhouse
def test_apply_reverse_apply_and_schema_matches_declaration(clickhouse_http_url):
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('mig')}")
    labels = [m.label for m in load_migrations()]

    assert migrate_up(settings, dry_run=True) == labels
    assert _schema(settings)[1] == {"schema_migrations"}  # a dry run creates nothing but the state table

    assert migrate_up(settings) == labels
    assert migrate_up(settings) == []  # nothing pending
    assert all(s.applied and not s.changed for s in status(settings))

    assert migrate_down(settings, steps=len(labels)) == labels[::-1]
    assert _schema(settings)[1] == {"schema_migrations"}
    assert not any(s.applied for s in status(settings))

    assert migrate_up(settings) == labels
    by_table, tables = _schema(settings)
    declared = TABLES | ROLLUP_TABLES | DATA_DRIVEN_TABLES | ACCOUNT_TABLES
    assert tables == set(declared) | VIEWS | {"schema_migrations"}
    for table, columns in declared.items():
        assert [(name, type_) for name, type_, _ in by_table[table]] == [(c.name, c.type) for c in columns], table
    for table, columns in by_table.items():
        if table not in VIEWS:
            assert all(comment for _, _, comment in columns), f"{table} has a column without a comment"


@pytest.mark.clickhouse
def test_down_one_step_and_target(clickhouse_http_url):
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('mig')}")
    assert migrate_up(settings, target=2) == ["0001_events", "0002_touches_identity_links"]
    assert migrate_down(settings, steps=1, dry_run=True) == ["0002_touches_identity_links"]
    assert "touches" in _schema(settings)[1]
    assert migrate_down(settings, steps=1) == ["0002_touches_identity_links"]
    assert _schema(settings)[1] == {"schema_migrations", "events"}
    assert [s.applied for s in status(settings)][:3] == [True, False, False]


@pytest.mark.clickhouse
def test_credits_current_keeps_only_the_newest_version_per_conversion_and_model(clickhouse_http_url):
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('mig')}")
    migrate_up(settings)
    client = connect(settings)
    try:
        client.command(
            "INSERT INTO credits (conversion_id, model, touch_id, version, channel, revenue) VALUES "
            # c1 re-attributed under linear: version 1 credited touch a, version 2 credits b and c
            "('c1', 'linear', 'a', 1, 'Email', 100), ('c1', 'linear', 'b', 2, 'Paid Search', 60), "
            "('c1', 'linear', 'c', 2, 'Direct', 40), "
            # c1 under first_touch was never re-attributed; its row arrives twice (a replay)
            "('c1', 'first_touch', 'a', 1, 'Email', 100), ('c1', 'first_touch', 'a', 1, 'Email', 100), "
            "('c2', 'linear', 'a', 1, 'Referral', 7.5)"
        )
        rows = client.query(
            "SELECT model, conversion_id, touch_id, version, channel, toString(revenue) FROM credits_current "
            "ORDER BY model, conversion_id, touch_id"
        ).result_rows
        per_channel = dict(
            client.query(
                "SELECT channel, toString(sum(revenue)) FROM credits_current WHERE model = 'linear' GROUP BY channel"
            ).result_rows
        )
    finally:
        client.close()
    assert rows == [
        ("first_touch", "c1", "a", 1, "Email", "100"),
        ("linear", "c1", "b", 2, "Paid Search", "60"),
        ("linear", "c1", "c", 2, "Direct", "40"),
        ("linear", "c2", "a", 1, "Referral", "7.5"),
    ]
    assert per_channel == {"Paid Search": "60", "Direct": "40", "Referral": "7.5"}


@pytest.mark.clickhouse
def test_0009_counts_touches_from_before_once_and_its_down_step_keeps_every_visitor(clickhouse_http_url):
    """0009 on a database with touches: they stay counted (visitor_days), new numbered touches go to the bitmaps,
    each visitor counted once; its down step moves the numbered visitors back into visitor_days."""
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('mig')}")
    migrate_up(settings, target=8)
    client = connect(settings)
    march = (
        "SELECT channel, campaign, visitors FROM channel_visitor_counts(from = '2024-03-01', "
        "to = '2024-03-31', by_campaign = 0) ORDER BY channel, campaign"
    )  # what the channel reports read
    try:
        client.command(  # before numbers: v1 and v2 on Email
            "INSERT INTO touches (touch_id, visitor_id, site_id, occurred_at, channel) VALUES "
            "('t1', 'v1', 's', '2024-03-02 10:00:00', 'Email'), ('t2', 'v2', 's', '2024-03-03 10:00:00', 'Email')"
        )
        assert migrate_up(settings, target=9) == ["0009_channel_visitors"]
        client.command(  # after: v3 numbered on Email and Direct, v1 again without a number (first seen before)
            "INSERT INTO touches (touch_id, visitor_id, visitor_number, site_id, occurred_at, channel) VALUES "
            "('t3', 'v3', 7, 's', '2024-03-04 10:00:00', 'Email'), ('t4', 'v3', 7, 's', '2024-03-20 10:00:00', "
            "'Direct'), ('t5', 'v1', 0, 's', '2024-03-21 10:00:00', 'Email')"
        )
        assert client.query(march).result_rows == [("Direct", "", 1), ("Email", "", 3)]
        assert client.query("SELECT DISTINCT visitor_id FROM visitor_days ORDER BY 1").result_rows == [("v1",), ("v2",)]

        assert migrate_down(settings, steps=1) == ["0009_channel_visitors"]
        assert client.query(
            "SELECT grouping, channel, visitor_id FROM visitor_days FINAL ORDER BY 1, 2, 3"
        ).result_rows == [
            ("campaign", "Direct", "v3"),
            ("campaign", "Email", "v1"),
            ("campaign", "Email", "v2"),
            ("campaign", "Email", "v3"),
            ("channel", "Direct", "v3"),
            ("channel", "Email", "v1"),
            ("channel", "Email", "v2"),
            ("channel", "Email", "v3"),
        ]
        assert "visitor_number" not in {row[0] for row in client.query("DESCRIBE TABLE touches").result_rows}
    finally:
        client.close()


@pytest.mark.clickhouse
def test_sales_ready_leads_keep_one_row_per_ready_id_after_a_replay(clickhouse_http_url):
    """A replayed sales-ready record (same ready_id) collapses; a second cycle of the same lead stays."""
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('mig')}")
    migrate_up(settings)
    client = connect(settings)
    row = "('{id}', 'l1', {cycle}, '2024-03-0{cycle} 10:00:00', 'threshold', 52.5, [('form:demo', 40)])"
    try:
        for _ in range(2):  # the first delivery and its replay
            client.command(
                "INSERT INTO sales_ready_leads (ready_id, lead_id, cycle, ready_at, reason, score, breakdown) "
                f"VALUES {row.format(id='l1:1', cycle=1)}"
            )
        client.command(
            "INSERT INTO sales_ready_leads (ready_id, lead_id, cycle, ready_at, reason, score, breakdown) "
            f"VALUES {row.format(id='l1:2', cycle=2)}"
        )
        rows = client.query(
            "SELECT ready_id, cycle, reason, score, breakdown FROM sales_ready_leads FINAL ORDER BY ready_id"
        ).result_rows
    finally:
        client.close()
    assert rows == [
        ("l1:1", 1, "threshold", 52.5, [{"rule": "form:demo", "points": 40.0}]),
        ("l1:2", 2, "threshold", 52.5, [{"rule": "form:demo", "points": 40.0}]),
    ]
