"""When a lead becomes sales-ready: threshold crossings, hand-raisers, and the reset that allows a new cycle.

Pure rules. A lead's readiness state is a cycle number and whether that cycle's record was issued. One sales-ready
record per lead and cycle: its id is ``<lead_id>:<cycle>``, so a replay that re-decides the same cycle yields the
same id (the ClickHouse table collapses it) and the issued marker in table state stops a second record at the
source. The documented reset: the CRM moves the lead to ``lost`` or ``disqualified``; the next crossing (or
hand-raiser) then opens cycle ``n + 1``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

RESET_STAGES = frozenset({"lost", "disqualified", "closedlost", "unqualified"})
OPEN_OPPORTUNITY_STAGES = frozenset({"opportunity", "salesqualifiedlead", "sql"})
HAND_RAISER_FORMS = frozenset({"demo", "contact"})
PRICING_PATTERN = "/pricing*"


@dataclass(frozen=True)
class Readiness:
    """Per-lead marker kept in table state: the current cycle and whether its record went out."""

    cycle: int = 0
    issued: bool = False


@dataclass(frozen=True)
class Decision:
    """The state after an event, and the reason a sales-ready record is due now (empty: none)."""

    state: Readiness
    reason: str = ""

    @property
    def ready(self) -> bool:
        return bool(self.reason)


def is_pricing(path: str) -> bool:
    return fnmatch.fnmatchcase(path.lower(), PRICING_PATTERN)


def hand_raiser(form_kind: str = "", path: str = "", returning: bool = False) -> str:
    """The hand-raiser rule that fires for this event, or "": a demo/contact form, or pricing by a returning lead."""
    if form_kind.lower() in HAND_RAISER_FORMS:
        return f"hand_raiser:form:{form_kind.lower()}"
    if path and returning and is_pricing(path):
        return "hand_raiser:pricing_returning"
    return ""


def decide(state: Readiness, score: float, threshold: float, hand_raised: str = "", stage: str = "") -> Decision:
    """Apply one scored event to the readiness state; at most one ready decision per cycle."""
    if stage.lower() in RESET_STAGES:
        return Decision(Readiness(state.cycle, False) if state.issued else state)
    if state.issued:
        return Decision(state)
    reason = hand_raised or ("threshold" if score >= threshold else "")
    if not reason:
        return Decision(state)
    return Decision(Readiness(state.cycle + 1, True), reason)


def record_id(lead_id: str, cycle: int) -> str:
    """Stable id of a sales-ready record: the sink and any outbox deduplicate on it."""
    return f"{lead_id}:{cycle}"


def buying_signal(stage: str, path: str, pricing_views_before: int) -> bool:
    """A contact of an open opportunity visits pricing again: sales should hear about it."""
    return stage.lower() in OPEN_OPPORTUNITY_STAGES and is_pricing(path) and pricing_views_before >= 1
