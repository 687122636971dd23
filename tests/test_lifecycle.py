"""Lifecycle transitions: exact conversions for in-order, out-of-order, skipped and replayed input (no service)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from schemas import serde
from schemas.events import CrmStatusChange, LifecycleStage
from schemas.outputs import Conversion, IdentityLink, Touch
from stream_jobs.rules.lifecycle import (
    LeadEvent,
    apply,
    apply_crm,
    apply_link,
    apply_touch,
    attributed_conversion,
    conversion_id_for,
    credits_for,
    flush,
)

LEAD = "lead-1"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def touch(touch_id: str, hours: float, channel: str = "Organic Search") -> Touch:
    return Touch(
        touch_id=touch_id,
        visitor_id="v1",
        lead_id=LEAD,
        site_id="s",
        occurred_at=at(hours),
        channel=channel,
        source="google",
        medium="organic",
        event_id=f"e-{touch_id}",
    )


def link(hours: float, event_id: str = "form-1") -> IdentityLink:
    return IdentityLink(visitor_id="v1", lead_id=LEAD, linked_at=at(hours), event_id=event_id)


def crm(stage: str, hours: float, value: str | None = None) -> CrmStatusChange:
    return CrmStatusChange(
        occurred_at=at(hours),
        crm="hubspot",
        crm_object_id="c1",
        email="ann@example.com",
        stage=stage,
        deal_value=Decimal(value) if value else None,
        currency="EUR" if value else None,
    )


def conversion(
    stage: str,
    hours: float,
    event_id: str,
    *,
    touches: int,
    first: str = "(none)",
    last: str = "(none)",
    version: int = 1,
    revenue: str | None = None,
) -> Conversion:
    return Conversion(
        conversion_id=conversion_id_for(LEAD, stage),
        lead_id=LEAD,
        stage=stage,
        occurred_at=at(hours),
        revenue=Decimal(revenue) if revenue else None,
        currency="EUR" if revenue else None,
        touch_count=touches,
        first_channel=first,
        last_channel=last,
        event_id=event_id,
        version=version,
    )


def test_conversion_id_is_sha1_of_lead_and_stage():
    assert conversion_id_for("abc", LifecycleStage.MQL) == hashlib.sha1(b"abc|mql").hexdigest()[:24]
    assert conversion_id_for("abc", "mql") == conversion_id_for("abc", LifecycleStage.MQL)


def test_in_order_journey_emits_one_conversion_per_milestone():
    state, out = apply_touch(None, touch("t1", 0, "Paid Search"), lead_id=LEAD)
    assert out == []
    state, out = apply_link(state, link(1), [touch("t1", 0, "Paid Search"), touch("t2", 0.5, "Direct")])
    assert out == [conversion("lead", 1, "form-1", touches=2, first="Paid Search", last="Paid Search")]
    state, out = apply_crm(state, crm("mql", 2), lead_id=LEAD, event_id="crm-1")
    assert out == [conversion("mql", 2, "crm-1", touches=2, first="Paid Search", last="Paid Search")]
    state, out = apply_crm(state, crm("customer", 30, "12000.00"), lead_id=LEAD, event_id="crm-2")
    assert out == [
        conversion("customer", 30, "crm-2", touches=2, first="Paid Search", last="Paid Search", revenue="12000.00")
    ]
    assert state.first_identified_at == at(1)


def test_replaying_every_input_emits_nothing_new():
    inputs = [
        lambda s: apply_link(s, link(1), [touch("t1", 0)]),
        lambda s: apply_touch(s, touch("t2", 3)),
        lambda s: apply_crm(s, crm("mql", 2), lead_id=LEAD, event_id="crm-1"),
    ]
    state = None
    for step in inputs:
        state, _ = step(state)
    for step in inputs:
        replayed, out = step(state)
        assert out == []
        assert replayed == state


def test_touch_after_a_conversion_does_not_change_it():
    state, _ = apply_link(None, link(1), [touch("t1", 0)])
    state, out = apply_touch(state, touch("t2", 5))
    assert out == []
    assert len(state.journey) == 2


def test_late_page_view_re_emits_the_conversion_with_a_new_version():
    state, _ = apply_link(None, link(1), [touch("t2", 0.5, "Email")])
    state, out = apply_touch(state, touch("t1", 0, "Paid Social"))
    assert out == [conversion("lead", 1, "form-1", touches=2, first="Paid Social", last="Email", version=2)]
    state, out = apply_touch(state, touch("t0", -1, "Referral"))
    assert out == [conversion("lead", 1, "form-1", touches=3, first="Referral", last="Email", version=3)]


def test_crm_update_before_the_form_converts_with_no_touches_then_updates():
    state, out = apply_crm(None, crm("mql", 2), lead_id=LEAD, event_id="crm-1")
    assert out == [conversion("mql", 2, "crm-1", touches=0)]
    assert state.stages.keys() == {LifecycleStage.MQL}
    state, out = apply_link(state, link(1), [touch("t1", 0, "Paid Search")])
    # The form happened before the MQL: the lead is created, and the MQL's journey and milestones changed.
    assert out == [
        conversion("lead", 1, "form-1", touches=1, first="Paid Search", last="Paid Search"),
        conversion("mql", 2, "crm-1", touches=1, first="Paid Search", last="Paid Search", version=2),
    ]


def test_form_after_the_crm_update_in_event_time_does_not_change_the_earlier_conversion():
    state, _ = apply_crm(None, crm("mql", 2), lead_id=LEAD, event_id="crm-1")
    state, out = apply_link(state, link(5), [touch("t1", 4)])
    assert out == [conversion("lead", 5, "form-1", touches=1, first="Organic Search", last="Organic Search")]


def test_skipped_stages_are_not_invented():
    state, _ = apply_link(None, link(1), [touch("t1", 0)])
    state, out = apply_crm(state, crm("customer", 10, "500.00"), lead_id=LEAD, event_id="crm-9")
    assert [c.stage for c in out] == [LifecycleStage.CUSTOMER]
    assert set(state.stages) == {LifecycleStage.LEAD, LifecycleStage.CUSTOMER}


def test_a_stage_reached_twice_keeps_its_earliest_record():
    state, _ = apply_crm(None, crm("sql", 5), lead_id=LEAD, event_id="crm-late")
    state, out = apply_crm(state, crm("sql", 8), lead_id=LEAD, event_id="crm-later")
    assert out == []
    state, out = apply_crm(state, crm("sql", 3), lead_id=LEAD, event_id="crm-early")
    assert out == [conversion("sql", 3, "crm-early", touches=0, version=2)]


def test_result_does_not_depend_on_arrival_order():
    steps = [
        lambda s: apply_link(s, link(1), [touch("t1", 0, "Paid Search")]),
        lambda s: apply_touch(s, touch("t2", 2, "Email"), lead_id=LEAD),
        lambda s: apply_crm(s, crm("opportunity", 3), lead_id=LEAD, event_id="crm-1"),
        lambda s: apply_crm(s, crm("customer", 9, "12000.00"), lead_id=LEAD, event_id="crm-2"),
    ]
    forward = backward = None
    for step in steps:
        forward, _ = step(forward)
    for step in reversed(steps):
        backward, _ = step(backward)
    for stage in forward.stages:
        assert forward.conversion(stage).model_copy(update={"version": 1}) == backward.conversion(stage).model_copy(
            update={"version": 1}
        )
        assert [c.model_copy(update={"version": 1}) for c in credits_for(forward, forward.conversion(stage))] == [
            c.model_copy(update={"version": 1}) for c in credits_for(backward, backward.conversion(stage))
        ]


def test_lookback_excludes_old_touches_from_the_count():
    state, out = apply_link(None, link(24 * 100), [touch("old", 0), touch("new", 24 * 95)], lookback=timedelta(days=90))
    assert out[0].touch_count == 1


def test_journey_is_bounded_to_the_newest_touches():
    state = None
    for i in range(10):
        state, _ = apply_touch(state, touch(f"t{i}", i), lead_id=LEAD, journey_limit=4)
    assert [t.touch_id for t in state.journey] == ["t6", "t7", "t8", "t9"]


def test_lost_and_disqualified_are_conversions_too():
    state, _ = apply_link(None, link(1))
    state, out = apply_crm(state, crm("lost", 4), lead_id=LEAD, event_id="crm-3")
    assert out == [conversion("lost", 4, "crm-3", touches=0)]
    state, out = apply_crm(state, crm("disqualified", 5), lead_id=LEAD, event_id="crm-4")
    assert out == [conversion("disqualified", 5, "crm-4", touches=0)]


def test_credits_carry_the_conversion_version_and_sum_to_one():
    state, _ = apply_link(None, link(1), [touch("t1", 0)])
    state, (late,) = apply_touch(state, touch("t0", -1, "Email"))
    credits = credits_for(state, late)
    assert {c.version for c in credits} == {2}
    by_model: dict = {}
    for c in credits:
        by_model[c.model] = by_model.get(c.model, Decimal(0)) + c.credit
    assert set(by_model.values()) == {Decimal(1)}


def test_output_record_bytes_equal_serde_dumps():
    """The agents serialize with pydantic-core's to_json (stream_jobs.runtime.outputs.record_bytes): same bytes as
    serde."""
    from schemas import serde
    from schemas.outputs import Lead
    from stream_jobs.rules.lifecycle import LeadEvent
    from stream_jobs.runtime.outputs import record_bytes

    state, conversions = apply_link(None, link(1), [touch("t1", 0), touch("t2", 0.5, "Paid Search")])
    state, more = apply_crm(state, crm("customer", 3, "1234.50"), lead_id=LEAD, event_id="crm-won")
    credits = [c for conv in conversions + more for c in credits_for(state, conv)]
    records = [
        *state.journey,
        link(1),
        *conversions,
        *more,
        *[attributed_conversion(state, conversion) for conversion in conversions + more],
        *credits,
        Lead(lead_id=LEAD, email="ann@example.com", first_identified_at=at(1)),
        LeadEvent(kind="crm", lead_id=LEAD, crm=crm("mql", 2), event_id="e-1"),
        LeadEvent(kind="link", lead_id=LEAD, link=link(1), email="a@b.c", touches=state.journey),
    ]
    assert len(credits) > 7
    for record in records:
        assert record_bytes(record) == serde.dumps(record), type(record).__name__


# -- the attributed conversion: one record with every model's credits --------------------------------------------


def test_the_attributed_conversion_carries_exactly_the_credits_of_every_model():
    state, conversions = apply_link(None, link(1), [touch("t1", 0), touch("t2", 0.5, "Paid Search")])
    state, more = apply_crm(state, crm("customer", 3, "1234.50"), lead_id=LEAD, event_id="crm-won")
    for conversion in conversions + more:
        record = attributed_conversion(state, conversion)
        # The conversion's own fields are untouched: readers of Conversion records see what they saw before.
        assert record.model_copy(update={"touches": (), "credits": ()}) == conversion
        assert [t.touch_id for t in record.touches] == ["t1", "t2"]
        assert len(record.credits) == 7 * 2
        assert record.credit_records() == credits_for(state, conversion)
        assert Conversion.model_validate_json(serde.dumps(record)) == record  # it survives the topic as it is
    customer = attributed_conversion(state, more[0])
    linear = [(c.touch_index, c.credit, c.revenue) for c in customer.credits if c.model == "linear"]
    assert linear == [(0, Decimal("0.5"), Decimal("617.25")), (1, Decimal("0.5"), Decimal("617.25"))]
    first = [(c.touch_index, c.credit, c.revenue) for c in customer.credits if c.model == "first_touch"]
    assert first == [(0, Decimal("1"), Decimal("1234.50")), (1, Decimal("0"), Decimal("0.00"))]


def test_an_attributed_conversion_without_touches_credits_the_pseudo_touch_none():
    state, (mql,) = apply_crm(None, crm("mql", 2), lead_id=LEAD, event_id="crm-1")
    record = attributed_conversion(state, mql)
    assert [(t.touch_id, t.occurred_at, t.channel, t.source, t.medium, t.campaign) for t in record.touches] == [
        ("(none)", None, "(none)", "(none)", "(none)", "")
    ]
    assert [(c.model.value, c.touch_index, c.credit, c.revenue) for c in record.credits] == [
        (model, 0, Decimal("1.000000000"), Decimal("0.00"))
        for model in ("first_touch", "last_touch", "linear", "time_decay", "u_shaped", "w_shaped", "full_path")
    ]
    assert record.credit_records() == credits_for(state, mql)


# -- coalesced re-emission ---------------------------------------------------------------------------------------


def test_a_lead_re_emits_at_most_once_per_interval_newest_version_only():
    # 100.0 is the worker's wall clock (seconds); the interval is 1 s.
    state, out = apply_link(None, link(1), [touch("t3", 0.9, "Email")], now=100.0, interval=1.0)
    assert [c.version for c in out] == [1]  # a first version is never held
    state, out = apply_touch(state, touch("t2", 0.5, "Paid Search"), now=100.1, interval=1.0)
    assert out == [conversion("lead", 1, "form-1", touches=2, first="Paid Search", last="Email", version=2)]
    assert (state.reemitted_at, state.held_since) == (100.1, None)
    # Two more late touches within the second: held, nothing emitted, the emitted version unchanged.
    state, out = apply_touch(state, touch("t1", 0.2, "Referral"), now=100.5, interval=1.0)
    assert out == [] and state.held_since == 100.5 and state.emitted[LifecycleStage.LEAD].version == 2
    state, out = apply_touch(state, touch("t0", 0.1, "Organic Social"), now=100.9, interval=1.0)
    assert out == [] and state.held_since == 100.5
    assert state.reemission_due(1.0) == 100.1 + 1.0
    # Not due yet: a flush changes nothing.
    assert flush(state, now=101.0, interval=1.0) == (state, [])
    # Due: one re-emission, the newest version of the journey, version 3 (not 4).
    flushed, out = flush(state, now=101.2, interval=1.0)
    assert out == [conversion("lead", 1, "form-1", touches=4, first="Organic Social", last="Email", version=3)]
    assert (flushed.reemitted_at, flushed.held_since, flushed.reemission_due(1.0)) == (101.2, None, None)
    assert flush(flushed, now=105.0, interval=1.0) == (flushed, [])  # a repeated reminder does nothing
    # The same through apply() with the worker's flush event, and by the lead's next event instead.
    assert apply(state, LeadEvent(kind="flush", lead_id=LEAD), now=101.2, interval=1.0) == (flushed, out)
    _, by_event = apply_crm(state, crm("mql", 3), lead_id=LEAD, event_id="crm-1", now=101.2, interval=1.0)
    assert by_event == [*out, conversion("mql", 3, "crm-1", touches=4, first="Organic Social", last="Email")]


def test_a_new_stage_goes_out_at_once_while_a_change_of_another_stays_held():
    state, _ = apply_link(None, link(1), [touch("t3", 0.9, "Email")], now=100.0, interval=1.0)
    state, _ = apply_touch(state, touch("t2", 0.5), now=100.1, interval=1.0)  # re-emitted: the clock starts
    state, out = apply_touch(state, touch("t1", 0.2), now=100.2, interval=1.0)
    assert out == [] and state.held_since == 100.2
    state, out = apply_crm(state, crm("customer", 2, "10.00"), lead_id=LEAD, event_id="crm-2", now=100.3, interval=1.0)
    assert [(c.stage.value, c.version) for c in out] == [("customer", 1)]
    assert state.held_since == 100.2 and state.emitted[LifecycleStage.LEAD].version == 2


def test_without_a_clock_or_with_interval_zero_every_change_goes_out_at_once():
    state, _ = apply_link(None, link(1), [touch("t2", 0.5)], now=100.0, interval=0.0)
    state, first = apply_touch(state, touch("t1", 0.2), now=100.1, interval=0.0)
    state, second = apply_touch(state, touch("t0", 0.1), now=100.2, interval=0.0)
    assert [c.version for c in first + second] == [2, 3] and state.held_since is None


def test_emitted_versions_keep_what_the_live_counters_counted_them_under():
    state, _ = apply_crm(None, crm("customer", 2, "50.00"), lead_id=LEAD, event_id="crm-2", now=100.0, interval=1.0)
    emitted = state.emitted[LifecycleStage.CUSTOMER]
    assert (emitted.first_channel, emitted.last_channel, emitted.revenue) == ("(none)", "(none)", Decimal("50.00"))
    state, _ = apply_link(state, link(1), [touch("t1", 0, "Email")], now=100.1, interval=1.0)
    state, out = apply_touch(state, touch("t0", -1, "Referral"), now=100.2, interval=1.0)
    assert out == []  # held: the emitted version still says Email, which is what the counters count
    emitted = state.emitted[LifecycleStage.CUSTOMER]
    assert (emitted.version, emitted.first_channel, emitted.last_channel) == (2, "Email", "Email")
