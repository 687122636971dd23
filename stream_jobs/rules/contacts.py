"""CRM contacts without an email: which lead a ``<crm>:<contact id>`` belongs to, and the CRM events waiting
for the answer. Pure transitions; the contacts agent keeps one :class:`ContactState` per contact key.

How the mapping is learnt
    Every CRM record that names both an email and a contact id teaches ``contact key -> lead id``. The CRM agent
    re-keys that fact (a :class:`ContactRecord` of kind ``mapping``) to the internal ``{app_id}-crm-contacts``
    topic by contact key, and re-keys contact-id-only CRM events there too (kind ``event``), so both meet in one
    partition of the contacts table.

Holding
    A contact-id-only event whose contact is not mapped yet is held in the table (at most :data:`HELD_LIMIT` per
    contact) and released, in arrival order, to the lead as soon as a mapping arrives. Held events beyond the
    limit are sent to the dead-letter topic (never silently dropped). A contact that is mapped again to another
    lead (its email changed in the CRM) sends its later events to the new lead.

    Held events also wait a bounded time (``CLOSEDLOOP_CONTACT_HOLD_SECONDS``, a week by default): a sweep record
    (kind ``sweep``, its ``at`` the worker's clock when it sent it) reaches every partition of the contacts topic
    at an interval, and :func:`expire_held` hands back the events received (``Envelope.received_at``) longer than
    that before it, which the contacts agent dead-letters with the reason. Time on the sweep, not the wall clock
    in the agent, so a replayed sweep expires the same events.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.events import Envelope

HELD_LIMIT = 1000


class ContactRecord(BaseModel):
    """What the CRM agent sends to the contacts agent, keyed by contact key."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["mapping", "event", "sweep"]
    contact_key: str
    lead_id: str | None = None
    envelope: Envelope | None = None
    at: datetime | None = None  # a sweep's time


class ContactState(BaseModel):
    """The lead a CRM contact belongs to (once known), and its CRM events waiting for it."""

    model_config = ConfigDict(frozen=True)

    lead_id: str | None = None
    held: tuple[Envelope, ...] = ()


def apply_contact_record(
    state: ContactState | None, record: ContactRecord, held_limit: int = HELD_LIMIT
) -> tuple[ContactState, list[tuple[str, Envelope]], list[Envelope]]:
    """Returns (new state, [(lead id, CRM event)] to send to the lead now, events over the holding limit)."""
    state = state or ContactState()
    if record.kind == "mapping":
        if record.lead_id is None:
            raise ValueError(f"contact mapping for {record.contact_key!r} has no lead_id")
        released = [(record.lead_id, envelope) for envelope in state.held]
        return ContactState(lead_id=record.lead_id), released, []
    if record.envelope is None:
        raise ValueError(f"contact event for {record.contact_key!r} has no envelope")
    if state.lead_id is not None:
        return state, [(state.lead_id, record.envelope)], []
    if any(held.event_id == record.envelope.event_id for held in state.held):
        return state, [], []  # a replay of an event that is already waiting
    held = (*state.held, record.envelope)
    overflow = list(held[:-held_limit]) if len(held) > held_limit else []
    return state.model_copy(update={"held": held[-held_limit:]}), [], overflow


def expire_held(state: ContactState, now: datetime, hold: timedelta) -> tuple[ContactState, list[Envelope]]:
    """The state without its held events received more than ``hold`` before ``now``, and those events (in arrival
    order) to dead-letter; the same state when none has waited that long."""
    expired = [envelope for envelope in state.held if envelope.received_at < now - hold]
    if not expired:
        return state, []
    kept = tuple(envelope for envelope in state.held if envelope.received_at >= now - hold)
    return state.model_copy(update={"held": kept}), expired
