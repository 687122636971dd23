"""A clickhouse-connect client built from the ``clickhouse`` URL of the settings."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from schemas.settings import PipelineSettings


class ClickHouseUrlError(ValueError):
    """The ClickHouse URL cannot be used."""


def parse_clickhouse_url(url: str) -> dict:
    """``http://user:password@host:port/db`` -> keyword arguments of ``clickhouse_connect.get_client``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClickHouseUrlError(
            f"ClickHouse URL {url!r} is not usable: expected http(s)://user:password@host:port/database "
            "(set CLOSEDLOOP_CLICKHOUSE_URL)"
        )
    return {
        "host": parts.hostname,
        "port": parts.port or (8443 if parts.scheme == "https" else 8123),
        "secure": parts.scheme == "https",
        "username": unquote(parts.username or "default"),
        "password": unquote(parts.password or ""),
        "database": parts.path.strip("/") or None,
    }


def connect(
    settings: PipelineSettings,
    *,
    database: str | None = "",
    connect_timeout: float = 5.0,
    query_timeout: float = 300.0,
) -> Client:
    """A client for ``settings.clickhouse``.

    ``database=""`` (the default) uses the database of the URL; ``database=None`` connects without one (used to
    create it).
    """
    kwargs = parse_clickhouse_url(settings.clickhouse)
    if database != "":
        kwargs["database"] = database
    if kwargs["database"] is None:
        kwargs["database"] = "default"
    return clickhouse_connect.get_client(
        **kwargs,
        connect_timeout=connect_timeout,
        send_receive_timeout=query_timeout,
        autogenerate_session_id=False,
    )
