"""End to end: a seeded simulation through every real component (collector, broker, stream worker, sink,
ClickHouse endpoint), then ClickHouse's numbers against an independent reference computed from the ground truth.

The reference below is written from the rules in docs/ATTRIBUTION.md and ../shared/DOMAIN.md, not from the
product's code (it imports nothing from ``stream_jobs``): journeys are the touches of every visitor id of a lead
that identified before the horizon, conversions are the lead (first form) and each CRM stage (earliest record),
and each model's shares and revenue are computed with exact fractions, rounded as documented.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

import pytest
from harness import free_port
from test_worker import get_json

from deploy.daemons import log_tail
from simulator.demo_harness import DrainResult, PipelinePorts, PipelineProcesses, wait_group_active, wait_until_drained
from simulator.model import SimulatedDays, SimulationConfig
from simulator.senders import Endpoint, Sender
from simulator.truth import read_truth, write_truth

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse]

CONFIG = SimulationConfig(
    seed=20250106,
    epoch=date(2025, 1, 6),
    visitors_per_day=60,
    lead_rate_scale=3.0,
    customer_rate_scale=2.5,
    sales_cycle_scale=0.3,
)
DAYS = 12
MODELS = ("first_touch", "last_touch", "linear", "time_decay", "u_shaped", "w_shaped", "full_path")
LOOKBACK = timedelta(days=90)
NINE = Decimal("0.000000001")


# -- the independent reference -------------------------------------------------------------------------------


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class RefTouch:
    touch_id: str
    at: datetime
    channel: str
    visitor_id: str


def _position(window: list[RefTouch], milestone: datetime | None, converted_at: datetime) -> int | None:
    """Index of the last touch at or before a milestone; None when it is missing, later than the conversion or
    before every touch."""
    if milestone is None or milestone > converted_at:
        return None
    found = None
    for index, touch in enumerate(window):
        if touch.at <= milestone:
            found = index
    return found


def _positional(window, weights: list[tuple[int | None, Fraction]], rest: Fraction) -> list[Fraction]:
    shares = [Fraction(0)] * len(window)
    present = Fraction(0)
    taken = set()
    for index, weight in weights:
        if index is not None:
            shares[index] += weight
            present += weight
            taken.add(index)
    others = [i for i in range(len(window)) if i not in taken]
    if others:
        for i in others:
            shares[i] += rest / len(others)
        present += rest
    return [share / present for share in shares]


def _exact_shares(model: str, window: list[RefTouch], converted_at: datetime, milestones: dict) -> list:
    n = len(window)
    if n == 1:
        return [Fraction(1)]
    if model == "first_touch":
        return [Fraction(int(i == 0)) for i in range(n)]
    if model == "last_touch":
        chosen = max((i for i, t in enumerate(window) if t.channel != "Direct"), default=n - 1)
        return [Fraction(int(i == chosen)) for i in range(n)]
    if model == "linear":
        return [Fraction(1, n)] * n
    if model == "time_decay":
        with localcontext() as ctx:
            ctx.prec = 60
            weights = [
                (Decimal(2) ** (-Decimal((converted_at - t.at).total_seconds()) / Decimal(86400 * 7))) for t in window
            ]
            total = sum(weights)
            return [Fraction(w / total) for w in weights]
    first = 0
    lead = _position(window, milestones.get("lead"), converted_at)
    opportunity = _position(window, milestones.get("opportunity"), converted_at)
    customer = _position(window, milestones.get("customer"), converted_at)
    if model == "u_shaped":
        return _positional(window, [(first, Fraction(40)), (lead, Fraction(40))], Fraction(20))
    if model == "w_shaped":
        return _positional(
            window, [(first, Fraction(30)), (lead, Fraction(30)), (opportunity, Fraction(30))], Fraction(10)
        )
    if model == "full_path":
        w = Fraction(45, 2)
        return _positional(window, [(first, w), (lead, w), (opportunity, w), (customer, w)], Fraction(10))
    raise AssertionError(model)


def _rounded(shares: list[Fraction]) -> list[Decimal]:
    """Half-even to 9 decimals; the residue to the largest share (ties: the latest touch)."""
    with localcontext() as ctx:
        ctx.prec = 60
        rounded = [(Decimal(s.numerator) / Decimal(s.denominator)).quantize(NINE, ROUND_HALF_EVEN) for s in shares]
    largest = max(range(len(shares)), key=lambda i: (shares[i], i))
    rounded[largest] += Decimal(1) - sum(rounded)
    return rounded


def _revenue(shares: list[Fraction], value: Decimal) -> list[Decimal]:
    """Largest remainder in cents on the exact shares (ties: larger share, then the latest touch)."""
    cents = int(value * 100)
    raw = [share * cents for share in shares]
    floors = [int(r) for r in raw]  # shares are >= 0
    left = cents - sum(floors)
    order = sorted(range(len(shares)), key=lambda i: (raw[i] - floors[i], shares[i], i), reverse=True)
    for i in order[:left]:
        floors[i] += 1
    return [Decimal(c) / 100 for c in floors]


def reference(journeys: list[dict]) -> dict:
    """Per (model, stage, channel): credited share and revenue; plus counts of visitors per channel."""
    credits: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    revenue: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    visitors: dict[str, set] = defaultdict(set)
    conversions = 0
    for journey in journeys:
        for touch in journey["touches"]:
            visitors[touch["channel"]].add(touch["visitor_id"])
        if not journey["forms"]:
            continue
        identified = {form["visitor_id"] for form in journey["forms"]}
        touches = sorted(
            (
                RefTouch(t["touch_id"], _at(t["occurred_at"]), t["channel"], t["visitor_id"])
                for t in journey["touches"]
                if t["visitor_id"] in identified
            ),
            key=lambda t: (t.at, t.touch_id),
        )
        reached: dict[str, tuple[datetime, Decimal | None]] = {"lead": (_at(journey["lead_at"]), None)}
        for change in journey["stages"]:
            at = _at(change["occurred_at"])
            value = Decimal(change["deal_value"]) if change["deal_value"] else None
            if change["stage"] not in reached or at < reached[change["stage"]][0]:
                reached[change["stage"]] = (at, value)
        milestones = {stage: reached[stage][0] for stage in ("lead", "opportunity", "customer") if stage in reached}
        for stage, (converted_at, value) in reached.items():
            conversions += 1
            window = [t for t in touches if converted_at - LOOKBACK <= t.at <= converted_at]
            assert window, f"{journey['journey_id']} {stage}: the simulator made a conversion without touches"
            for model in MODELS:
                exact = _exact_shares(model, window, converted_at, milestones)
                for touch, share in zip(window, _rounded(exact), strict=False):
                    credits[(model, stage, touch.channel)] += share
                if stage == "customer" and value is not None:
                    for touch, amount in zip(window, _revenue(exact, value), strict=False):
                        revenue[(model, touch.channel)] += amount
    return {
        "credits": credits,
        "revenue": revenue,
        "visitors": {c: len(v) for c, v in visitors.items()},
        "conversions": conversions,
    }


def test_reference_matches_the_documented_worked_example():
    """The reference itself, on ATTRIBUTION.md's example: 28, 21, 14 (direct), 7, 0 days; 12,000.00 EUR."""
    end = datetime(2025, 3, 1, 12, 0)
    window = [
        RefTouch(f"t{i}", end - timedelta(days=d), "Direct" if i == 3 else "Paid Search", "v")
        for i, d in enumerate((28, 21, 14, 7, 0), 1)
    ]
    milestones = {"lead": window[1].at, "opportunity": window[3].at, "customer": window[4].at}
    expected = {
        "time_decay": ["387.10", "774.19", "1548.39", "3096.77", "6193.55"],
        "u_shaped": ["4800.00", "4800.00", "800.00", "800.00", "800.00"],
        "w_shaped": ["3600.00", "3600.00", "600.00", "3600.00", "600.00"],
        "full_path": ["2700.00", "2700.00", "1200.00", "2700.00", "2700.00"],
        "last_touch": ["0.00", "0.00", "0.00", "0.00", "12000.00"],
    }
    for model, amounts in expected.items():
        exact = _exact_shares(model, window, end, milestones)
        assert [str(a.quantize(Decimal("0.01"))) for a in _revenue(exact, Decimal("12000.00"))] == amounts, model
        assert sum(_rounded(exact)) == 1


# -- the pipeline ------------------------------------------------------------------------------------------------


def _query(client, sql: str) -> list[tuple]:
    return [tuple(row) for row in client.query(sql).result_rows]


def _through_the_pipeline(pipeline_settings, unique_name: str, tmp_path, runs: list[tuple[int, int]]):
    """Send the simulation's ``runs`` (day ranges) through freshly started processes, restarting them all between
    runs (like two ``closedloop demo`` runs on one data directory); return (ClickHouse client, last truth)."""
    from sinks.client import connect
    from sinks.migrate import migrate_up
    from sinks.settings import SinkSettings

    sink_group = f"{unique_name}-sink"
    sink_settings = SinkSettings(
        data_dir=pipeline_settings.data_dir,
        kafka_bootstrap_servers=pipeline_settings.kafka_servers,
        clickhouse_url=pipeline_settings.clickhouse,
        topic_prefix=pipeline_settings.topic_prefix,
        sink_consumer_group=sink_group,
    )
    migrate_up(sink_settings)
    client = connect(sink_settings)
    worker_group = f"{pipeline_settings.topic_prefix}-worker"
    processes = PipelineProcesses(
        pipeline_settings,
        PipelinePorts(collector=free_port(), worker_web=free_port()),
        extra_env={"CLOSEDLOOP_SINK_CONSUMER_GROUP": sink_group, "CLOSEDLOOP_SINK_BATCH_SECONDS": "0.5"},
        die_with_parent=True,
    )
    truth = None
    started = time.time()
    try:
        for first_day, end_day in runs:
            processes.stop()
            processes.start()
            wait_group_active(pipeline_settings.kafka_servers, worker_group, alive=processes.check_alive)
            wait_group_active(pipeline_settings.kafka_servers, sink_group, alive=processes.check_alive)
            run = SimulatedDays(CONFIG, first_day, end_day)
            endpoint = Endpoint(
                collector_url=processes.collector_url,
                kafka_servers=pipeline_settings.kafka_servers,
                topic_prefix=pipeline_settings.topic_prefix,
                csv_dir=tmp_path / "sheets",
            )
            stats = asyncio.run(Sender(endpoint).send(run))
            assert stats.rejected == 0, stats.problems
            assert stats.accepted == stats.events and stats.duplicates == 0 and stats.ignored == 0
            truth = read_truth(write_truth(run, tmp_path / f"truth-{first_day}-{end_day}.jsonl"))
            touches = sum(len(j["touches"]) for j in truth.journeys)
            progress: list[DrainResult] = []  # a poll every 10 s: was the pipeline slow, or stuck?

            def every_ten_seconds(result: DrainResult) -> None:
                if result.seconds >= 10 * len(progress):  # noqa: B023 - called while progress is this list
                    progress.append(result)  # noqa: B023

            drain = wait_until_drained(
                pipeline_settings,
                worker_group,
                sink_group,
                client,
                expected_touches=touches,
                timeout=300,
                alive=processes.check_alive,
                on_poll=every_ten_seconds,
                held=processes.held_reemissions,
            )
            assert drain.complete, _stuck_report(drain, progress, processes)
        counters = _today_counters(processes.worker_url(), started)
    finally:
        processes.stop()
    return client, truth, counters


def _today_counters(worker_url: str, since: float) -> Counter:
    """(model, stage, channel) -> conversions in the worker's live counters, over every day window since ``since``
    (the counters are by processing time: the run's conversions are all in these windows)."""
    counts: Counter = Counter()
    seen = set()
    for moment in [*range(int(since), int(time.time()), 86400), time.time()]:
        snapshot = get_json(f"{worker_url}/counters/?window=today&at={moment}")
        if snapshot["window_start"] in seen:
            continue
        seen.add(snapshot["window_start"])
        for row in snapshot["rows"]:
            counts[(row["model"], row["stage"], row["channel"])] += row["conversions"]
    return counts


def _stuck_report(drain, progress, processes) -> str:
    """What a drain timeout needs for a diagnosis: the lags over time and the processes' last log lines."""
    lines = [
        "--- the worker's own view (GET /diagnostics/)",
        _worker_diagnostics(processes.worker_url(), processes.settings.local_password_file),
        repr(drain),
        "lags over time (seconds: worker / sink):",
    ]
    lines += [f"  {r.seconds:6.1f}: {r.worker_lag} / {r.sink_lag}" for r in progress]
    for name in ("worker", "sink", "collector"):
        lines += [f"--- {name} log", log_tail(processes.log(name), 25)]
    return "\n".join(lines)


def _worker_diagnostics(worker_url: str, password_file) -> str:
    from stream_jobs.runtime.diagnostics import summarize

    try:
        password = password_file.read_text().strip()
        return summarize(get_json(f"{worker_url}/diagnostics/", timeout=10, password=password))
    except (OSError, ValueError) as error:
        return f"no answer from {worker_url}/diagnostics/: {error!r}"


def _assert_clickhouse_matches_the_reference(client, truth, end: date) -> None:
    from sinks.reports import channels

    expected = reference(truth.journeys)
    # Every touch the simulator made, and no other, with the channel the truth says.
    found_touches = dict(_query(client, "SELECT touch_id, channel FROM touches FINAL"))
    assert found_touches == {t["touch_id"]: t["channel"] for j in truth.journeys for t in j["touches"]}

    latest = "(conversion_id, version) IN (SELECT conversion_id, max(version) FROM credits GROUP BY conversion_id)"
    rows = _query(
        client,
        f"SELECT model, stage, channel, sum(credit) FROM credits FINAL WHERE {latest} GROUP BY model, stage, channel",
    )
    found = {(model, stage, channel): Decimal(total) for model, stage, channel, total in rows if Decimal(total)}
    wanted = {key: value for key, value in expected["credits"].items() if value}
    assert {key[0] for key in wanted} == set(MODELS) and {key[1] for key in wanted} >= {"lead", "customer", "lost"}
    assert found == wanted
    rows = _query(
        client,
        f"SELECT model, channel, sum(revenue) FROM credits FINAL WHERE {latest} "
        "AND stage = 'customer' GROUP BY model, channel",
    )
    found_revenue = {(model, channel): Decimal(total) for model, channel, total in rows if Decimal(total)}
    assert found_revenue == {key: value for key, value in expected["revenue"].items() if value}
    assert _query(client, "SELECT count() FROM conversions FINAL") == [(expected["conversions"],)]

    # The channel report (the product's own SQL) shows the same visitors, leads, customers and revenue.
    for model in MODELS:
        report = {r["channel"]: r for r in channels(client, model, CONFIG.epoch, end).records()}
        assert {c: r["visitors"] for c, r in report.items()} == expected["visitors"]
        for channel, row in report.items():
            assert Decimal(row["leads"]) == expected["credits"].get((model, "lead", channel), 0), (model, channel)
            assert Decimal(row["customers"]) == expected["credits"].get((model, "customer", channel), 0)
            assert Decimal(row["revenue"]) == expected["revenue"].get((model, channel), 0), (model, channel)
    spend = defaultdict(Decimal)
    for line in truth.spend:
        spend[line["channel"]] += Decimal(line["cost"])
    report = {r["channel"]: r for r in channels(client, "linear", CONFIG.epoch, end).records()}
    assert {c: Decimal(r["spend"]) for c, r in report.items() if r["spend"]} == dict(spend)


def test_simulated_days_through_the_whole_pipeline_match_the_reference(pipeline_settings, unique_name, tmp_path):
    client, truth, counters = _through_the_pipeline(pipeline_settings, unique_name, tmp_path, [(0, DAYS)])
    # What the simulation is made of, so that the comparison is not vacuous.
    assert {j["crm"] for j in truth.journeys if j["forms"]} == {"hubspot", "pipedrive", "generic", "csv"}
    assert any(len({f["visitor_id"] for f in j["forms"]}) == 2 for j in truth.journeys)
    assert len([j for j in truth.journeys if j["deal_value"]]) >= 10
    assert len({t["channel"] for j in truth.journeys for t in j["touches"]}) == 8
    end = CONFIG.epoch + timedelta(days=DAYS - 1)
    _assert_clickhouse_matches_the_reference(client, truth, end)
    _assert_reports_and_counters_agree(client, counters, end)
    _assert_the_page_path_and_cohort_reports_add_up(client, end)
    _assert_the_journey_of_a_two_device_lead(client, truth, pipeline_settings)
    _assert_the_lost_reasons(client, truth, pipeline_settings)
    _assert_the_demo_requests_are_sales_ready(client, truth, pipeline_settings)


def _assert_the_lost_reasons(client, truth, pipeline_settings) -> None:
    """Every CRM path that carries a reason (HubSpot and Pipedrive deals, the generic format, the sheet) brings it
    to the lost or disqualified conversion; Pipedrive's labelled leads have none."""
    from schemas.identity import lead_id_for

    wanted = {
        (lead_id_for(j["email"], pipeline_settings.lead_key_bytes), s["stage"]): s["reason"] or ""
        for j in truth.journeys
        if j["email"]
        for s in j["stages"]
        if s["stage"] in ("lost", "disqualified")
    }
    found = dict(
        ((lead, stage), reason)
        for lead, stage, reason in _query(
            client, "SELECT lead_id, stage, reason FROM conversions FINAL WHERE stage IN ('lost', 'disqualified')"
        )
    )
    assert found == wanted
    assert len({reason for reason in wanted.values() if reason}) >= 3 and "" in wanted.values()


def _assert_the_demo_requests_are_sales_ready(client, truth, pipeline_settings) -> None:
    """A demo request is a hand-raiser (docs/SCORING.md): every lead that sent one is sales-ready, in one record per
    readiness cycle; the others only when their score crossed the threshold."""
    from schemas.identity import lead_id_for

    requested = {
        lead_id_for(j["email"], pipeline_settings.lead_key_bytes)
        for j in truth.journeys
        if any(f["form_id"] == "demo-request" for f in j["forms"])
    }
    rows = _query(client, "SELECT lead_id, cycle, reason FROM sales_ready_leads FINAL")
    ready = {lead for lead, _, _ in rows}
    assert requested and requested <= ready
    assert len(rows) == len({(lead, cycle) for lead, cycle, _ in rows})
    assert {reason for lead, _, reason in rows if lead in requested} <= {
        "hand_raiser:form:demo",
        "hand_raiser:pricing_returning",
        "threshold",
    }


def _assert_the_journey_of_a_two_device_lead(client, truth, pipeline_settings) -> None:
    """``closedloop journey`` (its reading, sinks.journey) shows the whole path of a lead with two devices."""
    from schemas.identity import lead_id_for
    from sinks.journey import read_journey

    journey = next(j for j in truth.journeys if len({f["visitor_id"] for f in j["forms"]}) == 2)
    devices = {f["visitor_id"] for f in journey["forms"]}
    found = read_journey(client, lead_id_for(journey["email"], pipeline_settings.lead_key_bytes))
    assert found.email == journey["email"]
    assert {row[0] for row in found.sections["visitors"].rows} == devices
    pages = found.sections["pages"].records()
    assert sorted((p["visitor_id"], p["page_or_form"]) for p in pages if p["kind"] == "page") == sorted(
        (visitor, path) for _, visitor, path in journey["pages"] if visitor in devices
    )
    assert sorted(p["page_or_form"] for p in pages if p["kind"] == "form") == sorted(
        f["form_id"] for f in journey["forms"]
    )
    assert [p["occurred_at"] for p in pages] == sorted(p["occurred_at"] for p in pages)
    assert sorted((p["visitor_id"], p["channel"]) for p in pages if p["channel"]) == sorted(
        (t["visitor_id"], t["channel"]) for t in journey["touches"] if t["visitor_id"] in devices
    )
    stages = {row["stage"] for row in found.sections["stages"].records()}
    assert stages == {"lead"} | {s["stage"] for s in journey["stages"]}
    first = {(r["stage"], r["channel"]) for r in found.sections["credits"].records() if r["model"] == "first_touch"}
    assert ("lead", journey["touches"][0]["channel"]) in first


def _assert_the_page_path_and_cohort_reports_add_up(client, end: date) -> None:
    """landing-pages, ideal-path and payback on the pipeline's own rows give the channel report's totals."""
    from sinks.reports import channels, run_report

    period = {"date_from": CONFIG.epoch, "date_to": end}
    by_channel = channels(client, "linear", CONFIG.epoch, end).records()
    pages = run_report(client, "landing-pages", model="linear", by_channel=False, limit=100_000, **period).records()
    for column in ("leads", "customers", "revenue"):
        assert sum(Decimal(r[column]) for r in pages) == sum(Decimal(r[column]) for r in by_channel), column
    touches = _query(client, f"SELECT count() FROM touches FINAL WHERE toDate(occurred_at) <= '{end}'")[0][0]
    assert sum(r["sessions"] for r in pages) == touches

    first = {r["channel"]: r for r in channels(client, "first_touch", CONFIG.epoch, end).records()}
    paths = run_report(
        client,
        "ideal-path",
        stage="customer",
        by="channel",
        order="common",
        min_conversions=1,
        lookback_days=90,
        limit=100_000,
        **period,
    ).records()
    assert sum(r["converting"] for r in paths) == sum(int(r["customers"]) for r in first.values())
    assert sum(r["revenue"] for r in paths) == sum(r["revenue"] for r in first.values())

    cohorts = run_report(client, "payback", date_from=date(2000, 1, 1), date_to=date(2099, 12, 31)).records()
    with_touch = {c: r for c, r in first.items() if c != "(none)"}
    assert sum(r["customers"] for r in cohorts) == sum(int(r["customers"]) for r in with_touch.values()) > 0
    assert sum(r["revenue_to_date"] for r in cohorts) == sum(r["revenue"] for r in with_touch.values())

    # Every simulated email is a company's (name@<company>.example): the accounts hold every lead and all revenue.
    accounts = run_report(client, "accounts", limit=100_000, **period).records()
    leads = _query(client, "SELECT count() FROM leads FINAL")[0][0]
    assert sum(r["people"] for r in accounts) == leads and len(accounts) < leads
    assert sum(r["revenue"] for r in accounts) == sum(r["revenue"] for r in first.values())
    by_channel = run_report(client, "account-channels", lookback_days=90, **period).records()
    won = sum(1 for r in accounts if r["won_at"] is not None)
    assert sum(r["won"] for r in by_channel) == won > 0


def _assert_reports_and_counters_agree(client, counters: Counter, end: date) -> None:
    """Leads and customers per first-touch channel: the channel report, time-to-convert and the live counters."""
    from sinks.reports import channels, run_report

    report = {
        (stage, r["channel"]): int(r[column])
        for r in channels(client, "first_touch", CONFIG.epoch, end).records()
        for stage, column in (("lead", "leads"), ("customer", "customers"))
        if r[column]
    }
    ttc = {
        (stage, r["channel"]): r[column]
        for r in run_report(client, "time-to-convert", date_from=CONFIG.epoch, date_to=end).records()
        for stage, column in (("lead", "leads"), ("customer", "customers"))
        if r[column]
    }
    live = {(stage, channel): n for (model, stage, channel), n in counters.items() if model == "first_touch" and n}
    live = {key: n for key, n in live.items() if key[0] in ("lead", "customer")}
    assert sum(report.values()) > 50
    assert report == ttc == live


def test_a_second_run_after_a_restart_continues_and_counts_nothing_twice(pipeline_settings, unique_name, tmp_path):
    """Two runs (days 0-5, then 6-11) with every process restarted in between: the end state is the reference
    of all twelve days, as if sent in one go (journeys and CRM stages of the first run continue in the second)."""
    client, truth, _counters = _through_the_pipeline(
        pipeline_settings, unique_name, tmp_path, [(0, DAYS // 2), (DAYS // 2, DAYS)]
    )
    _assert_clickhouse_matches_the_reference(client, truth, CONFIG.epoch + timedelta(days=DAYS - 1))
