"""Erasing a person from the worker's state (``closedloop erase``): the records that carry the command and its
answers, and which table keys it reaches. Pure values; the agents move them (``stream_jobs.runtime.agents``).

How an erasure travels
    The command arrives on ``{p}.lead-events`` as a ``LeadEvent`` of kind ``erase``, keyed by the lead id, so the
    leads agent applies it in order with the lead's other events. It deletes the lead's state (Faust writes the
    tombstone to the table's changelog, so a restarted worker does not bring it back), publishes a tombstone to
    the compacted ``{p}.leads`` topic (the sink deletes the ClickHouse row; compaction drops the email from
    Kafka), and sends one :class:`EraseCommand` per visitor linked to the lead and per CRM contact mapped to it
    to ``{app_id}-erasures``, keyed by that table's key: a record lands in the partition where that key's state
    lives (the same partitioner over the same partition count), and the erasures agent changes the key there.
    Each step answers with an :class:`EraseResult` on ``{app_id}-erasure-results``, which the command reads.

    A worker that is not running applies the command when it starts: it waits in its topic like any record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from stream_jobs.rules.lifecycle import LeadEvent, LeadState

Place = Literal["leads table", "visitors table", "contacts table"]


class EraseCommand(BaseModel):
    """One key of the visitors or contacts table to rid of a lead, on ``{app_id}-erasures`` keyed by ``key``."""

    model_config = ConfigDict(frozen=True)

    target: Literal["visitor", "contact"]
    key: str
    lead_id: str
    request_id: str


class EraseResult(BaseModel):
    """What one step of an erasure removed, on ``{app_id}-erasure-results`` keyed by the request id.

    The leads agent's answer says in ``follow_ups`` how many more answers the request will bring (one per
    :class:`EraseCommand` it sent), so the command knows when the worker is done.
    """

    model_config = ConfigDict(frozen=True)

    request_id: str
    lead_id: str
    place: Place
    removed: int
    follow_ups: int = 0
    applied_at: datetime


def targets(state: LeadState | None, command: LeadEvent) -> tuple[list[str], list[str]]:
    """(visitor ids, contact keys) an erasure of the lead must reach: those its state knows (links, the visitors
    of its journey's touches, mapped contacts) and the visitors the command found elsewhere."""
    visitors = dict.fromkeys(command.visitor_ids)
    contacts: dict[str, None] = {}
    if state is not None:
        visitors.update(dict.fromkeys(state.visitor_ids))
        visitors.update(dict.fromkeys(touch.visitor_id for touch in state.journey))
        contacts.update(dict.fromkeys(state.contact_keys))
    return sorted(visitors), sorted(contacts)
