"""Fast decoding of canonical records into row tuples, without building pydantic models.

Every topic the sink reads is written by this pipeline with ``schemas.serde.dumps`` (the collector validates each
envelope, the stream jobs emit pydantic models), so nearly every record is in *canonical form*: exactly the
model's fields, strings already stripped, times as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``, decimals as plain strings.
For such a record the checks below are the model's own constraints (types, lengths, enums, ranges, identifiers,
absolute URL) and the row is built straight from the decoded record, several times faster than
``model_validate_json`` (bench/sink.md, session 10). msgspec decodes each record into a Struct typed from its
model and checks in compiled code what a type can say (the fields, JSON types, lengths, enums, most integer
ranges); the rest is checked in Python after it. Checked times and decimals stay the record's strings:
``sinks.rows.encode`` writes a model's ``datetime`` and ``Decimal`` as exactly those strings, so no object is
built for them.

Anything else (a missing or extra field, another time or number format, a value pydantic would coerce or reject,
an envelope that is not a page view) raises :class:`NotCanonical` (or msgspec's ``DecodeError``), and the caller
validates the record with the pydantic model: the model decides, and its error is the dead-letter reason. So this
module can only make a record faster, never accept what the model rejects or store it differently;
``tests/test_sink_rows.py`` checks that both paths give the same rows, on generated records too.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.events import (
    CLICK_ID_FIELDS,
    UTM_FIELDS,
    Envelope,
    LifecycleStage,
    PageView,
    absolute_http_url,
    fields_from_url,
    text_limits,
)
from schemas.identity import is_junk_identifier
from schemas.outputs import (
    CLICK_KINDS,
    AdClick,
    AttributionModel,
    Conversion,
    Credit,
    CreditedTouch,
    IdentityLink,
    Lead,
    Touch,
    TouchCredit,
)

UINT16_MAX = 2**16 - 1
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


class NotCanonical(Exception):
    """The record is not in canonical form: validate it with its pydantic model instead."""


def _fields(model) -> tuple[str, ...]:
    return tuple(model.model_fields)


ENVELOPE_FIELDS = _fields(Envelope)
PAGE_VIEW_FIELDS = _fields(PageView)
STAGES = frozenset(s.value for s in LifecycleStage)
MODELS = frozenset(m.value for m in AttributionModel)
_FILLED_FROM_URL = UTM_FIELDS + CLICK_ID_FIELDS
# PageView's text limits, ``name -> (min, max, may be null)``, read from the model's JSON schema.
_PAGE_VIEW_TEXT = text_limits(PageView)
# Decimal formats every value of which the models accept: Share (0..1, 9 places), Money (18 digits, 2 places).
_SHARE = re.compile(r"(?:0(?:\.\d{1,9})?|1(?:\.0{1,9})?)")
_MONEY = re.compile(r"-?\d{1,16}(?:\.\d{1,2})?")
_shares: set[str] = set()  # credits and prices repeat: check each distinct string once
_amounts: set[str] = set()


def _time(value) -> str:
    """A canonical UTC time string, checked (``fromisoformat`` rejects e.g. month 13) and returned as it is.

    Canonical is what the models write: seconds, or microseconds when there are any (``...00.000000Z`` is
    written ``...00Z``, so it is not canonical)."""
    if (
        type(value) is str
        and value[-1:] == "Z"
        and value[10:11] == "T"
        and (len(value) == 20 or len(value) == 27 and value[19:] != ".000000Z")
    ):
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


def _uint(value, low: int, high: int) -> int:
    if type(value) is int and low <= value <= high:
        return value
    raise NotCanonical


def _record_struct(name: str, fields: tuple[str, ...], types: dict, texts: dict[str, tuple[int, int, bool]]):
    """A msgspec Struct with ``fields`` in order: the given types, else text within the model's length limits.

    Raises at import when a field has neither, i.e. when a model gained a field this module does not know how to
    check (the fast path would otherwise accept records without that field's rule).
    """
    unknown = [field for field in fields if field not in types and field not in texts]
    if unknown:
        raise RuntimeError(f"sinks.canonical_rows does not know how to check the fields {unknown} of {name}")

    def text(limits: tuple[int, int, bool]):
        low, high, nullable = limits
        checked = (
            str if (low, high) == (0, sys.maxsize) else Annotated[str, msgspec.Meta(min_length=low, max_length=high)]
        )
        return checked | None if nullable else checked

    return msgspec.defstruct(
        name, [(field, types.get(field) or text(texts[field])) for field in fields], forbid_unknown_fields=True
    )


# -- output topics (emitted by the stream jobs) ---------------------------------------------------------------
#
# Times, decimals and currencies arrive as text and are checked by the functions above; msgspec's integer bounds
# stop at int64, so the UInt64 visitor number is checked here too. Field order does not matter (the row is built
# from the Struct).

_UINT32 = Annotated[int, msgspec.Meta(ge=0, le=UINT32_MAX)]
_VERSION = Annotated[int, msgspec.Meta(ge=1, le=UINT32_MAX)]  # the models' ge=1, the column's UInt32
_STAGE = Literal[tuple(sorted(STAGES))]  # type: ignore[valid-type]  # built from the models' enums at import
_MODEL = Literal[tuple(sorted(MODELS))]  # type: ignore[valid-type]


def _output_decoder(model, types: dict) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(_record_struct(f"{model.__name__}Record", _fields(model), types, text_limits(model)))


_CONSENT = {"ads_consent": Literal["granted", "denied"] | None, "do_not_track": bool}
_TOUCH = _output_decoder(Touch, {"visitor_number": int, "occurred_at": str, **_CONSENT})
_IDENTITY_LINK = _output_decoder(IdentityLink, {"linked_at": str, **_CONSENT})
_CLICK_KIND = Literal[CLICK_KINDS]  # type: ignore[valid-type]  # built from the model's kinds at import
_CLICK = _record_struct(
    "AdClickRecord",
    _fields(AdClick),
    {"kind": _CLICK_KIND, "value": Annotated[str, msgspec.Meta(min_length=1)], "clicked_at": str},
    text_limits(AdClick),
)
_LEAD = _output_decoder(Lead, {"first_identified_at": str})
_CREDITED_TOUCH = _record_struct(
    "CreditedTouchRecord", _fields(CreditedTouch), {"occurred_at": str | None}, text_limits(CreditedTouch)
)
_TOUCH_CREDIT = _record_struct(
    "TouchCreditRecord",
    _fields(TouchCredit),
    {"model": _MODEL, "touch_index": _UINT32, "credit": str, "revenue": str},
    text_limits(TouchCredit),
)
_CONVERSION = _output_decoder(
    Conversion,
    {
        "stage": _STAGE,
        "occurred_at": str,
        "revenue": str | None,
        "currency": str | None,
        "touch_count": _UINT32,
        "version": _VERSION,
        "clicks": list[_CLICK],  # type: ignore[valid-type]
        "ads_consent": Literal["granted", "denied"] | None,
        "touches": list[_CREDITED_TOUCH],  # type: ignore[valid-type]  # built from the model at import
        "credits": list[_TOUCH_CREDIT],  # type: ignore[valid-type]
    },
)
_CREDIT = _output_decoder(
    Credit,
    {
        "stage": _STAGE,
        "model": _MODEL,
        "touch_index": _UINT32,
        "touch_at": str | None,
        "converted_at": str,
        "credit": str,
        "revenue": str,
        "currency": str | None,
        "version": _VERSION,
    },
)


def touch_row(value: bytes) -> tuple:
    t = _TOUCH.decode(value)
    lead_id = t.lead_id or ""
    return (
        t.touch_id,
        t.visitor_id,
        _uint(t.visitor_number, 0, UINT64_MAX),
        lead_id,
        1 if lead_id else 0,
        t.site_id,
        _time(t.occurred_at),
        t.channel,
        t.source,
        t.medium,
        t.campaign,
        t.term,
        t.content,
        t.click_id,
        t.referrer_host,
        t.landing_path,
        t.event_id,
        t.gclid,
        t.gbraid,
        t.wbraid,
        t.msclkid,
        t.fbc,
        t.li_fat_id,
        t.ads_consent or "",
        1 if t.do_not_track else 0,
    )


def identity_link_row(value: bytes) -> tuple:
    link = _IDENTITY_LINK.decode(value)
    return (link.visitor_id, link.lead_id, _time(link.linked_at), link.event_id, link.form_id)


def lead_row(value: bytes) -> tuple:
    lead = _LEAD.decode(value)
    return (lead.lead_id, lead.email, _time(lead.first_identified_at))


def conversion_rows(value: bytes) -> list[tuple[str, tuple]]:
    """The ``conversions`` row of an attributed conversion and one ``credits`` row per credit in it (the rows
    ``rows.model_rows`` makes of it, and the rows the credits topic's records made before 2026-12-06)."""
    c = _CONVERSION.decode(value)
    revenue = c.revenue
    occurred_at = _time(c.occurred_at)
    currency = _currency(c.currency)
    conversion_id, lead_id, stage, version = c.conversion_id, c.lead_id, c.stage, c.version
    rows: list[tuple[str, tuple]] = [
        (
            "conversions",
            (
                conversion_id,
                lead_id,
                stage,
                occurred_at,
                None if revenue is None else _money(revenue),
                currency,
                c.touch_count,
                c.first_channel,
                c.last_channel,
                c.event_id,
                c.reason or "",
                version,
                [
                    {"kind": click.kind, "value": click.value, "clicked_at": _time(click.clicked_at)}
                    for click in c.clicks
                ],
                c.ads_consent or "",
            ),
        )
    ]
    touches = [
        (t.touch_id, None if t.occurred_at is None else _time(t.occurred_at), t.channel, t.source, t.medium, t.campaign)
        for t in c.touches
    ]
    for credit in c.credits:
        index = credit.touch_index
        if index >= len(touches):
            raise NotCanonical  # the model names the credit that points at no touch
        touch_id, touch_at, channel, source, medium, campaign = touches[index]
        rows.append(
            (
                "credits",
                (
                    conversion_id,
                    lead_id,
                    stage,
                    credit.model,
                    touch_id,
                    index,
                    touch_at,
                    occurred_at,
                    channel,
                    source,
                    medium,
                    campaign,
                    _share(credit.credit),
                    _money(credit.revenue),
                    currency,
                    version,
                ),
            )
        )
    return rows


def credit_row(value: bytes) -> tuple:
    c = _CREDIT.decode(value)
    touch_at = c.touch_at
    return (
        c.conversion_id,
        c.lead_id,
        c.stage,
        c.model,
        c.touch_id,
        c.touch_index,
        None if touch_at is None else _time(touch_at),
        _time(c.converted_at),
        c.channel,
        c.source,
        c.medium,
        c.campaign,
        _share(c.credit),
        _money(c.revenue),
        _currency(c.currency),
        c.version,
    )


# -- source topics: page view envelopes (the bulk of the traffic); other event types take the model path ------
#
# msgspec checks every field present and no other, JSON strings where the model has text, the length limits, the
# schema version's range and type == "page_view"; the rest of the model's rules are checked in Python after it.
# Field order does not matter: the event JSON is written from the Struct, in the model's field order, as
# ``redacted_event_json`` writes it from the model (msgspec and orjson write every string the same way;
# ``tests/test_sink_rows.py`` checks every code point).


def _page_view_decoder() -> msgspec.json.Decoder:
    """A decoder of page-view envelopes, typed from ``Envelope`` and ``PageView`` (times are checked by _time)."""
    event = _record_struct(
        "PageViewRecord",
        PAGE_VIEW_FIELDS,
        {"occurred_at": str, "type": Literal["page_view"], **_CONSENT},
        _PAGE_VIEW_TEXT,
    )
    envelope = _record_struct(
        "PageViewEnvelopeRecord",
        ENVELOPE_FIELDS,
        {
            "sent_at": str | None,
            "received_at": str,
            "event": event,
            "schema_version": Annotated[int, msgspec.Meta(ge=0, le=UINT16_MAX)],
        },
        text_limits(Envelope),
    )
    return msgspec.json.Decoder(envelope)


_PAGE_VIEW_DECODER = _page_view_decoder()
# (name, position in msgspec.structs.astuple(event)) of the fields read by position below.
_CLICK_IDS_AT = tuple((name, PAGE_VIEW_FIELDS.index(name)) for name in CLICK_ID_FIELDS)
_FILLED_FROM_URL_AT = tuple((name, PAGE_VIEW_FIELDS.index(name)) for name in _FILLED_FROM_URL)
DecodeError = msgspec.DecodeError  # what the decoder raises for a record it does not take (ValidationError too)


def page_view_rows(value: bytes, topic: str, partition: int, offset: int) -> list[tuple[str, tuple]]:
    """The ``events`` row of a page-view envelope in canonical form (what ``rows.event_rows`` gives for it).

    Raises :class:`NotCanonical`, ``DecodeError`` or ``ValueError`` when the model has to decide."""
    envelope = _PAGE_VIEW_DECODER.decode(value)
    event = envelope.event
    values = msgspec.structs.astuple(event)  # every field is text or null, but do_not_track (a bool)
    for text in values:  # the model strips its texts: a canonical record has nothing to strip
        if type(text) is str and text.strip() is not text:
            raise NotCanonical
    sent_at, visitor_id, url, path = envelope.sent_at, event.visitor_id, event.url, event.path
    if is_junk_identifier(visitor_id) or path is None:  # a placeholder id; a path the model fills from the URL
        raise NotCanonical
    parts = absolute_http_url(url)  # the model's url rule; its ValueError sends the record to the model
    # The model fills a missing UTM field or click id from the URL's query string. A canonical record was
    # filled already, so there is nothing left to fill; if there might be, the model decides. Without
    # %-escapes a missing field's name cannot be in the query (a substring test, cheaper than parsing it);
    # with them (most real campaign URLs) the model's own rule says whether anything is left to fill.
    query = parts.query
    if "%" in query:
        if fields_from_url(parts, dict(zip(PAGE_VIEW_FIELDS, values, strict=False))):
            raise NotCanonical
    elif query:
        for name, i in _FILLED_FROM_URL_AT:
            if values[i] is None and name in query:
                raise NotCanonical
    click_id = ""
    for name, i in _CLICK_IDS_AT:  # rows.event_rows' rule: the first click id present
        if values[i]:
            click_id = name
            break
    row = (
        envelope.event_id,
        "page_view",
        envelope.site_id,
        _time(event.occurred_at),
        _time(envelope.received_at),
        None if sent_at is None else _time(sent_at),
        visitor_id,
        url,
        path,
        event.referrer or "",
        event.utm_source or "",
        event.utm_medium or "",
        event.utm_campaign or "",
        event.utm_term or "",
        event.utm_content or "",
        click_id,
        "",
        "",
        "",
        "",
        "",
        None,
        "",
        envelope.schema_version,
        msgspec.json.encode(event).decode(),
        topic,
        partition,
        offset,
    )
    return [("events", row)]
