"""Incoming events: what websites and CRMs send, as they travel through Kafka.

Every record on a source topic is an :class:`Envelope` whose ``event`` is one of the payload models below,
told apart by its ``type`` field.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, Union
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from schemas.identity import is_junk_identifier, normalize_email

SCHEMA_VERSION = 1

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
# Ad click ids read from the landing URL (docs/ADS.md): Google Ads gclid (web) and gbraid / wbraid (iOS), Microsoft
# Advertising msclkid, Meta fbclid, LinkedIn li_fat_id. The first one present names a touch's ``click_id``.
CLICK_ID_FIELDS = ("gclid", "gbraid", "wbraid", "msclkid", "fbclid", "li_fat_id")

_URL_FIELDS = frozenset(UTM_FIELDS + CLICK_ID_FIELDS)


def first_query_values(query: str) -> dict[str, str]:
    """The first non-blank value of each UTM / click-id parameter in a query string.

    The same as ``{name: parse_qs(query)[name][0]}`` for those names (``+`` and %-escapes decoded, empty values
    skipped), at a third of the cost: it runs for every page view the collector validates.
    """
    found: dict[str, str] = {}
    if not query:
        return found
    for pair in query.split("&"):
        name, has_value, value = pair.partition("=")
        if not has_value or not value:
            continue
        if "%" in name or "+" in name:
            name = unquote(name.replace("+", " "))
        if name in _URL_FIELDS and name not in found:
            found[name] = unquote(value.replace("+", " ")) if "%" in value or "+" in value else value
    return found


def absolute_http_url(url: str) -> SplitResult:
    """The parts of an absolute http(s) URL; ValueError for anything else (a page view's ``url`` rule)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("url must be an absolute http(s) URL, e.g. https://example.com/pricing")
    return parts


def fields_from_url(parts: SplitResult, fields: Mapping[str, Any]) -> dict[str, str]:
    """What a page view takes from its URL: each UTM field and click id it lacks, and its path when it has none."""
    updates: dict[str, str] = {}
    for name, value in first_query_values(parts.query).items():
        if fields.get(name) is None and value.strip():
            updates[name] = value.strip()[:512]
    if fields.get("path") is None:
        updates["path"] = parts.path or "/"
    return updates


def text_limits(model: type[BaseModel]) -> dict[str, tuple[int, int, bool]]:
    """``name -> (min length, max length, may be null)`` of each text field of ``model``, from its JSON schema.

    For the fast paths that check a model's rules without building it (``collector.page_view_records``,
    ``sinks.canonical_rows``): read from the model, the limits cannot drift from it. A field whose text has any other
    rule (a format such as date-time, a pattern, a constant) is not listed: lengths alone would not check it.
    """
    limits = {}
    for name, prop in model.model_json_schema()["properties"].items():
        options = prop.get("anyOf", [prop])
        texts = [
            o for o in options if o.get("type") == "string" and not {"const", "enum", "format", "pattern"} & o.keys()
        ]
        nullable = any(o.get("type") == "null" for o in options)
        if len(texts) == 1 and len(options) == 1 + nullable:
            limits[name] = (texts[0].get("minLength", 0), texts[0].get("maxLength", sys.maxsize), nullable)
    return limits


ShortText = Annotated[str, Field(max_length=512)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]


def _not_junk(value: str, info: ValidationInfo) -> str:
    if is_junk_identifier(value):
        raise ValueError(f"{info.field_name} {value!r} is a placeholder, not an identifier")
    return value


VisitorId = Annotated[Identifier, AfterValidator(_not_junk)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=2)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, upper case")]
# Whether the visitor agreed to their conversions being shared with ad platforms (the site's consent banner, e.g.
# Google Consent Mode's ad_user_data): "granted", "denied", or None when the event does not say. docs/ADS.md.
AdsConsent = Literal["granted", "denied"]
ADS_CONSENT_DESCRIPTION = (
    "Consent to share this visitor's conversions with ad platforms, as the site's consent banner recorded it: "
    "'granted' or 'denied'; null when not stated. Nothing is exported or sent to an ad platform without 'granted'."
)
DO_NOT_TRACK_DESCRIPTION = (
    "The browser's Do-Not-Track or Global Privacy Control signal was on (the tracker sends it when told not to "
    "honour it by staying silent). A lead with it is never exported or sent to an ad platform."
)


class LifecycleStage(StrEnum):
    """Where a lead stands: visitor -> lead -> MQL -> SQL -> opportunity -> customer, or lost/disqualified."""

    LEAD = "lead"
    MQL = "mql"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    LOST = "lost"
    DISQUALIFIED = "disqualified"


STAGES = tuple(stage.value for stage in LifecycleStage)  # the stage names, in lifecycle order


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC (ValueError past year 9999 or before 1)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00; a validator must raise ValueError, not crash
        raise ValueError("the time is out of range in UTC (years 1 to 9999)") from None


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    occurred_at: datetime = Field(description="When it happened, at the source (UTC).")

    @field_validator("occurred_at")
    @classmethod
    def _occurred_at_utc(cls, value: datetime) -> datetime:
        return as_utc(value)


class PageView(_Payload):
    """One page seen by one visitor. UTM fields and click ids missing here are read from ``url``."""

    type: Literal["page_view"] = "page_view"
    visitor_id: VisitorId = Field(description="First-party cookie id of the visitor.")
    session_id: Identifier | None = Field(None, description="The tracker's session hint (30 min inactivity).")
    url: Annotated[str, Field(min_length=1, max_length=4096)] = Field(description="Full URL of the page.")
    path: Annotated[str, Field(max_length=2048)] | None = None
    title: ShortText | None = None
    referrer: Annotated[str, Field(max_length=4096)] | None = None
    utm_source: ShortText | None = None
    utm_medium: ShortText | None = None
    utm_campaign: ShortText | None = None
    utm_term: ShortText | None = None
    utm_content: ShortText | None = None
    gclid: ShortText | None = None
    gbraid: ShortText | None = None
    wbraid: ShortText | None = None
    msclkid: ShortText | None = None
    fbclid: ShortText | None = None
    li_fat_id: ShortText | None = None
    user_agent: ShortText | None = None
    screen: Annotated[str, Field(max_length=32)] | None = Field(None, description="e.g. 1920x1080")
    ads_consent: AdsConsent | None = Field(None, description=ADS_CONSENT_DESCRIPTION)
    do_not_track: bool = Field(False, description=DO_NOT_TRACK_DESCRIPTION)

    @field_validator("url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        absolute_http_url(value)
        return value

    @model_validator(mode="after")
    def _fill_from_url(self) -> "PageView":
        for name, value in fields_from_url(urlsplit(self.url), self.__dict__).items():
            object.__setattr__(self, name, value)
        return self

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()


class Identify(_Payload):
    """A form submit or an explicit identify call: links a visitor id to an email address."""

    type: Literal["identify"] = "identify"
    visitor_id: VisitorId
    email: Annotated[str, Field(max_length=320)] = Field(description="Normalised (trimmed, lower-cased).")
    form_id: ShortText | None = None
    url: Annotated[str, Field(max_length=4096)] | None = None
    fields: dict[Annotated[str, Field(max_length=128)], ShortText] = Field(
        default_factory=dict, max_length=50, description="Other submitted form fields."
    )
    ads_consent: AdsConsent | None = Field(None, description=ADS_CONSENT_DESCRIPTION)
    do_not_track: bool = Field(False, description=DO_NOT_TRACK_DESCRIPTION)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return normalize_email(value)


class CrmStatusChange(_Payload):
    """A lead's lifecycle stage changed in a CRM (or a spreadsheet row said so)."""

    type: Literal["crm_status"] = "crm_status"
    crm: Literal["hubspot", "pipedrive", "salesforce", "spreadsheet", "generic"]
    crm_object_id: Identifier = Field(description="The CRM record that changed (contact, deal, row).")
    crm_contact_id: Identifier | None = Field(None, description="The CRM's id of the person, when known.")
    email: Annotated[str, Field(max_length=320)] | None = None
    stage: LifecycleStage
    deal_value: Money | None = None
    currency: Currency | None = None
    reason: Annotated[str, Field(max_length=256)] | None = Field(
        None,
        description="Why the lead was lost or disqualified, in the CRM's words (HubSpot closed_lost_reason, "
        "Pipedrive lost_reason, a Salesforce reason field, a sheet's reason column); kept on every stage.",
    )

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return value or None  # an empty reason says nothing

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else normalize_email(value)

    @field_validator("crm_contact_id")
    @classmethod
    def _contact_not_junk(cls, value: str | None) -> str | None:
        return None if is_junk_identifier(value) else value

    @model_validator(mode="after")
    def _who_and_how_much(self) -> "CrmStatusChange":
        if self.email is None and self.crm_contact_id is None:
            raise ValueError("a CRM status change needs the lead's email or crm_contact_id")
        if self.deal_value is not None and self.currency is None:
            raise ValueError("deal_value needs a currency (ISO 4217, e.g. EUR)")
        return self

    @property
    def lead_key(self) -> str:
        """Partition key of the CRM topic: the email when known, else the CRM's contact id."""
        if self.email is not None:
            return self.email
        return f"{self.crm}:{self.crm_contact_id}"


class SpendRow(_Payload):
    """Money spent on one channel/campaign on one day."""

    type: Literal["spend"] = "spend"
    date: date
    channel: ShortText
    source: ShortText = ""
    medium: ShortText = ""
    campaign: ShortText = ""
    cost: Money
    currency: Currency

    @property
    def spend_key(self) -> str:
        return f"{self.date.isoformat()}|{self.channel}|{self.source}|{self.medium}|{self.campaign}"


EventPayload = Annotated[Union[PageView, Identify, CrmStatusChange, SpendRow], Field(discriminator="type")]


class Envelope(BaseModel):
    """What every event travels in, on every source topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier = Field(description="Unique per event; a resend keeps its id.")
    site_id: Identifier = Field(description="Which site or CRM connection sent it.")
    sent_at: datetime | None = Field(None, description="Client clock at send time, when given.")
    received_at: datetime = Field(description="Collector clock at acceptance (UTC).")
    schema_version: int = SCHEMA_VERSION
    event: EventPayload

    @field_validator("sent_at", "received_at")
    @classmethod
    def _times_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)
