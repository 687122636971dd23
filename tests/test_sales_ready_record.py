"""The sales-ready record carries the journey in time order, the score and its breakdown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.outputs import JourneyTouch, ScorePoints
from stream_jobs.rules.sales_ready import build_sales_ready
from stream_jobs.rules.scoring import DEFAULT_RULES, Activity, score_lead

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_record_summarises_the_journey_in_time_order() -> None:
    later = JourneyTouch(occurred_at=T0 + timedelta(days=2), channel="Email", source="newsletter", medium="email")
    first = JourneyTouch(
        occurred_at=T0, channel="Paid Search", source="google", medium="cpc", campaign="spring", landing_path="/"
    )
    activities = [  # arrived out of order
        Activity(T0 + timedelta(days=2, minutes=5), form_kind="demo"),
        Activity(T0, visit=True, path="/"),
        Activity(T0 + timedelta(days=2), visit=True, path="/pricing"),
    ]
    ready_at = T0 + timedelta(days=2, minutes=5)
    score = score_lead(DEFAULT_RULES, ready_at, activities, email="ann@acme.io")
    record = build_sales_ready("l1", "ann@acme.io", 1, "hand_raiser:form:demo", score, [later, first], activities,
                               ready_at, "e9")  # fmt: skip
    assert record.ready_id == "l1:1"
    assert record.first_touch == first
    assert record.touches == [first, later]
    assert record.pages == ["/", "/pricing"]
    assert record.forms == ["demo"]
    assert record.score == score.total == 64.76
    assert record.breakdown == [
        ScorePoints(rule="engagement:visits", points=3.81),
        ScorePoints(rule="engagement:page_views", points=0.95),
        ScorePoints(rule="page:/pricing", points=10.0),
        ScorePoints(rule="form:demo", points=40.0),
        ScorePoints(rule="fit:company_email", points=10.0),
    ]
