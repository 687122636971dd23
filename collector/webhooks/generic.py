"""``POST /v1/webhooks/crm``: a documented JSON format for any other CRM, signed with HMAC-SHA256.

Signature: header ``X-Closedloop-Signature: sha256=<hex>`` where ``<hex>`` is
HMAC-SHA256(``CLOSEDLOOP_CRM_WEBHOOK_SECRET``, raw request body), compared in constant time.

Body: ``{"source": "my-crm", "events": [GenericCrmEvent, ...]}`` (``source`` optional, becomes the site id
``crm:<source>``), or one event object, or a JSON array of them. See :class:`GenericCrmEvent` for the fields.
``id`` is the delivery id: a resend with the same id produces no second event.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collector.errors import ApiError, not_configured, validation_errors
from collector.settings import CollectorSettings
from collector.webhooks import CrmChange, WebhookResult, window_rejection, without_emails
from schemas.events import CrmStatusChange, LifecycleStage

SIGNATURE_HEADER = "X-Closedloop-Signature"
MAX_EVENTS = 1000


class GenericCrmEvent(BaseModel):
    """One status change of a lead, in the generic CRM webhook format."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="Unique id of this change in your CRM; resends must keep it (dedup)."
    )
    stage: LifecycleStage = Field(description="lead, mql, sql, opportunity, customer, lost or disqualified.")
    occurred_at: datetime = Field(description="When the stage changed (ISO 8601; naive = UTC).")
    email: Annotated[str, Field(max_length=320)] | None = Field(None, description="The lead's email, if known.")
    contact_id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None, description="The CRM's id of the person; email or contact_id is required."
    )
    object_id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None,
        description="The record that changed (deal, opportunity); defaults to contact_id, else the lead id "
        "of email (an id that is an email address is stored as its lead id).",
    )
    value: Decimal | None = Field(None, description='Deal value, e.g. "1200.00"; needs currency.')
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")] | None = None
    reason: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="Why the lead was lost or disqualified (e.g. 'price', 'no budget')."
    )


class GenericCrmBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] = "generic"
    events: list[Any] = Field(min_length=1, max_length=MAX_EVENTS)


def sign(secret: str, body: bytes) -> str:
    """The header value a sender puts in ``X-Closedloop-Signature``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(signature: str | None, body: bytes, settings: CollectorSettings) -> None:
    if settings.crm_webhook_secret is None:
        raise not_configured("CLOSEDLOOP_CRM_WEBHOOK_SECRET", "POST /v1/webhooks/crm")
    if not signature:
        raise ApiError(401, "missing_signature", f"sign the raw body: {SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256>")
    expected = sign(settings.crm_webhook_secret.get_secret_value(), body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise ApiError(
            401, "bad_signature", f"{SIGNATURE_HEADER} does not match HMAC-SHA256(secret, raw body) for this body"
        )


def parse(document: Any, settings: CollectorSettings, received_at: datetime | None = None) -> WebhookResult:
    """The body's events -> status changes, rejected by index when invalid or when ``occurred_at`` is outside
    the accepted times (named with the window, as on ``POST /v1/events``)."""
    received_at = received_at or datetime.now(timezone.utc)
    if isinstance(document, dict) and "events" in document:
        try:
            body = GenericCrmBody.model_validate(document)
        except ValidationError as exc:
            raise ApiError(422, "invalid_event", "not a generic CRM webhook body", validation_errors(exc)) from None
        source, items = body.source, body.events
    elif isinstance(document, dict):
        source, items = "generic", [document]
    elif isinstance(document, list) and 0 < len(document) <= MAX_EVENTS:
        source, items = "generic", document
    else:
        raise ApiError(
            400,
            "invalid_shape",
            f'expected {{"events": [...]}}, one event object, or an array of 1 to {MAX_EVENTS} events',
        )
    result = WebhookResult()
    for index, item in enumerate(items):
        try:
            event = GenericCrmEvent.model_validate(item)
            change = CrmStatusChange(
                crm="generic",
                crm_object_id=event.object_id or event.contact_id or event.email or event.id,
                crm_contact_id=event.contact_id,
                email=event.email,
                stage=event.stage,
                deal_value=event.value,
                currency=event.currency.upper() if event.currency else None,
                reason=event.reason,
                occurred_at=event.occurred_at,
            )
        except ValidationError as exc:
            result.rejected.append({"index": index, "errors": validation_errors(exc)})
            continue
        if rejected := window_rejection(index, change, settings.accepted_times, received_at, "occurred_at"):
            result.rejected.append(rejected)
            continue
        result.changes.append(
            CrmChange(f"{source}:{event.id}", f"crm:{source}", without_emails(change, settings.lead_key_bytes))
        )
    return result
