"""The sales loop end to end: a scripted lead crosses the score threshold in the stream worker, becomes exactly one
sales-ready record (Kafka and ClickHouse), and ``closedloop deliver`` posts it exactly once to each configured
destination (a signed webhook, Slack, HubSpot, Pipedrive: local servers that check the documented request shapes);
the same input sent again delivers nothing more. The processes are the demo's (``PipelineProcesses``: collector,
worker, sink, deliver), on the session's Kafka and ClickHouse."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from harness import free_port
from test_delivery_crm import TOKEN, FakeCrm, fake_crm
from test_delivery_units import SECRET, Script, destination
from test_worker import as_records, crm, envelope, page_view, read_all, send

from delivery import requests as build
from schemas import serde
from schemas.events import Identify
from schemas.identity import lead_id_for
from schemas.outputs import LeadScore, SalesReadyLead
from simulator.demo_harness import PipelinePorts, PipelineProcesses, wait_group_active, wait_until_drained
from sinks.reports import run_report, to_csv

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse]
__all__ = ["destination", "fake_crm"]  # fixtures, imported for their use below

SITE = "https://shop.example.com"
EMAIL = "ann@example.com"  # the person FakeCrm knows
VISITOR = "laptop-7"
T0 = datetime(2026, 2, 2, 9, 0, tzinfo=timezone.utc)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def web() -> list:
    """Scores, by the default rules (docs/SCORING.md), at the link 17.5, then 23.0, 38.5, 49.0: below 50."""
    return [
        page_view("pv-1", VISITOR, T0, f"{SITE}/?utm_source=google&utm_medium=cpc&utm_campaign=spring"),
        envelope("form-1", Identify(occurred_at=minutes(5), visitor_id=VISITOR, email=EMAIL, form_id="newsletter")),
        page_view("pv-2", VISITOR, minutes(6), f"{SITE}/case-studies/acme", referrer=f"{SITE}/"),
        page_view("pv-3", VISITOR, minutes(7), f"{SITE}/demo", referrer=f"{SITE}/"),
        page_view("pv-4", VISITOR, minutes(8), f"{SITE}/pricing", referrer=f"{SITE}/"),
    ]


def crossing() -> list:
    """The CRM makes the lead an MQL: stage points 10, the score 59.0 crosses 50."""
    return [crm("crm-mql", minutes(9), "mql", email=EMAIL, contact="501")]


def later() -> list:
    """Two days on, a returning visit on pricing: a hand-raiser, but this cycle's record went out already."""
    return [page_view("pv-5", VISITOR, T0 + timedelta(days=2), f"{SITE}/pricing")]


def test_a_lead_crossing_the_threshold_is_delivered_once_to_each_destination_and_a_replay_adds_nothing(
    pipeline_settings, unique_name, tmp_path, destination: tuple[str, Script], fake_crm: tuple[str, FakeCrm]
) -> None:
    from sinks.client import connect
    from sinks.migrate import migrate_up
    from sinks.settings import SinkSettings

    hook_url, script = destination
    crm_url, fake = fake_crm
    settings = pipeline_settings
    sink_group, deliver_group = f"{unique_name}-sink", f"{unique_name}-deliver"
    worker_group = f"{settings.topic_prefix}-worker"
    sink_settings = SinkSettings(
        data_dir=settings.data_dir,
        kafka_bootstrap_servers=settings.kafka_servers,
        clickhouse_url=settings.clickhouse,
        topic_prefix=settings.topic_prefix,
        sink_consumer_group=sink_group,
    )
    migrate_up(sink_settings)
    client = connect(sink_settings)
    processes = PipelineProcesses(
        settings,
        PipelinePorts(collector=free_port(), worker_web=free_port()),
        extra_env={"CLOSEDLOOP_SINK_CONSUMER_GROUP": sink_group, "CLOSEDLOOP_SINK_BATCH_SECONDS": "0.5"},
        deliver_env={
            "CLOSEDLOOP_DELIVERY_CONSUMER_GROUP": deliver_group,
            "CLOSEDLOOP_DELIVERY_RETRY_INITIAL_SECONDS": "0.05",
            "CLOSEDLOOP_DELIVERY_WEBHOOK_URL": hook_url + "/hook",
            "CLOSEDLOOP_DELIVERY_WEBHOOK_SECRET": SECRET,
            "CLOSEDLOOP_DELIVERY_SLACK_WEBHOOK_URL": hook_url + "/services/T/B/XSECRETX",
            "CLOSEDLOOP_DELIVERY_HUBSPOT_TOKEN": TOKEN,
            "CLOSEDLOOP_DELIVERY_HUBSPOT_URL": crm_url,
            "CLOSEDLOOP_DELIVERY_PIPEDRIVE_TOKEN": TOKEN,
            "CLOSEDLOOP_DELIVERY_PIPEDRIVE_URL": crm_url,
        },
        die_with_parent=True,
    )
    lead = lead_id_for(EMAIL, settings.lead_key_bytes)

    def drained(touches: int) -> None:
        result = wait_until_drained(
            settings,
            worker_group,
            sink_group,
            client,
            expected_touches=touches,
            timeout=240,
            alive=processes.check_alive,
            deliver_group=deliver_group,
        )
        logs = {name: processes.log(name).read_text()[-3000:] for name in ("worker", "deliver")}
        assert result.complete, (result, logs)

    def requests_now() -> tuple[int, int]:
        return len(script.received), len(fake.requests)

    try:
        processes.start()
        for group in (worker_group, sink_group, deliver_group):
            wait_group_active(settings.kafka_servers, group, alive=processes.check_alive)
        # in three steps: the score must cross on the CRM change, whatever order the topics are read in
        for step, touches in ((web(), 1), (crossing(), 1), (later(), 2)):
            send(settings, as_records(settings, step))
            drained(touches)
        first_run = requests_now()

        ready = [serde.loads(raw, SalesReadyLead) for raw in read_all(settings, settings.topics.sales_ready)]
        assert [(r.ready_id, r.cycle, r.reason, r.score, r.event_id, r.email) for r in ready] == [
            (f"{lead}:1", 1, "threshold", 59.0, "crm-mql", EMAIL)
        ]
        assert ready[0].pages == ["/", "/case-studies/acme", "/demo", "/pricing"]
        assert ready[0].forms == ["newsletter"]
        assert ready[0].first_touch is not None and ready[0].first_touch.channel == "Paid Search"
        scores = [serde.loads(raw, LeadScore) for raw in read_all(settings, settings.topics.scores)]
        assert [s.score for s in sorted(scores, key=lambda s: s.scored_at)][:5] == [17.5, 23.0, 38.5, 49.0, 59.0]
        assert len(scores) == 6  # and the later visit's

        # each destination exactly once
        assert [path for path, _, _ in script.received] == ["/hook", "/services/T/B/XSECRETX"]
        _, headers, body = script.received[0]
        assert build.verify_signature(SECRET, headers["X-Closedloop-Signature"], body, now=int(time.time()))
        document = json.loads(body)
        assert (document["message_id"], document["kind"], document["lead_id"], document["email"]) == (
            f"sales_ready:{lead}:1",
            "sales_ready",
            lead,
            EMAIL,
        )
        assert document["payload"]["score"] == 59.0 and document["payload"]["reason"] == "threshold"
        assert json.loads(script.received[1][2])["text"] == "Sales-ready lead (threshold) (score 59.0)"
        assert [(method, target.split("?")[0]) for method, target, _, _ in fake.requests] == [
            ("POST", "/crm/v3/objects/contacts/search"),
            ("POST", "/crm/v3/objects/tasks"),
            ("GET", "/api/v1/persons/search"),
            ("POST", "/api/v1/activities"),
        ]
        assert fake.problems == []

        # ClickHouse: the record, the scores, the deliveries, and the touches with their lead id
        assert client.query("SELECT ready_id, reason, score FROM sales_ready_leads FINAL").result_rows == [
            (f"{lead}:1", "threshold", 59.0)
        ]
        assert client.query("SELECT count() FROM lead_scores FINAL").result_rows == [(6,)]
        assert client.query(
            "SELECT destination, status, lead_id FROM deliveries FINAL ORDER BY destination"
        ).result_rows == [(d, "delivered", lead) for d in ("hubspot", "pipedrive", "slack", "webhook")]
        assert client.query("SELECT event_id, lead_id FROM touches FINAL ORDER BY occurred_at").result_rows == [
            ("pv-1", lead),  # touched before the form: filled when the form linked the visitor
            ("pv-5", lead),
        ]

        # closedloop report ready-leads
        report = run_report(client, "ready-leads", date_from=T0.date(), date_to=T0.date() + timedelta(days=2), limit=10)
        [row] = report.records()
        assert {k: row[k] for k in ("lead_id", "email", "cycle", "reason", "score", "first_channel", "touches")} == {
            "lead_id": lead,
            "email": EMAIL,
            "cycle": 1,
            "reason": "threshold",
            "score": 59.0,
            "first_channel": "Paid Search",
            "touches": 1,
        }
        pages = "/ > /case-studies/acme > /demo > /pricing"
        assert (row["pages"], row["last_pages"], row["forms"]) == (4, pages, "newsletter")
        assert row["breakdown"].startswith("engagement:visits 2, ")
        assert to_csv(report).splitlines()[0].startswith("ready_at,lead_id,email,cycle,reason,score,breakdown")

        # the same input again: no second record, no second delivery
        send(settings, as_records(settings, [*web(), *crossing(), *later()]))
        drained(2)
        assert len(read_all(settings, settings.topics.sales_ready)) == 1
        assert len(read_all(settings, settings.topics.scores)) == 6
        assert requests_now() == first_run
        assert client.query("SELECT count() FROM deliveries FINAL").result_rows == [(4,)]
    finally:
        processes.stop()
        client.close()


def test_score_and_sales_ready_records_insert_into_their_tables(clickhouse_http_url: str) -> None:
    from harness import unique
    from test_lead_scores import link, touch

    from sinks.client import connect
    from sinks.migrate import migrate_up
    from sinks.rows import Provenance, RecordKind, insert, rows_for
    from sinks.settings import SinkSettings
    from stream_jobs.rules.lead_scores import apply_event
    from stream_jobs.rules.scoring import DEFAULT_RULES

    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('scores')}")
    migrate_up(settings)
    client = connect(settings)
    try:
        t1 = touch("t1", T0, "/demo")
        _, out = apply_event(None, link(T0, "demo-request", (t1,)), DEFAULT_RULES, journey=(t1,))
        assert out.score is not None and out.sales_ready is not None
        where = Provenance("t", 0, 0)
        for kind, record, table in (
            (RecordKind.SCORE, out.score, "lead_scores"),
            (RecordKind.SALES_READY, out.sales_ready, "sales_ready_leads"),
        ):
            rows = [row for _, row in rows_for(kind, serde.dumps(record), where)]
            insert(client, table, rows)
            insert(client, table, rows)  # a replay collapses
        assert client.query("SELECT score, breakdown FROM lead_scores FINAL").result_rows == [
            (out.score.score, [{"rule": p.rule, "points": p.points} for p in out.score.breakdown])
        ]
        assert client.query(
            "SELECT ready_id, reason, JSONExtractString(journey, 'first_touch', 'landing_path') "
            "FROM sales_ready_leads FINAL"
        ).result_rows == [("lead-1:1", "hand_raiser:form:demo", "/demo")]
        columns = client.query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'sales_ready_leads'"
        ).result_rows
        assert ("email",) not in columns  # the address lives in `leads` only (migration 0017)
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
        client.close()
