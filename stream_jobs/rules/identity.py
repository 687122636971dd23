"""Identity rules: lead ids from emails, and which lead each of a visitor's touches belongs to.

Pure functions over plain values; the visitors agent keeps a visitor's links in its table and asks these.

Lead id
    ``lead_id_for(email, key)`` (``schemas.identity``, shared with the collector) is HMAC-SHA256 over the
    normalised email (trimmed, lower-cased), hex, first 32 characters. A keyed hash, so analytics tables carry an
    id that cannot be reversed by hashing a list of known addresses; the raw email lives only in the ``leads``
    topic and table (erasable: ``closedloop erase``). Junk values (empty, ``null``,
    ``undefined``, ``anonymous``, ``0``, ``-1`` ...) and non-emails raise ``ValueError``: they never link anything.

The shared-computer rule
    A visitor id may identify as several emails over time (a family laptop, a shop-floor PC). Its links are kept
    as a time-ordered list ``[(lead, linked_at), ...]`` and every touch belongs to exactly one lead:

    - a touch at or after a link belongs to the lead of the latest link at or before it;
    - a touch before the first link belongs to the first lead (the anonymous history is what step 3 of the
      loop is for).

    So a visitor identified as ``a@x`` whose cookie later identifies as ``b@y`` keeps its past touches with
    ``a@x``; only touches from the second identify on go to ``b@y``. Identifying again as the lead that already
    covers that moment (a repeated form, a replay) adds no link. A link is new, and carries the visitor's touches
    that belong to it (:func:`touches_to_carry`), only when it changes the owner of that moment.

    Out of order: a link that arrives late but happened earlier is inserted in time order; touches it now owns
    are carried to its lead. Journeys never lose touches, so such a touch may stay in the other lead's journey
    too (rare: it needs two identifies of one cookie arriving out of order).

Bound: at most :data:`MAX_LINKS` links per visitor (the newest); older ones only matter for very late touches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from schemas.identity import LEAD_ID_LENGTH, is_junk_identifier, lead_id_for
from schemas.outputs import Touch

MAX_LINKS = 20

__all__ = [
    "LEAD_ID_LENGTH",
    "MAX_LINKS",
    "VisitorLink",
    "add_link",
    "is_junk_identifier",
    "lead_for",
    "lead_id_for",
    "touches_to_carry",
]


class VisitorLink(BaseModel):
    """One moment a visitor id identified as a lead."""

    model_config = ConfigDict(frozen=True)

    lead_id: str
    linked_at: datetime
    event_id: str


def _ordered(links: Iterable[VisitorLink]) -> list[VisitorLink]:
    return sorted(links, key=lambda link: (link.linked_at, link.event_id))


def lead_for(links: Sequence[VisitorLink], occurred_at: datetime) -> str | None:
    """The lead a touch at ``occurred_at`` belongs to, or None when the visitor was never identified.

    ``links`` must be in time order (as :func:`add_link` keeps them).
    """
    if not links:
        return None
    owner = links[0].lead_id
    for link in links:
        if link.linked_at <= occurred_at:
            owner = link.lead_id
        else:
            break
    return owner


def add_link(
    links: Sequence[VisitorLink], link: VisitorLink, limit: int = MAX_LINKS
) -> tuple[tuple[VisitorLink, ...], bool]:
    """Add an identify to a visitor's links; returns (links in time order, whether the link is new).

    Not new (links unchanged) when the lead already owns that moment: a repeated form with the same email,
    or a replay of the same identify.
    """
    if lead_for(links, link.linked_at) == link.lead_id:
        return tuple(links), False
    merged = _ordered([*links, link])
    return tuple(merged[-limit:]), True


def touches_to_carry(links: Sequence[VisitorLink], touches: Iterable[Touch], lead_id: str) -> list[Touch]:
    """The visitor's touches that belong to ``lead_id`` under ``links`` (after the new link was added)."""
    return [touch for touch in touches if lead_for(links, touch.occurred_at) == lead_id]
