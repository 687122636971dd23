"""The live counters' arithmetic without a broker: what a (re-)emitted conversion changes per counter key, and
the moment of the first count carried through the lead's state (the worker test runs it on Kafka)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from schemas.events import CrmStatusChange, LifecycleStage
from schemas.outputs import Conversion, IdentityLink, Touch
from stream_jobs.rules import lifecycle
from stream_jobs.runtime.counters import count_changes, stage_counts, window_counts

T0 = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def conversion(first: str, last: str, revenue: str | None = None, version: int = 1, stage: str = "customer"):
    return Conversion(
        conversion_id="c1",
        lead_id="L",
        stage=stage,
        occurred_at=T0,
        revenue=Decimal(revenue) if revenue else None,
        currency="EUR" if revenue else None,
        touch_count=1,
        first_channel=first,
        last_channel=last,
        event_id="e",
        version=version,
    )


def test_a_new_conversion_counts_once_per_model():
    assert count_changes(None, conversion("Paid Search", "Email", "12.34")) == {
        "last_touch|customer|Email": (1, 1234),
        "first_touch|customer|Paid Search": (1, 1234),
    }


def test_a_reattributed_conversion_moves_from_its_old_channels_to_the_new_ones():
    before = conversion("(none)", "(none)", "300.00")
    after = conversion("Paid Search", "Email", "300.00", version=2)
    assert count_changes(before, after) == {
        "last_touch|customer|(none)": (-1, -30000),
        "first_touch|customer|(none)": (-1, -30000),
        "last_touch|customer|Email": (1, 30000),
        "first_touch|customer|Paid Search": (1, 30000),
    }


def test_a_reemission_that_keeps_the_channels_changes_only_what_changed():
    # A late touch in the middle of the journey: first and last channel stay, nothing to count.
    assert (
        count_changes(conversion("Paid Search", "Email", "5.00"), conversion("Paid Search", "Email", "5.00", 2)) == {}
    )
    # Same channels, revenue corrected: the count stays, the cents move.
    assert count_changes(conversion("A", "B", "5.00"), conversion("A", "B", "7.50", 3)) == {
        "last_touch|customer|B": (0, 250),
        "first_touch|customer|A": (0, 250),
    }
    # Only the last touch changed.
    assert count_changes(conversion("A", "B", stage="lead"), conversion("A", "C", stage="lead", version=2)) == {
        "last_touch|lead|B": (-1, 0),
        "last_touch|lead|C": (1, 0),
    }


def test_a_stage_holds_every_channel_of_both_models_and_drops_what_comes_to_zero():
    counts = stage_counts({}, count_changes(None, conversion("A", "B", "5.00")))
    assert counts == {"last_touch|customer|B": [1, 500], "first_touch|customer|A": [1, 500]}
    counts = stage_counts(counts, count_changes(None, conversion("A", "C", "2.00")))
    moved = count_changes(conversion("A", "B", "5.00"), conversion("D", "C", "5.00", 2))
    before = dict(counts)
    counts = stage_counts(counts, moved)
    assert before == {  # a new dict: the stored value is not changed in place
        "last_touch|customer|B": [1, 500],
        "last_touch|customer|C": [1, 200],
        "first_touch|customer|A": [2, 700],
    }
    assert counts == {
        "last_touch|customer|C": [2, 700],
        "first_touch|customer|A": [1, 200],
        "first_touch|customer|D": [1, 500],
    }


def test_a_window_reads_stage_values_and_the_per_key_values_of_an_earlier_version():
    stored = [
        # B's conversion was counted before a table key was a stage (one key per counter key), then re-attributed
        # to C: the stage's value takes it out of B.
        ("last_touch|customer|B", [1, 500]),
        (
            "customer",
            {
                "last_touch|customer|C": [2, 700],
                "first_touch|customer|A": [1, 200],
                "last_touch|customer|B": [-1, -500],
            },
        ),
        ("lead", {"last_touch|lead|B": [1, 0]}),
    ]
    assert window_counts(stored) == {
        "last_touch|customer|C": [2, 700],
        "first_touch|customer|A": [1, 200],
        "last_touch|lead|B": [1, 0],
        "last_touch|customer|B": [0, 0],
    }


def test_the_first_count_moment_is_carried_to_newer_versions():
    touch = Touch(
        touch_id="t1",
        visitor_id="v1",
        site_id="s",
        occurred_at=T0 - timedelta(days=2),
        channel="Paid Search",
        source="google",
        medium="cpc",
        event_id="pv-1",
    )
    won = CrmStatusChange(
        occurred_at=T0,
        crm="generic",
        crm_object_id="d1",
        email="a@example.com",
        stage="customer",
        deal_value=Decimal("300"),
        currency="EUR",
    )
    state, emitted = lifecycle.apply_crm(None, won, lead_id="L", event_id="won")
    assert [(c.first_channel, c.version) for c in emitted] == [("(none)", 1)]
    state = lifecycle.with_counted_at(state, {LifecycleStage.CUSTOMER: 1000.5})
    link = IdentityLink(visitor_id="v1", lead_id="L", linked_at=T0 - timedelta(days=1), event_id="id")
    state, emitted = lifecycle.apply_link(state, link, [touch])
    assert {(c.stage.value, c.first_channel, c.version) for c in emitted} == {
        ("lead", "Paid Search", 1),
        ("customer", "Paid Search", 2),
    }
    assert state.emitted[LifecycleStage.CUSTOMER].counted_at == 1000.5
    assert state.emitted[LifecycleStage.LEAD].counted_at is None  # new: the agent stamps it when it counts it
