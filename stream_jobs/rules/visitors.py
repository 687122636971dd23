"""Per-visitor state and its pure transitions: what the visitors table holds and how page views and identifies
change it. The visitors agent only moves records in and out; everything it decides is decided here.

:class:`VisitorState` (one per visitor id, a changelog-backed table value):

- ``session``: the sessionisation state (:class:`stream_jobs.rules.sessions.SessionState`);
- ``touches``: the visitor's newest touches, at most ``touch_limit`` (``WorkerSettings.visitor_touch_limit``,
  default 50), in time order. They are what an identify carries to the lead; touches after the visitor is
  identified go to the lead as they happen, so the bound only matters for a visitor with more than 50 sessions
  before the first form (their oldest ones are then not attributed);
- ``pages``: a page sequence summary: page view count, first/last seen, the last :data:`RECENT_PATHS` paths
  (repeats of the same path in a row collapsed);
- ``links``: the visitor's identity links (see :mod:`stream_jobs.rules.identity` for the shared-computer rule);
- ``offset``: the last source offset applied, so that records redelivered after a crash are skipped;
- ``number``: the visitor's number (:func:`visitor_number`), given when the state is created and copied onto
  every touch, so that ClickHouse counts distinct visitors with bitmaps (``Touch.visitor_number``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.events import Envelope, Identify, PageView
from schemas.outputs import IdentityLink, Touch
from stream_jobs.rules.channels import ChannelRules
from stream_jobs.rules.identity import VisitorLink, add_link, lead_for, touches_to_carry
from stream_jobs.rules.sessions import SESSION_TIMEOUT, SessionState, next_touch

RECENT_PATHS = 20
TOUCH_LIMIT = 50
OFFSET_BITS = 40  # a partition's offsets below 2**40 - 1; partitions below 2**24


def visitor_number(partition: int, offset: int) -> int:
    """The number of a visitor first seen at ``offset`` of events-topic ``partition``: ``(partition << 40) +
    offset + 1``.

    Unique (one event has one visitor), never 0, and the same when a crash replays that first event. Numbers are
    dense where a partition's events are (a few events per visitor), which keeps ClickHouse's roaring bitmaps of
    visitors small and fast to merge. Outside the ranges above the visitor gets 0: ClickHouse then counts it
    with the visitors from before numbers (``visitor_days``), still exactly.
    """
    if 0 <= partition < 2**24 and 0 <= offset < 2**OFFSET_BITS - 1:
        return (partition << OFFSET_BITS) + offset + 1
    return 0


class PageSummary(BaseModel):
    """How much of the site a visitor has seen, and the latest pages in order."""

    model_config = ConfigDict(frozen=True)

    page_views: int = 0
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None
    recent_paths: tuple[str, ...] = ()

    def add(self, path: str, at: datetime) -> "PageSummary":
        paths = self.recent_paths
        if not paths or paths[-1] != path:
            paths = (*paths, path)[-RECENT_PATHS:]
        return PageSummary(
            page_views=self.page_views + 1,
            first_seen_at=at if self.first_seen_at is None or at < self.first_seen_at else self.first_seen_at,
            last_seen_at=at if self.last_seen_at is None or at > self.last_seen_at else self.last_seen_at,
            recent_paths=paths,
        )


class VisitorState(BaseModel):
    """Everything the visitors table keeps per visitor. Immutable: transitions return a new one."""

    model_config = ConfigDict(frozen=True)

    visitor_id: str
    session: SessionState | None = None
    touches: tuple[Touch, ...] = ()
    pages: PageSummary = PageSummary()
    links: tuple[VisitorLink, ...] = ()
    offset: int = -1  # offset of the last events-topic record applied (all of a visitor's events share a partition)
    number: int = 0  # visitor_number() of the visitor's first event; 0 for a state made before numbers existed

    def applied(self, offset: int) -> bool:
        """True when the record at ``offset`` was applied already: a redelivery after a crash (at least once).

        Sessionisation depends on order, so replaying an old page view through a newer state could make a touch
        that the first pass did not; such records are skipped instead.
        """
        return 0 <= offset <= self.offset

    @property
    def lead_id(self) -> str | None:
        """The lead the visitor's newest link points to (None while anonymous)."""
        return self.links[-1].lead_id if self.links else None


def apply_page_view(
    state: VisitorState | None,
    envelope: Envelope,
    rules: ChannelRules,
    *,
    number: int = 0,
    timeout: timedelta = SESSION_TIMEOUT,
    touch_limit: int = TOUCH_LIMIT,
) -> tuple[VisitorState, Touch | None]:
    """One page view: update session and page summary; return the touch it started, with its lead if known.

    ``number`` is the visitor's number if this page view is the first event seen of the visitor
    (:func:`visitor_number` of its partition and offset); a known visitor keeps the number it has.
    """
    page_view = envelope.event
    if not isinstance(page_view, PageView):
        raise TypeError(f"apply_page_view needs a page_view; event {envelope.event_id} is a {page_view.type!r}")
    state = state or VisitorState(visitor_id=page_view.visitor_id, number=number)
    session, touch = next_touch(state.session, envelope, rules, timeout)
    update: dict[str, Any] = {
        "session": session,
        "pages": state.pages.add(page_view.path or "/", page_view.occurred_at),
    }
    if touch is not None and any(known.touch_id == touch.touch_id for known in state.touches):
        touch = None  # a replayed page view: its touch was emitted already
    if touch is not None:
        touch = touch.model_copy(
            update={"visitor_number": state.number, "lead_id": lead_for(state.links, touch.occurred_at)}
        )
        touches = sorted((*state.touches, touch), key=lambda t: (t.occurred_at, t.touch_id))
        update["touches"] = tuple(touches[-touch_limit:])
    return state.model_copy(update=update), touch


def apply_identify(
    state: VisitorState | None, envelope: Envelope, lead_id: str, *, number: int = 0
) -> tuple[VisitorState, IdentityLink | None, list[Touch]]:
    """A form submit or identify call: link the visitor to ``lead_id`` under the shared-computer rule.
    ``number`` as for :func:`apply_page_view`.

    Returns the new state, the identity link when it is new (else None), and the touches the link carries to the
    lead (those the link now owns, with ``lead_id`` set).
    """
    identify = envelope.event
    if not isinstance(identify, Identify):
        raise TypeError(f"apply_identify needs an identify; event {envelope.event_id} is a {identify.type!r}")
    state = state or VisitorState(visitor_id=identify.visitor_id, number=number)
    link = VisitorLink(lead_id=lead_id, linked_at=identify.occurred_at, event_id=envelope.event_id)
    links, is_new = add_link(state.links, link)
    if not is_new:
        return state, None, []
    carried = [t.model_copy(update={"lead_id": lead_id}) for t in touches_to_carry(links, state.touches, lead_id)]
    carried_ids = {t.touch_id for t in carried}
    touches = tuple(
        t.model_copy(update={"lead_id": lead_id}) if t.touch_id in carried_ids else t for t in state.touches
    )
    identity_link = IdentityLink(
        visitor_id=identify.visitor_id,
        lead_id=lead_id,
        linked_at=identify.occurred_at,
        event_id=envelope.event_id,
        form_id=identify.form_id or "",
        ads_consent=identify.ads_consent,
        do_not_track=identify.do_not_track,
    )
    return state.model_copy(update={"links": links, "touches": touches}), identity_link, carried


def forget_lead(state: VisitorState, lead_id: str) -> VisitorState:
    """The visitor without its links to ``lead_id`` and with that lead taken off its touches (``closedloop
    erase``): the cookie's history stays, anonymous; the same state when the visitor was never linked to it."""
    links = tuple(link for link in state.links if link.lead_id != lead_id)
    if len(links) == len(state.links) and all(t.lead_id != lead_id for t in state.touches):
        return state
    touches = tuple(t.model_copy(update={"lead_id": None}) if t.lead_id == lead_id else t for t in state.touches)
    return state.model_copy(update={"links": links, "touches": touches})
