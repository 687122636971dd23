"""ClickHouse's HTTP interface over chDB (ClickHouse's engine in-process), for the single-machine stack.

Every part of the pipeline talks to it with clickhouse-connect exactly as to a ClickHouse server; in production
``CLOSEDLOOP_CLICKHOUSE_URL`` points at a real server and nothing here starts. See docs/CLICKHOUSE.md.
"""
