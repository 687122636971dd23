"""The demo data the dashboard's browser tests and benchmark use (``simulator.offline``: the demo's traffic through
the collector's parsers and the worker's rules, no Kafka) is what the simulator says happened: every touch it
recorded and no other, one lead per person who filled a form, and each won deal's value on its customer
conversion. No service needed."""

from __future__ import annotations

from decimal import Decimal

from dashboard_support import DEMO, DEMO_DAYS

from schemas import serde
from schemas.outputs import Conversion, Lead, Touch
from schemas.topics import Topics
from simulator.model import SimulatedDays
from simulator.offline import count_by_topic, pipeline_records


def test_the_demo_days_through_the_workers_rules_are_the_simulators_truth():
    run = SimulatedDays(DEMO, 0, DEMO_DAYS)
    records = pipeline_records(run)
    topics = Topics()
    by_topic: dict[str, list[bytes]] = {}
    for topic, _key, value in records:
        by_topic.setdefault(topic, []).append(value)
    truth = run.known_journeys()

    touches = [serde.loads(v, Touch) for v in by_topic[topics.touches]]
    assert sorted(t.touch_id for t in touches) == sorted(t.touch_id for j in truth for t in j.touches)
    channels = {t.touch_id: t.channel for j in truth for t in j.touches}
    assert all(t.channel == channels[t.touch_id] for t in touches)

    leads = [serde.loads(v, Lead) for v in by_topic[topics.leads]]
    assert sorted(lead.email for lead in leads) == sorted(j.email for j in truth if j.forms and j.email)

    newest: dict[str, Conversion] = {}
    for value in by_topic[topics.conversions]:
        conversion = serde.loads(value, Conversion)
        known = newest.get(conversion.conversion_id)
        if known is None or conversion.version > known.version:
            newest[conversion.conversion_id] = conversion
    won = sorted(c.revenue for c in newest.values() if c.stage == "customer")
    expected = sorted(s.deal_value for j in truth for s in j.stages if s.stage == "customer")
    assert won == expected and len(won) >= 5 and sum(won, Decimal(0)) > 0

    counts = count_by_topic(records)
    assert counts[topics.events] == sum(len(j.page_views) + len(j.forms) for j in truth)
    assert counts[topics.crm] == sum(len(j.stages) for j in truth)
    assert counts[topics.spend] == len(run.spend())
