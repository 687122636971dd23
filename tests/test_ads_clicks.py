"""Ad click ids and consent on the journey (issue 25, item 1; docs/ADS.md): page view -> touch -> conversion.

Scripted journeys with each kind of click id: the touch keeps the id (fbclid as Meta's fbc with the click time),
the conversion carries the newest click of each kind inside its lookback window, and the lead's consent.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from test_page_view_records import TRACKER_VIEW, assert_same_record, both_paths

from schemas import serde
from schemas.events import CrmStatusChange, Envelope, PageView
from schemas.outputs import AdClick, IdentityLink, Touch
from sinks import rows
from stream_jobs.rules import lifecycle, sessions
from stream_jobs.rules.channels import ChannelRules

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
RULES = ChannelRules()
LEAD = "lead-1"


def touch(query: str, at: datetime, *, visitor: str = "v1", event: str = "e1", **fields) -> Touch:
    page_view = PageView(occurred_at=at, visitor_id=visitor, url=f"https://acme.test/{query}", **fields)
    _, made = sessions.next_touch(None, Envelope(event_id=event, site_id="s", received_at=at, event=page_view), RULES)
    assert made is not None
    return made.model_copy(update={"lead_id": LEAD})


@pytest.mark.parametrize(
    ("query", "field", "value", "channel"),
    [
        ("?gclid=Cj0KCQ", "gclid", "Cj0KCQ", "Paid Search"),
        ("?gbraid=0AAAAA-gb", "gbraid", "0AAAAA-gb", "Paid Search"),
        ("?wbraid=CkAKCQ-wb", "wbraid", "CkAKCQ-wb", "Paid Search"),
        ("?msclkid=8f2c0e", "msclkid", "8f2c0e", "Paid Search"),
        ("?fbclid=IwAR3x", "fbc", "fb.1.1714564800000.IwAR3x", "Organic Social"),
        (
            "?utm_medium=paid_social&utm_source=facebook&fbclid=IwAR3x",
            "fbc",
            "fb.1.1714564800000.IwAR3x",
            "Paid Social",
        ),
        ("?li_fat_id=5c1e-77", "li_fat_id", "5c1e-77", "Organic Social"),
    ],
)
def test_each_click_id_is_kept_on_the_touch(query, field, value, channel):
    made = touch(query, T0)
    assert getattr(made, field) == value
    assert made.channel == channel
    others = {"gclid", "gbraid", "wbraid", "msclkid", "fbc", "li_fat_id"} - {field}
    assert all(getattr(made, name) == "" for name in others)


def test_fbc_carries_the_click_time_in_milliseconds():
    at = datetime(2024, 5, 1, 12, 0, 1, 234567, tzinfo=timezone.utc)
    assert sessions.fbc_for("abc", at) == "fb.1.1714564801234.abc"


def link(at: datetime, consent=None, dnt=False, visitor="v1", event="id1") -> IdentityLink:
    return IdentityLink(
        visitor_id=visitor, lead_id=LEAD, linked_at=at, event_id=event, ads_consent=consent, do_not_track=dnt
    )


def crm(stage: str, at: datetime, value: str | None = None) -> CrmStatusChange:
    return CrmStatusChange(
        occurred_at=at,
        crm="hubspot",
        crm_object_id="deal-1",
        email="ann@acme.test",
        stage=stage,
        deal_value=Decimal(value) if value else None,
        currency="EUR" if value else None,
    )


def test_the_conversion_carries_the_newest_click_of_each_kind_inside_its_window():
    old_gclid = touch("?gclid=OLD", T0 - timedelta(days=100), event="e0")  # outside the 90-day lookback
    gclid_1 = touch("?gclid=G1", T0, event="e1")
    fb = touch("?fbclid=F1", T0 + timedelta(days=2), event="e2")
    gclid_2 = touch("?gclid=G2", T0 + timedelta(days=3), event="e3")
    li = touch("?li_fat_id=L1", T0 + timedelta(days=4), event="e4")
    state, _ = lifecycle.apply_link(None, link(T0 + timedelta(days=5), "granted"), [old_gclid, gclid_1, fb, gclid_2])
    state, _ = lifecycle.apply_touch(state, li)
    state, [sql] = lifecycle.apply_crm(state, crm("sql", T0 + timedelta(days=6)), lead_id=LEAD, event_id="c1")
    assert sql.clicks == (
        AdClick(kind="gclid", value="G2", clicked_at=T0 + timedelta(days=3), touch_id=gclid_2.touch_id),
        AdClick(kind="fbc", value="fb.1.1714737600000.F1", clicked_at=T0 + timedelta(days=2), touch_id=fb.touch_id),
        AdClick(kind="li_fat_id", value="L1", clicked_at=T0 + timedelta(days=4), touch_id=li.touch_id),
    )
    assert sql.ads_consent == "granted"
    # the 100-day-old gclid was outside the lookback window of both conversions
    assert [(c.kind, c.value) for c in state.conversion(lifecycle.LifecycleStage.LEAD).clicks] == [
        ("gclid", "G2"),
        ("fbc", "fb.1.1714737600000.F1"),
        ("li_fat_id", "L1"),
    ]


def test_a_click_after_the_conversion_is_not_its_click():
    state, _ = lifecycle.apply_link(None, link(T0, "granted"), [touch("?gclid=G1", T0 - timedelta(days=1))])
    state, [sql] = lifecycle.apply_crm(state, crm("sql", T0 + timedelta(days=1)), lead_id=LEAD, event_id="c1")
    state, changed = lifecycle.apply_touch(state, touch("?msclkid=M1", T0 + timedelta(days=2), event="e9"))
    assert [c.kind for c in sql.clicks] == ["gclid"]
    assert changed == []  # the later click is outside every conversion's window: nothing re-emitted


def test_consent_is_the_newest_statement_and_do_not_track_denies_for_good():
    state, [lead] = lifecycle.apply_link(None, link(T0), [touch("?gclid=G1", T0 - timedelta(minutes=5))])
    assert lead.ads_consent is None  # never stated: nothing goes to ad platforms
    granted = touch("?gclid=G2", T0 + timedelta(days=1), event="e2", ads_consent="granted")
    state, [lead_v2] = lifecycle.apply_touch(state, granted)
    assert (lead_v2.version, lead_v2.ads_consent) == (2, "granted")
    # an older statement does not override a newer one
    state, _ = lifecycle.apply_touch(
        state, touch("?gclid=G0", T0 - timedelta(days=1), event="e0", ads_consent="denied")
    )
    assert state.ads_consent == "granted"
    state, [lead_v4] = lifecycle.apply_touch(
        state, touch("?x=1&utm_source=a", T0 + timedelta(days=2), event="e3", do_not_track=True)
    )
    assert lead_v4.ads_consent == "denied"
    state, _ = lifecycle.apply_link(state, link(T0 + timedelta(days=3), "granted", visitor="v2", event="id2"))
    assert state.ads_consent == "denied"  # Do-Not-Track stays


def test_identify_consent_reaches_the_conversions():
    state, [lead] = lifecycle.apply_link(None, link(T0, "denied"), [touch("?gclid=G1", T0 - timedelta(minutes=5))])
    assert lead.ads_consent == "denied"
    state, [customer] = lifecycle.apply_crm(
        state, crm("customer", T0 + timedelta(days=9), "1200.00"), lead_id=LEAD, event_id="c2"
    )
    assert (customer.ads_consent, customer.revenue) == ("denied", Decimal("1200.00"))


def test_touch_and_conversion_rows_are_the_same_on_both_sink_paths():
    made = touch("?gclid=G1&fbclid=F1", T0, ads_consent="granted", do_not_track=True)
    state, [lead] = lifecycle.apply_link(None, link(T0 + timedelta(minutes=1), "granted"), [made])
    where = rows.Provenance("t", 0, 0)
    for kind, record in ((rows.RecordKind.TOUCH, made), (rows.RecordKind.CONVERSION, lead)):
        value = serde.dumps(record)
        fast, model = rows.rows_for(kind, value, where), rows.model_rows(kind, value, where)
        assert rows.encode([r for _, r in fast]) == rows.encode([r for _, r in model])
    touch_row = dict(zip(rows.insert_columns("touches"), rows.touch_row(made), strict=True))
    assert {k: touch_row[k] for k in ("gclid", "fbc", "ads_consent", "do_not_track")} == {
        "gclid": "G1",
        "fbc": "fb.1.1714564800000.F1",
        "ads_consent": "granted",
        "do_not_track": 1,
    }
    conversion_row = dict(zip(rows.insert_columns("conversions"), rows.conversion_row(lead), strict=True))
    assert conversion_row["clicks"] == [
        {"kind": "gclid", "value": "G1", "clicked_at": T0},
        {"kind": "fbc", "value": "fb.1.1714564800000.F1", "clicked_at": T0},
    ]
    assert conversion_row["ads_consent"] == "denied"  # the touch carried Do-Not-Track


@pytest.mark.parametrize(
    "extra",
    [
        {"ads_consent": "granted"},
        {"ads_consent": "denied", "do_not_track": True},
        {"ads_consent": None, "do_not_track": False},
        {"ads_consent": " granted "},  # not one of the two answers: left to the model, which rejects it
        {"ads_consent": "yes"},  # the model rejects it: left to the model
        {"do_not_track": "true"},  # the model coerces it: left to the model
        {"url": "https://acme.test/?gbraid=GB1&wbraid=WB1&gclid=G"},
    ],
)
def test_the_collector_fast_path_writes_consent_as_the_models_do(extra):
    fast, models = both_paths({**TRACKER_VIEW, **extra})
    if fast is not None:
        assert_same_record(fast, models)
        event = orjson.loads(fast[1].value)["event"]
        assert event["ads_consent"] == extra.get("ads_consent")
        assert event["do_not_track"] is extra.get("do_not_track", False)
    elif extra.get("ads_consent") in ("yes", " granted "):
        assert models.rejected and "ads_consent" in str(models.rejected[0])
    else:
        [accepted] = models.accepted
        assert orjson.loads(accepted.record.value)["event"]["ads_consent"] in ("granted", None)
    if "url" in extra:
        event = orjson.loads(fast[1].value)["event"]
        assert (event["gbraid"], event["wbraid"], event["gclid"]) == ("GB1", "WB1", "G")


def test_the_simulated_paid_traffic_carries_click_ids_and_consent():
    from datetime import date

    from simulator.model import SimulatedDays, SimulationConfig, ads_consent_for
    from simulator.senders import web_payload

    run = SimulatedDays(SimulationConfig(seed=5, epoch=date(2025, 3, 3), visitors_per_day=80), 0, 4)
    landings = [t for j in run.journeys() for t in j.touches if t.channel in ("Paid Search", "Paid Social")]
    assert len(landings) >= 20
    by_event = {p.event_id: p for j in run.journeys() for p in j.page_views}
    for truth in landings:
        url = by_event[truth.event_id].url
        assert truth.click_id in ("gclid", "msclkid", "li_fat_id", "fbclid")
        assert f"{truth.click_id}=" in url, url
    web = [event for day in range(4) for event in run.day_events(day)[0]]
    consents = [web_payload(event).get("ads_consent") for event in web]
    assert consents == [ads_consent_for(event.visitor_id) for event in web]
    shares = {answer: sum(1 for v in range(10_000) if ads_consent_for(f"v{v}") == answer) for answer in
              ("granted", "denied", None)}  # fmt: skip
    assert 7_700 < shares["granted"] < 8_300 and 800 < shares["denied"] < 1_200 and 800 < shares[None] < 1_200
