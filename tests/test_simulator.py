"""Unit tests of the traffic simulator: seeded reproducibility and a ground truth that agrees with itself and with
the product's own session and channel rules (no broker, no ClickHouse)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from datetime import date, timedelta
from decimal import Decimal

import pytest

from schemas.events import Envelope, PageView
from simulator.model import (
    MAX_SPAN_DAYS,
    FormSubmit,
    PageVisit,
    SimulatedDays,
    SimulationConfig,
    journeys_between,
    spend_lines,
)
from simulator.truth import read_truth, summarize, truth_records, write_truth
from stream_jobs.rules.channels import ChannelRules
from stream_jobs.rules.sessions import next_touch

CONFIG = SimulationConfig(
    seed=11, epoch=date(2025, 3, 3), visitors_per_day=60, lead_rate_scale=2.0, sales_cycle_scale=0.5
)
STAGE_ORDER = ["lead", "mql", "sql", "opportunity", "customer"]


def _journeys(days: int = 12):
    return journeys_between(CONFIG, 0, days)


def test_same_seed_same_truth_byte_for_byte():
    first = [json.dumps(r, sort_keys=True) for r in truth_records(SimulatedDays(CONFIG, 0, 6))]
    journeys_between.__globals__["journeys_started_on"].cache_clear()  # really recompute
    second = [json.dumps(r, sort_keys=True) for r in truth_records(SimulatedDays(CONFIG, 0, 6))]
    assert first == second
    other = [
        json.dumps(r, sort_keys=True)
        for r in truth_records(SimulatedDays(SimulationConfig(seed=12, epoch=CONFIG.epoch, visitors_per_day=60), 0, 6))
    ]
    assert other[1:] != first[1:]


def test_two_runs_send_exactly_what_one_run_sends():
    def sent(first_day: int, end_day: int) -> list[str]:
        run = SimulatedDays(CONFIG, first_day, end_day)
        ids = []
        for day in range(first_day, end_day):
            web, crm = run.day_events(day)
            ids += [event.event_id for event in web] + [f"{j.journey_id}:{s.key}" for j, s in crm]
        return ids

    whole = sent(0, 10)
    split = sent(0, 4) + sent(4, 10)
    assert len(whole) == len(set(whole))
    assert split == whole
    spend = spend_lines(CONFIG, 0, 10)
    assert spend_lines(CONFIG, 0, 4) + spend_lines(CONFIG, 4, 10) == spend
    # The cumulative truth at the end of the second run is the single run's truth.
    second = list(truth_records(SimulatedDays(CONFIG, 4, 10)))
    assert second[1:] == list(truth_records(SimulatedDays(CONFIG, 0, 10)))[1:]


def test_every_channel_form_crm_and_two_device_lead_occurs():
    journeys = _journeys(20)
    assert Counter(j.channel for j in journeys).keys() == {p.channel for p in CONFIG.channels}
    leads = [j for j in journeys if j.forms]
    assert leads and any(len(j.visitor_ids) == 2 for j in leads)
    assert {j.crm for j in leads} == {"hubspot", "pipedrive", "generic", "csv"}
    stages = Counter(s.stage for j in journeys for s in j.stages)
    assert {"lead", "mql", "sql", "opportunity", "customer", "lost", "disqualified"} <= stages.keys()
    assert not any(j.stages for j in journeys if not j.forms)


def test_touches_are_exactly_the_landings_and_sessions_are_well_separated():
    host = CONFIG.host
    for journey in _journeys():
        touches = {t.event_id: t for t in journey.touches}
        assert len(touches) == len(journey.touches)
        by_visitor: dict[str, list[PageVisit]] = defaultdict(list)
        for page in journey.page_views:
            by_visitor[page.visitor_id].append(page)
        for visitor_id, pages in by_visitor.items():
            previous = None
            for page in pages:
                touch = touches.get(page.event_id)
                if previous is None or page.at - previous.at >= timedelta(minutes=30):
                    assert touch is not None, f"{page.event_id} starts a session but is no touch"
                    if previous is not None:
                        assert page.at - previous.at >= timedelta(hours=1)
                else:
                    assert touch is None and page.referrer and page.referrer.startswith(f"https://{host}/")
                    assert "utm_" not in page.url
                if touch is not None:
                    assert touch.touch_id == hashlib.sha1(f"{visitor_id}|{page.event_id}".encode()).hexdigest()[:20]
                    assert touch.at == page.at and touch.visitor_id == visitor_id
                    assert page.referrer is None or host not in page.referrer
                    assert ("utm_source=" in page.url) == (touch.channel != "Direct" and page.referrer is None)
                previous = page


def test_forms_crm_stages_and_deals_are_consistent():
    for journey in _journeys():
        if not journey.forms:
            assert journey.email is None and journey.lead_at is None
            continue
        visitor_pages = {p.event_id: p for p in journey.page_views}
        for form in journey.forms:
            assert form.email == journey.email and form.visitor_id in journey.visitor_ids
            # A form is submitted on the page just viewed, within the session.
            before = [p for p in visitor_pages.values() if p.visitor_id == form.visitor_id and p.at <= form.at]
            assert before and form.at - max(p.at for p in before) < timedelta(minutes=30)
            assert (
                max(before, key=lambda p: p.at)
                .url.split("?")[0]
                .endswith(
                    {
                        "demo-request": "/demo",
                        "ebook-download": "/ebooks/attribution-playbook",
                        "webinar-signup": "/webinars/q3",
                    }[form.form_id]
                )
            )
        times = [s.at for s in journey.stages]
        assert times == sorted(times) and all(t > journey.lead_at for t in times)
        assert all(t.microsecond == 0 for t in times)
        assert all(t < CONFIG.day_start(journey.start_day + MAX_SPAN_DAYS) for t in times)
        ranks = [STAGE_ORDER.index(s.stage) for s in journey.stages if s.stage in STAGE_ORDER]
        assert ranks == sorted(ranks)
        for stage in journey.stages:
            assert (stage.deal_value is not None) == (stage.stage == "customer")
            if stage.deal_value is not None:
                assert stage.deal_value > 0 and stage.deal_value == stage.deal_value.quantize(Decimal("0.01"))
            assert stage.crm == journey.crm
        if journey.crm == "hubspot":
            assert "disqualified" not in {s.stage for s in journey.stages}


def test_visitor_ids_emails_and_event_ids_are_unique():
    journeys = _journeys(20)
    visitors = [v for j in journeys for v in j.visitor_ids]
    assert len(visitors) == len(set(visitors))
    emails = [j.email for j in journeys if j.email]
    assert len(emails) == len(set(emails))
    events = [p.event_id for j in journeys for p in j.page_views] + [f.event_id for j in journeys for f in j.forms]
    assert len(events) == len(set(events))


def test_the_products_session_rules_find_exactly_the_recorded_touches():
    """Replay every visitor's page views through stream_jobs' sessionisation and classification."""
    rules = ChannelRules()
    for journey in _journeys(8):
        expected = {t.touch_id: t for t in journey.touches}
        found = {}
        states: dict[str, object] = {}
        for page in journey.page_views:
            envelope = Envelope(
                event_id=page.event_id,
                site_id="demo",
                received_at=page.at,
                event=PageView(visitor_id=page.visitor_id, url=page.url, referrer=page.referrer, occurred_at=page.at),
            )
            states[page.visitor_id], touch = next_touch(states.get(page.visitor_id), envelope, rules)
            if touch is not None:
                found[touch.touch_id] = touch
        assert found.keys() == expected.keys(), journey.journey_id
        for touch_id, touch in found.items():
            truth = expected[touch_id]
            assert (touch.channel, touch.campaign, touch.occurred_at) == (truth.channel, truth.campaign, truth.at)
            assert touch.landing_path == truth.landing_path


def test_spend_covers_paid_campaigns_daily_in_cents():
    lines = spend_lines(CONFIG, 0, 7)
    channels = {line.channel for line in lines}
    assert channels == {"Paid Search", "Paid Social", "Display", "Email"}
    assert all(line.cost > 0 and line.cost == line.cost.quantize(Decimal("0.01")) for line in lines)
    keys = [(line.day, line.channel, line.source, line.medium, line.campaign) for line in lines]
    assert len(keys) == len(set(keys))
    assert {line.day for line in lines} == {CONFIG.epoch + timedelta(days=d) for d in range(7)}


def test_truth_file_round_trip_and_horizon(tmp_path):
    run = SimulatedDays(CONFIG, 0, 9)
    path = write_truth(run, tmp_path / "truth.jsonl")
    truth = read_truth(path)
    assert truth.run["horizon"] == "2025-03-12T00:00:00.000Z" and truth.run["seed"] == 11
    assert len(truth.journeys) == len(journeys_between(CONFIG, 0, 9))
    horizon = truth.run["horizon"]
    for journey in truth.journeys:
        stamps = [t["occurred_at"] for t in journey["touches"]] + [s["occurred_at"] for s in journey["stages"]]
        assert all(stamp < horizon for stamp in stamps)
        if journey["deal_value"] is not None:
            assert [s for s in journey["stages"] if s["stage"] == "customer"][0]["deal_value"] == journey["deal_value"]
    totals = summarize(truth.journeys)
    assert totals["journeys"] == len(truth.journeys) and 0 < totals["customers"] < totals["leads"] < totals["visitors"]
    assert sum(Decimal(s["cost"]) for s in truth.spend) == sum(line.cost for line in spend_lines(CONFIG, 0, 9))
    (tmp_path / "bad.jsonl").write_text('{"kind": "run"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_truth(tmp_path / "bad.jsonl")


def test_day_events_are_in_time_order_and_inside_the_day():
    run = SimulatedDays(CONFIG, 3, 5)
    for day in (3, 4):
        web, crm = run.day_events(day)
        start, end = CONFIG.day_start(day), CONFIG.day_start(day + 1)
        assert web and all(start <= e.at < end for e in web)
        assert [e.at for e in web] == sorted(e.at for e in web)
        assert all(isinstance(e, (PageVisit, FormSubmit)) for e in web)
        assert all(start <= s.at < end for _, s in crm)


def test_runs_continue_from_the_cursor_and_stop_at_today(tmp_path):
    from simulator.runs import SimulationError, load_cursor, plan_run, record_run
    from simulator.senders import SendStats

    today = date(2025, 6, 30)
    cursor, run = plan_run(tmp_path, 10, seed=5, visitors_per_day=20, today=today)
    assert (run.first_day, run.end_day) == (0, 10) and run.config.epoch == date(2025, 5, 31)
    record_run(tmp_path, cursor, run, SendStats(), tmp_path / "truth.jsonl")
    cursor, run = plan_run(tmp_path, 10, today=today)  # the seed and volume come from the cursor
    assert (run.first_day, run.end_day, run.config.seed, run.config.visitors_per_day) == (10, 20, 5, 20)
    with pytest.raises(SimulationError, match="--seed 6 differs"):
        plan_run(tmp_path, 10, seed=6, today=today)
    record_run(tmp_path, cursor, run, SendStats(), tmp_path / "truth.jsonl")
    cursor, run = plan_run(tmp_path, 25, today=today)
    assert (run.first_day, run.end_day) == (20, 30)  # cut short: today (day 30) is not simulated
    record_run(tmp_path, cursor, run, SendStats(), tmp_path / "truth.jsonl")
    assert load_cursor(tmp_path).next_day == 30 and len(load_cursor(tmp_path).runs) == 3
    with pytest.raises(SimulationError, match="reached today"):
        plan_run(tmp_path, 1, today=today)
    (tmp_path / "simulation" / "cursor.json").write_text("{broken")
    with pytest.raises(SimulationError, match="damaged"):
        plan_run(tmp_path, 1, today=today)
