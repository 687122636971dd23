"""Meta Conversions API and LinkedIn Conversions API: which stage conversions go, and their requests (docs/ADS.md).

Pure: :func:`ad_messages` turns one conversion record (and the lead's email, when known) into the outbox
messages of the ad platforms it may go to; :func:`meta_request` and :func:`linkedin_request` build the HTTP request
of one such message. No I/O here.

- **Who goes**: a conversion of a stage configured for the platform, whose lead's consent is ``granted`` and
  whose journey has the platform's click (Meta ``fbc``, LinkedIn ``li_fat_id``) at most 90 days before it; the
  platform's API also takes the hashed email, which is added when the lead's email is known.
- **The email** travels only hashed: trimmed, lower-cased, SHA-256, hex (both platforms' normalisation). The
  outbox message carries the hash in its payload and no raw email (docs/PRIVACY.md).
- **Deduplication**: the event id is the conversion id (stable on replay, one per lead and stage); the message id
  ``<platform>:<conversion id>`` makes ``closedloop deliver``'s seen-store post it once, whatever version of the
  conversion or replay of the topic brings it again.

Request shapes, from the platforms' public documentation:

- Meta: ``POST {graph}/{version}/{pixel id}/events`` with ``{"data": [server event], "access_token": ...}``; the
  server event has ``event_name``, ``event_time`` (Unix seconds), ``event_id``, ``action_source``
  (``system_generated``: a CRM's outcome), ``user_data`` (``em``: list of SHA-256 hashes, ``fbc``: not hashed) and
  ``custom_data`` (``value``, ``currency``). The token goes in the body, never in the URL. Meta refuses a whole
  request with an event older than 7 days: such a message is dead at once, with that reason, unsent.
- LinkedIn: ``POST {api}/rest/conversionEvents`` with the headers ``Authorization: Bearer``, ``LinkedIn-Version:
  YYYYMM`` and ``X-Restli-Protocol-Version: 2.0.0``; body ``conversion`` (the rule's URN
  ``urn:lla:llaPartnerConversion:<id>``), ``conversionHappenedAt`` (ms), ``conversionValue`` (``currencyCode``,
  ``amount`` as a string), ``user.userIds`` (``SHA256_EMAIL``, ``LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID``) and
  ``eventId``. LinkedIn takes events up to 90 days old.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from delivery.requests import Request
from schemas.events import as_utc
from schemas.outbox import OutboxMessage

CLICK_WINDOW = timedelta(days=90)
META_MAX_AGE = timedelta(days=7)
LINKEDIN_MAX_AGE = timedelta(days=90)
PLATFORM_CLICK = {"meta": "fbc", "linkedin": "li_fat_id"}
KINDS = {"meta": "meta_conversion", "linkedin": "linkedin_conversion"}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def email_sha256(email: str) -> str:
    """The platforms' hashed email: SHA-256 hex of the trimmed, lower-cased address."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


class ClickView(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: str
    value: str
    clicked_at: datetime


class ConversionView(BaseModel):
    """The fields of a ``schemas.outputs.Conversion`` record the feed needs; others (a later ``credits`` field, say)
    are ignored, so a producer may add fields without breaking the feed."""

    model_config = ConfigDict(extra="ignore")

    conversion_id: str
    lead_id: str
    stage: str
    occurred_at: datetime
    revenue: Decimal | None = None
    currency: str | None = None
    clicks: list[ClickView] = []
    ads_consent: str | None = None
    version: int = 1

    def click(self, kind: str) -> ClickView | None:
        return next((c for c in self.clicks if c.kind == kind), None)


def ad_messages(conversion: ConversionView, email: str | None, stages: dict[str, list[str]]) -> list[OutboxMessage]:
    """The outbox messages of one conversion: one per platform that may receive it (module docstring).

    ``stages`` maps each configured platform to the stages it takes (from the settings)."""
    if conversion.ads_consent != "granted":
        return []
    out = []
    for platform, kind in PLATFORM_CLICK.items():
        click = conversion.click(kind)
        if conversion.stage not in stages.get(platform, ()) or click is None:
            continue
        if as_utc(conversion.occurred_at) - as_utc(click.clicked_at) > CLICK_WINDOW:
            continue
        value = conversion.revenue
        payload: dict[str, Any] = {
            "conversion_id": conversion.conversion_id,
            "stage": conversion.stage,
            "click_kind": kind,
            "click_id": click.value,
            "clicked_at": as_utc(click.clicked_at).isoformat(),
            "value": None if value is None else format(value, "f"),
            "currency": conversion.currency if value is not None else None,
            "email_sha256": email_sha256(email) if email else None,
            "ads_consent": conversion.ads_consent,
        }
        out.append(
            OutboxMessage(
                message_id=f"{platform}:{conversion.conversion_id}",
                kind=KINDS[platform],
                lead_id=conversion.lead_id,
                occurred_at=conversion.occurred_at,
                title=f"{conversion.stage} conversion for {platform.capitalize()}",
                payload=payload,
            )
        )
    return out


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def too_old(message: OutboxMessage, platform: str, now: datetime) -> str:
    """Why the platform would refuse the event for its age, or "" when it is young enough."""
    limit = META_MAX_AGE if platform == "meta" else LINKEDIN_MAX_AGE
    if now - message.occurred_at > limit:
        return f"older than {platform.capitalize()}'s {limit.days} days for conversion events: not sent"
    return ""


def meta_event(message: OutboxMessage, event_name: str) -> dict[str, Any]:
    payload = message.payload
    user_data: dict[str, Any] = {"fbc": payload["click_id"]}
    if payload.get("email_sha256"):
        user_data["em"] = [payload["email_sha256"]]
    event: dict[str, Any] = {
        "event_name": event_name,
        "event_time": int(message.occurred_at.timestamp()),
        "event_id": payload["conversion_id"],
        "action_source": "system_generated",
        "user_data": user_data,
        "custom_data": {"lead_event_source": "closedloop", "event_source": "crm"},
    }
    if payload.get("value") is not None:
        event["custom_data"].update(value=float(Decimal(payload["value"])), currency=payload["currency"])
    return event


def meta_request(
    message: OutboxMessage,
    *,
    base_url: str,
    api_version: str,
    pixel_id: str,
    token: str,
    event_name: str,
    test_event_code: str | None = None,
) -> Request:
    body: dict[str, Any] = {"data": [meta_event(message, event_name)], "access_token": token}
    if test_event_code:
        body["test_event_code"] = test_event_code
    return Request(
        "POST",
        f"{base_url.rstrip('/')}/{api_version}/{pixel_id}/events",
        {"Content-Type": "application/json"},
        _json(body),
    )


def linkedin_request(message: OutboxMessage, *, base_url: str, version: str, token: str, conversion: str) -> Request:
    payload = message.payload
    urn = conversion if conversion.startswith("urn:") else f"urn:lla:llaPartnerConversion:{conversion}"
    user_ids = []
    if payload.get("email_sha256"):
        user_ids.append({"idType": "SHA256_EMAIL", "idValue": payload["email_sha256"]})
    user_ids.append({"idType": "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "idValue": payload["click_id"]})
    body: dict[str, Any] = {
        "conversion": urn,
        "conversionHappenedAt": (message.occurred_at - _EPOCH) // timedelta(milliseconds=1),
        "user": {"userIds": user_ids},
        "eventId": payload["conversion_id"],
    }
    if payload.get("value") is not None:
        body["conversionValue"] = {"currencyCode": payload["currency"], "amount": payload["value"]}
    return Request(
        "POST",
        f"{base_url.rstrip('/')}/rest/conversionEvents",
        {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "LinkedIn-Version": version,
            "X-Restli-Protocol-Version": "2.0.0",
        },
        _json(body),
    )
