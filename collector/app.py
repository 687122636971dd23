"""The collector's ASGI app: ``create_app(settings)`` wires routes, CORS, error handlers and the lifespan.

Endpoints (documented in docs/COLLECTOR.md and served as OpenAPI at ``/openapi.json``) live in
``collector.endpoints``: ``POST /v1/events``, ``GET /tracker.js``, ``POST /v1/webhooks/{hubspot,pipedrive,crm}``,
``/healthz``, ``/readyz``, ``/metrics``. The lifespan owns the producer and the webhooks' seen-deliveries store,
and yields the :class:`~collector.endpoints.CollectorState` every endpoint reads.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from collector import endpoints
from collector.dedup import SeenDeliveries
from collector.endpoints import EVENTS_PATH, KEY_HEADER, CollectorState, RecordPublisher, Script
from collector.errors import ApiError
from collector.metrics import CollectorMetrics
from collector.openapi import openapi_document
from collector.publisher import Publisher
from collector.settings import LOOPBACK_ORIGIN, CollectorSettings
from collector.webhooks.hubspot_api import HubSpotApi

ROUTES = [
    Route(EVENTS_PATH, endpoints.post_events, methods=["POST"]),
    Route("/tracker.js", endpoints.get_tracker, methods=["GET", "HEAD"]),
    Route("/tracker.src.js", endpoints.get_tracker_source, methods=["GET", "HEAD"]),
    Route(endpoints.HUBSPOT_PATH, endpoints.post_hubspot, methods=["POST"]),
    Route(endpoints.PIPEDRIVE_PATH, endpoints.post_pipedrive, methods=["POST"]),
    Route(endpoints.GENERIC_CRM_PATH, endpoints.post_generic_crm, methods=["POST"]),
    Route(endpoints.SALESFORCE_PATH, endpoints.post_salesforce, methods=["POST"]),
    Route("/healthz", endpoints.healthz, methods=["GET"]),
    Route("/readyz", endpoints.readyz, methods=["GET"]),
    Route("/metrics", endpoints.get_metrics, methods=["GET"]),
    Route("/openapi.json", endpoints.get_openapi, methods=["GET"]),
]
EXCEPTION_HANDLERS = {
    ApiError: endpoints.on_api_error,
    HTTPException: endpoints.on_http_error,
    Exception: endpoints.on_unexpected,
}


class CollectorApp(Starlette):
    """The collector's Starlette app, with ``POST /v1/events`` answered by ``events_lane`` before the middleware.

    That endpoint carries nearly all of the traffic, and Starlette's middleware and router around it cost a
    sizeable share of each request (docs/COLLECTOR.md, "Why the hot path looks this way"). The lane gives the
    same answers, CORS headers included; every other request, a preflight to /v1/events included, and the
    lifespan go through Starlette. ``events_lane = None`` sends /v1/events through Starlette too (the tests
    compare both paths).
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


class EventsLane:
    """``POST /v1/events`` as the Starlette stack would answer it: same endpoint, same errors, same CORS headers."""

    def __init__(self, cors_rules: dict[str, Any]) -> None:
        # The lane's answers get their CORS headers from the same middleware class, with the same rules.
        self._cors = CORSMiddleware(app=None, **cors_rules)  # type: ignore[arg-type]  # only its send() is used

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoints.post_events(request)
        except ApiError as exc:
            response = endpoints.rejection(request, EVENTS_PATH, exc)
        except Exception:  # noqa: BLE001 - a 500 with a JSON body, never a bare crash
            response = endpoints.internal_error(request, EVENTS_PATH)
        await response(scope, receive, functools.partial(self._cors.send, send=send, request_headers=request.headers))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, CollectorState]]:
    """Open the seen-deliveries store and start the producer; on shutdown flush and close both.

    Yields Starlette's lifespan state: each request gets it as ``request.state.collector``.
    """
    settings: CollectorSettings = app.state.settings
    publisher: RecordPublisher = app.state.publisher
    deliveries = await asyncio.to_thread(
        SeenDeliveries, settings.dedup_file, settings.dedup_ttl_s, settings.dedup_max_entries
    )
    try:
        await publisher.start()
    except BaseException:
        deliveries.close()  # a collector that cannot start leaves its store closed, not its file lock held
        raise
    hubspot_api = HubSpotApi(settings) if settings.hubspot_private_app_token is not None else None
    try:
        yield {
            "collector": CollectorState(
                settings=settings,
                publisher=publisher,
                metrics=app.state.metrics,
                deliveries=deliveries,
                tracker=app.state.tracker,
                tracker_source=app.state.tracker_source,
                openapi=app.state.openapi,
                topics=settings.topics,
                accepted_times=settings.accepted_times,
                hubspot_api=hubspot_api,
            )
        }
    finally:
        await publisher.close()
        deliveries.close()
        if hubspot_api is not None:
            await hubspot_api.close()


def create_app(
    settings: CollectorSettings,
    publisher: RecordPublisher | None = None,
    metrics: CollectorMetrics | None = None,
) -> CollectorApp:
    """Build the collector. ``publisher`` defaults to the Kafka publisher with the on-disk spool."""
    metrics = metrics or CollectorMetrics()
    cors_rules: dict[str, Any] = {
        "allow_origins": settings.allowed_origins,
        "allow_origin_regex": LOOPBACK_ORIGIN.pattern,
        "allow_methods": ["GET", "POST", "OPTIONS"],
        "allow_headers": ["Content-Type", KEY_HEADER],
        "max_age": 86400,
    }
    app = CollectorApp(
        routes=ROUTES,
        middleware=[Middleware(CORSMiddleware, **cors_rules)],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.events_lane = EventsLane(cors_rules)
    # What the lifespan hands to the endpoints, built with the app so that create_served_app's gc.freeze() covers it.
    app.state.settings = settings
    app.state.publisher = publisher or Publisher(settings, metrics)
    app.state.metrics = metrics
    app.state.tracker = Script("tracker.min.js")
    app.state.tracker_source = Script("tracker.js")
    app.state.openapi = openapi_document(settings)
    return app


def create_served_app(settings: CollectorSettings) -> CollectorApp:
    """``create_app`` for a collector process (``closedloop collector``), then the start-up heap is frozen.

    Everything start-up built lives as long as the process, and each full garbage collection re-scanned it
    while every request in flight waited; ``gc.freeze()`` leaves it out of collections (docs/COLLECTOR.md, "Why
    the hot path looks this way"). Tests build apps with ``create_app`` and freeze nothing.
    """
    app = create_app(settings)
    gc.freeze()
    return app


def app_from_env() -> CollectorApp:
    """uvicorn factory for multi-worker runs: each worker reads the same ``CLOSEDLOOP_*`` settings."""
    return create_served_app(CollectorSettings())
