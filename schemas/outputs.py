"""What the stream jobs emit and the sinks store: touches, identity links, leads, conversions, credits, scores."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.events import ADS_CONSENT_DESCRIPTION, AdsConsent, Currency, LifecycleStage, as_utc

Share = Annotated[Decimal, Field(ge=0, le=1, max_digits=12, decimal_places=9)]
Money = Annotated[Decimal, Field(max_digits=18, decimal_places=2)]


class AttributionModel(StrEnum):
    FIRST_TOUCH = "first_touch"
    LAST_TOUCH = "last_touch"  # last non-direct touch
    LINEAR = "linear"
    TIME_DECAY = "time_decay"
    U_SHAPED = "u_shaped"
    W_SHAPED = "w_shaped"
    FULL_PATH = "full_path"


# The models computed over all journeys of a period by `closedloop attribute` (table data_driven_credits), not per
# conversion in the stream: Markov chains of order 1-3 and Shapley values.
DATA_DRIVEN_MODELS = ("markov_1", "markov_2", "markov_3", "shapley")


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _datetimes_utc(cls, value: object) -> object:
        return as_utc(value) if isinstance(value, datetime) else value


class Touch(_Output):
    """The start of a session: a visit after 30 minutes of inactivity, or one with new campaign parameters."""

    touch_id: str = Field(description="Deterministic: derived from the visitor id and the event that started it.")
    visitor_id: str
    visitor_number: int = Field(
        0,
        ge=0,
        lt=2**64,
        description="The visitor's number for exact distinct counts in ClickHouse (bitmaps of visitors): "
        "(events partition << 40) + offset of the visitor's first event + 1, fixed for the visitor's "
        "life; 0 when the visitor was first seen before numbers existed.",
    )
    lead_id: str | None = Field(None, description="Set once the visitor is identified.")
    site_id: str
    occurred_at: datetime
    channel: str = Field(description="Default channel group, e.g. 'Paid Search'.")
    source: str = Field(description="utm_source, or the referrer host, or '(direct)'.")
    medium: str = Field(description="utm_medium, or 'organic'/'referral'/'(none)'.")
    campaign: str = ""
    term: str = ""
    content: str = ""
    click_id: str = Field(
        "", description="Which click id marked it: gclid, gbraid, wbraid, msclkid, fbclid, li_fat_id."
    )
    referrer_host: str = ""
    landing_path: str = "/"
    event_id: str = Field(description="The page view that started the touch.")
    # The ad click ids of the landing page view (the click time is the touch's occurred_at): what goes back to the
    # ad platforms (docs/ADS.md). Empty when absent.
    gclid: str = ""
    gbraid: str = ""
    wbraid: str = ""
    msclkid: str = ""
    fbc: str = Field("", description="Meta's fbc value from the fbclid: 'fb.1.<click time, ms>.<fbclid>'.")
    li_fat_id: str = ""
    ads_consent: AdsConsent | None = Field(None, description=ADS_CONSENT_DESCRIPTION)
    do_not_track: bool = Field(False, description="The page view carried Do-Not-Track / Global Privacy Control.")

    @property
    def is_direct(self) -> bool:
        return self.channel == "Direct"


class IdentityLink(_Output):
    """A visitor id joined to a lead id (a form submit or identify call)."""

    visitor_id: str
    lead_id: str
    linked_at: datetime
    event_id: str = Field(description="The identify event that made the link.")
    form_id: str = ""
    ads_consent: AdsConsent | None = Field(None, description="The identify event's ad consent (docs/ADS.md).")
    do_not_track: bool = False


ClickKind = Literal["gclid", "gbraid", "wbraid", "msclkid", "fbc", "li_fat_id"]
CLICK_KINDS: tuple[ClickKind, ...] = ("gclid", "gbraid", "wbraid", "msclkid", "fbc", "li_fat_id")


class AdClick(_Output):
    """One ad click of a lead's journey, as a conversion carries it back to the platform (docs/ADS.md)."""

    kind: ClickKind = Field(description="gclid, gbraid, wbraid (Google), msclkid (Microsoft), fbc (Meta), li_fat_id.")
    value: str = Field(min_length=1, description="The click id (for fbc: 'fb.1.<click time, ms>.<fbclid>').")
    clicked_at: datetime = Field(description="Time of the landing page view that carried it.")
    touch_id: str


class Lead(_Output):
    """The one place a lead's raw email lives (erasable on request)."""

    lead_id: str
    email: str
    first_identified_at: datetime


class CreditedTouch(_Output):
    """A touch as the credits of an attributed conversion refer to it (by its position in ``Conversion.touches``)."""

    touch_id: str = Field(description="'(none)' for the pseudo touch of a conversion that had no touch at all.")
    occurred_at: datetime | None = Field(description="None for the pseudo touch '(none)'.")
    channel: str
    source: str
    medium: str
    campaign: str = ""


class TouchCredit(_Output):
    """The share of an attributed conversion one model gives to one of its touches."""

    model: AttributionModel
    touch_index: int = Field(ge=0, description="Position of the touch in the conversion's ``touches``, from 0.")
    credit: Share
    revenue: Money = Decimal("0.00")


class Conversion(_Output):
    """A lifecycle milestone reached by a lead: one per (lead, stage).

    As the stream worker emits it, it is an *attributed conversion*: ``touches`` (its windowed journey) and
    ``credits`` (one per model and touch, zero shares included) carry every model's credits in the one record.
    :meth:`credit_records` gives them as :class:`Credit` records, one per ``credits`` row in ClickHouse. A record
    with no credits (an older worker's, which sent credits on their own topic) is the conversion alone.
    """

    conversion_id: str = Field(description="Deterministic: derived from lead id and stage; a replay keeps it.")
    lead_id: str
    stage: LifecycleStage
    occurred_at: datetime
    revenue: Money | None = None
    currency: Currency | None = None
    touch_count: int = Field(ge=0, description="Touches in the lookback window before the conversion.")
    first_channel: str = "(none)"
    last_channel: str = "(none)"
    event_id: str = Field(description="The event that reached the milestone.")
    reason: str | None = Field(
        None, max_length=256, description="The CRM's reason for the stage (why lost or disqualified), when sent."
    )
    version: int = Field(1, ge=1, description="Grows when late touches change the journey; the newest wins.")
    clicks: tuple[AdClick, ...] = Field(
        (),
        description="The newest click of each kind in the lookback window before the conversion (docs/ADS.md).",
    )
    ads_consent: AdsConsent | None = Field(
        None, description="The lead's newest ad consent; 'denied' after any Do-Not-Track (docs/ADS.md)."
    )
    touches: tuple[CreditedTouch, ...] = Field(
        (),
        description="The touches the credits refer to: the lookback window in (time, touch id) order, or the one "
        "pseudo touch '(none)' when the window is empty. Empty when the record carries no credits.",
    )
    credits: tuple[TouchCredit, ...] = Field((), description="Every model's credit per touch (zero shares too).")

    @model_validator(mode="after")
    def _credits_name_a_touch(self) -> Conversion:
        for position, credit in enumerate(self.credits):
            if credit.touch_index >= len(self.touches):
                raise ValueError(
                    f"credits.{position}.touch_index {credit.touch_index} names no touch: the record has "
                    f"{len(self.touches)} touches"
                )
        return self

    def credit_records(self) -> list[Credit]:
        """The credits as :class:`Credit` records (the rows of the ``credits`` table), in the record's order."""
        common: dict[str, Any] = {
            "conversion_id": self.conversion_id,
            "lead_id": self.lead_id,
            "stage": self.stage,
            "converted_at": self.occurred_at,
            "currency": self.currency,
            "version": self.version,
        }
        touches = self.touches
        return [
            Credit.model_construct(
                **common,
                model=credit.model,
                touch_id=(touch := touches[credit.touch_index]).touch_id,
                touch_index=credit.touch_index,
                touch_at=touch.occurred_at,
                channel=touch.channel,
                source=touch.source,
                medium=touch.medium,
                campaign=touch.campaign,
                credit=credit.credit,
                revenue=credit.revenue,
            )
            for credit in self.credits
        ]


class Credit(_Output):
    """The share of one conversion given to one touch under one model."""

    conversion_id: str
    lead_id: str
    stage: LifecycleStage
    model: AttributionModel
    touch_id: str = Field(description="'(none)' when the conversion had no touch at all.")
    touch_index: int = Field(ge=0, description="Position of the touch in the journey, from 0.")
    touch_at: datetime | None
    converted_at: datetime
    channel: str
    source: str
    medium: str
    campaign: str
    credit: Share
    revenue: Money = Decimal("0.00")
    currency: Currency | None = None
    version: int = Field(1, ge=1)


class ScorePoints(_Output):
    """Points one scoring rule gave (stream_jobs/rules/scoring.py names the rules)."""

    rule: str = Field(description="e.g. 'page:/pricing', 'form:demo', 'fit:free_mail', 'stage:opportunity'.")
    points: float


class LeadScore(_Output):
    """A lead's score after one event changed it, with the breakdown that explains it (docs/SCORING.md)."""

    lead_id: str
    scored_at: datetime = Field(description="Time of the event that changed the score (decay is measured to it).")
    score: float
    breakdown: list[ScorePoints]
    event_id: str = Field(description="The event that changed the score; with lead_id a stable key for replays.")


class JourneyTouch(_Output):
    """One touch of a sales-ready lead's journey, in time order."""

    occurred_at: datetime
    channel: str
    source: str
    medium: str
    campaign: str = ""
    landing_path: str = "/"


class SalesReadyLead(_Output):
    """One per lead and readiness cycle: what sales needs to act, and the id an outbox deduplicates on.

    Carries the raw email (sales must reach the contact): docs/PRIVACY.md says where it goes and erasure covers it.
    """

    ready_id: str = Field(description="'<lead_id>:<cycle>': the same after a replay; the table collapses on it.")
    lead_id: str
    cycle: int = Field(ge=1, description="1 for the first time; +1 after a reset (lost/disqualified) and a new one.")
    email: str
    ready_at: datetime
    reason: str = Field(description="'threshold', 'hand_raiser:form:demo', 'hand_raiser:pricing_returning'.")
    score: float
    breakdown: list[ScorePoints]
    first_touch: JourneyTouch | None = None
    touches: list[JourneyTouch] = Field(default_factory=list)
    pages: list[str] = Field(default_factory=list, description="Paths viewed, in order.")
    forms: list[str] = Field(default_factory=list, description="Form kinds submitted, in order.")
    event_id: str = Field(description="The event that made the lead sales-ready.")


class BuyingSignal(_Output):
    """A contact of an open opportunity viewed pricing again: joins web activity with the CRM stage."""

    signal_id: str = Field(description="Derived from lead id and the page view's event id: stable on replay.")
    lead_id: str
    stage: str
    path: str
    occurred_at: datetime
    pricing_views: int = Field(ge=2, description="Pricing views by the lead so far, this one included.")


class DeadLetter(_Output):
    """A record a component could not process, with why and where it came from."""

    component: str
    reason: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str = Field(description="The raw record, decoded as UTF-8 with replacement.")
    failed_at: datetime
