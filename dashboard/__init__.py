"""The dashboard: a read-only web UI over the report SQL of ``sinks/reports/`` (docs/DASHBOARD.md)."""
