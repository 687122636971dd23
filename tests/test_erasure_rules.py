"""What ``closedloop erase`` reaches in the worker's state, as pure rules (no service): the lead's state knows
its visitors and CRM contacts, a visitor forgets the lead and keeps its anonymous history."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from schemas.events import CrmStatusChange, Envelope, Identify, PageView
from schemas.outputs import IdentityLink, Touch
from stream_jobs.rules.channels import ChannelRules
from stream_jobs.rules.erasure import targets
from stream_jobs.rules.lifecycle import LeadEvent, apply_crm, apply_link, apply_touch
from stream_jobs.rules.visitors import apply_identify, apply_page_view, forget_lead

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


def _envelope(event_id: str, event) -> Envelope:
    return Envelope(event_id=event_id, site_id="s", received_at=event.occurred_at, event=event)


def test_the_lead_state_knows_every_visitor_and_contact_an_erasure_must_reach() -> None:
    link = IdentityLink(visitor_id="laptop", lead_id="L", linked_at=T0, event_id="form")
    state, _ = apply_link(None, link)
    touch = Touch(
        touch_id="t1",
        visitor_id="phone",
        lead_id="L",
        site_id="s",
        occurred_at=T0,
        channel="Direct",
        source="(direct)",
        medium="(none)",
        event_id="pv",
    )
    state, _ = apply_touch(state, touch)
    change = CrmStatusChange(
        occurred_at=T0, crm="hubspot", crm_object_id="d1", crm_contact_id="501", email="ann@acme.test", stage="mql"
    )
    state, _ = apply_crm(state, change, lead_id="L", event_id="crm-1")
    again, _ = apply_crm(state, change, lead_id="L", event_id="crm-1")
    assert again.contact_keys == ("hubspot:501",)
    command = LeadEvent(kind="erase", lead_id="L", event_id="req", visitor_ids=("tablet",))
    assert targets(state, command) == (["laptop", "phone", "tablet"], ["hubspot:501"])
    assert targets(None, command) == (["tablet"], [])


def test_a_visitor_forgets_the_lead_and_keeps_its_anonymous_history() -> None:
    rules = ChannelRules()
    state, _ = apply_page_view(
        None, _envelope("pv-1", PageView(occurred_at=T0, visitor_id="v", url="https://a.test/")), rules
    )
    state, link, carried = apply_identify(
        state, _envelope("f", Identify(occurred_at=T0 + timedelta(minutes=1), visitor_id="v", email="a@b.co")), "L"
    )
    assert link is not None and [t.lead_id for t in state.touches] == ["L"]
    forgotten = forget_lead(state, "L")
    assert forgotten.links == () and [t.lead_id for t in forgotten.touches] == [None]
    assert forgotten.pages == state.pages and forgotten.session == state.session
    assert forget_lead(forgotten, "L") is forgotten
    assert forget_lead(state, "other") is state
    # A later page view of the cookie is anonymous again.
    later_view = PageView(occurred_at=T0 + timedelta(hours=2), visitor_id="v", url="https://a.test/?utm_source=x")
    later, touch = apply_page_view(forgotten, _envelope("pv-2", later_view), rules)
    assert touch is not None and touch.lead_id is None


def test_the_erase_command_refuses_bad_input_before_doing_anything(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from closedloop.commands.erase import command

    monkeypatch.setenv("CLOSEDLOOP_DATA_DIR", str(tmp_path))
    for args, message in [
        ([], "exactly one of --email or --lead-id"),
        (["--email", "a@b.co", "--lead-id", "0" * 32], "exactly one of --email or --lead-id"),
        (["--email", "null"], "is not an email address"),
        (["--lead-id", "ann@acme.test"], "32 lower-case hex characters"),
    ]:
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
