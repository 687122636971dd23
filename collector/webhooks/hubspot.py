"""``POST /v1/webhooks/hubspot``: HubSpot webhook event arrays, signature v3.

Verification: ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(client secret, method + URI + raw body +
timestamp)) where the timestamp is ``X-HubSpot-Request-Timestamp`` (ms) and the URI is the full URL HubSpot
called (``public_base_url`` or, with ``trust_forwarded_headers``, X-Forwarded-Proto/Host rebuild it behind a
proxy). Timestamps more than 5 minutes away from now are refused; the comparison is constant-time.

Mapping (each event of the array):

- ``contact.propertyChange`` of ``lifecyclestage``: the value through ``hubspot_lifecycle_stages``;
  ``crm_object_id`` and ``crm_contact_id`` are the contact's ``objectId``.
- ``deal.propertyChange`` of ``dealstage``: the stage id through ``hubspot_deal_stages`` (``closedwon`` ->
  customer, ``closedlost`` -> lost by default); ``crm_object_id`` is the deal id. HubSpot's event does not say
  which contact the deal belongs to nor its amount: the collector reads them from the optional fields
  ``contactId`` (required for deals: without it the event is ignored with a reason), ``email``, ``amount`` and
  ``currency``, which :mod:`collector.webhooks.hubspot_api` fills from HubSpot's CRM API when a private app token
  is set (an enriching proxy, a HubSpot workflow or the simulator may also send them).
- ``contact.propertyChange`` of ``hs_lead_status``: the status through ``hubspot_lead_statuses``
  (``UNQUALIFIED`` -> disqualified, ``BAD_TIMING`` -> lost by default), the status kept as the reason.
- a lost deal's reason is the optional ``reason`` field (``closed_lost_reason``, which the API lookup reads).
- anything else (other properties, merges, deletions) is ignored, and reported as such.

Dedup: ``portalId:eventId`` is remembered, and the envelope's ``event_id`` is ``hubspot:portalId:eventId``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from collector.errors import ApiError, not_configured, validation_errors
from collector.settings import CollectorSettings
from collector.webhooks import CrmChange, WebhookResult, epoch_to_datetime, money, window_rejection, without_emails
from schemas.events import CrmStatusChange

MAX_AGE_MS = 5 * 60 * 1000
SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"

# HubSpot decodes these in the URI before signing (its docs list exactly these).
_URI_DECODE = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


class HubSpotEvent(BaseModel):
    """One element of HubSpot's array (unknown HubSpot fields are allowed and ignored)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    event_id: int | str = Field(alias="eventId")
    portal_id: int | str = Field(alias="portalId")
    subscription_type: str = Field(alias="subscriptionType", max_length=128)
    object_id: int | str = Field(alias="objectId")
    occurred_at: int = Field(alias="occurredAt", ge=0, description="ms since the epoch")
    property_name: str | None = Field(None, alias="propertyName", max_length=256)
    property_value: str | None = Field(None, alias="propertyValue", max_length=512)
    attempt_number: int = Field(0, alias="attemptNumber")
    # closedloop extensions (see the module docstring):
    contact_id: int | str | None = Field(None, alias="contactId")
    email: str | None = Field(None, max_length=320)
    amount: str | int | float | None = None
    currency: str | None = Field(None, max_length=3)
    reason: str | None = Field(None, max_length=256, description="Why a deal was lost (closed_lost_reason).")


def signed_uri(request: Request, settings: CollectorSettings) -> str:
    """The URL HubSpot called, as it signed it."""
    path = request.url.path
    query = request.url.query
    if settings.public_base_url:
        base = settings.public_base_url.rstrip("/")
    elif settings.trust_forwarded_headers and request.headers.get("x-forwarded-host"):
        proto = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
        host = request.headers["x-forwarded-host"].split(",")[0].strip()
        base = f"{proto}://{host}"
    else:
        base = f"{request.url.scheme}://{request.url.netloc}"
    uri = base + path + (f"?{query}" if query else "")
    for encoded, char in _URI_DECODE.items():
        uri = uri.replace(encoded, char).replace(encoded.lower(), char)
    return uri


def sign(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The v3 signature HubSpot would send (used by verify, the tests and the simulator)."""
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def verify(request: Request, body: bytes, settings: CollectorSettings, now_ms: int | None = None) -> None:
    """Raise ApiError unless the request carries a fresh, valid v3 signature."""
    if settings.hubspot_client_secret is None:
        raise not_configured("CLOSEDLOOP_HUBSPOT_CLIENT_SECRET", "POST /v1/webhooks/hubspot")
    signature = request.headers.get(SIGNATURE_HEADER)
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise ApiError(
            401, "missing_signature", f"HubSpot requests must carry {SIGNATURE_HEADER} and {TIMESTAMP_HEADER}"
        )
    if not timestamp.isdigit():
        raise ApiError(401, "bad_timestamp", f"{TIMESTAMP_HEADER} must be milliseconds since the epoch")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now_ms - int(timestamp)) > MAX_AGE_MS:
        raise ApiError(401, "stale_timestamp", f"{TIMESTAMP_HEADER} is more than 5 minutes from the collector's clock")
    expected = sign(
        settings.hubspot_client_secret.get_secret_value(),
        request.method,
        signed_uri(request, settings),
        body,
        timestamp,
    )
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise ApiError(
            401,
            "bad_signature",
            f"{SIGNATURE_HEADER} does not match the body; check the client secret and, behind a proxy, "
            "CLOSEDLOOP_PUBLIC_BASE_URL or CLOSEDLOOP_TRUST_FORWARDED_HEADERS",
        )


def parse(document: Any, settings: CollectorSettings, received_at: datetime | None = None) -> WebhookResult:
    """HubSpot's array -> status changes, with ignored and rejected events by index (an ``occurredAt`` outside
    the accepted times is rejected, naming it and the window)."""
    received_at = received_at or datetime.now(timezone.utc)
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list):
        raise ApiError(400, "invalid_shape", "HubSpot sends a JSON array of events")
    if not document:
        raise ApiError(400, "empty_batch", "the array holds no event")
    result = WebhookResult()
    for index, item in enumerate(document):
        try:
            event = HubSpotEvent.model_validate(item)
        except ValidationError as exc:
            result.rejected.append({"index": index, "errors": validation_errors(exc)})
            continue
        try:
            change, reason = _change(event, settings)
        except ValidationError as exc:
            result.rejected.append({"index": index, "errors": validation_errors(exc)})
            continue
        if change is None:
            result.ignored.append({"index": index, "reason": reason})
        elif rejected := window_rejection(index, change, settings.accepted_times, received_at, "occurredAt"):
            result.rejected.append(rejected)
        else:
            delivery = f"{event.portal_id}:{event.event_id}"
            result.changes.append(
                CrmChange(delivery, f"hubspot:{event.portal_id}", without_emails(change, settings.lead_key_bytes))
            )
    return result


def _change(event: HubSpotEvent, settings: CollectorSettings) -> tuple[CrmStatusChange | None, str]:
    kind = event.subscription_type.rsplit(".", 1)
    value = (event.property_value or "").strip().lower()
    occurred_at = epoch_to_datetime(event.occurred_at)
    if kind == ["contact", "propertyChange"] and event.property_name == "lifecyclestage":
        stage = settings.hubspot_lifecycle_stages.get(value)
        if stage is None:
            return None, f"lifecycle stage {event.property_value!r} is not mapped (hubspot_lifecycle_stages)"
        return CrmStatusChange(
            crm="hubspot",
            crm_object_id=str(event.object_id),
            crm_contact_id=str(event.object_id),
            email=event.email,
            stage=stage,
            occurred_at=occurred_at,
        ), ""
    if kind == ["contact", "propertyChange"] and event.property_name == "hs_lead_status":
        stage = settings.hubspot_lead_statuses.get((event.property_value or "").strip().upper())
        if stage is None:
            return None, f"lead status {event.property_value!r} is not mapped (CLOSEDLOOP_HUBSPOT_LEAD_STATUSES)"
        return CrmStatusChange(
            crm="hubspot",
            crm_object_id=str(event.object_id),
            crm_contact_id=str(event.object_id),
            email=event.email,
            stage=stage,
            reason=event.property_value,
            occurred_at=occurred_at,
        ), ""
    if kind == ["deal", "propertyChange"] and event.property_name == "dealstage":
        stage = settings.hubspot_deal_stages.get(value) or settings.hubspot_deal_stages.get(event.property_value or "")
        if stage is None:
            return None, f"deal stage {event.property_value!r} is not mapped (CLOSEDLOOP_HUBSPOT_DEAL_STAGES)"
        if event.contact_id is None and event.email is None:
            return None, (
                "deal event without contactId or email: cannot tell whose deal it is (set "
                "CLOSEDLOOP_HUBSPOT_PRIVATE_APP_TOKEN so the collector asks HubSpot; docs/COLLECTOR.md)"
            )
        amount = money(event.amount)
        return CrmStatusChange(
            crm="hubspot",
            crm_object_id=str(event.object_id),
            crm_contact_id=None if event.contact_id is None else str(event.contact_id),
            email=event.email,
            stage=stage,
            deal_value=amount,
            currency=(event.currency or "").upper() or None if amount is not None else None,
            reason=event.reason,
            occurred_at=occurred_at,
        ), ""
    return None, f"{event.subscription_type} of {event.property_name!r} is not a lifecycle change"
