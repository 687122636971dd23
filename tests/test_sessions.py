"""Sessions and touches: inactivity, new campaign parameters, internal referrers, late page views, state JSON."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest

from schemas.events import Envelope, Identify
from schemas.serde import dumps, loads
from stream_jobs.rules.channels import ChannelRules
from stream_jobs.rules.sessions import SESSION_TIMEOUT, SessionState, next_touch, touch_id_for

RULES = ChannelRules()
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
SITE = "https://www.example.com"


def envelope(
    event_id: str, minutes: float, path: str = "/", referrer: str | None = None, visitor: str = "v1", **params: str
) -> Envelope:
    query = f"?{urlencode(params)}" if params else ""
    at = T0 + timedelta(minutes=minutes)
    return Envelope(
        event_id=event_id,
        site_id="site-1",
        received_at=at,
        event={
            "type": "page_view",
            "visitor_id": visitor,
            "url": f"{SITE}{path}{query}",
            "referrer": referrer,
            "occurred_at": at,
        },
    )


def run(*envelopes: Envelope, state: SessionState | None = None, timeout: timedelta = SESSION_TIMEOUT):
    """Feed page views in the given (arrival) order; return the final state and the touches' event ids."""
    touches = []
    for item in envelopes:
        state, touch = next_touch(state, item, RULES, timeout)
        if touch is not None:
            touches.append(touch)
    return state, touches


def test_first_page_view_is_a_touch_with_every_field():
    state, touch = next_touch(None, envelope("e1", 0, "/pricing", "https://www.google.de/", utm_term="x"), RULES)
    assert touch.model_dump() == {
        # visitor_number is the visitor's (stream_jobs.rules.visitors.apply_page_view sets it), not the session's
        "touch_id": hashlib.sha1(b"v1|e1").hexdigest()[:20],
        "visitor_id": "v1",
        "visitor_number": 0,
        "lead_id": None,
        "site_id": "site-1",
        "occurred_at": T0,
        "channel": "Organic Search",
        "source": "google",
        "medium": "organic",
        "campaign": "",
        "term": "x",
        "content": "",
        "click_id": "",
        "referrer_host": "www.google.de",
        "landing_path": "/pricing",
        "event_id": "e1",
        "gclid": "",
        "gbraid": "",
        "wbraid": "",
        "msclkid": "",
        "fbc": "",
        "li_fat_id": "",
        "ads_consent": None,
        "do_not_track": False,
    }
    assert state == SessionState(
        last_seen_at=T0,
        session_started_at=T0,
        campaign_signature="|||x|||||",
        last_touch_id=touch.touch_id,
        last_touch_at=T0,
    )


def test_clicks_inside_the_site_are_not_touches():
    state, touches = run(envelope("e1", 0), envelope("e2", 5, "/a", f"{SITE}/"), envelope("e3", 20, "/b", f"{SITE}/a"))
    assert [t.event_id for t in touches] == ["e1"]
    assert state.last_seen_at == T0 + timedelta(minutes=20)
    assert state.session_started_at == T0


def test_direct_visit_within_an_active_session_is_not_a_touch():
    _, touches = run(envelope("e1", 0, utm_source="newsletter", utm_medium="email"), envelope("e2", 10))
    assert [(t.event_id, t.channel) for t in touches] == [("e1", "Email")]


def test_referrer_change_within_a_session_is_not_a_touch():
    _, touches = run(envelope("e1", 0), envelope("e2", 10, referrer="https://www.google.com/"))
    assert [t.event_id for t in touches] == ["e1"]


def test_thirty_minutes_of_inactivity_start_a_touch():
    _, touches = run(envelope("e1", 0), envelope("e2", 29.99, "/a", f"{SITE}/"), envelope("e3", 59.98))
    assert [t.event_id for t in touches] == ["e1"]  # each gap is under 30 minutes
    _, touches = run(envelope("e1", 0), envelope("e2", 30, referrer="https://t.co/x"))
    assert [(t.event_id, t.channel) for t in touches] == [("e1", "Direct"), ("e2", "Organic Social")]


def test_timeout_is_a_parameter():
    _, touches = run(envelope("e1", 0), envelope("e2", 10), timeout=timedelta(minutes=5))
    assert [t.event_id for t in touches] == ["e1", "e2"]


def test_new_campaign_parameters_start_a_touch_the_same_ones_do_not():
    _, touches = run(
        envelope("e1", 0, utm_source="google", utm_medium="cpc", utm_campaign="a"),
        envelope("e2", 1, utm_source="google", utm_medium="cpc", utm_campaign="a"),  # reload of the landing page
        envelope("e3", 2, "/b", f"{SITE}/"),
        envelope("e4", 3, utm_source="google", utm_medium="cpc", utm_campaign="b"),
        envelope("e5", 4, gclid="click-1"),
        envelope("e6", 5, gclid="click-2"),  # a second ad click
        envelope("e7", 6, gclid="click-2"),
    )
    assert [(t.event_id, t.campaign, t.click_id) for t in touches] == [
        ("e1", "a", ""),
        ("e4", "b", ""),
        ("e5", "", "gclid"),
        ("e6", "", "gclid"),
    ]


def test_campaign_parameters_on_an_internal_link_are_a_touch():
    _, touches = run(
        envelope("e1", 0), envelope("e2", 1, "/promo", f"{SITE}/", utm_source="banner", utm_medium="display")
    )
    assert [(t.event_id, t.channel) for t in touches] == [("e1", "Direct"), ("e2", "Display")]


def test_session_after_timeout_with_internal_referrer_has_no_touch():
    first = envelope("e1", 0, referrer="https://www.bing.com/")
    state, touches = run(first, envelope("e2", 90, "/b", f"{SITE}/a"))  # a tab left open, then a click
    assert [t.event_id for t in touches] == ["e1"]
    assert state.session_started_at == T0 + timedelta(minutes=90)
    assert (state.last_touch_id, state.last_touch_at) == (touch_id_for("v1", "e1"), T0)


def test_first_view_with_internal_referrer_is_no_touch_but_starts_state():
    state, touch = next_touch(None, envelope("e1", 0, "/b", f"{SITE}/a"), RULES)
    assert touch is None
    assert state == SessionState(last_seen_at=T0, session_started_at=T0)
    _, touches = run(envelope("e2", 10), state=state)
    assert touches == []  # a direct view 10 minutes later is the same session


def test_late_page_view_without_campaign_changes_nothing():
    state, _ = run(envelope("e1", 0), envelope("e2", 20, "/a", f"{SITE}/"))
    late_state, touch = next_touch(state, envelope("e0", 10, referrer="https://www.google.com/"), RULES)
    assert touch is None
    assert late_state == state


def test_late_landing_page_with_campaign_becomes_the_session_start():
    # The landing page (with UTM) arrives after the second page view, which has an internal referrer.
    state, touches = run(
        envelope("e2", 1, "/b", f"{SITE}/landing"),
        envelope("e1", 0, "/landing", utm_source="linkedin", utm_medium="paid_social"),
        envelope("e3", 2, "/c", f"{SITE}/b"),
        envelope("e4", 3, "/landing", utm_source="linkedin", utm_medium="paid_social"),  # back to the landing page
    )
    assert [(t.event_id, t.occurred_at, t.channel) for t in touches] == [("e1", T0, "Paid Social")]
    assert state.session_started_at == T0
    assert state.last_seen_at == T0 + timedelta(minutes=3)
    assert state.last_touch_id == touch_id_for("v1", "e1")


def test_late_campaign_view_inside_the_session_takes_over_the_session():
    state, touches = run(
        envelope("e1", 0),
        envelope("e3", 20, "/x", f"{SITE}/"),
        envelope("e2", 10, utm_source="newsletter", utm_medium="email", utm_campaign="march"),
        envelope("e4", 25, utm_source="newsletter", utm_medium="email", utm_campaign="march"),
    )
    assert [(t.event_id, t.channel) for t in touches] == [("e1", "Direct"), ("e2", "Email")]
    assert state.session_started_at == T0 + timedelta(minutes=10)
    assert (state.last_touch_id, state.last_seen_at) == (touch_id_for("v1", "e2"), T0 + timedelta(minutes=25))


def test_late_campaign_view_from_an_older_session_is_a_touch_without_moving_state():
    state, _ = run(envelope("e1", 0), envelope("e2", 300, referrer="https://www.google.com/"))
    late_state, touch = next_touch(state, envelope("e0", 120, utm_source="fb", utm_medium="cpc"), RULES)
    assert (touch.event_id, touch.occurred_at, touch.channel, touch.source) == (
        "e0",
        T0 + timedelta(minutes=120),
        "Paid Social",
        "facebook",
    )
    assert late_state == state  # older than the current session and its touch: the state stays as it was


def test_replayed_page_view_gives_the_same_touch_id():
    _, first = next_touch(None, envelope("e1", 0), RULES)
    _, again = next_touch(None, envelope("e1", 0), RULES)
    assert first.touch_id == again.touch_id == touch_id_for("v1", "e1")
    assert touch_id_for("v2", "e1") != first.touch_id


def test_state_round_trips_through_json():
    state, _ = run(envelope("e1", 0, gclid="abc"), envelope("e2", 3, "/a", f"{SITE}/"))
    data = dumps(state)
    assert len(data) < 300
    assert loads(data, SessionState) == state
    assert SessionState.model_validate_json(state.model_dump_json()) == state


def test_identify_envelope_is_refused_with_a_clear_error():
    identify = Envelope(
        event_id="i1",
        site_id="site-1",
        received_at=T0,
        event=Identify(visitor_id="v1", email="a@example.com", occurred_at=T0),
    )
    with pytest.raises(TypeError, match="needs a page_view envelope; event i1 is a 'identify'"):
        next_touch(None, identify, RULES)
