"""Sales-ready decisions: one per cycle, hand-raisers, reset after lost, buying signals."""

from __future__ import annotations

from stream_jobs.rules.readiness import Readiness, buying_signal, decide, hand_raiser, record_id


def test_crossing_the_threshold_issues_once_and_replay_issues_nothing() -> None:
    below = decide(Readiness(), 49.0, 50.0)
    assert not below.ready and below.state == Readiness()
    crossed = decide(below.state, 52.5, 50.0)
    assert crossed.reason == "threshold" and crossed.state == Readiness(1, True)
    again = decide(crossed.state, 60.0, 50.0)
    assert not again.ready and again.state == Readiness(1, True)
    assert record_id("lead-1", crossed.state.cycle) == "lead-1:1"


def test_hand_raisers() -> None:
    assert hand_raiser(form_kind="Demo") == "hand_raiser:form:demo"
    assert hand_raiser(form_kind="newsletter") == ""
    assert hand_raiser(path="/pricing", returning=False) == ""
    assert hand_raiser(path="/pricing/enterprise", returning=True) == "hand_raiser:pricing_returning"
    decision = decide(Readiness(), 3.0, 50.0, hand_raised="hand_raiser:form:demo")
    assert decision.reason == "hand_raiser:form:demo" and decision.state == Readiness(1, True)


def test_lost_resets_and_a_new_crossing_opens_cycle_two() -> None:
    issued = Readiness(1, True)
    reset = decide(issued, 80.0, 50.0, stage="lost")
    assert not reset.ready and reset.state == Readiness(1, False)
    assert decide(reset.state, 80.0, 50.0, stage="lost").state == Readiness(1, False)
    second = decide(reset.state, 55.0, 50.0)
    assert second.reason == "threshold" and second.state == Readiness(2, True)
    # a reset before any record leaves the lead at cycle 0
    assert decide(Readiness(), 0.0, 50.0, stage="disqualified").state == Readiness()


def test_buying_signal_needs_an_open_opportunity_and_a_repeat_pricing_visit() -> None:
    assert buying_signal("opportunity", "/pricing", 1)
    assert not buying_signal("opportunity", "/pricing", 0)
    assert not buying_signal("lead", "/pricing", 3)
    assert not buying_signal("opportunity", "/blog", 3)
