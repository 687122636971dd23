"""Settings of the collector: write keys, origins, limits, the spool, CRM secrets and stage mappings.

Read once by ``closedloop collector`` (environment variables ``CLOSEDLOOP_*``) and passed to
:func:`collector.app.create_app`. Dict and list settings are JSON in the environment, e.g.
``CLOSEDLOOP_SITE_KEYS='{"pk_live_abc": "acme-web"}'``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator

from collector import window
from schemas.events import LifecycleStage
from schemas.settings import PipelineSettings

DEMO_WRITE_KEY = "demo-write-key"

# HubSpot's default lifecycle stage internal values -> our stages. "other" and unknown values are ignored.
HUBSPOT_LIFECYCLE_STAGES: dict[str, LifecycleStage] = {
    "subscriber": LifecycleStage.LEAD,
    "lead": LifecycleStage.LEAD,
    "marketingqualifiedlead": LifecycleStage.MQL,
    "salesqualifiedlead": LifecycleStage.SQL,
    "opportunity": LifecycleStage.OPPORTUNITY,
    "customer": LifecycleStage.CUSTOMER,
    "evangelist": LifecycleStage.CUSTOMER,
}

# Salesforce's default Lead Status picklist -> our stages: sales working a lead has accepted it (MQL), a converted
# lead was qualified into a contact (SQL; the opportunity has its own notifications), a closed one was disqualified.
SALESFORCE_LEAD_STATUSES: dict[str, LifecycleStage] = {
    "Open - Not Contacted": LifecycleStage.LEAD,
    "Working - Contacted": LifecycleStage.MQL,
    "Closed - Converted": LifecycleStage.SQL,
    "Closed - Not Converted": LifecycleStage.DISQUALIFIED,
}

# A page served from this machine (a developer's test page, the demo): always allowed, so that only the sites'
# own origins need configuring. Same pattern for the CORS middleware and the Origin check.
LOOPBACK_ORIGIN = re.compile(r"https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?")


class CollectorSettings(PipelineSettings):
    """Everything ``closedloop collector`` needs beyond the shared connection settings."""

    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes (each has its own spool slot).")

    site_keys: dict[str, str] = Field(
        {DEMO_WRITE_KEY: "demo"},
        description="Public write key -> site id, for browser events (page_view, identify) on POST /v1/events.",
    )
    server_keys: dict[str, str] = Field(
        {},
        description="Secret server key -> site id; allows every event type (also crm_status and spend) "
        "on POST /v1/events. Never put one in a web page.",
    )
    allowed_origins: list[str] = Field(
        [],
        description="Origins (scheme://host[:port]) of your sites, allowed to send browser events; pages on this "
        "machine (localhost, 127.0.0.0/8, [::1]) always are; ['*'] allows any origin.",
    )

    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest accepted request body.")
    max_batch_events: int = Field(500, ge=1, le=100_000, description="Most events in one POST /v1/events.")

    accept_past_days: int = Field(
        window.DEFAULT_PAST_DAYS,
        ge=0,
        le=36_500,
        description="Oldest occurred_at POST /v1/events accepts, in days before the collector's clock; older = 422.",
    )
    accept_future_hours: int = Field(
        window.DEFAULT_FUTURE_HOURS,
        ge=0,
        le=8_760,
        description="Latest occurred_at accepted (events and imports), in hours after the collector's clock.",
    )
    import_accept_past_days: int = Field(
        window.DEFAULT_IMPORT_PAST_DAYS,
        ge=0,
        le=36_500,
        description="Oldest date a CSV import (closedloop import) accepts, in days before today "
        "(imports carry history).",
    )

    spool_dir: Path | None = Field(None, description="On-disk spool; unset = {data_dir}/collector/spool.")
    spool_max_bytes: int = Field(256 * 1024 * 1024, ge=4096, description="Spool bound; full = 503.")
    spool_retry_after_s: int = Field(5, ge=1, description="Retry-After sent with a 503 when the spool is full.")
    publish_timeout_s: float = Field(
        10.0, gt=0, description="How long a record may wait for the broker's ack before it is spooled instead."
    )
    linger_ms: int = Field(2, ge=0, le=1000, description="Producer batching delay.")

    dedup_path: Path | None = Field(None, description="Seen webhook deliveries (SQLite); unset = data_dir.")
    dedup_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="How long a webhook delivery id is remembered.")
    dedup_max_entries: int = Field(1_000_000, ge=100)

    hubspot_client_secret: SecretStr | None = Field(None, description="HubSpot app client secret (signature v3).")
    hubspot_deal_stages: dict[str, LifecycleStage] = Field(
        {"closedwon": LifecycleStage.CUSTOMER, "closedlost": LifecycleStage.LOST},
        description="HubSpot deal stage id -> lifecycle stage; stages not listed are ignored.",
    )
    hubspot_lifecycle_stages: dict[str, LifecycleStage] = Field(
        HUBSPOT_LIFECYCLE_STAGES, description="HubSpot lifecyclestage value -> lifecycle stage."
    )
    hubspot_lead_statuses: dict[str, LifecycleStage] = Field(
        {"UNQUALIFIED": LifecycleStage.DISQUALIFIED, "BAD_TIMING": LifecycleStage.LOST},
        description="HubSpot hs_lead_status value -> lifecycle stage (the status is kept as the reason); others "
        "are ignored.",
    )
    hubspot_private_app_token: SecretStr | None = Field(
        None,
        description="A HubSpot private app's access token (scopes crm.objects.contacts.read, crm.objects.deals.read): "
        "the collector then asks HubSpot's CRM API for what webhook events leave out (a contact's email, a deal's "
        "contact and amount).",
    )
    hubspot_api_url: str = Field("https://api.hubapi.com", description="HubSpot's API base URL.")
    hubspot_api_timeout_s: float = Field(2.0, gt=0, le=30, description="Timeout of one request to HubSpot's API.")
    hubspot_api_budget_s: float = Field(
        3.0, gt=0, le=20, description="How long one webhook request may wait for HubSpot's API, retries included."
    )
    hubspot_api_cache_s: float = Field(60.0, ge=0, description="How long HubSpot's answers are reused.")
    hubspot_currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = Field(
        None, description="The HubSpot account's company currency (ISO 4217), for deals without deal_currency_code."
    )
    pipedrive_user: str | None = Field(None, description="HTTP Basic user configured on the Pipedrive webhook.")
    pipedrive_password: SecretStr | None = None
    pipedrive_deal_created_stage: LifecycleStage | None = Field(
        LifecycleStage.OPPORTUNITY, description="Stage of a newly created Pipedrive deal; null = ignore creation."
    )
    pipedrive_stage_ids: dict[str, LifecycleStage] = Field(
        {}, description="Pipedrive pipeline stage id -> lifecycle stage (deal moved to that stage)."
    )
    pipedrive_label_ids: dict[str, LifecycleStage] = Field(
        {}, description="Pipedrive person/lead label id -> lifecycle stage (label added), e.g. MQL/SQL labels."
    )
    crm_webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key of POST /v1/webhooks/crm.")
    salesforce_organization_ids: list[str] = Field(
        [], description="Salesforce organizations whose outbound messages are accepted (15- or 18-character ids)."
    )
    salesforce_token: SecretStr | None = Field(
        None, description="When set, the outbound message's endpoint URL must carry ?token=<this value>."
    )
    salesforce_lead_statuses: dict[str, LifecycleStage] = Field(
        SALESFORCE_LEAD_STATUSES, description="Salesforce Lead Status value -> lifecycle stage; others are ignored."
    )
    salesforce_opportunity_stages: dict[str, LifecycleStage] = Field(
        {},
        description="Salesforce opportunity StageName -> lifecycle stage, over the default (IsWon: customer, "
        "IsClosed: lost, any other stage: opportunity).",
    )
    salesforce_reason_fields: list[str] = Field(
        ["Loss_Reason__c"],
        description="Salesforce fields holding why a lead or opportunity was lost or disqualified (first non-empty).",
    )
    salesforce_currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = Field(
        None, description="The organization's currency (ISO 4217), for won opportunities sent without CurrencyIsoCode."
    )

    trust_forwarded_headers: bool = Field(
        False, description="Honour X-Forwarded-Proto/Host (behind a proxy) when rebuilding the signed URL."
    )
    public_base_url: str | None = Field(
        None, description="e.g. https://collect.example.com: the base URL HubSpot calls, for signature v3."
    )

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [origin.rstrip("/") for origin in value]

    import_time_zone: str = Field(
        "UTC",
        description="IANA time zone of the dates in CRM sheets: a date without a time is the end of that day there.",
    )

    @field_validator("import_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin or UTC") from None
        return value

    @property
    def import_day_zone(self) -> ZoneInfo:
        return ZoneInfo(self.import_time_zone)

    @property
    def accepted_times(self) -> window.AcceptedTimes:
        """The window of ``occurred_at`` accepted on POST /v1/events."""
        return window.AcceptedTimes(timedelta(days=self.accept_past_days), timedelta(hours=self.accept_future_hours))

    @property
    def import_accepted_times(self) -> window.AcceptedTimes:
        """The window of dates accepted by CSV imports."""
        return window.AcceptedTimes(
            timedelta(days=self.import_accept_past_days), timedelta(hours=self.accept_future_hours)
        )

    @property
    def spool_path(self) -> Path:
        return self.spool_dir or self.data_dir / "collector" / "spool"

    @property
    def dedup_file(self) -> Path:
        return self.dedup_path or self.data_dir / "collector" / "seen-deliveries.sqlite"

    def site_for_key(self, key: str | None) -> tuple[str, bool] | None:
        """(site id, is_server_key) for a write key, or None when the key is unknown."""
        if not key:
            return None
        if key in self.server_keys:
            return self.server_keys[key], True
        if key in self.site_keys:
            return self.site_keys[key], False
        return None

    def origin_allowed(self, origin: str | None) -> bool:
        """Requests without an Origin header (servers, curl) are not browser requests: allowed."""
        if origin is None or "*" in self.allowed_origins:
            return True
        origin = origin.rstrip("/")
        return origin in self.allowed_origins or LOOPBACK_ORIGIN.fullmatch(origin) is not None
