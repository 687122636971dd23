"""A lead's score state through scripted lead events (no service): exact scores, one sales-ready record per cycle,
the reset after lost, replays, buying signals, and the outbox messages; the contacts hold by time."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from schemas.events import CrmStatusChange, Envelope
from schemas.outputs import IdentityLink, JourneyTouch, ScorePoints, Touch
from stream_jobs.rules import contacts
from stream_jobs.rules.lead_scores import (
    ScoreState,
    apply_event,
    buying_signal_message,
    sales_ready_message,
)
from stream_jobs.rules.lifecycle import LeadEvent, PageSeen
from stream_jobs.rules.scoring import DEFAULT_RULES, Activity, ScoringRules, form_kind, score_lead

LEAD = "lead-1"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def touch(touch_id: str, when: datetime, landing: str, channel: str = "Paid Search", visitor: str = "v1") -> Touch:
    return Touch(
        touch_id=touch_id,
        visitor_id=visitor,
        lead_id=LEAD,
        site_id="s",
        occurred_at=when,
        channel=channel,
        source="google",
        medium="cpc",
        campaign="spring",
        landing_path=landing,
        event_id=f"pv-{touch_id}",
    )


def link(when: datetime, form_id: str | None, touches: tuple[Touch, ...] = (), event_id: str = "form-1") -> LeadEvent:
    identity = IdentityLink(visitor_id="v1", lead_id=LEAD, linked_at=when, event_id=event_id, form_id=form_id or "")
    return LeadEvent(kind="link", lead_id=LEAD, link=identity, email="ann@acme.io", touches=touches, event_id=event_id)


def visit(t: Touch) -> LeadEvent:
    return LeadEvent(kind="touch", lead_id=LEAD, touches=(t,), event_id=t.event_id)


def page(event_id: str, when: datetime, path: str) -> LeadEvent:
    return LeadEvent(kind="page", lead_id=LEAD, page=PageSeen(path=path, occurred_at=when), event_id=event_id)


def crm(event_id: str, when: datetime, stage: str) -> LeadEvent:
    change = CrmStatusChange(occurred_at=when, crm="hubspot", crm_object_id="o1", email="ann@acme.io", stage=stage)
    return LeadEvent(kind="crm", lead_id=LEAD, crm=change, event_id=event_id)


def test_form_kinds_and_stage_names_of_the_pipeline() -> None:
    assert form_kind("demo-request", DEFAULT_RULES) == "demo"
    assert form_kind("Contact", DEFAULT_RULES) == "contact"
    assert form_kind("ebook-download", DEFAULT_RULES) == "ebook-download"
    mql = score_lead(DEFAULT_RULES, T0, [], stage="mql")
    assert mql.breakdown == (("stage:mql", 10.0),)
    assert score_lead(DEFAULT_RULES, T0, [], stage="sql").total == 20.0


def test_a_returning_pricing_visit_makes_one_record_and_a_replay_nothing() -> None:
    t1 = touch("t1", T0, "/")
    state, out = apply_event(None, link(T0, "newsletter", (t1,)), DEFAULT_RULES)
    assert out.score is not None and out.sales_ready is None
    assert dict((p.rule, p.points) for p in out.score.breakdown) == {
        "engagement:visits": 2.0,
        "engagement:page_views": 0.5,
        "form:newsletter": 5.0,
        "fit:company_email": 10.0,
    }
    assert (out.score.score, out.score.scored_at, out.score.event_id) == (17.5, T0, "form-1")

    # a pricing view inside the first visit: not returning yet
    state, out = apply_event(state, page("pv-2", T0 + timedelta(minutes=2), "/pricing"), DEFAULT_RULES)
    assert out.sales_ready is None and out.score is not None and out.score.score == 28.0

    # 14 days later (one half-life): a new visit landing on pricing, by a returning lead
    t2 = touch("t2", T0 + 14 * DAY, "/pricing", channel="Email")
    state, out = apply_event(state, visit(t2), DEFAULT_RULES, journey=(t1,))
    # everything before halves: visits 1 + 2, page views 0.25 + 0.25 + 0.5, pricing 5 + 10, newsletter 2.5, fit 10
    assert out.score is not None and out.score.score == 31.5
    ready = out.sales_ready
    assert ready is not None
    assert (ready.ready_id, ready.cycle, ready.reason, ready.score, ready.email, ready.event_id) == (
        f"{LEAD}:1",
        1,
        "hand_raiser:pricing_returning",
        31.5,
        "ann@acme.io",
        "pv-t2",
    )
    assert ready.first_touch == JourneyTouch(
        occurred_at=T0, channel="Paid Search", source="google", medium="cpc", campaign="spring", landing_path="/"
    )
    assert [t.channel for t in ready.touches] == ["Paid Search", "Email"]
    assert ready.pages == ["/", "/pricing", "/pricing"] and ready.forms == ["newsletter"]
    assert ScorePoints(rule="page:/pricing", points=15.0) in ready.breakdown
    assert (state.cycle, state.issued) == (1, True)

    # the same event again (a replay), and another returning pricing visit: no second record in cycle 1
    again, out = apply_event(state, visit(t2), DEFAULT_RULES, journey=(t1,))
    assert again is state and out.score is None and out.sales_ready is None
    t3 = touch("t3", T0 + 15 * DAY, "/pricing")
    state, out = apply_event(state, visit(t3), DEFAULT_RULES)
    assert out.sales_ready is None

    message = sales_ready_message(ready)
    assert (message.message_id, message.kind, message.lead_id, message.email) == (
        f"sales_ready:{LEAD}:1",
        "sales_ready",
        LEAD,
        "ann@acme.io",
    )
    assert message.payload["score"] == 31.5 and message.payload["first_touch"]["channel"] == "Paid Search"
    assert "email" not in message.payload and "ann@" not in message.title


def test_lost_resets_and_the_next_hand_raiser_opens_cycle_two_a_replayed_lost_nothing() -> None:
    state, out = apply_event(None, link(T0, "demo-request", (touch("t1", T0, "/demo"),)), DEFAULT_RULES)
    assert out.sales_ready is not None and out.sales_ready.reason == "hand_raiser:form:demo"
    state, out = apply_event(state, crm("crm-lost", T0 + DAY, "lost"), DEFAULT_RULES)
    assert out.sales_ready is None and (state.cycle, state.issued, state.stage) == (1, False, "lost")
    # still above the threshold, but no crossing and no hand-raiser: nothing
    state, out = apply_event(state, page("pv-9", T0 + DAY + timedelta(minutes=1), "/features"), DEFAULT_RULES)
    assert out.sales_ready is None
    # a replayed lost changes nothing
    replayed, out = apply_event(state, crm("crm-lost", T0 + DAY, "lost"), DEFAULT_RULES)
    assert replayed is state and out == type(out)()
    state, out = apply_event(state, link(T0 + 2 * DAY, "contact-us", event_id="form-2"), DEFAULT_RULES)
    assert out.sales_ready is not None
    assert (out.sales_ready.ready_id, out.sales_ready.reason) == (f"{LEAD}:2", "hand_raiser:form:contact")


def test_a_threshold_crossing_is_ready_once_and_after_lost_only_a_new_crossing() -> None:
    rules = ScoringRules(threshold=15.0)
    state, out = apply_event(None, link(T0, "newsletter", (touch("t1", T0, "/"),)), rules)
    assert out.sales_ready is not None and out.sales_ready.reason == "threshold" and out.sales_ready.score == 17.5
    state, out = apply_event(state, page("pv-2", T0 + timedelta(minutes=5), "/features"), rules)
    assert out.sales_ready is None
    state, out = apply_event(state, crm("crm-lost", T0 + timedelta(hours=1), "lost"), rules)
    state, out = apply_event(state, page("pv-3", T0 + timedelta(hours=2), "/features"), rules)
    assert out.sales_ready is None and state.score >= 15.0  # above, but not a crossing
    # two months on, everything has faded below the threshold; a new burst crosses it again: cycle 2
    later = T0 + 60 * DAY
    state, out = apply_event(state, page("pv-4", later, "/features"), rules)
    assert out.sales_ready is None and state.score < 15.0
    state, out = apply_event(state, link(later + timedelta(minutes=1), "newsletter", event_id="form-3"), rules)
    assert out.sales_ready is not None and out.sales_ready.ready_id == f"{LEAD}:2"


def test_buying_signal_for_an_open_opportunity_back_on_pricing_once_a_day() -> None:
    state, _ = apply_event(None, link(T0, None, (touch("t1", T0, "/pricing"),)), DEFAULT_RULES)
    state, out = apply_event(state, crm("crm-opp", T0 + DAY, "opportunity"), DEFAULT_RULES)
    assert out.signal is None
    state, out = apply_event(state, page("pv-2", T0 + 2 * DAY, "/pricing"), DEFAULT_RULES)
    signal = out.signal
    assert signal is not None
    assert (signal.lead_id, signal.stage, signal.path, signal.occurred_at, signal.pricing_views) == (
        LEAD,
        "opportunity",
        "/pricing",
        T0 + 2 * DAY,
        2,
    )
    state, out = apply_event(state, page("pv-3", T0 + 2 * DAY + timedelta(minutes=3), "/pricing/teams"), DEFAULT_RULES)
    assert out.signal is None  # the same visit
    state, out = apply_event(state, page("pv-4", T0 + 4 * DAY, "/pricing"), DEFAULT_RULES)
    assert out.signal is not None and out.signal.pricing_views == 4
    message = buying_signal_message(out.signal, state.email, state.score)
    assert (message.kind, message.message_id, message.email) == (
        "buying_signal",
        f"buying_signal:{out.signal.signal_id}",
        "ann@acme.io",
    )
    # a customer is no open opportunity
    state, _ = apply_event(state, crm("crm-won", T0 + 5 * DAY, "customer"), DEFAULT_RULES)
    state, out = apply_event(state, page("pv-5", T0 + 7 * DAY, "/pricing"), DEFAULT_RULES)
    assert out.signal is None


def test_activities_are_bounded_by_the_window_and_the_limit() -> None:
    state: ScoreState | None = None
    for i in range(10):
        state, _ = apply_event(state, page(f"pv-{i}", T0 + timedelta(minutes=i), "/features"), DEFAULT_RULES, limit=4)
    assert state is not None and [a.event_id for a in state.activities] == ["pv-6", "pv-7", "pv-8", "pv-9"]
    state, _ = apply_event(state, page("pv-late", T0 + 100 * DAY, "/features"), DEFAULT_RULES, limit=4)
    assert [a.event_id for a in state.activities] == ["pv-late"]
    assert score_lead(DEFAULT_RULES, T0, [Activity(T0, path="/features")]).total == 0.5


def _held(event_id: str, received: datetime) -> Envelope:
    change = CrmStatusChange(occurred_at=received, crm="hubspot", crm_object_id="o", crm_contact_id="77", stage="mql")
    return Envelope(event_id=event_id, site_id="hubspot", received_at=received, event=change)


def test_held_crm_events_expire_after_the_hold_time() -> None:
    state = contacts.ContactState(held=(_held("e1", T0), _held("e2", T0 + timedelta(hours=2))))
    same, expired = contacts.expire_held(state, T0 + timedelta(hours=1), timedelta(hours=1))
    assert same is state and expired == []
    after, expired = contacts.expire_held(state, T0 + timedelta(hours=1, seconds=1), timedelta(hours=1))
    assert [e.event_id for e in expired] == ["e1"] and [e.event_id for e in after.held] == ["e2"]


def test_a_page_view_sent_again_as_a_page_event_after_its_touch_counts_once() -> None:
    t1 = touch("t1", T0, "/pricing")
    state, _ = apply_event(None, link(T0, None, (t1,)), DEFAULT_RULES)
    again, out = apply_event(state, page(t1.event_id, T0, "/pricing"), DEFAULT_RULES)
    assert again is state and out.score is None


def test_score_and_sales_ready_records_become_rows_of_their_tables() -> None:
    import json

    from schemas import serde
    from sinks.rows import Provenance, RecordKind, rows_for

    where = Provenance("p.lead-scores", 0, 7)
    t1 = touch("t1", T0, "/demo")
    _, out = apply_event(None, link(T0, "demo-request", (t1,)), DEFAULT_RULES, journey=(t1,))
    assert out.score is not None and out.sales_ready is not None
    [(table, row)] = rows_for(RecordKind.SCORE, serde.dumps(out.score), where)
    assert (table, row[0], row[1], row[2], row[4]) == ("lead_scores", LEAD, T0, out.score.score, "form-1")
    assert row[3] == [{"rule": p.rule, "points": p.points} for p in out.score.breakdown]
    [(table, row)] = rows_for(RecordKind.SALES_READY, serde.dumps(out.sales_ready), where)
    assert table == "sales_ready_leads"
    assert row[:5] == (f"{LEAD}:1", LEAD, 1, T0, "hand_raiser:form:demo")  # no email: `leads` keeps it
    assert "ann@acme.io" not in repr(row)
    journey = json.loads(row[7])
    assert set(journey) == {"first_touch", "touches", "pages", "forms"}
    assert journey["pages"] == ["/demo"] and journey["forms"] == ["demo"]


def test_a_later_form_of_a_linked_visitor_is_a_hand_raiser_too() -> None:
    state, out = apply_event(None, link(T0, "ebook-download", (touch("t1", T0, "/"),)), DEFAULT_RULES)
    assert out.sales_ready is None
    later = T0 + DAY
    identity = IdentityLink(visitor_id="v1", lead_id=LEAD, linked_at=later, event_id="form-9", form_id="demo-request")
    form = LeadEvent(kind="form", lead_id=LEAD, link=identity, event_id="form-9")
    state, out = apply_event(state, form, DEFAULT_RULES)
    assert out.sales_ready is not None and out.sales_ready.reason == "hand_raiser:form:demo"
    assert out.sales_ready.forms == ["ebook-download", "demo"]


def test_the_demo_receiver_checks_signatures_and_counts_repeats(tmp_path) -> None:
    import httpx

    from delivery import requests as build
    from delivery.settings import DeliverySettings
    from simulator.demo_harness import DemoReceiver

    receiver = DemoReceiver(tmp_path, port=0).start()
    try:
        env = {name.lower().removeprefix("closedloop_"): value for name, value in receiver.environment().items()}
        settings = DeliverySettings(**env)
        ready = apply_event(None, link(T0, "demo-request", (touch("t1", T0, "/demo"),)), DEFAULT_RULES)[1].sales_ready
        assert ready is not None
        message = sales_ready_message(ready)
        secret = settings.delivery_webhook_secret.get_secret_value() if settings.delivery_webhook_secret else ""
        request = build.generic_webhook(message, settings.delivery_webhook_url or "", secret, int(time.time()))
        with httpx.Client(timeout=5) as client:
            answers = [
                client.post(request.url, content=request.body, headers=request.headers).status_code for _ in "ab"
            ]
            forged = build.generic_webhook(message, request.url, "wrong", int(time.time()))
            answers.append(client.post(forged.url, content=forged.body, headers=forged.headers).status_code)
        assert answers == [200, 200, 401]
        assert (receiver.kinds, receiver.repeats, receiver.bad_signatures) == ({"sales_ready": 1}, 1, 1)
        again = DemoReceiver(tmp_path)  # a later demo finds the same address and secret
        assert (again.port, again.secret) == (receiver.port, receiver.secret)
    finally:
        receiver.stop()
