"""The outbox contract: what any producer (the stream worker, the ad-platform feed) writes to
``{prefix}.outbox`` for ``closedloop deliver`` to post to the destinations configured for its kind.

``message_id`` is the idempotency key: it must be the same when the producer replays the same input (derive it
from the record it describes, e.g. the sales-ready record's id), so a replay is recognised and never posted twice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.events import as_utc

OUTBOX_SCHEMA_VERSION = 1
Kind = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]


class OutboxMessage(BaseModel):
    """One record to send out, keyed on the outbox topic by ``lead_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = OUTBOX_SCHEMA_VERSION
    message_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="Stable on replay (derived from the record it announces); the idempotency key's stem."
    )
    kind: Kind = Field(description="What happened, e.g. 'sales_ready' or 'buying_signal'; settings route kinds.")
    lead_id: Annotated[str, Field(min_length=1, max_length=200)]
    email: Annotated[str, Field(max_length=320)] | None = Field(
        None, description="The lead's email, for destinations that find the person by it (see docs/PRIVACY.md)."
    )
    occurred_at: datetime = Field(description="When it happened (UTC).")
    title: Annotated[str, Field(max_length=500)] = Field("", description="One line for humans (Slack, CRM subject).")
    payload: dict[str, Any] = Field(
        default_factory=dict, description="The details, e.g. the journey summary: first touch, touches, score."
    )

    @field_validator("occurred_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


class DeliveryStatus(BaseModel):
    """How one (outbox message, destination) delivery ended, for the ``deliveries`` table. No email: the table is
    analytics, and the lead id names the person as everywhere else (docs/PRIVACY.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery_key: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="The delivery's idempotency key (one per message and destination)."
    )
    message_id: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Kind
    lead_id: Annotated[str, Field(min_length=1, max_length=200)]
    destination: Annotated[str, Field(min_length=1, max_length=32)]
    status: Literal["delivered", "dead", "erased"] = Field(
        description="erased: not sent, the lead was erased after the message was queued (docs/PRIVACY.md)"
    )
    tries: int = Field(ge=0, le=1000)
    http_status: int | None = Field(None, ge=100, le=599, description="The last answer's status; None: no answer.")
    reason: Annotated[str, Field(max_length=1000)] = Field("", description="Why it is dead; empty when delivered.")
    finished_at: datetime

    @field_validator("finished_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


AdPlatform = Literal["google", "microsoft", "meta", "linkedin"]
AD_PLATFORMS: tuple[AdPlatform, ...] = ("google", "microsoft", "meta", "linkedin")


class AdFeedback(BaseModel):
    """One conversion fed back to an ad platform (a file row or an API event), for the ``ad_feedback`` audit table.
    No email: the lead id names the person (docs/PRIVACY.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feedback_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="'<platform>:<action>:<conversion id>': a re-export or replay collapses onto the same row."
    )
    conversion_id: Annotated[str, Field(min_length=1, max_length=200)]
    lead_id: Annotated[str, Field(min_length=1, max_length=200)]
    stage: Annotated[str, Field(min_length=1, max_length=32)]
    platform: AdPlatform
    route: Literal["file", "api"]
    action: Literal["upload", "retract", "restate"] = "upload"
    conversion_name: Annotated[str, Field(max_length=500)] = ""
    click_kind: Annotated[str, Field(max_length=16)] = ""
    click_id: Annotated[str, Field(max_length=600)] = ""
    converted_at: datetime
    value: Decimal | None = Field(None, max_digits=18, decimal_places=2)
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    status: Literal["exported", "delivered", "dead", "erased"]
    reason: Annotated[str, Field(max_length=1000)] = ""
    recorded_at: datetime

    @field_validator("converted_at", "recorded_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)


class LeadErased(BaseModel):
    """``closedloop erase`` erased this lead at ``erased_at``: an outbox message about it that occurred before then
    is not sent (it may carry the email). Later activity of the same person (a new form) is sent as usual."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lead_id: Annotated[str, Field(min_length=1, max_length=200)]
    request_id: Annotated[str, Field(min_length=1, max_length=200)]
    erased_at: datetime

    @field_validator("erased_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)
