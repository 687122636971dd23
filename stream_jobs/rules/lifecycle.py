"""A lead's lifecycle as pure transitions: merged journey, stage history, and the conversions they emit.

The leads agent keeps one :class:`LeadState` per lead id and feeds it three kinds of input:

- :func:`apply_touch`: a touch of one of the lead's visitors (after it was identified, or arriving late);
- :func:`apply_link`: a visitor identified as this lead, carrying the visitor's touches so far;
- :func:`apply_crm`: a CRM status change.

Each returns ``(new_state, conversions)``; ``conversions`` is what must be emitted now (usually nothing).

Rules
    - Milestones: ``lead`` (reached at the first identify, or a CRM change to ``lead``), ``mql``, ``sql``,
      ``opportunity``, ``customer`` (with revenue), ``lost``, ``disqualified``. Each reached stage is one
      conversion with ``conversion_id = sha1("{lead_id}|{stage}")[:24]``: a replay keeps the id.
    - Stages are never invented: a lead that goes straight to ``customer`` has no ``mql`` conversion; a lead
      known only from the CRM has no ``lead`` conversion until it identifies.
    - A stage reached twice keeps its earliest record (time, then event id), so the result does not depend on
      arrival order; a deal value corrected by a later event is not applied (revenue of the first ``won``).
    - Only ``customer`` carries revenue; a deal value on other stages is pipeline, not revenue.
    - A conversion is (re-)emitted when what its credits depend on changes: its time, event, revenue, the touch
      ids in its lookback window, or a milestone at or before it (``lead``, ``opportunity``, ``customer``).
      The first emission has ``version`` 1; every change re-emits the same ``conversion_id`` with ``version + 1``
      (late page views, a form arriving after the CRM update, an earlier record of a stage). A replay changes
      nothing and emits nothing.
    - Coalesced re-emission (the worker passes ``now`` and ``interval``, ``CLOSEDLOOP_REEMIT_INTERVAL_SECONDS``):
      a lead re-emits at most once per ``interval``; a change within it is held in the state and goes out, newest
      version only, with the lead's next event after the interval or the worker's flush (``kind="flush"``). A
      conversion's first version is never held. See :func:`_emit` and docs/STREAMS.md.
    - A CRM change for a lead that was never identified converts with the touches known so far, possibly none
      (then it is credited to ``(none)``); touches arriving later re-emit it.

Ad clicks and consent (docs/ADS.md)
    - A conversion carries ``clicks``: for each kind of ad click id (gclid, gbraid, wbraid, msclkid, fbc,
      li_fat_id), the newest touch in its lookback window that had one, with the click's time.
    - It carries ``ads_consent``: the newest consent the lead stated (on a touch's page view or an identify
      event), or ``denied`` once any of them carried Do-Not-Track; ``None`` when none stated it. A change of it
      re-emits the lead's conversions (a new version), so readers always see the current consent.

Bound: the journey keeps the newest ``journey_limit`` touches (default :data:`JOURNEY_LIMIT`, 500), ordered
by (time, touch id); a lead with more touches than that loses its oldest ones from attribution.
"""

from __future__ import annotations

import hashlib
from bisect import insort
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import AdsConsent, CrmStatusChange, LifecycleStage
from schemas.outputs import CLICK_KINDS, AdClick, Conversion, Credit, IdentityLink, Touch
from stream_jobs.rules.attribution import Milestones, attribute, attributed

JOURNEY_LIMIT = 500
KNOWN_LIMIT = 100
DEFAULT_LOOKBACK = timedelta(days=90)
NONE_CHANNEL = "(none)"


def conversion_id_for(lead_id: str, stage: LifecycleStage | str) -> str:
    """Deterministic id of a lead's conversion at a stage: sha1("lead_id|stage") hex, 24 characters."""
    return hashlib.sha1(f"{lead_id}|{LifecycleStage(stage).value}".encode()).hexdigest()[:24]


class StageReached(BaseModel):
    """When and by which event a lead reached a stage."""

    model_config = ConfigDict(frozen=True)

    occurred_at: datetime
    event_id: str
    revenue: Decimal | None = None
    currency: str | None = None
    reason: str | None = None  # the CRM's, when its record says why (lost, disqualified)

    def sort_key(self) -> tuple[datetime, str]:
        return (self.occurred_at, self.event_id)


class Emitted(BaseModel):
    """The newest version of a conversion that was emitted, and a fingerprint of what it was computed from."""

    model_config = ConfigDict(frozen=True)

    version: int
    fingerprint: str
    # When the worker's live counters first counted the conversion (seconds since the epoch, set by the leads agent;
    # carried to newer versions so that a re-attribution moves the conversion inside the window it was counted in).
    counted_at: float | None = None
    # What the emitted version said about the channels and revenue the live counters count it under. With
    # coalesced re-emission the state may hold changes not emitted yet, so the counted version cannot be rebuilt
    # from the state; None in a state written before 2026-12-06 (which held nothing: rebuild it from the state).
    first_channel: str | None = None
    last_channel: str | None = None
    revenue: Decimal | None = None


class LeadState(BaseModel):
    """Everything the leads table keeps per lead. Treat as immutable: transitions return a new one."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    journey: tuple[Touch, ...] = ()
    stages: dict[LifecycleStage, StageReached] = Field(default_factory=dict)
    emitted: dict[LifecycleStage, Emitted] = Field(default_factory=dict)
    first_identified_at: datetime | None = None
    # Where else the worker keeps this lead (the visitors linked to it, the CRM contacts mapped to it): what
    # ``closedloop erase`` must reach besides this state. The newest KNOWN_LIMIT of each.
    visitor_ids: tuple[str, ...] = ()
    contact_keys: tuple[str, ...] = ()
    # The newest ad consent the lead stated and when, and whether any of its events carried Do-Not-Track.
    consent: AdsConsent | None = None
    consent_at: datetime | None = None
    do_not_track: bool = False

    @property
    def ads_consent(self) -> AdsConsent | None:
        """What the ad platforms may know: 'denied' after any Do-Not-Track, else the newest stated consent."""
        return "denied" if self.do_not_track else self.consent

    # Coalesced re-emission (wall-clock seconds since the epoch, see :func:`_emit`): when the lead last re-emitted a
    # conversion, and since when a change to an emitted conversion is held back (None: nothing held).
    reemitted_at: float | None = None
    held_since: float | None = None

    def reemission_due(self, interval: float) -> float | None:
        """When held changes may go out (seconds since the epoch), or None when nothing is held."""
        if self.held_since is None:
            return None
        return (self.reemitted_at or 0.0) + interval

    def milestones(self) -> Milestones:
        """Lead, opportunity and customer times, for position-based attribution."""

        def at(stage: LifecycleStage) -> datetime | None:
            reached = self.stages.get(stage)
            return reached.occurred_at if reached else None

        return Milestones(
            lead_at=at(LifecycleStage.LEAD),
            opportunity_at=at(LifecycleStage.OPPORTUNITY),
            customer_at=at(LifecycleStage.CUSTOMER),
        )

    def conversion(self, stage: LifecycleStage, lookback: timedelta = DEFAULT_LOOKBACK) -> Conversion:
        """The current conversion record of a reached stage (with the version last emitted, or 1)."""
        reached = self.stages[stage]
        window = _window(self.journey, reached.occurred_at, lookback)
        emitted = self.emitted.get(stage)
        is_customer = stage == LifecycleStage.CUSTOMER
        return Conversion(
            conversion_id=conversion_id_for(self.lead_id, stage),
            lead_id=self.lead_id,
            stage=stage,
            occurred_at=reached.occurred_at,
            revenue=reached.revenue if is_customer else None,
            currency=reached.currency if is_customer and reached.revenue is not None else None,
            touch_count=len(window),
            first_channel=window[0].channel if window else NONE_CHANNEL,
            last_channel=_last_channel(window),
            event_id=reached.event_id,
            reason=reached.reason,
            version=emitted.version if emitted else 1,
            clicks=_clicks(window),
            ads_consent=self.ads_consent,
        )


def _clicks(window: Sequence[Touch]) -> tuple[AdClick, ...]:
    """The newest click of each kind in the window, in the order of ``CLICK_KINDS``."""
    clicks = []
    for kind in CLICK_KINDS:
        touch = next((t for t in reversed(window) if getattr(t, kind)), None)
        if touch is not None:
            clicks.append(
                AdClick(kind=kind, value=getattr(touch, kind), clicked_at=touch.occurred_at, touch_id=touch.touch_id)
            )
    return tuple(clicks)


def _note_consent(state: LeadState, at: datetime, consent: AdsConsent | None, do_not_track: bool) -> LeadState:
    """``state`` with one event's consent statement taken in: the newest statement wins; Do-Not-Track stays."""
    update: dict[str, Any] = {}
    if do_not_track and not state.do_not_track:
        update["do_not_track"] = True
    if (
        consent is not None
        and (state.consent_at is None or at >= state.consent_at)
        and (consent != state.consent or at != state.consent_at)
    ):
        update.update(consent=consent, consent_at=at)
    return state.model_copy(update=update) if update else state


def _note_touches(state: LeadState, touches: Iterable[Touch]) -> LeadState:
    for touch in touches:
        if touch.ads_consent is not None or touch.do_not_track:
            state = _note_consent(state, touch.occurred_at, touch.ads_consent, touch.do_not_track)
    return state


def new_lead(lead_id: str) -> LeadState:
    """The state of a lead nobody has seen yet."""
    return LeadState(lead_id=lead_id)


def _window(journey: Sequence[Touch], converted_at: datetime, lookback: timedelta) -> list[Touch]:
    start = converted_at - lookback
    return [touch for touch in journey if start <= touch.occurred_at <= converted_at]


def _last_channel(window: Sequence[Touch]) -> str:
    for touch in reversed(window):
        if not touch.is_direct:
            return touch.channel
    return window[-1].channel if window else NONE_CHANNEL


def _touch_key(touch: Touch) -> tuple[datetime, str]:
    return (touch.occurred_at, touch.touch_id)


def _merge(journey: tuple[Touch, ...], touches: Iterable[Touch], limit: int) -> tuple[Touch, ...]:
    """Journey plus the touches not in it yet, in (time, touch id) order, the newest ``limit`` kept."""
    known = {touch.touch_id for touch in journey}
    merged = list(journey)
    added = False
    for touch in touches:
        if touch.touch_id in known:
            continue
        known.add(touch.touch_id)
        insort(merged, touch, key=_touch_key)
        added = True
    if not added:
        return journey
    return tuple(merged[-limit:])


def _fingerprint(state: LeadState, stage: LifecycleStage, lookback: timedelta) -> str:
    reached = state.stages[stage]
    parts = [reached.occurred_at.isoformat(), reached.event_id, str(reached.revenue), str(reached.currency)]
    parts += [touch.touch_id for touch in _window(state.journey, reached.occurred_at, lookback)]
    for name, at in _milestone_items(state):
        if at is not None and at <= reached.occurred_at:
            parts.append(f"{name}={at.isoformat()}")
    if state.ads_consent is not None:  # only when stated: states from before consent keep their fingerprints
        parts.append(f"ads_consent={state.ads_consent}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _milestone_items(state: LeadState) -> list[tuple[str, datetime | None]]:
    milestones = state.milestones()
    return [(name, getattr(milestones, name)) for name in ("lead_at", "opportunity_at", "customer_at")]


def _emit(
    state: LeadState, lookback: timedelta, now: float | None = None, interval: float = 0.0
) -> tuple[LeadState, list[Conversion]]:
    """Conversions whose inputs changed since they were last emitted, and the state recording them.

    Coalescing (``now`` given and ``interval`` > 0): a conversion reached for the first time goes out at once; a
    change to one already emitted goes out at once only when the lead re-emitted nothing in the last ``interval``
    seconds (``reemitted_at``). Otherwise it is *held*: ``emitted`` keeps the version that went out, ``held_since``
    says that something waits, and a later call (the lead's next event, or the worker's flush of a due lead) emits
    the newest version once, with ``version + 1``. What is held is recomputed from the state (fingerprints), so
    holding keeps nothing but the moment it started.
    """
    emitted = dict(state.emitted)
    changed: list[tuple[LifecycleStage, str, Emitted | None]] = []
    for stage in sorted(state.stages, key=lambda s: state.stages[s].sort_key()):
        fingerprint = _fingerprint(state, stage, lookback)
        previous = emitted.get(stage)
        if previous is None or previous.fingerprint != fingerprint:
            changed.append((stage, fingerprint, previous))
    again = any(previous is not None for _, _, previous in changed)
    hold = (
        again
        and now is not None
        and interval > 0
        and state.reemitted_at is not None
        and now < state.reemitted_at + interval
    )
    update: dict[str, Any] = {}
    if hold:
        if state.held_since is None:
            update["held_since"] = now
    elif state.held_since is not None:
        update["held_since"] = None
    if again and not hold and now is not None:
        update["reemitted_at"] = now
    released = [(stage, fingerprint, previous) for stage, fingerprint, previous in changed if not (hold and previous)]
    if not released:
        return (state.model_copy(update=update) if update else state), []
    for stage, fingerprint, previous in released:
        emitted[stage] = Emitted(
            version=previous.version + 1 if previous else 1,
            fingerprint=fingerprint,
            counted_at=previous.counted_at if previous else None,
        )
    state = state.model_copy(update={**update, "emitted": emitted})
    conversions = [state.conversion(stage, lookback) for stage, _, _ in released]
    # Record what each version says for the live counters (see Emitted.first_channel).
    for conversion in conversions:
        emitted[conversion.stage] = emitted[conversion.stage].model_copy(
            update={
                "first_channel": conversion.first_channel,
                "last_channel": conversion.last_channel,
                "revenue": conversion.revenue,
            }
        )
    return state.model_copy(update={"emitted": emitted}), conversions


def _known(values: tuple[str, ...], value: str) -> tuple[str, ...]:
    """``values`` with ``value`` added at the end when new, the newest KNOWN_LIMIT kept."""
    return values if value in values else (*values, value)[-KNOWN_LIMIT:]


def _reach(state: LeadState, stage: LifecycleStage, reached: StageReached) -> LeadState:
    """Record a stage unless an earlier (time, event id) record of it exists."""
    current = state.stages.get(stage)
    if current is not None and current.sort_key() <= reached.sort_key():
        return state
    return state.model_copy(update={"stages": {**state.stages, stage: reached}})


def apply_touch(
    state: LeadState | None,
    touch: Touch,
    *,
    lead_id: str | None = None,
    lookback: timedelta = DEFAULT_LOOKBACK,
    journey_limit: int = JOURNEY_LIMIT,
    now: float | None = None,
    interval: float = 0.0,
) -> tuple[LeadState, list[Conversion]]:
    """Add one touch to the lead's journey; re-emit the conversions whose window it falls in."""
    state = state or new_lead(lead_id or touch.lead_id or "")
    journey = _merge(state.journey, [touch], journey_limit)
    if journey is state.journey:
        return _emit(state, lookback, now, interval) if state.held_since is not None else (state, [])
    return _emit(_note_touches(state.model_copy(update={"journey": journey}), [touch]), lookback, now, interval)


def apply_link(
    state: LeadState | None,
    link: IdentityLink,
    touches: Sequence[Touch] = (),
    *,
    lookback: timedelta = DEFAULT_LOOKBACK,
    journey_limit: int = JOURNEY_LIMIT,
    now: float | None = None,
    interval: float = 0.0,
) -> tuple[LeadState, list[Conversion]]:
    """A visitor identified as this lead: merge its touches; the first identify reaches the ``lead`` stage."""
    state = state or new_lead(link.lead_id)
    journey = _merge(state.journey, touches, journey_limit)
    first = state.first_identified_at
    update: dict[str, Any] = {"journey": journey, "visitor_ids": _known(state.visitor_ids, link.visitor_id)}
    if first is None or link.linked_at < first:
        update["first_identified_at"] = link.linked_at
    state = _note_touches(state.model_copy(update=update), touches)
    state = _note_consent(state, link.linked_at, link.ads_consent, link.do_not_track)
    state = _reach(state, LifecycleStage.LEAD, StageReached(occurred_at=link.linked_at, event_id=link.event_id))
    return _emit(state, lookback, now, interval)


def apply_crm(
    state: LeadState | None,
    change: CrmStatusChange,
    *,
    lead_id: str,
    event_id: str,
    lookback: timedelta = DEFAULT_LOOKBACK,
    now: float | None = None,
    interval: float = 0.0,
) -> tuple[LeadState, list[Conversion]]:
    """A CRM status change: reach its stage (keeping the earliest record) and emit what changed."""
    state = state or new_lead(lead_id)
    if change.crm_contact_id is not None:
        contact_keys = _known(state.contact_keys, f"{change.crm}:{change.crm_contact_id}")
        if contact_keys is not state.contact_keys:
            state = state.model_copy(update={"contact_keys": contact_keys})
    reached = StageReached(
        occurred_at=change.occurred_at,
        event_id=event_id,
        revenue=change.deal_value if change.stage == LifecycleStage.CUSTOMER else None,
        currency=change.currency if change.stage == LifecycleStage.CUSTOMER and change.deal_value is not None else None,
        reason=change.reason,
    )
    return _emit(_reach(state, change.stage, reached), lookback, now, interval)


def flush(
    state: LeadState, *, now: float, interval: float, lookback: timedelta = DEFAULT_LOOKBACK
) -> tuple[LeadState, list[Conversion]]:
    """Emit what the lead holds back if it is due at ``now`` (the newest version of each changed conversion);
    otherwise, or when nothing is held, ``(state, [])``."""
    if state.held_since is None:
        return state, []
    return _emit(state, lookback, now, interval)


def with_counted_at(state: LeadState, counted: dict[LifecycleStage, float]) -> LeadState:
    """``state`` with the moment the live counters first counted each conversion in ``counted`` recorded."""
    emitted = dict(state.emitted)
    for stage, counted_at in counted.items():
        if emitted[stage].counted_at != counted_at:
            emitted[stage] = emitted[stage].model_copy(update={"counted_at": counted_at})
    return state.model_copy(update={"emitted": emitted})


def attributed_conversion(
    state: LeadState, conversion: Conversion, lookback: timedelta = DEFAULT_LOOKBACK
) -> Conversion:
    """One of the lead's conversions with every model's credits in it: the record the worker emits."""
    return attributed(state.journey, conversion, state.milestones(), lookback)


def credits_for(state: LeadState, conversion: Conversion, lookback: timedelta = DEFAULT_LOOKBACK) -> list[Credit]:
    """The credits of every model for one of the lead's conversions, stamped with the conversion's version."""
    credits = attribute(state.journey, conversion, state.milestones(), lookback)
    return [
        c if c.version == conversion.version else c.model_copy(update={"version": conversion.version}) for c in credits
    ]


class PageSeen(BaseModel):
    """A page view of an identified visitor that started no touch: only lead scoring needs it."""

    model_config = ConfigDict(frozen=True)

    path: str
    occurred_at: datetime


class LeadEvent(BaseModel):
    """The internal record on ``{p}.lead-events`` (keyed by lead id): what the leads agent applies.

    ``link``: a visitor identified as the lead (``link``, the raw ``email`` for the leads topic, the carried
    ``touches``); ``touch``: one touch of an identified visitor (``touches`` holds it); ``crm``: a CRM change
    (``crm`` and its envelope's ``event_id``); ``page``: a page view of an identified visitor inside a session
    (``page``; for lead scoring only, :mod:`stream_jobs.rules.lead_scores`, not a lifecycle transition); ``form``:
    another form of a visitor already linked to the lead (``link`` describes it; for lead scoring only);
    ``erase``: ``closedloop erase`` (``event_id`` is the request id, ``visitor_ids`` the visitors it found linked
    to the lead elsewhere), see :mod:`stream_jobs.rules.erasure`; ``flush``: the worker's reminder that the lead's
    held re-emissions are due (:func:`flush`; it carries nothing, so a lost or repeated one changes nothing).
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["link", "touch", "crm", "erase", "page", "form", "flush"]
    lead_id: str
    link: IdentityLink | None = None
    email: str | None = None
    touches: tuple[Touch, ...] = ()
    crm: CrmStatusChange | None = None
    event_id: str = ""
    visitor_ids: tuple[str, ...] = ()
    page: PageSeen | None = None


def apply(
    state: LeadState | None,
    event: LeadEvent,
    *,
    lookback: timedelta = DEFAULT_LOOKBACK,
    journey_limit: int = JOURNEY_LIMIT,
    now: float | None = None,
    interval: float = 0.0,
) -> tuple[LeadState, list[Conversion]]:
    """Apply one lead event with the matching transition. Raises ValueError when the record is incomplete.

    ``now`` and ``interval``: coalesced re-emission (:func:`_emit`); without ``now`` every change goes out at once.
    """
    if event.kind == "link":
        if event.link is None:
            raise ValueError(f"lead event 'link' for {event.lead_id} has no link")
        return apply_link(
            state,
            event.link,
            event.touches,
            lookback=lookback,
            journey_limit=journey_limit,
            now=now,
            interval=interval,
        )
    if event.kind == "touch":
        if len(event.touches) != 1:
            raise ValueError(f"lead event 'touch' for {event.lead_id} needs exactly one touch")
        return apply_touch(
            state,
            event.touches[0],
            lead_id=event.lead_id,
            lookback=lookback,
            journey_limit=journey_limit,
            now=now,
            interval=interval,
        )
    if event.kind == "erase":
        raise ValueError(f"lead event 'erase' for {event.lead_id} is not a transition: the leads agent erases")
    if event.kind == "flush":
        if state is None or now is None:
            return state or new_lead(event.lead_id), []
        return flush(state, now=now, interval=interval, lookback=lookback)
    if event.crm is None:
        raise ValueError(f"lead event 'crm' for {event.lead_id} has no CRM change")
    return apply_crm(
        state, event.crm, lead_id=event.lead_id, event_id=event.event_id, lookback=lookback, now=now, interval=interval
    )
