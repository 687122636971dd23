"""``create_app(settings)``: the dashboard's Starlette app. Read-only: its ClickHouse client runs every query with
``readonly = 2`` (reads, and the settings a report's SQL sets for itself; no write of any kind)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from html import escape
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard import html, live, pages
from dashboard.access import TokenMiddleware
from dashboard.settings import DashboardSettings
from dashboard.tables import TABLES, run_table
from dashboard.views import BadParameter, View, parse_view
from sinks.client import ClickHouseUrlError, connect
from sinks.reports import ReportError, to_csv

STATIC = Path(__file__).parent / "static"
PAGE_BUILDERS: dict[str, tuple[str, Callable[[Client, View], str]]] = {
    "/": ("Overview", pages.overview),
    "/channels": ("Channels", pages.channels),
    "/funnel": ("Funnel and lead quality", pages.funnel),
    "/paths": ("Paths and content", pages.paths),
}
log = logging.getLogger("closedloop.dashboard")

CountersFetcher = Callable[[str], Awaitable[dict[str, Any]]]


def read_only_client(settings: DashboardSettings) -> Client:
    client = connect(settings, query_timeout=60.0)
    client.set_client_setting("readonly", "2")
    return client


class _Clients:
    """One ClickHouse client, made on first use (the app starts even while ClickHouse is still starting)."""

    def __init__(self, factory: Callable[[], Client]) -> None:
        self.factory = factory
        self.client: Client | None = None
        self.lock = threading.Lock()

    def get(self) -> Client:
        with self.lock:
            if self.client is None:
                self.client = self.factory()
            return self.client

    def close(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.close()
                self.client = None


def _message(status: int, what: str, where: str, how: str, path: str = "/") -> HTMLResponse:
    return HTMLResponse(html.message_page(status, what, where, how, path), status_code=status)


def _failure(error: Exception, path: str) -> HTMLResponse:
    """A readable page for what can go wrong while a page is built."""
    if isinstance(error, BadParameter):
        return _message(400, error.what, error.where, error.how, path)
    if isinstance(error, ReportError):
        return _message(400, str(error), "the view's parameters", "change the view as the message says", path)
    if isinstance(error, (ClickHouseError, ClickHouseUrlError, OSError)):
        log.warning("clickhouse request failed", extra={"error": str(error)[:500]})
        return _message(
            503,
            f"ClickHouse did not answer: {str(error)[:300]}",
            "the dashboard's ClickHouse (CLOSEDLOOP_CLICKHOUSE_URL, or the embedded one)",
            "start it (`closedloop up`) or point CLOSEDLOOP_CLICKHOUSE_URL at your server, then reload",
            path,
        )
    raise error


def create_app(
    settings: DashboardSettings,
    *,
    client_factory: Callable[[], Client] | None = None,
    fetch_counters: CountersFetcher | None = None,
) -> Starlette:
    clients = _Clients(client_factory or (lambda: read_only_client(settings)))
    counters_url = (settings.dashboard_counters_url or "http://127.0.0.1:6066").rstrip("/")

    async def default_fetch(window: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=2.0) as http:
            response = await http.get(f"{counters_url}/counters/", params={"window": window})
            response.raise_for_status()
            return response.json()

    fetch = fetch_counters or default_fetch

    def page(request: Request) -> Response:
        path = request.url.path
        title, build = PAGE_BUILDERS[path]
        try:
            view = parse_view(request.query_params)
            client = clients.get()
            picker_values = pages.EXECUTOR.submit(pages.choices, client, view)
            body = build(client, view)
            channel_list, campaign_list = picker_values.result()
        except (BadParameter, ReportError, ClickHouseError, ClickHouseUrlError, OSError) as error:
            return _failure(error, path)
        return HTMLResponse(html.layout(title, path, body, view, html.pickers(path, view, channel_list, campaign_list)))

    def csv(request: Request) -> Response:
        key = request.path_params["key"]
        if key not in TABLES:
            return _message(
                404, f"there is no table {key!r}", "the address /csv/...", f"use one of: {', '.join(TABLES)}"
            )
        try:
            view = parse_view(request.query_params)
            result = run_table(clients.get(), key, view)
        except (BadParameter, ReportError, ClickHouseError, ClickHouseUrlError, OSError) as error:
            return _failure(error, "/")
        filename = f"{key}_{view.date_from}_{view.date_to}.csv"
        return Response(
            to_csv(result),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def _live_params(request: Request) -> tuple[str, str]:
        window = request.query_params.get("window", "1h")
        model = request.query_params.get("model", "last_touch")
        if window not in live.WINDOWS:
            raise BadParameter(
                f"unknown window {window!r}", "the URL parameter 'window'", f"choose one of: {', '.join(live.WINDOWS)}"
            )
        if model not in live.LIVE_MODELS:
            raise BadParameter(
                f"the live counters have no model {model!r}",
                "the URL parameter 'model'",
                f"choose one of: {', '.join(live.LIVE_MODELS)} (the worker counts these two)",
            )
        return window, model

    def live_page(request: Request) -> Response:
        try:
            window, model = _live_params(request)
        except BadParameter as error:
            return _failure(error, "/live")

        def options(values: tuple[str, ...], chosen: str) -> str:
            return "".join(f"<option{' selected' if v == chosen else ''}>{v}</option>" for v in values)

        controls = (
            '<form class="pickers" method="get" action="/live">'
            f'<label>Window <select name="window">{options(live.WINDOWS, window)}</select></label>'
            f'<label>Model <select name="model">{options(live.LIVE_MODELS, model)}</select></label>'
            '<button type="submit">Show</button></form>'
        )
        stream = f"/live/stream?window={window}&model={model}"
        body = (
            f'<section id="live" class="report" data-stream="{escape(stream)}" data-updates="0">'
            f'<p id="live-status" class="muted">connecting to {escape(counters_url)}/counters/ ...</p>'
            '<div class="charts"><figure class="chart-box"><figcaption>Conversions per channel and stage '
            '(updates every second, no reload)</figcaption><div id="live-chart" class="chart" style="height:320px">'
            '</div></figure></div><div class="scroll"><table id="live-table"><thead><tr><th>channel</th>'
            + "".join(f'<th class="num">{s}</th>' for s in live.snapshot(None, model)["stages"])
            + '<th class="num">revenue</th></tr></thead><tbody></tbody></table></div>'
            '<p class="command"><code>closedloop watch</code> shows the same counters in a terminal.</p></section>'
        )
        return HTMLResponse(html.layout("Live", "/live", body, None, controls))

    async def live_stream(request: Request) -> Response:
        try:
            window, model = _live_params(request)
        except BadParameter as error:
            return _failure(error, "/live")
        interval = settings.dashboard_live_interval_seconds
        polls = max(1, math.ceil(settings.dashboard_live_max_seconds / interval))

        async def events():
            for number in range(polls):  # bounded: the browser's EventSource reconnects after the last one
                try:
                    data = live.snapshot(await fetch(window), model)
                except (httpx.HTTPError, OSError, ValueError, KeyError) as error:
                    data = live.snapshot(
                        None,
                        model,
                        error=f"cannot read {counters_url}/counters/: {error} (is `closedloop worker` running?)",
                    )
                yield live.event(data)
                if number + 1 < polls:
                    if await request.is_disconnected():
                        return
                    await asyncio.sleep(interval)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return _message(
            status,
            f"nothing at {request.url.path}",
            "the address",
            "open one of the pages in the navigation: Overview, Channels, Funnel, Paths & content, Live",
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("dashboard page failed", extra={"path": request.url.path})
        return _message(
            500,
            f"the page failed: {type(exc).__name__}: {str(exc)[:300]}",
            f"the page {request.url.path}",
            "see the dashboard's log for the details; try another period or model meanwhile",
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            clients.close()

    routes: list[BaseRoute] = [Route(path, page) for path in PAGE_BUILDERS]
    routes += [
        Route("/csv/{key}", csv),
        Route("/live", live_page),
        Route("/live/stream", live_stream),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TokenMiddleware, token=settings.token)],
        exception_handlers={404: not_found, 405: not_found, 500: server_error},
        lifespan=lifespan,
    )
    return app
