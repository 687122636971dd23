"""A simulated run through the collector's parsers and the stream worker's rules in one process, without Kafka.

What for: data for the dashboard's browser tests, its screenshots and its benchmark, made from the demo's traffic in
seconds rather than through the whole pipeline (a broker, a worker at a few hundred events a second on two cores,
a sink). :func:`pipeline_records` returns the records the pipeline would put on the topics the sink reads (the
source envelopes, touches, identity links, leads, conversions with their credits), as ``(topic, key, value)``;
the caller turns them into rows with the sink's own ``sinks.rows.rows_for``.

The same code decides as in the pipeline: the website's events and the spend rows are parsed by
``collector.events.parse_events`` (the payloads ``simulator.senders`` sends), every CRM change by the generic CRM
webhook's parser (its format carries each change's stage, value, currency, reason and email; the other CRMs'
adapters are the collector's tests' concern), and the records are applied by the worker's rules
(``stream_jobs.rules``) in the order the agents of ``stream_jobs.runtime.agents`` apply them: one partition, each
record's outputs handled before the next record. Not modelled: the live counters (they are not in ClickHouse),
dead letters, replays and erasure.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from collector.events import parse_events
from collector.settings import CollectorSettings
from collector.webhooks import generic
from schemas import serde
from schemas.events import CrmStatusChange, Envelope, Identify, PageView
from schemas.outputs import Lead
from schemas.topics import Topics
from simulator.model import SimulatedDays
from simulator.senders import generic_event, spend_event, web_payload
from stream_jobs.rules import contacts as contacts_rules
from stream_jobs.rules import lifecycle
from stream_jobs.rules import visitors as visitor_rules
from stream_jobs.rules.channels import ChannelRules
from stream_jobs.rules.contacts import ContactRecord, ContactState
from stream_jobs.rules.identity import lead_id_for
from stream_jobs.rules.lifecycle import LeadEvent, LeadState
from stream_jobs.rules.visitors import VisitorState
from stream_jobs.settings import WorkerSettings

Record = tuple[str, bytes | None, bytes]  # (topic, key, value), as on Kafka

WEB_TYPES = frozenset({"page_view", "identify"})
SPEND_TYPES = frozenset({"spend"})


class OfflineError(Exception):
    """The collector's parser rejected a simulated event: the simulator and the collector disagree."""


class _Worker:
    """The worker's tables as dicts and its agents as methods (``stream_jobs.runtime.agents.Pipeline``'s order)."""

    def __init__(self, settings: WorkerSettings, rules: ChannelRules) -> None:
        self.settings = settings
        self.rules = rules
        self.topics = settings.topics
        self.key = settings.lead_key_bytes
        self.visitors: dict[str, VisitorState] = {}
        self.contacts: dict[str, ContactState] = {}
        self.leads: dict[str, LeadState] = {}
        self.out: list[Record] = []
        self._offset = 0  # of the one events partition: a visitor's number comes from it
        self._lead_events: deque[LeadEvent] = deque()

    def _send(self, topic: str, key: str, record: BaseModel) -> None:
        self.out.append((topic, key.encode(), serde.dumps(record)))

    def source(self, topic: str, key: bytes | None, value: bytes) -> None:
        """One record of a source topic, as the collector wrote it: kept for the sink, applied by the agents."""
        self.out.append((topic, key, value))
        envelope = serde.loads(value, Envelope)
        if isinstance(envelope.event, PageView):
            self._page_view(envelope, envelope.event)
        elif isinstance(envelope.event, Identify):
            self._identify(envelope, envelope.event)
        elif isinstance(envelope.event, CrmStatusChange):
            self._crm(envelope, envelope.event)
        self._drain()

    def _page_view(self, envelope: Envelope, page_view: PageView) -> None:
        s = self.settings
        self._offset += 1
        state, touch = visitor_rules.apply_page_view(
            self.visitors.get(page_view.visitor_id),
            envelope,
            self.rules,
            number=visitor_rules.visitor_number(0, self._offset),
            timeout=s.session_timeout,
            touch_limit=s.visitor_touch_limit,
        )
        if touch is not None:
            self._send(self.topics.touches, page_view.visitor_id, touch)
            if touch.lead_id is not None:
                self._lead_events.append(
                    LeadEvent(kind="touch", lead_id=touch.lead_id, touches=(touch,), event_id=envelope.event_id)
                )
        self.visitors[page_view.visitor_id] = state

    def _identify(self, envelope: Envelope, identify: Identify) -> None:
        self._offset += 1
        lead_id = lead_id_for(identify.email, self.key)
        state, link, carried = visitor_rules.apply_identify(
            self.visitors.get(identify.visitor_id),
            envelope,
            lead_id,
            number=visitor_rules.visitor_number(0, self._offset),
        )
        if link is not None:
            self._send(self.topics.identity_links, lead_id, link)
            self._lead_events.append(
                LeadEvent(
                    kind="link",
                    lead_id=lead_id,
                    link=link,
                    email=identify.email,
                    touches=tuple(carried),
                    event_id=envelope.event_id,
                )
            )
        self.visitors[identify.visitor_id] = state

    def _crm(self, envelope: Envelope, change: CrmStatusChange) -> None:
        if change.email is None:
            self._contact(ContactRecord(kind="event", contact_key=change.lead_key, envelope=envelope))
            return
        lead_id = lead_id_for(change.email, self.key)
        self._lead_events.append(LeadEvent(kind="crm", lead_id=lead_id, crm=change, event_id=envelope.event_id))
        if change.crm_contact_id is not None:
            self._contact(
                ContactRecord(kind="mapping", contact_key=f"{change.crm}:{change.crm_contact_id}", lead_id=lead_id)
            )

    def _contact(self, record: ContactRecord) -> None:
        state, released, _overflow = contacts_rules.apply_contact_record(self.contacts.get(record.contact_key), record)
        self.contacts[record.contact_key] = state
        for lead_id, envelope in released:
            assert isinstance(envelope.event, CrmStatusChange)
            self._lead_events.append(
                LeadEvent(kind="crm", lead_id=lead_id, crm=envelope.event, event_id=envelope.event_id)
            )

    def _drain(self) -> None:
        while self._lead_events:
            self._lead_event(self._lead_events.popleft())

    def _lead_event(self, lead_event: LeadEvent) -> None:
        s = self.settings
        before = self.leads.get(lead_event.lead_id)
        state, conversions = lifecycle.apply(
            before, lead_event, lookback=s.lookback, journey_limit=s.journey_touch_limit
        )
        if (
            lead_event.email
            and state.first_identified_at is not None
            and (before is None or before.first_identified_at != state.first_identified_at)
        ):
            lead = Lead(lead_id=state.lead_id, email=lead_event.email, first_identified_at=state.first_identified_at)
            self._send(self.topics.leads, state.lead_id, lead)
        for conversion in conversions:  # one record with its credits, as the worker sends it
            self._send(
                self.topics.conversions, state.lead_id, lifecycle.attributed_conversion(state, conversion, s.lookback)
            )
        self.leads[lead_event.lead_id] = state


def _accepted(items: list[dict[str, Any]], site_id: str, types: frozenset[str], received_at: datetime, topics: Topics):
    batch = parse_events(
        items, site_id=site_id, allowed_types=types, received_at=received_at, user_agent=None, topics=topics
    )
    if batch.rejected:
        raise OfflineError(f"the collector rejected simulated events: {batch.rejected[:3]}")
    return [record for _event_id, _type, record in batch.accepted]


def pipeline_records(
    run: SimulatedDays,
    settings: WorkerSettings | None = None,
    rules: ChannelRules | None = None,
    collector: CollectorSettings | None = None,
) -> list[Record]:
    """The records of ``run`` on every topic the sink reads, in the order the pipeline would write them.

    Each day's events are received at the end of their day (the simulated site sends them as they happen)."""
    settings = settings or WorkerSettings()
    collector = collector or CollectorSettings()
    topics = settings.topics
    worker = _Worker(settings, rules if rules is not None else ChannelRules.from_file(settings.channel_rules_file))
    spend_by_day: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in run.spend():
        spend_by_day[(line.day - run.config.epoch).days].append(spend_event(line))
    for day in range(run.first_day, run.end_day):
        received_at = run.config.day_start(day + 1) - timedelta(milliseconds=1)
        web, crm = run.day_events(day)
        for record in _accepted([web_payload(e) for e in web], "demo", WEB_TYPES, received_at, topics):
            worker.source(record.topic, record.key, record.value)
        if crm:
            document = {"source": "simulator", "events": [generic_event(j, s) for j, s in crm]}
            result = generic.parse(document, collector, received_at)
            if result.rejected:
                raise OfflineError(f"the generic CRM webhook rejected simulated changes: {result.rejected[:3]}")
            for change in result.changes:
                envelope = Envelope(
                    event_id=change.event_id, site_id=change.site_id, received_at=received_at, event=change.change
                )
                worker.source(topics.crm, change.change.lead_key.encode(), serde.dumps(envelope))
        if spend_by_day.get(day):
            for record in _accepted(spend_by_day[day], "demo-ads", SPEND_TYPES, received_at, topics):
                worker.out.append((record.topic, record.key, record.value))
    return worker.out


def count_by_topic(records: Iterable[Record]) -> dict[str, int]:
    """How many records each topic got (for a test's or a benchmark's summary)."""
    counts: dict[str, int] = defaultdict(int)
    for topic, _key, _value in records:
        counts[topic] += 1
    return dict(counts)
