"""Page views in the tracker's shape, checked and serialized without building pydantic models.

Page views are nearly all of a site's events, and validating each through ``Envelope`` (pydantic-core plus the
page view's Python validators) and then serializing the models was the largest part of the collector's CPU for a
batch (docs/COLLECTOR.md, "Why the hot path looks this way"). For a page view whose values are plain JSON strings
(or null where the model allows it) and whose times are ISO 8601 as the tracker writes them
(``2024-05-01T12:00:00.123Z``), :class:`PageViews` applies the model's own rules and builds the Kafka record
straight from the item:

- every text field: stripped as pydantic strips (``str_strip_whitespace``), then its length limits, which are read
  from the model's JSON schema, so they cannot drift from it;
- ``ads_consent`` is ``granted``, ``denied`` or null and ``do_not_track`` a JSON boolean, as sent;
- ``visitor_id`` is not a placeholder; ``url`` is an absolute http(s) URL; UTM fields, click ids and the path are
  taken from the URL by the same function the model uses (``schemas.events.fields_from_url``, kept per URL);
- times are converted to UTC as the model converts them; an ``occurred_at`` outside the accepted times
  (``collector.window``) is left to the models' path, which rejects it naming the window; ``occurred_at``
  defaults to the time received, the user agent to the request's header, ``event_id`` to a new id, as in
  ``collector.events``.

Anything else (a number, list or object where text is expected, an unknown or misspelt field, another time
format, a value that breaks a rule, whitespace pydantic and Python strip differently) returns None, and the caller
validates the item with the pydantic models: the model decides, and its error is the one reported. So this
module can only make an event faster, never accept what the model rejects nor write it differently;
``tests/test_page_view_records.py`` checks that both paths give the same record bytes and key.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any, Callable
from urllib.parse import SplitResult

import orjson

from collector import window
from collector.spool import SpoolRecord
from schemas.events import SCHEMA_VERSION, PageView, absolute_http_url, as_utc, fields_from_url, text_limits
from schemas.identity import is_junk_identifier


class _NotFast(Exception):
    """The item needs the pydantic models: they accept it differently or reject it with the right message."""


TEXT_FIELDS = text_limits(PageView)
REQUIRED_TEXT = tuple(name for name in PageView.model_json_schema()["required"] if name in TEXT_FIELDS)
# Field order of the records (orjson writes a dict in its order; the models write theirs in declaration order).
PAGE_VIEW_FIELDS = tuple(PageView.model_fields)

# Whitespace pydantic-core (Rust's ``str::trim``) and ``str.strip`` both remove; at the edges after it, any other
# character ``str.isspace`` knows sends the item to the models (Python also strips U+001C-U+001F, Rust does not).
_ASCII_SPACE = " \t\n\r\x0b\x0c"
# The times the fast path reads; pydantic reads these to the same instant (and many more forms, left to it).
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)?")


class PageViews:
    """The fast path for the page views of one request; what they share (site, times, user agent) is done once."""

    def __init__(
        self,
        *,
        site_id: str,
        received_at: datetime,
        user_agent: str | None,
        topic: str,
        new_event_id: Callable[[], str],
        accepted_times: window.AcceptedTimes = window.DEFAULT,
    ) -> None:
        self._usable = 1 <= len(site_id) <= 128
        self._site_id = site_id
        self._topic = topic
        self._new_event_id = new_event_id
        self._received_at = as_utc(received_at)
        self._earliest, self._latest = accepted_times.bounds(self._received_at)
        # The default occurred_at and the received_at of every record, as text: orjson writes a datetime and its
        # own text of it the same way, and formatting the datetime again for each record was a tenth of its cost.
        self._received_text = orjson.dumps(self._received_at, option=orjson.OPT_UTC_Z)[1:-1].decode()
        self._template: dict[str, Any] = dict.fromkeys(PAGE_VIEW_FIELDS)
        self._template["type"] = "page_view"
        self._template["do_not_track"] = False  # the model's default; ads_consent's (None) is fromkeys' already
        self._template["occurred_at"] = self._received_text
        self._user_agent: str | None = None
        self._user_agent_usable = True
        if user_agent:
            try:
                self._user_agent = _text(user_agent[:512], TEXT_FIELDS["user_agent"])
            except _NotFast:
                self._user_agent_usable = False

    def record(self, item: dict[str, Any]) -> tuple[str, SpoolRecord] | None:
        """``(event_id, record)`` of a page view the models would accept, as they would write it; else None."""
        if not self._usable:
            return None
        try:
            return self._record(item)
        except (_NotFast, ValueError, TypeError):  # ValueError: a bad URL or date; TypeError: orjson refused a value
            return None

    def _record(self, item: dict[str, Any]) -> tuple[str, SpoolRecord]:
        event = self._template.copy()
        event_id: str | None = None
        sent_at: datetime | None = None
        for name, value in item.items():
            limits = TEXT_FIELDS.get(name)
            if limits is not None:
                if value is None:
                    if not limits[2]:
                        raise _NotFast
                else:
                    event[name] = _text(value, limits)
            elif name == "type":
                if value != "page_view":
                    raise _NotFast
            elif name == "ads_consent":
                if value is not None and value not in ("granted", "denied"):
                    raise _NotFast  # the model coerces or rejects it (stripped, or with its message)
                event[name] = value
            elif name == "do_not_track":
                if type(value) is not bool:
                    raise _NotFast
                event[name] = value
            elif name == "occurred_at":
                occurred_at = _time(value)
                if not self._earliest <= occurred_at <= self._latest:
                    raise _NotFast  # the models' path answers with the window
                event[name] = occurred_at
            elif name == "sent_at":
                sent_at = None if value is None else _time(value)
            elif name == "event_id":
                if type(value) is not str or not 1 <= len(value.strip()) <= 128:
                    raise _NotFast
                event_id = value.strip()
            else:
                raise _NotFast
        for name in REQUIRED_TEXT:
            if event[name] is None:
                raise _NotFast
        if is_junk_identifier(event["visitor_id"]):
            raise _NotFast
        if event["user_agent"] is None:
            if not self._user_agent_usable:
                raise _NotFast
            event["user_agent"] = self._user_agent
        from_url, path = _url_fields(event["url"])
        for name, value in from_url:
            if event[name] is None:
                event[name] = value
        if event["path"] is None:
            event["path"] = path
        if event_id is None:
            event_id = self._new_event_id()
        envelope = {
            "event_id": event_id,
            "site_id": self._site_id,
            "sent_at": sent_at,
            "received_at": self._received_text,
            "schema_version": SCHEMA_VERSION,
            "event": event,
        }
        value = orjson.dumps(envelope, option=orjson.OPT_UTC_Z)
        return event_id, SpoolRecord(self._topic, event["visitor_id"].encode("utf-8"), value)


# Sites send the same pages over and over, and a batch repeats them: what a URL gives is kept per URL, in a bounded
# LRU cache (a URL is at most 4096 characters). A bad URL is not cached: its item goes to the models anyway. A miss
# costs about 0.6 us more than no cache (bench/collector.md, 2026-12-06); a hit saves 2-4 us. (Visitor ids are not
# cached: checking one costs about 0.2 us, less than a miss.)


@functools.lru_cache(maxsize=2048)
def _url_fields(url: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """What ``fields_from_url`` takes from ``url`` for an event that has none of those fields: ``((name, value),
    ...)`` in its order, and the path; ValueError when ``url`` is not an absolute http(s) URL."""
    updates = fields_from_url(split_http_url(url), {})
    path = updates.pop("path")
    return tuple(updates.items()), path


def split_http_url(url: str) -> SplitResult:
    """``schemas.events.absolute_http_url(url)``, the same parts or the same ValueError, faster for plain URLs.

    ``urllib.parse.urlsplit`` costs about 4 us a URL (it keeps only the last 128 in a cache: a site has more
    pages). A URL that is ASCII, has no tab or line break (which urlsplit deletes), starts with ``http://`` or
    ``https://`` and has a host without brackets (which urlsplit checks as an IPv6 address) is split here as
    urlsplit splits it: the host ends at the first ``/``, ``?`` or ``#``, the fragment after the first ``#``,
    the query after the first ``?`` before it. Anything else goes to ``absolute_http_url``.
    ``tests/test_page_view_records.py`` holds both to the same answer.
    """
    if url.isascii() and "\t" not in url and "\n" not in url and "\r" not in url:
        if url.startswith("https://"):
            scheme, start = "https", 8
        elif url.startswith("http://"):
            scheme, start = "http", 7
        else:
            return absolute_http_url(url)
        end = len(url)
        for delimiter in "/?#":
            at = url.find(delimiter, start, end)
            if at >= 0:
                end = at
        netloc = url[start:end]
        if netloc and "[" not in netloc and "]" not in netloc:
            rest, _, fragment = url[end:].partition("#")
            path, _, query = rest.partition("?")
            return SplitResult(scheme, netloc, path, query, fragment)
    return absolute_http_url(url)


def _text(value: Any, limits: tuple[int, int, bool]) -> str:
    if type(value) is not str:
        raise _NotFast
    value = value.strip(_ASCII_SPACE)
    if value and (value[0].isspace() or value[-1].isspace()):
        raise _NotFast
    if not limits[0] <= len(value) <= limits[1]:
        raise _NotFast
    return value


def _time(value: Any) -> datetime:
    if type(value) is not str or not _TIME.fullmatch(value):
        raise _NotFast
    return as_utc(datetime.fromisoformat(value))
