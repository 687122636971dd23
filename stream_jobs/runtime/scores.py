"""Lead scores in the leads agent: the scores table and its outputs (the rules: ``stream_jobs.rules.lead_scores``).

The leads agent hands every lead event to :meth:`Scoring.apply` before its lifecycle step. The score state lives
in its own table (``scores``, keyed by lead id like ``lead-events``, so its changelog partition is the event's and
under ``exactly_once`` it commits in the same transaction as the outputs and the source offset). As everywhere in
the worker, the outputs are queued before the table write: a state that records a cycle as issued is never saved
when sending its record failed.

Outputs: ``{p}.lead-scores`` (a :class:`LeadScore` per change), ``{p}.sales-ready`` (a :class:`SalesReadyLead` per
lead and cycle) and ``{p}.outbox`` (an :class:`OutboxMessage` per sales-ready record and per buying signal, for
``closedloop deliver``), all keyed by lead id.
"""

from __future__ import annotations

import logging
from typing import Any

from stream_jobs.rules import lead_scores
from stream_jobs.rules.lead_scores import ScoreState
from stream_jobs.rules.lifecycle import LeadEvent, LeadState
from stream_jobs.rules.scoring import DEFAULT_RULES, ScoringRules, load_scoring_rules
from stream_jobs.runtime.outputs import Outputs, record_bytes
from stream_jobs.runtime.topology import SCORES_TABLE
from stream_jobs.settings import WorkerSettings

log = logging.getLogger(__name__)


def scoring_rules(settings: WorkerSettings) -> ScoringRules:
    """The rules file of the settings, or the defaults; ValueError names the file, the rule and the fix."""
    if settings.scoring_rules_file is None:
        return DEFAULT_RULES
    return load_scoring_rules(settings.scoring_rules_file)


class Scoring:
    """The scores table of one app and what the leads agent sends for it."""

    def __init__(self, app: Any, settings: WorkerSettings, outputs: Outputs, value_type: type) -> None:
        self.settings = settings
        self.rules = scoring_rules(settings)
        self.outputs = outputs
        self.topics = settings.topics
        self.table = app.Table(SCORES_TABLE, partitions=settings.partitions, value_type=value_type)

    async def apply(self, event: LeadEvent, lead: LeadState | None) -> None:
        """Score one lead event (``lead`` is the lead's state before it: its journey summarises the record)."""
        if event.kind == "erase":
            return
        before: ScoreState | None = self.table.get(event.lead_id)
        state, outcome = lead_scores.apply_event(
            before,
            event,
            self.rules,
            journey=lead.journey if lead is not None else (),
            limit=self.settings.score_activity_limit,
        )
        key = event.lead_id.encode()
        if outcome.score is not None:
            await self.outputs.send(self.topics.scores, key, record_bytes(outcome.score))
        if outcome.sales_ready is not None:
            ready = outcome.sales_ready
            await self.outputs.send(self.topics.sales_ready, key, record_bytes(ready))
            await self.outputs.send(self.topics.outbox, key, record_bytes(lead_scores.sales_ready_message(ready)))
            log.info(
                "lead sales-ready",
                extra={"lead_id": ready.lead_id, "ready_id": ready.ready_id, "reason": ready.reason},
            )
        if outcome.signal is not None:
            message = lead_scores.buying_signal_message(outcome.signal, state.email, state.score)
            await self.outputs.send(self.topics.outbox, key, record_bytes(message))
            log.info("buying signal", extra={"lead_id": state.lead_id, "signal_id": outcome.signal.signal_id})
        if state is not before:
            self.table[event.lead_id] = state

    def erase(self, lead_id: str) -> int:
        """Delete the lead's score state (its changelog gets a tombstone); 1 when there was one."""
        if self.table.get(lead_id) is None:
            return 0
        del self.table[lead_id]
        return 1
