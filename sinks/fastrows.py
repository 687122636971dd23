"""Fast decoding of canonical records: orjson dict -> row tuple, without building pydantic models.

Every topic the sink reads is written by this pipeline with ``schemas.serde.dumps`` (the collector validates each
envelope, the stream jobs emit pydantic models), so nearly every record is in *canonical form*: exactly the
model's fields in the model's order, strings already stripped, times as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``,
decimals as plain strings. For such a record the checks below are the model's own constraints (types, lengths,
enums, ranges, identifiers, absolute URL) and the row is built straight from the dict, about five times faster
than ``model_validate_json``. Checked times and decimals stay the record's strings: ``sinks.rows.encode`` writes
a model's ``datetime`` and ``Decimal`` as exactly those strings, so no object is built for them.

Anything else (a missing or extra field, another field order, another time or number format, a value pydantic
would coerce or reject, an envelope that is not a page view) raises :class:`NotCanonical`, and the caller
validates the record with the pydantic model as before: the model decides, and its error is the dead-letter
reason. So this module can only make a record faster, never accept what the model rejects or store it
differently; ``tests/test_sink_rows.py`` checks that both paths give the same rows.
"""

from __future__ import annotations

import re
from datetime import datetime

import orjson

from schemas.events import (CLICK_ID_FIELDS, UTM_FIELDS, Envelope, LifecycleStage, PageView, absolute_http_url,
                            fields_from_url, text_limits)
from schemas.identity import is_junk_identifier
from schemas.outputs import AttributionModel, Conversion, Credit, IdentityLink, Lead, Touch

UINT16_MAX = 2**16 - 1
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


class NotCanonical(Exception):
    """The record is not in canonical form: validate it with its pydantic model instead."""


def _fields(model) -> tuple[str, ...]:
    return tuple(model.model_fields)


TOUCH_FIELDS = _fields(Touch)
IDENTITY_LINK_FIELDS = _fields(IdentityLink)
LEAD_FIELDS = _fields(Lead)
CONVERSION_FIELDS = _fields(Conversion)
CREDIT_FIELDS = _fields(Credit)
ENVELOPE_FIELDS = _fields(Envelope)
PAGE_VIEW_FIELDS = _fields(PageView)
STAGES = frozenset(s.value for s in LifecycleStage)
MODELS = frozenset(m.value for m in AttributionModel)
_FILLED_FROM_URL = UTM_FIELDS + CLICK_ID_FIELDS
# PageView's text limits, ``name -> (min, max, may be null)``, read from the model's JSON schema.
_PAGE_VIEW_TEXT = text_limits(PageView)
# The optional page-view texts without rules of their own (session_id and path have theirs below).
_OPTIONAL_TEXT = tuple((name, low, high) for name, (low, high, nullable) in _PAGE_VIEW_TEXT.items()
                       if nullable and name not in ("session_id", "path"))

# Decimal formats every value of which the models accept: Share (0..1, 9 places), Money (18 digits, 2 places).
_SHARE = re.compile(r"(?:0(?:\.\d{1,9})?|1(?:\.0{1,9})?)")
_MONEY = re.compile(r"-?\d{1,16}(?:\.\d{1,2})?")
_shares: set[str] = set()  # credits and prices repeat: check each distinct string once
_amounts: set[str] = set()


def _time(value) -> str:
    """A canonical UTC time string, checked (``fromisoformat`` rejects e.g. month 13) and returned as it is."""
    if type(value) is str and (len(value) == 20 or len(value) == 27) and value[-1] == "Z" and value[10] == "T":
        datetime.fromisoformat(value)  # ValueError is caught by the caller
        return value
    raise NotCanonical


def _decimal(value, pattern: re.Pattern, seen: set[str]) -> str:
    if type(value) is not str:
        raise NotCanonical
    if value not in seen:
        if pattern.fullmatch(value) is None:
            raise NotCanonical
        if len(seen) > 50_000:
            seen.clear()
        seen.add(value)
    return value


def _share(value) -> str:
    return _decimal(value, _SHARE, _shares)


def _money(value) -> str:
    return _decimal(value, _MONEY, _amounts)


def _currency(value) -> str:
    if value is None:
        return ""
    if type(value) is str and len(value) == 3 and value.isascii() and value.isalpha() and value.isupper():
        return value
    raise NotCanonical


def _strings(*values) -> None:
    for value in values:
        if type(value) is not str:
            raise NotCanonical


def _uint(value, low: int, high: int) -> int:
    if type(value) is int and low <= value <= high:
        return value
    raise NotCanonical


# -- output topics (emitted by the stream jobs) ---------------------------------------------------------------


def touch_row(d: dict) -> tuple:
    if tuple(d) != TOUCH_FIELDS:
        raise NotCanonical
    lead_id = d["lead_id"]
    if lead_id is None:
        lead_id = ""
    (touch_id, visitor_id, site_id, channel, source, medium, campaign, term, content, click_id, referrer_host,
     landing_path, event_id) = (d["touch_id"], d["visitor_id"], d["site_id"], d["channel"], d["source"], d["medium"],
                                d["campaign"], d["term"], d["content"], d["click_id"], d["referrer_host"],
                                d["landing_path"], d["event_id"])
    _strings(lead_id, touch_id, visitor_id, site_id, channel, source, medium, campaign, term, content, click_id,
             referrer_host, landing_path, event_id)
    return (touch_id, visitor_id, _uint(d["visitor_number"], 0, UINT64_MAX), lead_id, 1 if lead_id else 0, site_id,
            _time(d["occurred_at"]), channel, source, medium, campaign, term, content, click_id, referrer_host,
            landing_path, event_id)


def identity_link_row(d: dict) -> tuple:
    if tuple(d) != IDENTITY_LINK_FIELDS:
        raise NotCanonical
    visitor_id, lead_id, event_id, form_id = d["visitor_id"], d["lead_id"], d["event_id"], d["form_id"]
    _strings(visitor_id, lead_id, event_id, form_id)
    return (visitor_id, lead_id, _time(d["linked_at"]), event_id, form_id)


def lead_row(d: dict) -> tuple:
    if tuple(d) != LEAD_FIELDS:
        raise NotCanonical
    lead_id, email = d["lead_id"], d["email"]
    _strings(lead_id, email)
    return (lead_id, email, _time(d["first_identified_at"]))


def conversion_row(d: dict) -> tuple:
    if tuple(d) != CONVERSION_FIELDS:
        raise NotCanonical
    conversion_id, lead_id, stage, first, last, event_id = (d["conversion_id"], d["lead_id"], d["stage"],
                                                            d["first_channel"], d["last_channel"], d["event_id"])
    _strings(conversion_id, lead_id, first, last, event_id)
    if stage not in STAGES:
        raise NotCanonical
    revenue = d["revenue"]
    return (conversion_id, lead_id, stage, _time(d["occurred_at"]), None if revenue is None else _money(revenue),
            _currency(d["currency"]), _uint(d["touch_count"], 0, UINT32_MAX), first, last, event_id,
            _uint(d["version"], 1, UINT32_MAX))


def credit_row(d: dict) -> tuple:
    if tuple(d) != CREDIT_FIELDS:
        raise NotCanonical
    conversion_id, lead_id, stage, model, touch_id, channel, source, medium, campaign = (
        d["conversion_id"], d["lead_id"], d["stage"], d["model"], d["touch_id"], d["channel"], d["source"],
        d["medium"], d["campaign"])
    _strings(conversion_id, lead_id, touch_id, channel, source, medium, campaign)
    if stage not in STAGES or model not in MODELS:
        raise NotCanonical
    touch_at = d["touch_at"]
    return (conversion_id, lead_id, stage, model, touch_id, _uint(d["touch_index"], 0, UINT32_MAX),
            None if touch_at is None else _time(touch_at), _time(d["converted_at"]), channel, source, medium,
            campaign, _share(d["credit"]), _money(d["revenue"]), _currency(d["currency"]),
            _uint(d["version"], 1, UINT32_MAX))


# -- source topics: page view envelopes (the bulk of the traffic); other event types take the model path ------


def _text(value, limits: tuple[int, int, bool]) -> str:
    """A stripped string within the length limits (the payload models strip whitespace before checking)."""
    if type(value) is str and limits[0] <= len(value) <= limits[1] and value.strip() is value:
        return value
    raise NotCanonical


def _identifier(value) -> str:
    if type(value) is str and 1 <= len(value) <= 128:
        return value
    raise NotCanonical


def page_view_rows(d: dict, topic: str, partition: int, offset: int) -> list[tuple[str, tuple]]:
    """The ``events`` row of a canonical page-view envelope (what ``rows.event_rows`` gives for it)."""
    if tuple(d) != ENVELOPE_FIELDS:
        raise NotCanonical
    event = d["event"]
    if type(event) is not dict or event.get("type") != "page_view" or tuple(event) != PAGE_VIEW_FIELDS:
        raise NotCanonical
    event_id, site_id = _identifier(d["event_id"]), _identifier(d["site_id"])
    sent_at = d["sent_at"]
    sent_at = None if sent_at is None else _time(sent_at)
    received_at = _time(d["received_at"])
    schema_version = _uint(d["schema_version"], 0, UINT16_MAX)

    visitor_id = _text(event["visitor_id"], _PAGE_VIEW_TEXT["visitor_id"])
    if is_junk_identifier(visitor_id):
        raise NotCanonical
    if event["session_id"] is not None:
        _text(event["session_id"], _PAGE_VIEW_TEXT["session_id"])
    url = _text(event["url"], _PAGE_VIEW_TEXT["url"])
    parts = absolute_http_url(url)  # the model's url rule; its ValueError sends the record to the model
    path = event["path"]
    if path is None:  # filled from the URL by the model
        raise NotCanonical
    path = _text(path, _PAGE_VIEW_TEXT["path"])
    for name, min_length, max_length in _OPTIONAL_TEXT:
        value = event[name]
        if value is not None and (type(value) is not str or not min_length <= len(value) <= max_length
                                  or value.strip() is not value):
            raise NotCanonical
    click_id = _click_id(event)
    # The model fills a missing UTM field or click id from the URL's query string. A canonical record was
    # filled already, so there is nothing left to fill; if there might be, the model decides. Without
    # %-escapes a missing field's name cannot be in the query (a substring test, cheaper than parsing it);
    # with them (most real campaign URLs) the model's own rule says whether anything is left to fill.
    query = parts.query
    if "%" in query:
        if fields_from_url(parts, event):
            raise NotCanonical
    elif query:
        for name in _FILLED_FROM_URL:
            if event[name] is None and name in query:
                raise NotCanonical
    row = (event_id, "page_view", site_id, _time(event["occurred_at"]), received_at, sent_at,
           visitor_id, url, path, event["referrer"] or "", event["utm_source"] or "", event["utm_medium"] or "",
           event["utm_campaign"] or "", event["utm_term"] or "", event["utm_content"] or "", click_id,
           "", "", "", "", "", None, "",
           schema_version, orjson.dumps(event).decode(), topic, partition, offset)
    return [("events", row)]


_CLICK_1, _CLICK_2, _CLICK_3, _CLICK_4 = CLICK_ID_FIELDS


def _click_id(event: dict) -> str:
    """The name of the first click id the page view carries (rows.event_rows' rule), without a generator."""
    return (_CLICK_1 if event[_CLICK_1] else _CLICK_2 if event[_CLICK_2] else _CLICK_3 if event[_CLICK_3]
            else _CLICK_4 if event[_CLICK_4] else "")
