"""``POST /v1/webhooks/pipedrive``: Pipedrive webhooks v2, authenticated with HTTP Basic auth.

Pipedrive signs nothing: configure the webhook with the user and password set in ``CLOSEDLOOP_PIPEDRIVE_USER``
and ``CLOSEDLOOP_PIPEDRIVE_PASSWORD``. The body is ``{"meta": {...}, "data": {...}, "previous": {...}}``.

Mapping (``meta.entity`` / ``meta.action``):

- ``deal`` ``create``: ``pipedrive_deal_created_stage`` (opportunity by default); created already won/lost
  counts as that outcome.
- ``deal`` ``change``: ``status`` becoming ``won`` -> customer with ``value`` and ``currency``; becoming
  ``lost`` -> lost with its ``lost_reason``; ``stage_id`` moving to a stage listed in ``pipedrive_stage_ids``
  -> that stage. The person is ``data.person_id`` (``crm_contact_id``); v2 deal payloads carry no email.
- ``person`` ``create`` -> lead, with the primary address of ``data.emails`` (``crm_contact_id`` = person id).
- ``person`` / ``lead`` ``change`` adding a label listed in ``pipedrive_label_ids`` (e.g. your "MQL" and "SQL"
  labels) -> that stage. ``lead`` ``create`` -> lead (its ``person_id``).
- everything else (deletions, other entities, unchanged status) is ignored and reported as such.

Dedup: Pipedrive retries a delivery with the same ``meta.id`` and a growing ``meta.attempt``; ``meta.id`` is
remembered, and each emitted envelope's ``event_id`` is ``pipedrive:<company>:<meta.id>:<n>``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from collector.errors import ApiError, not_configured, validation_errors
from collector.settings import CollectorSettings
from collector.webhooks import CrmChange, WebhookResult, epoch_to_datetime, money, window_rejection, without_emails
from schemas.events import CrmStatusChange, LifecycleStage


class PipedriveMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    action: str = Field(max_length=64)
    entity: str = Field(max_length=64)
    entity_id: int | str | None = None
    id: int | str | None = Field(None, description="Unique per event; kept across retries.")
    version: str = Field(max_length=16)
    company_id: int | str | None = None
    attempt: int | None = None
    timestamp: int | float | str | None = None


class PipedriveDelivery(BaseModel):
    model_config = ConfigDict(extra="allow")

    meta: PipedriveMeta
    data: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None


def verify(request: Request, settings: CollectorSettings) -> None:
    """Raise ApiError unless the request carries the configured Basic credentials."""
    if settings.pipedrive_user is None or settings.pipedrive_password is None:
        raise not_configured(
            "CLOSEDLOOP_PIPEDRIVE_USER and CLOSEDLOOP_PIPEDRIVE_PASSWORD", "POST /v1/webhooks/pipedrive"
        )
    challenge = {"WWW-Authenticate": 'Basic realm="closedloop"'}
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        raise ApiError(401, "missing_credentials", "Pipedrive webhooks need HTTP Basic auth", headers=challenge)
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(
            401, "bad_credentials", "the Authorization header is not valid Basic auth", headers=challenge
        ) from None
    user_ok = hmac.compare_digest(user.encode(), settings.pipedrive_user.encode())
    password_ok = hmac.compare_digest(password.encode(), settings.pipedrive_password.get_secret_value().encode())
    if not (sep and user_ok and password_ok):
        raise ApiError(401, "bad_credentials", "wrong user or password for the Pipedrive webhook", headers=challenge)


def parse(document: Any, settings: CollectorSettings, received_at: datetime | None = None) -> WebhookResult:
    """One Pipedrive delivery -> zero, one or more status changes (rejected, naming the time's field and the
    window, when its time is outside the accepted times)."""
    received_at = received_at or datetime.now(timezone.utc)
    if not isinstance(document, dict):
        raise ApiError(400, "invalid_shape", 'Pipedrive sends one JSON object {"meta": ..., "data": ...}')
    try:
        delivery = PipedriveDelivery.model_validate(document)
    except ValidationError as exc:
        raise ApiError(422, "invalid_event", "not a Pipedrive v2 webhook body", validation_errors(exc)) from None
    meta = delivery.meta
    if not meta.version.startswith("2"):
        raise ApiError(
            422,
            "unsupported_version",
            f"webhook version {meta.version!r}: create the Pipedrive webhook with version 2.0",
            [{"loc": "meta.version", "msg": "expected 2.0"}],
        )
    result = WebhookResult()
    data = delivery.data or {}
    previous = delivery.previous or {}
    company = str(meta.company_id) if meta.company_id is not None else "default"
    delivery_id = (
        str(meta.id) if meta.id is not None else f"{meta.entity}:{meta.entity_id}:{meta.action}:{meta.timestamp}"
    )
    times = [
        ("meta.timestamp", meta.timestamp),
        ("data.update_time", data.get("update_time")),
        ("data.add_time", data.get("add_time")),
    ]
    time_field, occurred_at = next(
        ((name, when) for name, value in times if (when := epoch_to_datetime(value))), ("meta.timestamp", None)
    )
    if occurred_at is None:
        result.rejected.append({"index": 0, "errors": [{"loc": "meta.timestamp", "msg": "missing or not a time"}]})
        return result
    changes: list[CrmStatusChange] = []
    invalid = None
    try:
        stages, reason = _stages(meta, data, previous, settings)
        for stage, extra in stages:
            changes.append(CrmStatusChange(crm="pipedrive", stage=stage, occurred_at=occurred_at, **extra))
    except ValidationError as exc:  # the changes before the invalid one still go (as they always did)
        invalid = {"index": 0, "errors": validation_errors(exc, prefix="data")}
    if changes and (rejected := window_rejection(0, changes[0], settings.accepted_times, received_at, time_field)):
        result.rejected.append(rejected)  # one time for the whole delivery: all its changes are outside
        return result
    for n, change in enumerate(changes):
        result.changes.append(
            CrmChange(
                f"{company}:{delivery_id}:{n}", f"pipedrive:{company}", without_emails(change, settings.lead_key_bytes)
            )
        )
    if invalid is not None:
        result.rejected.append(invalid)
        return result
    if not stages:
        result.ignored.append({"index": 0, "reason": reason})
    return result


def _stages(
    meta: PipedriveMeta, data: dict[str, Any], previous: dict[str, Any], settings: CollectorSettings
) -> tuple[list[tuple[LifecycleStage, dict[str, Any]]], str]:
    entity, action = meta.entity, meta.action
    object_id = str(data.get("id") or meta.entity_id or "")
    if entity == "deal" and action in ("create", "change"):
        person = data.get("person_id")
        who = {"crm_object_id": object_id, "crm_contact_id": None if person is None else str(person)}
        if isinstance(data.get("person"), dict):  # some payloads inline the person
            who["email"] = _primary_email(data["person"])
        status, was = data.get("status"), previous.get("status") if "status" in previous else None
        out: list[tuple[LifecycleStage, dict[str, Any]]] = []
        if action == "create" and settings.pipedrive_deal_created_stage is not None:
            out.append((settings.pipedrive_deal_created_stage, who))
        stage_id, old_stage = data.get("stage_id"), previous.get("stage_id")
        if stage_id is not None and "stage_id" in previous and str(stage_id) != str(old_stage):
            mapped = settings.pipedrive_stage_ids.get(str(stage_id))
            if mapped is not None:
                out.append((mapped, who))
        became = status if (action == "create" or ("status" in previous and was != status)) else None
        if became == "won":
            value = money(data.get("value"))
            currency = data.get("currency")
            out.append(
                (
                    LifecycleStage.CUSTOMER,
                    {
                        **who,
                        "deal_value": value,
                        "currency": currency.upper() if isinstance(currency, str) and value is not None else None,
                    },
                )
            )
        elif became == "lost":
            reason = data.get("lost_reason")
            out.append((LifecycleStage.LOST, {**who, "reason": reason if isinstance(reason, str) else None}))
        return out, "deal change without a status or mapped stage change"
    if entity == "person" and action in ("create", "change"):
        who = {"crm_object_id": object_id, "crm_contact_id": object_id, "email": _primary_email(data)}
        out = []
        if action == "create":
            out.append((LifecycleStage.LEAD, who))
        out.extend((stage, who) for stage in _added_label_stages(data, previous, settings))
        return out, "person change without a mapped label (CLOSEDLOOP_PIPEDRIVE_LABEL_IDS)"
    if entity == "lead" and action in ("create", "change"):
        person = data.get("person_id")
        who = {"crm_object_id": object_id, "crm_contact_id": None if person is None else str(person)}
        out = []
        if action == "create":
            out.append((LifecycleStage.LEAD, who))
        out.extend((stage, who) for stage in _added_label_stages(data, previous, settings))
        return out, "lead change without a mapped label (CLOSEDLOOP_PIPEDRIVE_LABEL_IDS)"
    return [], f"{entity} {action} is not a lifecycle change"


def _added_label_stages(
    data: dict[str, Any], previous: dict[str, Any], settings: CollectorSettings
) -> list[LifecycleStage]:
    now = data.get("label_ids") or []
    before = previous.get("label_ids") or [] if "label_ids" in previous else (now if previous else [])
    if not isinstance(now, list) or not isinstance(before, list):
        return []
    added = [str(label) for label in now if label not in before]
    return [settings.pipedrive_label_ids[label] for label in added if label in settings.pipedrive_label_ids]


def _primary_email(person: dict[str, Any]) -> str | None:
    """v2 persons carry ``emails: [{"value", "primary", "label"}]``; older shapes a string or ``email`` list."""
    emails = person.get("emails", person.get("email"))
    if isinstance(emails, str):
        return emails or None
    if not isinstance(emails, list):
        return None
    candidates = [e for e in emails if isinstance(e, dict) and isinstance(e.get("value"), str) and e["value"].strip()]
    candidates.sort(key=lambda e: not e.get("primary"))
    return candidates[0]["value"] if candidates else None
