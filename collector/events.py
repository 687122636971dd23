"""``POST /v1/events``: turning a request body into envelopes, and envelopes into Kafka records.

The body is one event object, a JSON array of them, or ``{"batch": [...]}``. An event is the payload fields of
one ``schemas`` event with its ``type``, plus the optional ``event_id`` (client-made, kept on resends so
downstream drops the copy; else the collector makes a UUID) and ``sent_at`` (the client's clock).
``occurred_at`` defaults to the time the collector received the event; one outside the accepted times
(``collector.window``: by default five years back to a day ahead) is rejected naming the field and the window.

Browser write keys may send ``page_view`` and ``identify`` only; ``crm_status`` and ``spend`` need a server key.
Valid events of a batch are accepted even when others are not; the others are reported by index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NamedTuple

import orjson
from pydantic import TypeAdapter, ValidationError

from collector import page_view_records, window
from collector.errors import ApiError, validation_errors
from collector.spool import SpoolRecord
from collector.webhooks import without_emails
from schemas.events import CrmStatusChange, Envelope, Identify, PageView, SpendRow
from schemas.settings import DEV_LEAD_ID_KEY
from schemas.topics import Topics

BROWSER_TYPES = frozenset({"page_view", "identify"})
SERVER_TYPES = frozenset({"page_view", "identify", "crm_status", "spend"})


class Accepted(NamedTuple):
    """One accepted event: its id (answered to the client), its type (for the metrics), its Kafka record."""

    event_id: str
    type: str
    record: SpoolRecord


@dataclass
class ParsedBatch:
    """The outcome of one body: the accepted events in the body's order, and per-index rejections."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def parse_json(body: bytes) -> Any:
    """orjson, with the position of a syntax error in the message."""
    if not body.strip():
        raise ApiError(400, "empty_body", 'the request body is empty; send a JSON event, array or {"batch": [...]}')
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None


def event_items(document: Any, max_events: int) -> list[Any]:
    """The list of event objects in a body of any accepted shape."""
    if isinstance(document, dict) and "batch" in document:
        items = document["batch"]
        if not isinstance(items, list) or len(document) != 1:
            raise ApiError(
                400,
                "invalid_shape",
                'a batch body must be exactly {"batch": [event, ...]}',
                [{"loc": "batch", "msg": "expected a list of event objects"}],
            )
    elif isinstance(document, dict):
        items = [document]
    elif isinstance(document, list):
        items = document
    else:
        raise ApiError(
            400,
            "invalid_shape",
            f'expected an event object, a JSON array of them or {{"batch": [...]}}, got {type(document).__name__}',
        )
    if not items:
        raise ApiError(400, "empty_batch", "the batch holds no event")
    if len(items) > max_events:
        raise ApiError(
            413, "batch_too_large", f"the batch holds {len(items)} events; at most {max_events} are allowed per request"
        )
    return items


def parse_events(
    items: list[Any],
    *,
    site_id: str,
    allowed_types: frozenset[str],
    received_at: datetime,
    user_agent: str | None,
    topics: Topics,
    accepted_times: window.AcceptedTimes = window.DEFAULT,
    lead_key: bytes = DEV_LEAD_ID_KEY.encode(),
) -> ParsedBatch:
    """Validate every item; records for the good ones, ``{"index", "errors"}`` for the others.

    Page views in the tracker's shape take ``collector.page_view_records`` (the models' rules without building models).
    The other items' envelopes are validated in one pydantic call (one TypeAdapter over the list), which saves
    the per-call overhead of validating them one by one; when that call finds any error, the items are validated
    one at a time instead, so that each rejection names its own index and fields.

    A ``crm_status`` event's record and contact ids that are email addresses are replaced by their lead id
    (``lead_key``: ``CLOSEDLOOP_LEAD_ID_KEY``), as the CRM webhooks do.
    """
    batch = ParsedBatch()
    accepted: dict[int, Accepted] = {}
    candidates: list[tuple[int, dict[str, Any], list[dict[str, str]]]] = []
    ids = _EventIds(len(items))
    page_views = None
    if "page_view" in allowed_types:
        page_views = page_view_records.PageViews(
            site_id=site_id,
            received_at=received_at,
            user_agent=user_agent,
            topic=topics.events,
            new_event_id=ids.new,
            accepted_times=accepted_times,
        )
    for index, item in enumerate(items):
        if page_views is not None and type(item) is dict and item.get("type") == "page_view":
            taken = page_views.record(item)
            if taken is not None:
                accepted[index] = Accepted(taken[0], "page_view", taken[1])
                continue
        try:
            fields, errors = _prepare(item, site_id, allowed_types, received_at, user_agent, ids)
        except _Rejected as exc:
            batch.rejected.append({"index": index, "errors": exc.errors})
            continue
        candidates.append((index, fields, errors))
    envelopes: list[tuple[int, Envelope]] = []
    if candidates and not any(errors for _, _, errors in candidates):
        try:
            valid = _ENVELOPES.validate_python([fields for _, fields, _ in candidates])
            envelopes = [(index, envelope) for (index, _, _), envelope in zip(candidates, valid, strict=False)]
            candidates = []
        except ValidationError:
            pass  # at least one is invalid: find which, one by one
    for index, fields, errors in candidates:
        try:
            envelopes.append((index, _validate(fields, errors)))
        except _Rejected as exc:
            batch.rejected.append({"index": index, "errors": exc.errors})
    for index, envelope in envelopes:
        problem = accepted_times.problem(envelope.event.occurred_at, envelope.received_at)
        if problem is not None:
            batch.rejected.append({"index": index, "errors": [{"loc": "occurred_at", "msg": problem}]})
            continue
        if isinstance(envelope.event, CrmStatusChange):
            envelope = envelope.model_copy(update={"event": without_emails(envelope.event, lead_key)})
        accepted[index] = Accepted(envelope.event_id, envelope.event.type, record_for(envelope, topics))
    batch.accepted = [accepted[index] for index in sorted(accepted)]
    batch.rejected.sort(key=lambda rejection: rejection["index"])
    return batch


_ENVELOPES: TypeAdapter[list[Envelope]] = TypeAdapter(list[Envelope])
_ENVELOPE_JSON = Envelope.__pydantic_serializer__


class _Rejected(Exception):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors


# uuid4's version (4) and variant (RFC 4122) bits, applied to every id's byte 6 and byte 8 at once.
_UUID4_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_UUID4_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))


class _EventIds:
    """UUID4 hex ids for events sent without one, from one ``os.urandom`` call per request.

    ``uuid.uuid4()`` makes a getrandom syscall per id, a cost paid for every event of a batch (docs/COLLECTOR.md,
    "Why the hot path looks this way"); the bytes are the same kind (the kernel's CSPRNG), with the version and
    variant bits set as uuid4 sets them, for the whole pool in two ``translate`` calls, and the pool turned to hex
    once: an id is then a slice of that text.
    """

    def __init__(self, count: int) -> None:
        self._count = count
        self._hex = ""
        self._next = 0

    def new(self) -> str:
        if self._next >= len(self._hex):
            pool = bytearray(os.urandom(16 * max(1, min(self._count, 1024))))
            pool[6::16] = pool[6::16].translate(_UUID4_VERSION)
            pool[8::16] = pool[8::16].translate(_UUID4_VARIANT)
            self._hex = pool.hex()
            self._next = 0
        start = self._next
        self._next += 32
        return self._hex[start : self._next]


def _prepare(
    item: Any,
    site_id: str,
    allowed: frozenset[str],
    received_at: datetime,
    user_agent: str | None,
    ids: _EventIds,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The envelope fields of one item, and the errors found before pydantic runs; raise _Rejected early."""
    if not isinstance(item, dict):
        raise _Rejected([{"loc": "", "msg": f"expected an event object, got {type(item).__name__}"}])
    fields = dict(item)
    event_type = fields.get("type")
    if event_type is None:
        raise _Rejected([{"loc": "type", "msg": "field required: one of " + ", ".join(sorted(SERVER_TYPES))}])
    if not isinstance(event_type, str) or event_type not in SERVER_TYPES:
        raise _Rejected(
            [
                {
                    "loc": "type",
                    "msg": f"unknown event type {event_type!r}; expected one of {', '.join(sorted(SERVER_TYPES))}",
                }
            ]
        )
    if event_type not in allowed:
        raise _Rejected(
            [
                {
                    "loc": "type",
                    "msg": f"{event_type!r} events need a server key (X-Closedloop-Key); "
                    "browser write keys may send page_view and identify only",
                }
            ]
        )
    errors: list[dict[str, str]] = []
    event_id = fields.pop("event_id", None)
    if event_id is None:
        event_id = ids.new()
    elif not isinstance(event_id, str) or not 1 <= len(event_id.strip()) <= 128:
        errors.append({"loc": "event_id", "msg": "must be a string of 1 to 128 characters (or left out)"})
        event_id = "invalid"
    sent_at = fields.pop("sent_at", None)
    fields.setdefault("occurred_at", received_at)
    if event_type == "page_view" and user_agent and fields.get("user_agent") is None:
        fields["user_agent"] = user_agent[:512]
    envelope = {
        "event_id": event_id.strip() if isinstance(event_id, str) else event_id,
        "site_id": site_id,
        "sent_at": sent_at,
        "received_at": received_at,
        "event": fields,
    }
    return envelope, errors


def _validate(envelope_fields: dict[str, Any], errors: list[dict[str, str]]) -> Envelope:
    """One validation pass over the whole envelope: the contract's validators run once per event."""
    try:
        envelope = Envelope.model_validate(envelope_fields)
    except ValidationError as exc:
        for error in validation_errors(exc):
            loc = error["loc"]
            if loc == "event" or loc.startswith("event."):
                loc = loc[len("event.") :]
            elif loc == "sent_at":
                error["msg"] = "must be an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z (or left out)"
            errors.append({"loc": loc, "msg": error["msg"]})
    if errors:
        raise _Rejected(errors)
    return envelope


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def record_for(envelope: Envelope, topics: Topics) -> SpoolRecord:
    """The Kafka record of an envelope: which topic, which key (see ARCHITECTURE.md's topic table)."""
    event = envelope.event
    if isinstance(event, (PageView, Identify)):
        topic, key = topics.events, event.visitor_id
    elif isinstance(event, CrmStatusChange):
        topic, key = topics.crm, event.lead_key
    elif isinstance(event, SpendRow):
        topic, key = topics.spend, event.spend_key
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"no topic for {type(event).__name__}")
    return SpoolRecord(topic, key.encode("utf-8"), envelope_json(envelope))


def envelope_json(envelope: Envelope) -> bytes:
    """The same bytes as ``schemas.serde.dumps(envelope)`` (a unit test holds them equal), from the models' fields.

    Dumping the model first was one of the costliest steps of an event (docs/COLLECTOR.md, "Why the hot path
    looks this way"). The validated models hold only JSON-ready values: str, int, None, dicts of str, enums,
    dates, UTC datetimes (orjson writes them as pydantic does with ``OPT_UTC_Z``) and Decimals. Anything else (a
    field type added later) makes orjson give up, and pydantic-core writes the record instead.
    """
    fields = dict(envelope.__dict__)
    fields["event"] = envelope.event.__dict__
    try:
        return orjson.dumps(fields, option=orjson.OPT_UTC_Z, default=_decimal_text)
    except TypeError:
        return _ENVELOPE_JSON.to_json(envelope)


def _decimal_text(value: Any) -> str:
    if type(value) is Decimal:
        return str(value)
    raise TypeError(f"not a JSON-ready value: {type(value).__name__}")
