"""Which page views are touches: the start of a session, per visitor.

``next_touch(state, envelope, rules)`` takes the visitor's :class:`SessionState` (``None`` for a new visitor)
and one page view, and returns the new state and the :class:`~schemas.outputs.Touch` the page view started, if any.

Rules, in the order they are checked:

1. **A new visitor's first page view** starts a session.
2. **A page view older than ``last_seen_at``** (delivered late: a slow network, a retried batch) never moves the
   state back in time. It is a touch only when it carries campaign parameters different from the current
   session's (a late ad click must not be lost); the touch keeps its own, earlier ``occurred_at``, so the journey
   (ordered by time) puts it in its place. When it falls inside the current session, or less than one timeout
   before its start, it is what would have started the current session had it arrived in order: the session's
   start and campaign signature become its own, so the next page views of that campaign do not repeat the touch.
   A late page view without campaign parameters, or with the current ones, is no touch. The state only knows the
   current session, so a late view repeating the campaign of an *older* session makes a second touch of that
   campaign (rare; harmless for last-non-direct, one extra share in linear).
3. **30 minutes of inactivity** (``occurred_at - last_seen_at >= timeout``; the timeout is a parameter,
   ``WorkerSettings.session_timeout``) start a new session.
4. **New campaign parameters** start a new session: a non-empty campaign signature (UTM fields and click ids, see
   :func:`stream_jobs.rules.channels.campaign_signature`) that differs from the current session's. A reload of the same
   campaign link, or a later page without parameters, continues the session. A changed referrer alone (the visitor
   went to Google and came back within 30 minutes) does not start one: like a direct visit within an active
   session, it is no new touch.
5. Anything else continues the session: ``last_seen_at`` moves forward, no touch.

A new session is a touch unless :func:`~stream_jobs.rules.channels.classify` says its referrer is internal (no
campaign parameters, referrer on the site's own hosts): then the session starts without a touch and the visit
stays credited to the visitor's previous touch (a tab left open for an hour, then a click on a link; or a site
where only some pages carry the tracker).

``touch_id = sha1(visitor_id|event_id)[:20]``: a replayed page view gives the same touch id.

A touch keeps the ad click ids of its page view (gclid, gbraid, wbraid, msclkid, li_fat_id as sent; fbclid as
Meta's ``fbc`` value ``fb.1.<click time, ms>.<fbclid>``, the click time being the page view's), and its ad consent
and Do-Not-Track flag (docs/ADS.md).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.events import Envelope, PageView
from schemas.outputs import Touch
from stream_jobs.rules.channels import ChannelRules, campaign_signature, classify

SESSION_TIMEOUT = timedelta(minutes=30)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def fbc_for(fbclid: str, clicked_at: datetime) -> str:
    """Meta's ``fbc`` value for a click: ``fb.1.<click time in ms since the epoch>.<fbclid>`` (subdomain index 1)."""
    return f"fb.1.{(clicked_at - _EPOCH) // timedelta(milliseconds=1)}.{fbclid}"


class SessionState(BaseModel):
    """What is remembered per visitor between page views; serialises to small JSON (a Faust table value)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    last_seen_at: datetime
    session_started_at: datetime
    campaign_signature: str = ""
    last_touch_id: str | None = None
    last_touch_at: datetime | None = None


def touch_id_for(visitor_id: str, event_id: str) -> str:
    """The deterministic id of the touch a page view starts."""
    return hashlib.sha1(f"{visitor_id}|{event_id}".encode("utf-8")).hexdigest()[:20]


def next_touch(
    state: SessionState | None,
    envelope: Envelope,
    rules: ChannelRules,
    timeout: timedelta = SESSION_TIMEOUT,
) -> tuple[SessionState, Touch | None]:
    """The visitor's state after one page view, and the touch that page view started (``None``: no new touch).

    Raises TypeError when the envelope does not hold a page view (route identify events elsewhere).
    """
    page_view = envelope.event
    if not isinstance(page_view, PageView):
        raise TypeError(f"next_touch needs a page_view envelope; event {envelope.event_id} is a {page_view.type!r}")
    at = page_view.occurred_at
    signature = campaign_signature(page_view)

    if state is not None and at < state.last_seen_at:
        return _late(state, envelope, page_view, signature, rules, timeout)

    if state is not None:
        inactive = at - state.last_seen_at >= timeout
        new_campaign = bool(signature) and signature != state.campaign_signature
        if not inactive and not new_campaign:
            return state.model_copy(update={"last_seen_at": at}), None

    touch = _touch(envelope, page_view, rules)
    new_state = SessionState(
        last_seen_at=at,
        session_started_at=at,
        campaign_signature=signature,
        last_touch_id=touch.touch_id if touch else (state.last_touch_id if state else None),
        last_touch_at=touch.occurred_at if touch else (state.last_touch_at if state else None),
    )
    return new_state, touch


def _late(
    state: SessionState,
    envelope: Envelope,
    page_view: PageView,
    signature: str,
    rules: ChannelRules,
    timeout: timedelta,
) -> tuple[SessionState, Touch | None]:
    """A page view older than the newest one seen: see rule 2 of the module docstring."""
    if not signature or signature == state.campaign_signature:
        return state, None
    touch = _touch(envelope, page_view, rules)
    update: dict[str, Any] = {}
    at = page_view.occurred_at
    if at > state.session_started_at - timeout:  # in order, it would have started the current session
        update.update(session_started_at=at, campaign_signature=signature)
    if touch is not None and (state.last_touch_at is None or touch.occurred_at >= state.last_touch_at):
        update.update(last_touch_id=touch.touch_id, last_touch_at=touch.occurred_at)
    return state.model_copy(update=update), touch


def _touch(envelope: Envelope, page_view: PageView, rules: ChannelRules) -> Touch | None:
    classification = classify(page_view, rules)
    if classification is None:
        return None
    return Touch(
        touch_id=touch_id_for(page_view.visitor_id, envelope.event_id),
        visitor_id=page_view.visitor_id,
        site_id=envelope.site_id,
        occurred_at=page_view.occurred_at,
        channel=classification.channel,
        source=classification.source,
        medium=classification.medium,
        campaign=classification.campaign,
        term=classification.term,
        content=classification.content,
        click_id=classification.click_id,
        referrer_host=classification.referrer_host,
        landing_path=page_view.path or "/",
        event_id=envelope.event_id,
        gclid=page_view.gclid or "",
        gbraid=page_view.gbraid or "",
        wbraid=page_view.wbraid or "",
        msclkid=page_view.msclkid or "",
        fbc=fbc_for(page_view.fbclid, page_view.occurred_at) if page_view.fbclid else "",
        li_fat_id=page_view.li_fat_id or "",
        ads_consent=page_view.ads_consent,
        do_not_track=page_view.do_not_track,
    )
