"""Build the sales-ready record: the score, its breakdown and the lead's journey summary, for sales and an outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from schemas.outputs import JourneyTouch, SalesReadyLead, ScorePoints
from stream_jobs.rules.readiness import record_id
from stream_jobs.rules.scoring import Activity, Score


def build_sales_ready(
    lead_id: str,
    email: str,
    cycle: int,
    reason: str,
    score: Score,
    touches: Sequence[JourneyTouch],
    activities: Sequence[Activity],
    ready_at: datetime,
    event_id: str,
) -> SalesReadyLead:
    """The record for one lead and cycle; touches and activities are put in time order (events arrive late)."""
    ordered_touches = sorted(touches, key=lambda touch: touch.occurred_at)
    ordered = sorted(activities, key=lambda activity: activity.at)
    return SalesReadyLead(
        ready_id=record_id(lead_id, cycle),
        lead_id=lead_id,
        cycle=cycle,
        email=email,
        ready_at=ready_at,
        reason=reason,
        score=score.total,
        breakdown=[ScorePoints(rule=rule, points=points) for rule, points in score.breakdown],
        first_touch=ordered_touches[0] if ordered_touches else None,
        touches=ordered_touches,
        pages=[activity.path for activity in ordered if activity.path],
        forms=[activity.form_kind for activity in ordered if activity.form_kind],
        event_id=event_id,
    )
