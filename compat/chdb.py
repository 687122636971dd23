"""The raw connection under chdb's DB-API ``Connection``.

The endpoint needs what only the raw connection offers: a query answered in any ClickHouse output format as bytes
(the HTTP interface's ``FORMAT``), query parameters, and ``classify_query``. chdb 4.x keeps it as the private
``_conn``; this is the one place that reads it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["raw_connection"]


def raw_connection(connection: Any) -> Any:
    return connection._conn
