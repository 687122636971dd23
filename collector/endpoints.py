"""The collector's endpoints and error handlers, as module-level Starlette functions.

Each reads what it needs from ``request.state.collector``: the :class:`CollectorState` the app's lifespan yields
(Starlette's lifespan state), so an endpoint holds nothing of its own and any app built by
``collector.app.create_app`` can serve it. Parsing and validating bodies is ``collector.events`` and
``collector.webhooks``; publishing is the publisher's. This module only moves a request through them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response

from collector import events as event_parsing
from collector.dedup import SeenDeliveries
from collector.errors import ApiError, body_too_large, spool_full
from collector.metrics import CONTENT_TYPE_LATEST, CollectorMetrics
from collector.settings import CollectorSettings
from collector.spool import SpoolFull, SpoolRecord
from collector.webhooks import CrmChange, WebhookResult, generic, hubspot, pipedrive, salesforce
from collector.webhooks.hubspot_api import HubSpotApi, HubSpotUnavailable
from collector.window import AcceptedTimes
from schemas.events import Envelope
from schemas.topics import Topics

log = logging.getLogger(__name__)

KEY_HEADER = "X-Closedloop-Key"
EVENTS_PATH = "/v1/events"
HUBSPOT_PATH = "/v1/webhooks/hubspot"
PIPEDRIVE_PATH = "/v1/webhooks/pipedrive"
GENERIC_CRM_PATH = "/v1/webhooks/crm"
SALESFORCE_PATH = "/v1/webhooks/salesforce"


class RecordPublisher(Protocol):
    """What the app needs from a publisher (``collector.publisher.Publisher`` in production)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, records: list[SpoolRecord]) -> None: ...
    async def ready(self) -> dict[str, Any]: ...


class Script:
    """A static script, read once, with a strong ETag."""

    def __init__(self, name: str) -> None:
        self.body = (Path(__file__).parent / "static" / name).read_bytes()
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'


@dataclass(frozen=True, slots=True)
class CollectorState:
    """What every request of one running app shares; the lifespan builds it, endpoints read ``request.state.collector``.

    One object rather than one lifespan key per field: the events endpoint reads it on every request.
    """

    settings: CollectorSettings
    publisher: RecordPublisher
    metrics: CollectorMetrics
    deliveries: SeenDeliveries
    tracker: Script
    tracker_source: Script
    openapi: dict[str, Any]
    # Derived from the settings once: the settings' properties build a new object on each call.
    topics: Topics
    accepted_times: AcceptedTimes
    hubspot_api: HubSpotApi | None = None  # with a private app token: fills what HubSpot's events leave out


def collector_of(request: Request) -> CollectorState:
    """The running app's shared state, ``request.state.collector``.

    Read from the scope's lifespan state dict, which ``request.state`` wraps, because building that wrapper costs
    more than the rest of the look-up, on every request (docs/COLLECTOR.md, "Why the hot path looks this way").
    """
    state: CollectorState = request.scope["state"]["collector"]
    return state


class JSONResponse(StarletteJSONResponse):
    """orjson rendering: the events endpoint answers thousands of times a second."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def first_header_values(request: Request) -> dict[str, str]:
    """The request's headers by lower-case name, the first value of each, as ``request.headers.get`` gives them.

    One pass over the raw headers: Starlette's ``headers.get`` scans the whole list on every call, and the events
    endpoint asks for five of them on every request.
    """
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(request.scope["headers"])}


async def read_body(request: Request, limit: int, headers: dict[str, str] | None = None) -> bytes:
    """The whole body, decoded from its ``Content-Encoding``; refused (413) as soon as it is known to pass
    ``limit`` bytes, sent or decoded (a small gzip body must not unpack into gigabytes)."""
    headers = headers if headers is not None else first_header_values(request)
    coding = content_coding(headers.get("content-encoding"))
    declared = headers.get("content-length")
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
    body = b"".join(chunks)
    return body if coding is None else decode_body(body, coding, limit)


# gzip and deflate: what HTTP clients and server-side senders compress with; anything else gets 415
CONTENT_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def content_coding(header: str | None) -> str | None:
    """The body's coding (None: sent as it is), or 415 naming the ones the collector decodes."""
    coding = (header or "").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding not in CONTENT_CODINGS:
        raise ApiError(
            415,
            "unsupported_content_encoding",
            f"Content-Encoding {header!r} is not supported; send the body as it is, or with gzip or deflate",
        )
    return coding


def decode_body(body: bytes, coding: str, limit: int) -> bytes:
    decoder = zlib.decompressobj(CONTENT_CODINGS[coding])
    try:
        decoded = decoder.decompress(body, limit + 1)
    except zlib.error as error:
        raise ApiError(
            400,
            "invalid_content_encoding",
            f"the body is not valid {coding} ({error}); check the Content-Encoding header",
        ) from None
    if len(decoded) > limit:
        raise body_too_large(limit)
    if not decoder.eof:
        raise ApiError(400, "invalid_content_encoding", f"the {coding} body ends before its end marker")
    return decoded


async def publish(collector: CollectorState, records: list[SpoolRecord]) -> None:
    """Hand records to the publisher; a full spool is a 503 with ``Retry-After``, nothing accepted."""
    try:
        await collector.publisher.publish(records)
    except SpoolFull:
        raise spool_full(collector.settings.spool_retry_after_s) from None


# -- POST /v1/events ---------------------------------------------------------------------------------------------


async def post_events(request: Request) -> Response:
    """One event, an array or ``{"batch": [...]}``: valid events are accepted, the others reported by index."""
    collector = collector_of(request)
    settings = collector.settings
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
            403,
            "origin_not_allowed",
            f"origin {headers.get('origin')!r} is not in CLOSEDLOOP_ALLOWED_ORIGINS",
        )
    body = await read_body(request, settings.max_body_bytes, headers)
    items = event_parsing.event_items(event_parsing.parse_json(body), settings.max_batch_events)
    batch = event_parsing.parse_events(
        items,
        site_id=site_id,
        allowed_types=event_parsing.SERVER_TYPES if is_server else event_parsing.BROWSER_TYPES,
        received_at=event_parsing.now_utc(),
        user_agent=headers.get("user-agent"),
        topics=collector.topics,
        accepted_times=collector.accepted_times,
        lead_key=settings.lead_key_bytes,
    )
    metrics = collector.metrics
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
    await publish(collector, [event.record for event in batch.accepted])
    for event_type, count in Counter(event.type for event in batch.accepted).items():
        metrics.accepted.labels(EVENTS_PATH, event_type).inc(count)
    return JSONResponse(
        {
            "accepted": len(batch.accepted),
            "rejected": batch.rejected,
            "event_ids": [event.event_id for event in batch.accepted],
        }
    )


# -- webhooks ----------------------------------------------------------------------------------------------------


async def publish_changes(collector: CollectorState, endpoint: str, result: WebhookResult) -> list[CrmChange]:
    """Publish the deliveries not seen before and count them; returns those (a CRM's retry of a delivery already
    accepted is a duplicate, counted and dropped)."""
    deliveries = collector.deliveries
    ids = [change.delivery_id for change in result.changes]
    fresh = await asyncio.to_thread(deliveries.claim, ids) if ids else []
    new = [change for change, is_new in zip(result.changes, fresh, strict=False) if is_new]
    records = []
    for change in new:
        envelope = Envelope(
            event_id=change.event_id,
            site_id=change.site_id,
            received_at=event_parsing.now_utc(),
            event=change.change,
        )
        records.append(event_parsing.record_for(envelope, collector.topics))
    try:
        await publish(collector, records)
    except BaseException:
        # Nothing was accepted: forget the claims so the CRM's retry goes through.
        await asyncio.to_thread(deliveries.release, [change.delivery_id for change in new])
        raise
    metrics = collector.metrics
    metrics.accepted.labels(endpoint, "crm_status").inc(len(new))
    metrics.duplicates.labels(endpoint).inc(len(result.changes) - len(new))
    metrics.ignored.labels(endpoint).inc(len(result.ignored))
    if result.rejected:
        metrics.rejected.labels(endpoint, "invalid_event").inc(len(result.rejected))
    return new


async def accept_webhook(collector: CollectorState, endpoint: str, result: WebhookResult) -> Response:
    """Publish what is new and answer with the counts (422 when nothing of the delivery was valid)."""
    new = await publish_changes(collector, endpoint, result)
    body = {
        "accepted": len(new),
        "duplicates": len(result.changes) - len(new),
        "ignored": result.ignored,
        "rejected": result.rejected,
        "event_ids": [change.event_id for change in new],
    }
    if result.rejected and not result.changes and not result.ignored:
        body = {"error": "invalid_events", "message": "no event was accepted; see 'rejected'", **body}
        return JSONResponse(body, status_code=422)
    return JSONResponse(body)


async def post_hubspot(request: Request) -> Response:
    """HubSpot's signature covers the body, so the body is read before it is checked."""
    collector = collector_of(request)
    settings = collector.settings
    body = await read_body(request, settings.max_body_bytes)
    hubspot.verify(request, body, settings)
    document = event_parsing.parse_json(body)
    if collector.hubspot_api is not None and isinstance(document, list):
        try:
            document = await collector.hubspot_api.complete(document)
        except HubSpotUnavailable as exc:
            # Nothing accepted: HubSpot sends the delivery again, by then its API may answer.
            log.warning("HubSpot API unavailable; delivery refused for a retry", extra={"reason": str(exc)})
            raise ApiError(
                503, "hubspot_api_unavailable", str(exc), headers={"Retry-After": str(exc.retry_after)}
            ) from None
    return await accept_webhook(collector, HUBSPOT_PATH, hubspot.parse(document, settings))


async def post_pipedrive(request: Request) -> Response:
    """Pipedrive authenticates with HTTP Basic, so a wrong password is refused before the body is read."""
    collector = collector_of(request)
    settings = collector.settings
    pipedrive.verify(request, settings)
    body = await read_body(request, settings.max_body_bytes)
    return await accept_webhook(collector, PIPEDRIVE_PATH, pipedrive.parse(event_parsing.parse_json(body), settings))


async def post_salesforce(request: Request) -> Response:
    """Salesforce outbound messages: answered with the SOAP ``Ack`` (or a SOAP fault), never JSON.

    Invalid notifications are acknowledged too, since Salesforce would resend them unchanged for 24 hours; they
    are logged with their reasons and counted. A message that could not be accepted at all (a full spool, a
    wrong organization) is a fault, so Salesforce retries it or shows the reason in its delivery queue.
    """
    collector = collector_of(request)
    settings = collector.settings
    try:
        salesforce.verify(request.query_params.get("token"), settings)
        body = await read_body(request, settings.max_body_bytes)
        result = salesforce.parse(body, settings)
        new = await publish_changes(collector, SALESFORCE_PATH, result)
    except ApiError as exc:
        collector.metrics.rejected.labels(SALESFORCE_PATH, exc.error).inc()
        return Response(salesforce.fault(exc), exc.status, exc.headers, media_type=salesforce.MEDIA_TYPE)
    for rejected in result.rejected:
        log.warning("Salesforce notification rejected", extra={"endpoint": SALESFORCE_PATH, **rejected})
    counts = {
        "X-Closedloop-Accepted": str(len(new)),
        "X-Closedloop-Duplicates": str(len(result.changes) - len(new)),
        "X-Closedloop-Ignored": str(len(result.ignored)),
        "X-Closedloop-Rejected": str(len(result.rejected)),
    }
    return Response(salesforce.ACK, headers=counts, media_type=salesforce.MEDIA_TYPE)


async def post_generic_crm(request: Request) -> Response:
    """Any other CRM, its raw body signed with HMAC-SHA256."""
    collector = collector_of(request)
    settings = collector.settings
    body = await read_body(request, settings.max_body_bytes)
    generic.verify(request.headers.get(generic.SIGNATURE_HEADER), body, settings)
    return await accept_webhook(collector, GENERIC_CRM_PATH, generic.parse(event_parsing.parse_json(body), settings))


# -- static, health, metrics -------------------------------------------------------------------------------------


def serve_script(script: Script, request: Request) -> Response:
    headers = {"Cache-Control": "public, max-age=3600", "ETag": script.etag}
    if request.headers.get("if-none-match") == script.etag:
        return Response(status_code=304, headers=headers)
    return Response(script.body, media_type="application/javascript", headers=headers)


async def get_tracker(request: Request) -> Response:
    return serve_script(collector_of(request).tracker, request)


async def get_tracker_source(request: Request) -> Response:
    return serve_script(collector_of(request).tracker_source, request)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready while the broker is reachable; while it is not, events are spooled and this answers 503."""
    state = await collector_of(request).publisher.ready()
    ok = state.get("broker") == "reachable"
    return JSONResponse({"status": "ready" if ok else "not ready", **state}, status_code=200 if ok else 503)


async def get_metrics(request: Request) -> Response:
    return Response(collector_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def get_openapi(request: Request) -> Response:
    return JSONResponse(collector_of(request).openapi)


# -- errors: every rejection is a JSON body and counted by endpoint and reason -----------------------------------


def endpoint_of(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "other")


def rejection(request: Request, endpoint: str, exc: ApiError) -> Response:
    collector_of(request).metrics.rejected.labels(endpoint, exc.error).inc()
    return exc.response()


def internal_error(request: Request, endpoint: str) -> Response:
    """A bug answers 500 with a JSON body saying nothing was accepted, never a bare crash."""
    log.exception("unexpected error on a request", extra={"method": request.method, "path": request.url.path})
    collector_of(request).metrics.rejected.labels(endpoint, "internal_error").inc()
    return ApiError(
        500, "internal_error", "the collector failed on this request; nothing was accepted, retry later"
    ).response()


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return rejection(request, endpoint_of(request), exc)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, in the collector's error body."""
    assert isinstance(exc, HTTPException)
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {
        404: f"no endpoint at {request.url.path}; see /openapi.json",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return ApiError(exc.status_code, reason, message, headers=dict(exc.headers or {})).response()


async def on_unexpected(request: Request, exc: Exception) -> Response:
    return internal_error(request, endpoint_of(request))
