"""The collector's ASGI app: ``create_app(settings)``. Routes, CORS, error bodies; the lifespan owns the producer.

Endpoints (documented in docs/COLLECTOR.md and served as OpenAPI at ``/openapi.json``):
``POST /v1/events``, ``GET /tracker.js``, ``POST /v1/webhooks/{hubspot,pipedrive,crm}``, ``/healthz``,
``/readyz``, ``/metrics``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import logging
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Protocol

import orjson

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from collector import events as event_parsing
from collector.dedup import SeenDeliveries
from collector.errors import ApiError, body_too_large, spool_full
from collector.metrics import CONTENT_TYPE_LATEST, CollectorMetrics
from collector.openapi import openapi_document
from collector.publisher import Publisher
from collector.settings import CollectorSettings
from collector.spool import SpoolFull, SpoolRecord
from collector.webhooks import WebhookResult, generic, hubspot, pipedrive
from schemas.events import Envelope

log = logging.getLogger(__name__)

KEY_HEADER = "X-Closedloop-Key"
EVENTS_PATH = "/v1/events"


class JSONResponse(StarletteJSONResponse):
    """orjson rendering: the events endpoint answers thousands of times a second."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class RecordPublisher(Protocol):
    """What the app needs from a publisher (``collector.publisher.Publisher`` in production)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, records: list[SpoolRecord]) -> None: ...
    async def ready(self) -> dict[str, Any]: ...


class CollectorApp(Starlette):
    """The collector's Starlette app, with ``POST /v1/events`` answered before the middleware stack.

    That endpoint carries nearly all of the traffic, and Starlette's stack around it (the error middleware, the
    CORS middleware, the exception middleware, the router, the request/response wrappers) cost about 20-25 of the
    90 us an accepted single event took in process, and a quarter of single-event throughput under load
    (bench/collector.md, session 8). ``events_lane`` gives the endpoint the same answers without them (CORS
    headers included): see ``create_app``. Every other request, a preflight to /v1/events included, and
    the lifespan, go through Starlette as before.
    """

    events_lane: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.events_lane is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == EVENTS_PATH
        ):
            await self.events_lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def first_header_values(request: Request) -> dict[str, str]:
    """The request's headers by lower-case name, the first value of each, as ``request.headers.get`` gives them.

    One pass over the raw headers: Starlette's ``headers.get`` scans the whole list on every call, and the events
    endpoint asks for five of them on each of thousands of requests a second.
    """
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(request.scope["headers"])}


class _Static:
    """The tracker script, loaded once, with a strong ETag."""

    def __init__(self, name: str) -> None:
        self.body = (Path(__file__).parent / "static" / name).read_bytes()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'


def create_app(
    settings: CollectorSettings,
    publisher: RecordPublisher | None = None,
    metrics: CollectorMetrics | None = None,
) -> CollectorApp:
    """Build the collector. ``publisher`` defaults to the Kafka publisher with the on-disk spool."""
    metrics = metrics or CollectorMetrics()
    publisher = publisher or Publisher(settings, metrics)
    topics = settings.topics
    accepted_times = settings.accepted_times
    seen: dict[str, SeenDeliveries] = {}
    tracker = _Static("tracker.min.js")
    tracker_source = _Static("tracker.js")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        seen["deliveries"] = await asyncio.to_thread(
            SeenDeliveries, settings.dedup_file, settings.dedup_ttl_s, settings.dedup_max_entries
        )
        await publisher.start()
        try:
            yield
        finally:
            await publisher.close()
            seen["deliveries"].close()

    async def read_body(request: Request, headers: dict[str, str] | None = None) -> bytes:
        limit = settings.max_body_bytes
        declared = (headers if headers is not None else request.headers).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise body_too_large(limit)
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise body_too_large(limit)
                chunks.append(chunk)
        except ClientDisconnect:
            raise ApiError(400, "client_disconnected", "the client went away before the body was complete") from None
        return b"".join(chunks)

    async def publish(records: list[SpoolRecord]) -> None:
        try:
            await publisher.publish(records)
        except SpoolFull:
            raise spool_full(settings.spool_retry_after_s) from None

    # -- POST /v1/events -----------------------------------------------------------------------------------------

    async def post_events(request: Request) -> Response:
        headers = first_header_values(request)
        key = headers.get(KEY_HEADER.lower()) or request.query_params.get("key")
        if not key:
            raise ApiError(401, "missing_key", f"send the site's write key in the {KEY_HEADER} header or ?key=")
        site = settings.site_for_key(key)
        if site is None:
            raise ApiError(401, "unknown_key", "unknown write key; check CLOSEDLOOP_SITE_KEYS on the collector")
        site_id, is_server = site
        if not is_server and not settings.origin_allowed(headers.get("origin")):
            raise ApiError(
                403, "origin_not_allowed",
                f"origin {headers.get('origin')!r} is not in CLOSEDLOOP_ALLOWED_ORIGINS",
            )
        body = await read_body(request, headers)
        items = event_parsing.event_items(event_parsing.parse_json(body), settings.max_batch_events)
        batch = event_parsing.parse_events(
            items,
            site_id=site_id,
            allowed_types=event_parsing.SERVER_TYPES if is_server else event_parsing.BROWSER_TYPES,
            received_at=event_parsing.now_utc(),
            user_agent=headers.get("user-agent"),
            topics=topics,
            accepted_times=accepted_times,
        )
        if batch.rejected:
            metrics.rejected.labels(EVENTS_PATH, "invalid_event").inc(len(batch.rejected))
        if not batch.accepted:
            return JSONResponse(
                {
                    "error": "invalid_events",
                    "message": "no event was accepted; see 'rejected' for what to fix in each",
                    "accepted": 0,
                    "rejected": batch.rejected,
                },
                status_code=422,
            )
        await publish([event.record for event in batch.accepted])
        for event_type, count in Counter(event.type for event in batch.accepted).items():
            metrics.accepted.labels(EVENTS_PATH, event_type).inc(count)
        return JSONResponse(
            {
                "accepted": len(batch.accepted),
                "rejected": batch.rejected,
                "event_ids": [event.event_id for event in batch.accepted],
            }
        )

    # -- webhooks ------------------------------------------------------------------------------------------------

    async def accept_webhook(endpoint: str, result: WebhookResult) -> Response:
        deliveries = seen["deliveries"]
        ids = [change.delivery_id for change in result.changes]
        fresh = await asyncio.to_thread(deliveries.claim, ids) if ids else []
        new = [change for change, is_new in zip(result.changes, fresh) if is_new]
        records = []
        for change in new:
            envelope = Envelope(
                event_id=change.event_id,
                site_id=change.site_id,
                received_at=event_parsing.now_utc(),
                event=change.change,
            )
            records.append(event_parsing.record_for(envelope, topics))
        try:
            await publish(records)
        except BaseException:
            # Nothing was accepted: forget the claims so the CRM's retry goes through.
            await asyncio.to_thread(deliveries.release, [change.delivery_id for change in new])
            raise
        duplicates = len(result.changes) - len(new)
        metrics.accepted.labels(endpoint, "crm_status").inc(len(new))
        metrics.duplicates.labels(endpoint).inc(duplicates)
        metrics.ignored.labels(endpoint).inc(len(result.ignored))
        if result.rejected:
            metrics.rejected.labels(endpoint, "invalid_event").inc(len(result.rejected))
        body = {
            "accepted": len(new),
            "duplicates": duplicates,
            "ignored": result.ignored,
            "rejected": result.rejected,
            "event_ids": [change.event_id for change in new],
        }
        if result.rejected and not result.changes and not result.ignored:
            body = {"error": "invalid_events", "message": "no event was accepted; see 'rejected'", **body}
            return JSONResponse(body, status_code=422)
        return JSONResponse(body)

    async def post_hubspot(request: Request) -> Response:
        body = await read_body(request)
        hubspot.verify(request, body, settings)
        return await accept_webhook(
            "/v1/webhooks/hubspot", hubspot.parse(event_parsing.parse_json(body), settings)
        )

    async def post_pipedrive(request: Request) -> Response:
        pipedrive.verify(request, settings)
        body = await read_body(request)
        return await accept_webhook(
            "/v1/webhooks/pipedrive", pipedrive.parse(event_parsing.parse_json(body), settings)
        )

    async def post_generic(request: Request) -> Response:
        body = await read_body(request)
        generic.verify(request.headers.get(generic.SIGNATURE_HEADER), body, settings)
        return await accept_webhook("/v1/webhooks/crm", generic.parse(event_parsing.parse_json(body), settings))

    # -- static, health, metrics ---------------------------------------------------------------------------------

    def serve_script(script: _Static, request: Request) -> Response:
        headers = {"Cache-Control": "public, max-age=3600", "ETag": script.etag}
        if request.headers.get("if-none-match") == script.etag:
            return Response(status_code=304, headers=headers)
        return Response(script.body, media_type="application/javascript", headers=headers)

    async def get_tracker(request: Request) -> Response:
        return serve_script(tracker, request)

    async def get_tracker_source(request: Request) -> Response:
        return serve_script(tracker_source, request)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        state = await publisher.ready()
        ok = state.get("broker") == "reachable"
        return JSONResponse({"status": "ready" if ok else "not ready", **state}, status_code=200 if ok else 503)

    async def get_metrics(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    document = openapi_document(settings)

    async def get_openapi(request: Request) -> Response:
        return JSONResponse(document)

    # -- errors --------------------------------------------------------------------------------------------------

    def endpoint_of(request: Request) -> str:
        route = request.scope.get("route")
        return getattr(route, "path", "other")

    def rejection(endpoint: str, exc: ApiError) -> Response:
        metrics.rejected.labels(endpoint, exc.error).inc()
        return exc.response()

    def internal_error(endpoint: str, request: Request) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        metrics.rejected.labels(endpoint, "internal_error").inc()
        return ApiError(
            500, "internal_error", "the collector failed on this request; nothing was accepted, retry later"
        ).response()

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return rejection(endpoint_of(request), exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {
            404: f"no endpoint at {request.url.path}; see /openapi.json",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return ApiError(exc.status_code, reason, message, headers=dict(exc.headers or {})).response()

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return internal_error(endpoint_of(request), request)

    routes = [
        Route(EVENTS_PATH, post_events, methods=["POST"]),
        Route("/tracker.js", get_tracker, methods=["GET", "HEAD"]),
        Route("/tracker.src.js", get_tracker_source, methods=["GET", "HEAD"]),
        Route("/v1/webhooks/hubspot", post_hubspot, methods=["POST"]),
        Route("/v1/webhooks/pipedrive", post_pipedrive, methods=["POST"]),
        Route("/v1/webhooks/crm", post_generic, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", get_metrics, methods=["GET"]),
        Route("/openapi.json", get_openapi, methods=["GET"]),
    ]
    cors_rules = dict(
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Content-Type", KEY_HEADER],
        max_age=86400,
    )
    # The lane's answers get their CORS headers from the same middleware class, with the same rules.
    cors = CORSMiddleware(app=None, **cors_rules)  # type: ignore[arg-type] - only its send() is used

    async def events_lane(scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v1/events as the Starlette stack would answer it: same endpoint, same errors, same CORS headers."""
        request = Request(scope, receive)
        try:
            response = await post_events(request)
        except ApiError as exc:
            response = rejection(EVENTS_PATH, exc)
        except Exception:  # noqa: BLE001 - a 500 with a JSON body, never a bare crash
            response = internal_error(EVENTS_PATH, request)
        await response(scope, receive, functools.partial(cors.send, send=send, request_headers=request.headers))

    app = CollectorApp(
        routes=routes,
        middleware=[Middleware(CORSMiddleware, **cors_rules)],
        lifespan=lifespan,
        exception_handlers={ApiError: on_api_error, HTTPException: on_http_error, Exception: on_unexpected},
    )
    app.events_lane = events_lane
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.metrics = metrics
    return app


def create_served_app(settings: CollectorSettings) -> CollectorApp:
    """``create_app`` for a collector process (``closedloop collector``), then the start-up heap is frozen.

    Everything start-up built (modules, pydantic's validators, the app: about 54,000 objects) lives as long as the
    process, yet each full garbage collection re-scanned it: 26-39 ms a collection here, up to 50 ms, several times
    a minute under load, with every request in flight waiting. ``gc.freeze()`` leaves it out of collections
    (1-2 ms each since; bench/collector.md, session 8). Tests build apps with ``create_app`` and freeze nothing.
    """
    app = create_app(settings)
    gc.freeze()
    return app


def app_from_env() -> CollectorApp:
    """uvicorn factory for multi-worker runs: each worker reads the same ``CLOSEDLOOP_*`` settings."""
    return create_served_app(CollectorSettings())
