"""A lead's score state and what one lead event makes of it: a new score, a sales-ready record, a buying signal.

Pure transitions over the rules of :mod:`scoring` (points) and :mod:`readiness` (cycles); the scoring part of the
leads agent (``stream_jobs.runtime.scores``) keeps one :class:`ScoreState` per lead id in its own table and sends
what :func:`apply_event` returns. docs/SCORING.md is the user's description; the rules in short:

- Activity: each touch of the lead is a visit and a page view of its landing page; each page view of an identified
  visitor inside a session (a ``page`` lead event) a page view; a link with a form id, or a later form of a linked
  visitor (a ``form`` lead event), a form of its kind (:func:`scoring.form_kind`). Page views of the anonymous
  history before the form count through their touches only (the visitors table keeps no per-page times).
- CRM: the stage of the newest CRM change (by its time) feeds the score; ``email`` comes from the link or the CRM.
- The score is computed at the newest time the lead's events carry (``scored_at``), not the wall clock, so a
  replay computes the same figures. Activities older than the window, and beyond the newest ``limit``, are dropped.
- A replay (an event id already applied) changes nothing and emits nothing.
- Sales-ready: a threshold *crossing* (the score before the event below the threshold, after at or above it) or a
  hand-raiser (a demo or contact form; a pricing view by a returning lead: one with an earlier visit), once per
  cycle (``readiness.decide``). The reset is a CRM change to lost or disqualified; the next crossing or
  hand-raiser opens the next cycle. A lead still above the threshold after a reset needs a hand-raiser, or to fall
  below and cross again.
- Buying signal: a pricing view by a lead at an open-opportunity stage who viewed pricing before, at most one per
  lead per :data:`SIGNAL_GAP` (a day), so one visit through several pricing pages is one alert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from schemas.outbox import OutboxMessage
from schemas.outputs import BuyingSignal, JourneyTouch, LeadScore, SalesReadyLead, ScorePoints, Touch
from stream_jobs.rules import readiness
from stream_jobs.rules.lifecycle import LeadEvent
from stream_jobs.rules.sales_ready import build_sales_ready
from stream_jobs.rules.scoring import Activity, ScoringRules, form_kind, score_lead

ACTIVITY_LIMIT = 200
CRM_EVENTS_KEPT = 50
JOURNEY_TOUCHES = 100  # touches a sales-ready record lists (the newest; the first touch is always there)
SIGNAL_GAP = timedelta(days=1)


class ScoredActivity(BaseModel):
    """One activity in the score state; ``event_id`` and the kind make it unique, so a replay adds nothing."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    event_id: str
    path: str = ""
    visit: bool = False
    form: str = ""

    @property
    def key(self) -> str:
        """A page view is one activity whether it came as a touch's visit or as a page event (a page view sent
        again finds its touch emitted already and comes as a page event); a form is one more."""
        return f"{self.event_id}|{'form' if self.form else 'page'}"

    def rule_input(self) -> Activity:
        return Activity(at=self.at, path=self.path, visit=self.visit, form_kind=self.form)


class ScoreState(BaseModel):
    """What the scores table keeps per lead. The raw email is kept for the sales-ready record and the outbox;
    ``closedloop erase`` deletes the whole state (docs/PRIVACY.md)."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    email: str = ""
    stage: str = ""
    stage_at: datetime | None = None
    activities: tuple[ScoredActivity, ...] = ()
    crm_events: tuple[str, ...] = ()  # ids of the CRM changes applied, the newest CRM_EVENTS_KEPT
    scored_at: datetime | None = None
    score: float = 0.0
    breakdown: tuple[tuple[str, float], ...] = ()
    cycle: int = 0
    issued: bool = False
    last_signal_at: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """What one lead event gives: each is None when there is nothing to send."""

    score: LeadScore | None = None
    sales_ready: SalesReadyLead | None = None
    signal: BuyingSignal | None = None


def _activities(event: LeadEvent, rules: ScoringRules) -> list[ScoredActivity]:
    found = [
        ScoredActivity(at=touch.occurred_at, event_id=touch.event_id, path=touch.landing_path, visit=True)
        for touch in event.touches
    ]
    if event.kind in ("link", "form") and event.link is not None and event.link.form_id:
        found.append(
            ScoredActivity(
                at=event.link.linked_at, event_id=event.link.event_id, form=form_kind(event.link.form_id, rules)
            )
        )
    if event.kind == "page" and event.page is not None:
        found.append(ScoredActivity(at=event.page.occurred_at, event_id=event.event_id, path=event.page.path))
    return found


def _journey(touches: Sequence[Touch]) -> list[JourneyTouch]:
    ordered = sorted(touches, key=lambda touch: (touch.occurred_at, touch.touch_id))
    kept = ordered if len(ordered) <= JOURNEY_TOUCHES else [ordered[0], *ordered[-(JOURNEY_TOUCHES - 1) :]]
    return [
        JourneyTouch(
            occurred_at=t.occurred_at,
            channel=t.channel,
            source=t.source,
            medium=t.medium,
            campaign=t.campaign,
            landing_path=t.landing_path,
        )
        for t in kept
    ]


def _hand_raiser(new: Sequence[ScoredActivity], activities: Sequence[ScoredActivity]) -> str:
    for activity in new:
        # returning: a visit before this one. A view that starts a visit needs one other visit up to it; a view
        # inside a visit needs two (its own visit's start is one).
        visits = sum(1 for a in activities if a.visit and a.at <= activity.at and a.key != activity.key)
        returning = visits >= (1 if activity.visit else 2)
        reason = readiness.hand_raiser(form_kind=activity.form, path=activity.path, returning=returning)
        if reason:
            return reason
    return ""


def _signal(
    state: ScoreState, new: Sequence[ScoredActivity], activities: Sequence[ScoredActivity]
) -> BuyingSignal | None:
    for activity in new:
        if not activity.path or not readiness.is_pricing(activity.path):
            continue
        before = sum(1 for a in activities if a.path and readiness.is_pricing(a.path) and a.at < activity.at)
        if not readiness.buying_signal(state.stage, activity.path, before):
            continue
        if state.last_signal_at is not None and activity.at - state.last_signal_at < SIGNAL_GAP:
            continue
        digest = hashlib.sha1(f"{state.lead_id}|{activity.event_id}".encode()).hexdigest()[:24]
        return BuyingSignal(
            signal_id=digest,
            lead_id=state.lead_id,
            stage=state.stage,
            path=activity.path,
            occurred_at=activity.at,
            pricing_views=before + 1,
        )
    return None


def apply_event(
    state: ScoreState | None,
    event: LeadEvent,
    rules: ScoringRules,
    journey: Sequence[Touch] = (),
    limit: int = ACTIVITY_LIMIT,
) -> tuple[ScoreState, Outcome]:
    """Apply one lead event (``link``, ``touch``, ``page`` or ``crm``) to the lead's score state.

    ``journey`` is the lead's touches known so far (the leads table's, for the sales-ready record's summary); the
    event's own touches are added to it here.
    """
    state = state or ScoreState(lead_id=event.lead_id)
    update: dict[str, object] = {}
    times: list[datetime] = []
    reset_stage = ""
    crm_new = False
    if event.kind == "crm" and event.crm is not None:
        change = event.crm
        if event.event_id in state.crm_events:
            return state, Outcome()  # a replay
        crm_new = True
        update["crm_events"] = (*state.crm_events, event.event_id)[-CRM_EVENTS_KEPT:]
        times.append(change.occurred_at)
        if state.stage_at is None or change.occurred_at >= state.stage_at:
            update["stage"], update["stage_at"] = change.stage.value, change.occurred_at
            reset_stage = change.stage.value  # an older change arriving late is history: it resets nothing
        if change.email and not state.email:
            update["email"] = change.email
    if event.email and not state.email:
        update["email"] = event.email
    known = {activity.key for activity in state.activities}
    new = [activity for activity in _activities(event, rules) if activity.key not in known]
    if not new and not crm_new and "email" not in update:
        return state, Outcome()  # a replay, or nothing that scores
    times += [activity.at for activity in new]
    if event.link is not None:
        times.append(event.link.linked_at)
    if state.scored_at is not None:
        times.append(state.scored_at)
    now = max(times) if times else state.scored_at
    if now is None:
        return state.model_copy(update=update), Outcome()
    horizon = now - timedelta(days=rules.window_days)
    activities = sorted((*state.activities, *new), key=lambda a: (a.at, a.key))
    activities = [a for a in activities if a.at >= horizon][-limit:]
    state = state.model_copy(update={**update, "activities": tuple(activities), "scored_at": now})
    score = score_lead(rules, now, [a.rule_input() for a in activities], email=state.email, stage=state.stage)
    score_record = None
    if (score.total, score.breakdown) != (state.score, state.breakdown):
        score_record = LeadScore(
            lead_id=state.lead_id,
            scored_at=now,
            score=score.total,
            breakdown=[ScorePoints(rule=rule, points=points) for rule, points in score.breakdown],
            event_id=event.event_id,
        )
    crossed = state.score < rules.threshold <= score.total
    decision = readiness.decide(
        readiness.Readiness(state.cycle, state.issued),
        score.total if crossed else 0.0,
        rules.threshold,
        hand_raised=_hand_raiser(new, activities),
        stage=reset_stage,
    )
    signal = _signal(state, new, activities)
    ready = None
    if decision.ready:
        touches = {touch.touch_id: touch for touch in (*journey, *event.touches)}
        ready = build_sales_ready(
            state.lead_id,
            state.email,
            decision.state.cycle,
            decision.reason,
            score,
            _journey(list(touches.values())),
            [a.rule_input() for a in activities],
            now,
            event.event_id,
        )
    state = state.model_copy(
        update={
            "score": score.total,
            "breakdown": score.breakdown,
            "cycle": decision.state.cycle,
            "issued": decision.state.issued,
            "last_signal_at": signal.occurred_at if signal is not None else state.last_signal_at,
        }
    )
    return state, Outcome(score_record, ready, signal)


def sales_ready_message(record: SalesReadyLead) -> OutboxMessage:
    """The outbox message announcing a sales-ready record; its id derives from the record's, so a replay is
    recognised by ``closedloop deliver``. No email in the title: Slack and CRM subjects show it."""
    payload = record.model_dump(mode="json", exclude={"email"})
    return OutboxMessage(
        message_id=f"sales_ready:{record.ready_id}",
        kind="sales_ready",
        lead_id=record.lead_id,
        email=record.email or None,
        occurred_at=record.ready_at,
        title=f"Sales-ready lead ({record.reason})",
        payload=payload,
    )


def buying_signal_message(signal: BuyingSignal, email: str, score: float | None = None) -> OutboxMessage:
    """The outbox message of a buying signal (a contact of an open opportunity back on pricing)."""
    payload = signal.model_dump(mode="json")
    if score is not None:
        payload["score"] = score
    return OutboxMessage(
        message_id=f"buying_signal:{signal.signal_id}",
        kind="buying_signal",
        lead_id=signal.lead_id,
        email=email or None,
        occurred_at=signal.occurred_at,
        title=f"Buying signal: a lead at stage {signal.stage} viewed {signal.path} again",
        payload=payload,
    )
