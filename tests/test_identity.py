"""Identity rules: lead ids, junk identifiers, and the shared-computer rule (no service needed)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from schemas.outputs import Touch
from stream_jobs.rules.identity import VisitorLink, add_link, lead_for, lead_id_for, touches_to_carry

KEY = b"test-key"
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def touch(touch_id: str, minutes: int) -> Touch:
    return Touch(
        touch_id=touch_id,
        visitor_id="v1",
        site_id="s",
        occurred_at=at(minutes),
        channel="Direct",
        source="(direct)",
        medium="(none)",
        event_id=f"e-{touch_id}",
    )


def test_lead_id_is_hmac_sha256_of_the_normalised_email():
    expected = hmac.new(KEY, b"ann@example.com", hashlib.sha256).hexdigest()[:32]
    assert lead_id_for("ann@example.com", KEY) == expected
    assert lead_id_for("  Ann@Example.COM ", KEY) == expected
    assert len(expected) == 32


def test_lead_id_depends_on_the_key():
    assert lead_id_for("ann@example.com", b"other") != lead_id_for("ann@example.com", KEY)


@pytest.mark.parametrize("junk", ["", " ", "null", "undefined", "anonymous", "0", "-1", "None", "not-an-email"])
def test_junk_identifiers_never_make_a_lead_id(junk):
    with pytest.raises(ValueError):
        lead_id_for(junk, KEY)


def test_empty_key_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="CLOSEDLOOP_LEAD_ID_KEY"):
        lead_id_for("ann@example.com", b"")


def test_unidentified_visitor_has_no_lead():
    assert lead_for((), at(0)) is None


def test_first_link_owns_the_anonymous_history_and_later_touches():
    links, new = add_link((), VisitorLink(lead_id="A", linked_at=at(30), event_id="i1"))
    assert new is True
    assert lead_for(links, at(0)) == "A"
    assert lead_for(links, at(30)) == "A"
    assert lead_for(links, at(90)) == "A"
    touches = [touch("t1", 0), touch("t2", 10), touch("t3", 40)]
    assert [t.touch_id for t in touches_to_carry(links, touches, "A")] == ["t1", "t2", "t3"]


def test_same_email_again_or_a_replay_adds_no_link():
    links, _ = add_link((), VisitorLink(lead_id="A", linked_at=at(30), event_id="i1"))
    again, new = add_link(links, VisitorLink(lead_id="A", linked_at=at(30), event_id="i1"))
    assert (again, new) == (links, False)
    later, new = add_link(links, VisitorLink(lead_id="A", linked_at=at(300), event_id="i2"))
    assert (later, new) == (links, False)
    earlier, new = add_link(links, VisitorLink(lead_id="A", linked_at=at(5), event_id="i0"))
    assert (earlier, new) == (links, False)


def test_shared_computer_second_email_gets_only_later_touches():
    links, _ = add_link((), VisitorLink(lead_id="A", linked_at=at(30), event_id="i1"))
    links, new = add_link(links, VisitorLink(lead_id="B", linked_at=at(120), event_id="i2"))
    assert new is True
    touches = [touch("t1", 0), touch("t2", 60), touch("t3", 120), touch("t4", 200)]
    assert [t.touch_id for t in touches_to_carry(links, touches, "B")] == ["t3", "t4"]
    assert [t.touch_id for t in touches_to_carry(links, touches, "A")] == ["t1", "t2"]
    # A late page view from before the second identify still goes to the first lead.
    assert lead_for(links, at(100)) == "A"
    # Back to the first email: the owner changes again from that moment on.
    links, new = add_link(links, VisitorLink(lead_id="A", linked_at=at(400), event_id="i3"))
    assert new is True
    assert [lead_for(links, at(m)) for m in (0, 130, 450)] == ["A", "B", "A"]


def test_links_arriving_out_of_order_are_kept_in_time_order():
    links, _ = add_link((), VisitorLink(lead_id="B", linked_at=at(120), event_id="i2"))
    links, new = add_link(links, VisitorLink(lead_id="A", linked_at=at(30), event_id="i1"))
    assert new is True
    assert [link.lead_id for link in links] == ["A", "B"]
    assert [lead_for(links, at(m)) for m in (0, 60, 130)] == ["A", "A", "B"]


def test_links_are_bounded_to_the_newest():
    links: tuple = ()
    for i in range(30):
        links, _ = add_link(links, VisitorLink(lead_id=f"L{i % 2}", linked_at=at(i), event_id=f"i{i}"), limit=5)
    assert [link.event_id for link in links] == ["i25", "i26", "i27", "i28", "i29"]
