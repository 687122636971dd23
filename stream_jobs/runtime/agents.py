"""The Faust agents and tables: they move records between topics and tables; the decisions are pure functions in
``visitors``, ``contacts``, ``lifecycle`` and ``attribution``.

::

    {p}.events ──► visitors agent (table: visitors) ──► {p}.touches, {p}.identity-links
                                  └─────────────────────► {p}.lead-events (link + carried touches / touch)
    {p}.crm ─────► crm agent ── email ──────────────────► {p}.lead-events (crm)
                      └── contact id ─► {app}-crm-contacts ─► contacts agent (table: contacts) ─► {p}.lead-events
    {p}.lead-events ─► leads agent (table: leads) ──────► {p}.conversions (with credits), {p}.leads, counters
                          └── erase ─► {app}-erasures ─► erasures agent (visitors, contacts tables)
                                 └──────────────────────────────► {app}-erasure-results (closedloop erase reads)

Every agent decodes its input itself, so that a bad record becomes a dead letter instead of a crashed agent.
Keys: visitor id, lead id, contact key (``<crm>:<contact id>``), UTF-8. Output records go through
:class:`stream_jobs.runtime.outputs.Outputs` (straight to the producer). A conversion goes out as one record with
every model's credits in it (an attributed conversion); the sink makes the ``credits`` rows of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from faust.serializers import codecs
from pydantic import BaseModel

from schemas import serde
from schemas.events import CrmStatusChange, Envelope, Identify, LifecycleStage, PageView
from schemas.outputs import Conversion, IdentityLink, Lead
from stream_jobs.rules import contacts as contacts_rules
from stream_jobs.rules import erasure, lifecycle
from stream_jobs.rules import visitors as visitor_rules
from stream_jobs.rules.channels import ChannelRules
from stream_jobs.rules.contacts import ContactRecord, ContactState
from stream_jobs.rules.identity import lead_for, lead_id_for
from stream_jobs.rules.lead_scores import ScoreState
from stream_jobs.rules.lifecycle import LeadEvent, LeadState, PageSeen
from stream_jobs.rules.visitors import VisitorState
from stream_jobs.runtime import diagnostics, metrics
from stream_jobs.runtime.counters import Counters
from stream_jobs.runtime.deadletters import DeadLetters, error_reason, record_ids
from stream_jobs.runtime.outputs import Outputs, record_bytes
from stream_jobs.runtime.scores import Scoring
from stream_jobs.runtime.topology import (
    CONTACTS_TABLE,
    LEADS_TABLE,
    VISITORS_TABLE,
    crm_contacts_topic,
    erasure_results_topic,
    erasures_topic,
)
from stream_jobs.settings import WorkerSettings

log = logging.getLogger(__name__)
RESEND_S = 10.0  # a flush reminder of a lead still held after this long is sent again (it was lost)


class _ModelCodec(codecs.Codec):
    """Table values as the same JSON as every topic (``schemas.serde``), parsed back into the model."""

    def __init__(self, model: type[BaseModel]) -> None:
        super().__init__(model=model.__name__)
        self.model = model

    def _dumps(self, value: Any) -> bytes:
        return record_bytes(value)

    def _loads(self, data: bytes) -> Any:
        return self.model.model_validate_json(data)


def _table_value_type(codec: str) -> type:
    """A value type that makes a Faust table use ``codec`` for its changelog and hand values through as they are.

    Faust picks a table's serializer from ``value_type._options.serializer`` and rebuilds values with
    ``value_type.from_data``; our codec already returns the pydantic model, so ``from_data`` is the identity.
    """

    class _Options:
        serializer = codec

    class TableValue:
        _options = _Options

        @classmethod
        def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
            return data

    return TableValue


CODECS: dict[str, type[BaseModel]] = {
    "cl_visitor": VisitorState,
    "cl_contact": ContactState,
    "cl_lead": LeadState,
    "cl_score": ScoreState,
}
for _name, _model in CODECS.items():
    codecs.register(_name, _ModelCodec(_model))


def _key(text: str) -> bytes:
    return text.encode("utf-8")


# The partition a keyed output lands on: aiokafka's default partitioner, which every send of ``Outputs`` uses.
_PARTITIONER = DefaultPartitioner()


@dataclass
class Pipeline:
    """The worker's topics, tables and agents, attached to one Faust app."""

    app: Any
    settings: WorkerSettings
    rules: ChannelRules
    dead_letters: DeadLetters = field(init=False)
    counters: Counters = field(init=False)

    def __post_init__(self) -> None:
        app, s = self.app, self.settings
        topics = self.names = s.topics
        self.key = s.lead_key_bytes
        self.events = app.topic(topics.events)
        self.crm = app.topic(topics.crm)
        self.lead_events = app.topic(topics.lead_events)
        self.crm_contacts_name = crm_contacts_topic(s.app_id)
        self.crm_contacts = app.topic(self.crm_contacts_name)
        self.erasures_name = erasures_topic(s.app_id)
        self.erasure_results_name = erasure_results_topic(s.app_id)
        self.outputs = Outputs(app, transactional=s.processing_guarantee == "exactly_once")
        self.dead_letters = DeadLetters(self.outputs, topics.dead_letters)
        self.visitors = app.Table(VISITORS_TABLE, partitions=s.partitions, value_type=_table_value_type("cl_visitor"))
        self.contacts = app.Table(CONTACTS_TABLE, partitions=s.partitions, value_type=_table_value_type("cl_contact"))
        self.leads = app.Table(LEADS_TABLE, partitions=s.partitions, value_type=_table_value_type("cl_lead"))
        self.scoring = Scoring(app, s, self.outputs, _table_value_type("cl_score"))
        # Leads holding a re-emission back: lead id -> (due, when a flush was last asked for). Rebuilt from the
        # leads table after every recovery; docs/STREAMS.md, "Coalesced re-emission".
        self.held: dict[str, tuple[float, float]] = {}
        self.leads.on_recover(self._find_held)
        if s.reemit_interval_seconds > 0:
            app.timer(min(0.25, s.reemit_interval_seconds / 4), name="flush_due_leads")(self._flush_due_leads)
        self.counters = Counters(app, s.partitions, lambda: self.dead_letters.total, lambda: len(self.held))
        self.counters.install_web(app)
        metrics.install_web(app, lambda: self.dead_letters.total)
        diagnostics.install_web(app, s.local_password_file)
        app.agent(self.events, name="visitors")(self._visitors_agent)
        app.agent(self.crm, name="crm")(self._crm_agent)
        app.agent(self.crm_contacts, name="contacts")(self._contacts_agent)
        app.agent(self.lead_events, name="leads")(self._leads_agent)
        app.agent(app.topic(self.erasures_name), name="erasures")(self._erasures_agent)
        app.timer(s.contact_sweep_seconds)(self._send_contact_sweeps)

    async def _each(self, stream: Any, handler: Any) -> None:
        """Run ``handler`` per event; a failure of one record dead-letters it and the stream goes on."""
        async for event in stream.events():
            try:
                await handler(event)
            except Exception as error:
                message = event.message
                log.exception(
                    "failed to process a record; dead-lettered",
                    extra={
                        "topic": message.topic,
                        "partition": message.partition,
                        "offset": message.offset,
                        **record_ids(message.value),
                    },
                )
                await self.dead_letters.send(event, error_reason(error))

    # -- visitors ---------------------------------------------------------------------------------------------

    async def _visitors_agent(self, stream: Any) -> None:
        await self._each(stream, self._on_visitor_event)

    async def _on_visitor_event(self, event: Any) -> None:
        envelope = serde.loads(event.value, Envelope)
        payload = envelope.event
        message = event.message
        if isinstance(payload, PageView):
            await self._on_page_view(envelope, payload, message.partition, message.offset)
        elif isinstance(payload, Identify):
            await self._on_identify(envelope, payload, message.partition, message.offset)
        else:
            await self.dead_letters.send(
                event,
                f"a {payload.type!r} event on the events topic: only page_view "
                f"and identify belong there (CRM changes go to the crm topic)",
            )

    async def _on_page_view(self, envelope: Envelope, page_view: PageView, partition: int, offset: int) -> None:
        s = self.settings
        visitor_id = page_view.visitor_id
        before = self.visitors.get(visitor_id)
        if before is not None and before.applied(offset):
            return
        state, touch = visitor_rules.apply_page_view(
            before,
            envelope,
            self.rules,
            number=visitor_rules.visitor_number(partition, offset),
            timeout=s.session_timeout,
            touch_limit=s.visitor_touch_limit,
        )
        # Outputs are queued before the table write, so the changelog never gets ahead of what was sent.
        if touch is not None:
            await self.outputs.send(self.names.touches, _key(visitor_id), record_bytes(touch))
            if touch.lead_id is not None:
                lead_event = LeadEvent(
                    kind="touch", lead_id=touch.lead_id, touches=(touch,), event_id=envelope.event_id
                )
                await self.outputs.send(self.names.lead_events, _key(touch.lead_id), record_bytes(lead_event))
        else:
            await self._page_of_lead(envelope, page_view, state)
        self.visitors[visitor_id] = state.model_copy(update={"offset": offset})

    async def _page_of_lead(self, envelope: Envelope, page_view: PageView, state: VisitorState) -> None:
        """A page view inside a session of an identified visitor goes to its lead too: lead scoring counts it."""
        lead_id = lead_for(state.links, page_view.occurred_at)
        if lead_id is None:
            return
        page = PageSeen(path=page_view.path or "/", occurred_at=page_view.occurred_at)
        lead_event = LeadEvent(kind="page", lead_id=lead_id, page=page, event_id=envelope.event_id)
        await self.outputs.send(self.names.lead_events, _key(lead_id), record_bytes(lead_event))

    async def _on_identify(self, envelope: Envelope, identify: Identify, partition: int, offset: int) -> None:
        lead_id = lead_id_for(identify.email, self.key)
        visitor_id = identify.visitor_id
        before = self.visitors.get(visitor_id)
        if before is not None and before.applied(offset):
            return
        state, link, carried = visitor_rules.apply_identify(
            before, envelope, lead_id, number=visitor_rules.visitor_number(partition, offset)
        )
        if link is not None:
            await self.outputs.send(self.names.identity_links, _key(lead_id), record_bytes(link))
            # The touches now owned by the lead again, with lead_id: the touches table keeps this copy.
            for touch in carried:
                await self.outputs.send(self.names.touches, _key(visitor_id), record_bytes(touch))
            lead_event = LeadEvent(
                kind="link",
                lead_id=lead_id,
                link=link,
                email=identify.email,
                touches=tuple(carried),
                event_id=envelope.event_id,
            )
            await self.outputs.send(self.names.lead_events, _key(lead_id), record_bytes(lead_event))
        elif identify.form_id:
            # a form of a visitor linked already (no new link): lead scoring still counts it
            form = IdentityLink(
                visitor_id=visitor_id,
                lead_id=lead_id,
                linked_at=identify.occurred_at,
                event_id=envelope.event_id,
                form_id=identify.form_id,
            )
            lead_event = LeadEvent(kind="form", lead_id=lead_id, link=form, event_id=envelope.event_id)
            await self.outputs.send(self.names.lead_events, _key(lead_id), record_bytes(lead_event))
        self.visitors[visitor_id] = state.model_copy(update={"offset": offset})

    # -- CRM and contacts -------------------------------------------------------------------------------------

    async def _crm_agent(self, stream: Any) -> None:
        await self._each(stream, self._on_crm_event)

    async def _on_crm_event(self, event: Any) -> None:
        envelope = serde.loads(event.value, Envelope)
        change = envelope.event
        if not isinstance(change, CrmStatusChange):
            await self.dead_letters.send(
                event, f"a {change.type!r} event on the crm topic: only crm_status belongs there"
            )
            return
        if change.email is None:
            record = ContactRecord(kind="event", contact_key=change.lead_key, envelope=envelope)
            await self.outputs.send(self.crm_contacts_name, _key(record.contact_key), record_bytes(record))
            return
        lead_id = lead_id_for(change.email, self.key)
        await self._send_crm(lead_id, envelope)
        if change.crm_contact_id is not None:
            record = ContactRecord(kind="mapping", contact_key=f"{change.crm}:{change.crm_contact_id}", lead_id=lead_id)
            await self.outputs.send(self.crm_contacts_name, _key(record.contact_key), record_bytes(record))

    async def _send_crm(self, lead_id: str, envelope: Envelope) -> None:
        lead_event = LeadEvent(kind="crm", lead_id=lead_id, crm=envelope.event, event_id=envelope.event_id)
        await self.outputs.send(self.names.lead_events, _key(lead_id), record_bytes(lead_event))

    async def _contacts_agent(self, stream: Any) -> None:
        await self._each(stream, self._on_contact_record)

    async def _on_contact_record(self, event: Any) -> None:
        record = serde.loads(event.value, ContactRecord)
        if record.kind == "sweep":
            await self._sweep_contacts(event, record)
            return
        before = self.contacts.get(record.contact_key)
        state, released, overflow = contacts_rules.apply_contact_record(before, record)
        if state != before:
            self.contacts[record.contact_key] = state
        for lead_id, envelope in released:
            await self._send_crm(lead_id, envelope)
        for envelope in overflow:
            await self.dead_letters.send(
                event,
                f"CRM event {envelope.event_id} for contact {record.contact_key} "
                f"waited for a mapping to an email beyond the holding limit",
            )

    async def _send_contact_sweeps(self, app: Any) -> None:
        """Timer: a sweep record to each contacts partition this worker holds (stream_jobs.rules.contacts)."""
        record = ContactRecord(kind="sweep", contact_key="", at=datetime.now(timezone.utc))
        for tp in sorted(self.app.consumer.assignment(), key=lambda tp: tp.partition):
            if tp.topic == self.crm_contacts_name:
                await self.outputs.send_outside_transaction(tp.topic, None, record_bytes(record), tp.partition)

    async def _sweep_contacts(self, event: Any, record: ContactRecord) -> None:
        """Dead-letter the CRM events of this partition's contacts that waited longer than the hold for an email."""
        if record.at is None:
            raise ValueError("a contacts sweep record needs its time ('at')")
        message = event.message
        partitions = list(range(self.settings.partitions))
        hold = self.settings.contact_hold
        for contact_key, state in list(self.contacts.items()):
            # only this partition's keys: a table write goes to the changelog partition of the current event
            if not state.held or _PARTITIONER(_key(contact_key), partitions, partitions) != message.partition:
                continue
            after, expired = contacts_rules.expire_held(state, record.at, hold)
            for envelope in expired:
                await self.dead_letters.send_record(
                    f"CRM event {envelope.event_id} for contact {contact_key} waited more than "
                    f"{self.settings.contact_hold_seconds:g} s (CLOSEDLOOP_CONTACT_HOLD_SECONDS) for a CRM record "
                    f"that names both this contact id and an email; none came, so no lead could be found",
                    message.topic,
                    message.partition,
                    message.offset,
                    _key(contact_key),
                    serde.dumps(envelope),
                )
            if expired:
                self.contacts[contact_key] = after

    # -- leads ------------------------------------------------------------------------------------------------

    async def _leads_agent(self, stream: Any) -> None:
        await self._each(stream, self._on_lead_event)

    async def _on_lead_event(self, event: Any) -> None:
        s = self.settings
        lead_event = serde.loads(event.value, LeadEvent)
        if lead_event.kind == "erase":
            await self._erase_lead(lead_event)
            return
        await self.scoring.apply(lead_event, self.leads.get(lead_event.lead_id))
        if lead_event.kind in ("page", "form"):
            return  # scoring only: no lifecycle transition
        before = self.leads.get(lead_event.lead_id)
        if lead_event.kind == "flush" and (before is None or before.held_since is None):
            self.held.pop(lead_event.lead_id, None)  # flushed by an event of the lead meanwhile, or erased
            return
        state, conversions = lifecycle.apply(
            before,
            lead_event,
            lookback=s.lookback,
            journey_limit=s.journey_touch_limit,
            now=time.time(),
            interval=s.reemit_interval_seconds,
        )
        key = _key(state.lead_id)
        if (
            lead_event.email
            and state.first_identified_at is not None
            and (before is None or before.first_identified_at != state.first_identified_at)
        ):
            lead = Lead(lead_id=state.lead_id, email=lead_event.email, first_identified_at=state.first_identified_at)
            await self.outputs.send(self.names.leads, key, record_bytes(lead))
        counted: dict[LifecycleStage, float] = {}
        for conversion in conversions:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "conversion emitted",
                    extra={
                        "conversion_id": conversion.conversion_id,
                        "lead_id": state.lead_id,
                        "stage": conversion.stage.value,
                        "version": conversion.version,
                        "event_id": conversion.event_id,
                    },
                )
            attributed = lifecycle.attributed_conversion(state, conversion, s.lookback)
            await self.outputs.send(self.names.conversions, key, record_bytes(attributed))
            counted[conversion.stage] = self._count(before, conversion)
        if counted:
            state = lifecycle.with_counted_at(state, counted)
        # After the outputs, as in the visitors agent: a state that records a conversion as emitted must not be
        # written when sending it failed, or no later event would re-emit it.
        if state is not before:
            self.leads[lead_event.lead_id] = state
        self._note_held(state)

    def _note_held(self, state: LeadState) -> None:
        due = state.reemission_due(self.settings.reemit_interval_seconds)
        if due is None:
            self.held.pop(state.lead_id, None)
        elif state.lead_id not in self.held:
            self.held[state.lead_id] = (due, 0.0)

    async def _find_held(self) -> None:
        """After a recovery: the leads whose state holds a re-emission (a restart forgot the in-memory list)."""
        interval = self.settings.reemit_interval_seconds
        found = {
            lead_id: (due, 0.0)
            for lead_id, state in list(self.leads.items())
            if (due := state.reemission_due(interval)) is not None
        }
        self.held = found
        if found:
            log.info("leads holding a re-emission found after recovery", extra={"leads": len(found)})

    async def _flush_due_leads(self) -> None:
        """Ask the leads agent to flush each due lead: a ``flush`` lead event, sent outside any transaction.

        Safe under both guarantees because the reminder carries no state: what is held is in the lead's table
        state, committed with the event that held it, and the flush itself runs as the leads agent's event (outputs,
        state and offset in one transaction under exactly_once). A reminder lost in a crash is sent again after the
        recovery (:meth:`_find_held`), or after ``RESEND_S`` when the lead is still held; a repeated one finds
        nothing held and does nothing.
        """
        if not self.held:
            return
        now = time.time()
        for lead_id, (due, asked) in list(self.held.items()):
            if due > now or now - asked < RESEND_S:
                continue
            self.held[lead_id] = (due, now)
            flush = LeadEvent(kind="flush", lead_id=lead_id)
            await self.outputs.send_outside_transaction(self.names.lead_events, _key(lead_id), record_bytes(flush))

    def _count(self, before: LeadState | None, conversion: Conversion) -> float:
        """Count ``conversion`` in the live counters, replacing the version counted before (it is the previous
        state's conversion record: every change to what it depends on re-emits it); returns when it was first
        counted, which the lead's state keeps."""
        emitted = previous = None
        if before is not None and conversion.stage in before.emitted:
            emitted = before.emitted[conversion.stage]
            previous = before.conversion(conversion.stage, self.settings.lookback)
            if emitted.first_channel is not None:  # what the emitted version said: the state may hold more since
                previous = previous.model_copy(
                    update={
                        "first_channel": emitted.first_channel,
                        "last_channel": emitted.last_channel,
                        "revenue": emitted.revenue,
                    }
                )
        # A state written before counted_at existed: its earlier version was counted in an unknown window, so
        # the change is counted now.
        counted_at = emitted.counted_at if emitted is not None and emitted.counted_at is not None else time.time()
        self.counters.record(conversion, previous, counted_at)
        return counted_at

    # -- erasure (closedloop erase; stream_jobs.rules.erasure) --------------------------------------------------

    async def _erase_lead(self, command: LeadEvent) -> None:
        """Delete the lead's state (a tombstone in its changelog), tombstone it on the leads topic, and send an
        erase command to each visitor and contact key that points at it."""
        lead_id, request_id = command.lead_id, command.event_id
        before = self.leads.get(lead_id)
        visitors, contacts = erasure.targets(before, command)
        key = _key(lead_id)
        await self.outputs.send(self.names.leads, key, None)
        for target, keys in (("visitor", visitors), ("contact", contacts)):
            for table_key in keys:
                record = erasure.EraseCommand(target=target, key=table_key, lead_id=lead_id, request_id=request_id)
                await self.outputs.send(self.erasures_name, _key(table_key), record_bytes(record))
        await self._erase_result(
            request_id, lead_id, "leads table", int(before is not None), follow_ups=len(visitors) + len(contacts)
        )
        if before is not None:
            del self.leads[lead_id]
        self.scoring.erase(lead_id)
        self.held.pop(lead_id, None)
        log.info(
            "lead erased",
            extra={"lead_id": lead_id, "request_id": request_id, "visitors": len(visitors), "contacts": len(contacts)},
        )

    async def _erasures_agent(self, stream: Any) -> None:
        await self._each(stream, self._on_erase_command)

    async def _on_erase_command(self, event: Any) -> None:
        command = serde.loads(event.value, erasure.EraseCommand)
        if command.target == "visitor":
            before = self.visitors.get(command.key)
            after = visitor_rules.forget_lead(before, command.lead_id) if before is not None else None
            changed = after is not None and after is not before
            await self._erase_result(command.request_id, command.lead_id, "visitors table", int(changed))
            if changed:
                self.visitors[command.key] = after
            return
        contact = self.contacts.get(command.key)
        mapped = contact is not None and contact.lead_id == command.lead_id
        await self._erase_result(command.request_id, command.lead_id, "contacts table", int(mapped))
        if mapped:
            del self.contacts[command.key]

    async def _erase_result(
        self, request_id: str, lead_id: str, place: erasure.Place, removed: int, follow_ups: int = 0
    ) -> None:
        result = erasure.EraseResult(
            request_id=request_id,
            lead_id=lead_id,
            place=place,
            removed=removed,
            follow_ups=follow_ups,
            applied_at=datetime.now(timezone.utc),
        )
        await self.outputs.send(self.erasure_results_name, _key(request_id), record_bytes(result))
