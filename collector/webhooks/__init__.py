"""CRM webhooks: each module verifies its CRM's authentication and maps its payload to ``CrmStatusChange``.

A module exposes ``verify(...)`` (raises :class:`collector.errors.ApiError`) and ``parse(document, settings)``
returning a :class:`WebhookResult`. The app then drops deliveries already seen (the CRM retried), publishes the
rest, and answers with the counts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from collector.window import AcceptedTimes
from schemas.events import CrmStatusChange
from schemas.identity import pseudonymous_id


@dataclass(frozen=True)
class CrmChange:
    """One status change and the delivery it came in (``delivery_id`` is unique per CRM connection)."""

    delivery_id: str
    site_id: str
    change: CrmStatusChange

    @property
    def event_id(self) -> str:
        """Deterministic, so a delivery replayed past the seen-set still dedups downstream."""
        return delivery_event_id(self.change.crm, self.delivery_id)


@dataclass
class WebhookResult:
    changes: list[CrmChange] = field(default_factory=list)
    ignored: list[dict[str, Any]] = field(default_factory=list)  # {"index", "reason"}: valid but not a stage change
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"index", "errors"}: invalid


def without_emails(change: CrmStatusChange, lead_key: bytes) -> CrmStatusChange:
    """The change with its record and contact ids replaced by their lead id where they are email addresses.

    The raw email may travel in ``email`` (the stream jobs need it for the ``leads`` table, the one place it is
    kept), but the ids are stored as they are in ClickHouse's ``events`` table: a CRM that names a record by the
    person's address (the generic webhook's and the CSV import's default) would put the email there.
    """
    object_id = pseudonymous_id(change.crm_object_id, lead_key)
    contact_id = None if change.crm_contact_id is None else pseudonymous_id(change.crm_contact_id, lead_key)
    if object_id == change.crm_object_id and contact_id == change.crm_contact_id:
        return change
    return change.model_copy(update={"crm_object_id": object_id, "crm_contact_id": contact_id})


def delivery_event_id(crm: str, delivery_id: str) -> str:
    event_id = f"{crm}:{delivery_id}"
    if len(event_id) <= 128:
        return event_id
    return f"{crm}:sha1:{hashlib.sha1(delivery_id.encode()).hexdigest()}"


def money(value: Any) -> Decimal | None:
    """A CRM's amount (number or numeric string) as Decimal cents; None when absent or not a number."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    if not amount.is_finite():
        return None
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def epoch_to_datetime(value: Any) -> datetime | None:
    """Seconds or milliseconds since the epoch (numbers or digit strings), or an ISO 8601 string."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number > 1e11:  # milliseconds
        number /= 1000
    try:
        return datetime.fromtimestamp(number, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def window_rejection(
    index: int, change: CrmStatusChange, accepted_times: AcceptedTimes, received_at: datetime, loc: str
) -> dict[str, Any] | None:
    """A rejection naming ``loc`` (the CRM's own field) and the window when the change's time is outside the
    collector's accepted times (``collector.window``, as ``POST /v1/events`` applies them), else None."""
    problem = accepted_times.problem(change.occurred_at, received_at)
    if problem is None:
        return None
    return {"index": index, "errors": [{"loc": loc, "msg": problem}]}
