"""Visitor numbers: given once, when the worker first sees a visitor, and carried by every touch of that visitor."""

from __future__ import annotations

from datetime import timedelta

import pytest
from test_sessions import T0, envelope

from schemas.events import Envelope, Identify
from schemas.serde import dumps, loads
from stream_jobs.rules.channels import ChannelRules
from stream_jobs.rules.visitors import VisitorState, apply_identify, apply_page_view, visitor_number

RULES = ChannelRules()


def identify(event_id: str, minutes: float = 0, visitor: str = "v1") -> Envelope:
    at = T0 + timedelta(minutes=minutes)
    return Envelope(
        event_id=event_id,
        site_id="site-1",
        received_at=at,
        event=Identify(visitor_id=visitor, email="ann@example.com", occurred_at=at),
    )


def test_visitor_number_is_partition_and_offset_and_never_zero():
    assert visitor_number(0, 0) == 1
    assert visitor_number(3, 41) == (3 << 40) + 42
    assert visitor_number(0, 2**40 - 2) == 2**40 - 1 < visitor_number(1, 0) == 2**40 + 1  # partitions never overlap
    # Out of range: 0, the number of a visitor counted without bitmaps (still exactly, by visitor_days).
    assert visitor_number(0, 2**40 - 1) == 0
    assert visitor_number(2**24, 5) == 0
    assert visitor_number(-1, 5) == visitor_number(0, -1) == 0


def test_first_page_view_numbers_the_visitor_and_later_ones_keep_the_number():
    state, touch = apply_page_view(
        None, envelope("e1", 0, utm_source="google", utm_medium="cpc"), RULES, number=visitor_number(1, 7)
    )
    assert state.number == touch.visitor_number == (1 << 40) + 8
    # An hour later: a new session, a new touch, the same number (a later event's number is not taken).
    state, later = apply_page_view(
        state, envelope("e2", 60, utm_source="bing", utm_medium="cpc"), RULES, number=visitor_number(1, 99)
    )
    assert (later.touch_id != touch.touch_id, later.visitor_number, state.number) == (
        True,
        (1 << 40) + 8,
        (1 << 40) + 8,
    )
    # The same first event replayed into no state (a crash before the state was saved): the same number.
    _, again = apply_page_view(
        None, envelope("e1", 0, utm_source="google", utm_medium="cpc"), RULES, number=visitor_number(1, 7)
    )
    assert again == touch


def test_identify_first_numbers_the_visitor_and_its_carried_touches_keep_it():
    state, link, carried = apply_identify(None, identify("i1"), "L1", number=visitor_number(0, 3))
    assert (state.number, link.lead_id, carried) == (4, "L1", [])
    state, touch = apply_page_view(
        state, envelope("e1", 5, utm_source="google", utm_medium="cpc"), RULES, number=visitor_number(0, 4)
    )
    assert (touch.visitor_number, touch.lead_id) == (4, "L1")


def test_a_visitor_first_seen_before_numbers_keeps_number_zero_for_life():
    # A state saved by an older worker has no number field: it loads as 0 and stays 0, so the visitor's old and
    # new touches are all counted by visitor_days and none by the bitmaps (never by both).
    old = VisitorState.model_validate_json(b'{"visitor_id": "v1", "offset": 12}')
    state, touch = apply_page_view(
        old, envelope("e1", 0, utm_source="google", utm_medium="cpc"), RULES, number=visitor_number(0, 13)
    )
    assert (state.number, touch.visitor_number) == (0, 0)
    state, _, carried = apply_identify(state, identify("i1", 5), "L1", number=visitor_number(0, 14))
    assert state.number == 0 and [t.visitor_number for t in carried] == [0]


def test_number_survives_the_state_json():
    state, _ = apply_page_view(None, envelope("e1", 0), RULES, number=visitor_number(2, 5))
    assert loads(dumps(state), VisitorState).number == (2 << 40) + 6


@pytest.mark.parametrize("number", [-1, 2**64])
def test_touch_refuses_a_number_outside_uint64(number):
    _, touch = apply_page_view(None, envelope("e1", 0), RULES, number=1)
    with pytest.raises(ValueError, match="visitor_number"):
        type(touch).model_validate(touch.model_dump() | {"visitor_number": number})
