"""Conversion of Kafka records to ClickHouse rows, the columns every table declares, and how rows are sent.

``rows_for(kind, value)`` turns one record's bytes into ``(table, row)`` pairs, or raises :class:`RecordError`
saying why the record does not fit; ``insert(client, table, rows)`` sends rows. The column lists are the single
declaration of the schema the writer inserts into; a test checks the migrated database against them.

A row is a tuple in the table's column order. Times may be ``datetime`` objects (rows built from a pydantic
model) or the record's own canonical ISO 8601 strings (rows built by ``sinks.canonical_rows``, which checked them);
decimals likewise ``Decimal`` or canonical strings. ``encode`` writes both the same way, so the two paths send
identical bytes (``tests/test_sink_rows.py`` compares them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

import orjson
from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from schemas.events import CLICK_ID_FIELDS, CrmStatusChange, Envelope, Identify, PageView, SpendRow
from schemas.outbox import AdFeedback, DeliveryStatus
from schemas.outputs import Conversion, Credit, IdentityLink, Lead, LeadScore, SalesReadyLead, ScorePoints, Touch
from schemas.topics import Topics
from sinks import canonical_rows

TIME = "DateTime64(3, 'UTC')"
LC = "LowCardinality(String)"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    inserted: bool = True  # False: filled by a DEFAULT on the server


def _cols(*spec: tuple) -> tuple[Column, ...]:
    return tuple(Column(*item) for item in spec)


TABLES: dict[str, tuple[Column, ...]] = {
    "events": _cols(
        ("event_id", "String"),
        ("event_type", LC),
        ("site_id", LC),
        ("occurred_at", TIME),
        ("received_at", TIME),
        ("sent_at", f"Nullable({TIME})"),
        ("visitor_id", "String"),
        ("url", "String"),
        ("path", "String"),
        ("referrer", "String"),
        ("utm_source", "String"),
        ("utm_medium", "String"),
        ("utm_campaign", "String"),
        ("utm_term", "String"),
        ("utm_content", "String"),
        ("click_id", "String"),
        ("form_id", "String"),
        ("crm", LC),
        ("crm_object_id", "String"),
        ("crm_contact_id", "String"),
        ("stage", LC),
        ("amount", "Nullable(Decimal(18, 2))"),
        ("currency", LC),
        ("schema_version", "UInt16"),
        ("event", "String"),
        ("kafka_topic", LC),
        ("kafka_partition", "UInt32"),
        ("kafka_offset", "UInt64"),
        ("ingested_at", TIME, False),
    ),
    "touches": _cols(
        ("touch_id", "String"),
        ("visitor_id", "String"),
        ("visitor_number", "UInt64"),
        ("lead_id", "String"),
        ("lead_known", "UInt8"),
        ("site_id", LC),
        ("occurred_at", TIME),
        ("channel", LC),
        ("source", "String"),
        ("medium", LC),
        ("campaign", "String"),
        ("term", "String"),
        ("content", "String"),
        ("click_id", LC),
        ("referrer_host", "String"),
        ("landing_path", "String"),
        ("event_id", "String"),
        ("gclid", "String"),
        ("gbraid", "String"),
        ("wbraid", "String"),
        ("msclkid", "String"),
        ("fbc", "String"),
        ("li_fat_id", "String"),
        ("ads_consent", LC),
        ("do_not_track", "UInt8"),
    ),
    "identity_links": _cols(
        ("visitor_id", "String"),
        ("lead_id", "String"),
        ("linked_at", TIME),
        ("event_id", "String"),
        ("form_id", "String"),
    ),
    "leads": _cols(("lead_id", "String"), ("email", "String"), ("first_identified_at", TIME)),
    "conversions": _cols(
        ("conversion_id", "String"),
        ("lead_id", "String"),
        ("stage", LC),
        ("occurred_at", TIME),
        ("revenue", "Nullable(Decimal(18, 2))"),
        ("currency", LC),
        ("touch_count", "UInt32"),
        ("first_channel", LC),
        ("last_channel", LC),
        ("event_id", "String"),
        ("reason", "String"),
        ("version", "UInt32"),
        ("clicks", f"Array(Tuple(kind {LC}, value String, clicked_at {TIME}))"),
        ("ads_consent", LC),
    ),
    "credits": _cols(
        ("conversion_id", "String"),
        ("lead_id", "String"),
        ("stage", LC),
        ("model", LC),
        ("touch_id", "String"),
        ("touch_index", "UInt32"),
        ("touch_at", f"Nullable({TIME})"),
        ("converted_at", TIME),
        ("channel", LC),
        ("source", "String"),
        ("medium", LC),
        ("campaign", "String"),
        ("credit", "Decimal(12, 9)"),
        ("revenue", "Decimal(18, 2)"),
        ("currency", LC),
        ("version", "UInt32"),
    ),
    "spend": _cols(
        ("date", "Date"),
        ("channel", LC),
        ("source", "String"),
        ("medium", LC),
        ("campaign", "String"),
        ("cost", "Decimal(18, 2)"),
        ("currency", LC),
        ("received_at", TIME),
        ("event_id", "String"),
    ),
    "lead_scores": _cols(
        ("lead_id", "String"),
        ("scored_at", TIME),
        ("score", "Float64"),
        ("breakdown", "Array(Tuple(rule String, points Float64))"),
        ("event_id", "String"),
    ),
    "deliveries": _cols(
        ("delivery_key", "String"),
        ("message_id", "String"),
        ("kind", LC),
        ("lead_id", "String"),
        ("destination", LC),
        ("status", LC),
        ("tries", "UInt16"),
        ("http_status", "Nullable(UInt16)"),
        ("reason", "String"),
        ("finished_at", TIME),
    ),
    "ad_feedback": _cols(
        ("feedback_id", "String"),
        ("conversion_id", "String"),
        ("lead_id", "String"),
        ("stage", LC),
        ("platform", LC),
        ("route", LC),
        ("action", LC),
        ("conversion_name", "String"),
        ("click_kind", LC),
        ("click_id", "String"),
        ("converted_at", TIME),
        ("value", "Nullable(Decimal(18, 2))"),
        ("currency", LC),
        ("status", LC),
        ("reason", "String"),
        ("recorded_at", TIME),
    ),
    "sales_ready_leads": _cols(
        ("ready_id", "String"),
        ("lead_id", "String"),
        ("cycle", "UInt32"),
        ("ready_at", TIME),
        ("reason", LC),
        ("score", "Float64"),
        ("breakdown", "Array(Tuple(rule String, points Float64))"),
        ("journey", "String"),
        ("event_id", "String"),
    ),
}

ROLLUP_TABLES: dict[str, tuple[Column, ...]] = {
    "touches_daily": _cols(
        ("day", "Date"),
        ("channel", LC),
        ("source", "String"),
        ("medium", LC),
        ("campaign", "String"),
        ("visitors", "AggregateFunction(uniqExact, String)"),
        ("touches", "AggregateFunction(uniqExact, String)"),
    ),
    "credits_daily": _cols(
        ("model", LC),
        ("stage", LC),
        ("day", "Date"),
        ("channel", LC),
        ("source", "String"),
        ("medium", LC),
        ("campaign", "String"),
        ("credit", "AggregateFunction(sum, Decimal(12, 9))"),
        ("revenue", "AggregateFunction(sum, Decimal(18, 2))"),
        ("conversions", "AggregateFunction(uniqExact, String)"),
    ),
    "visitor_days": _cols(
        ("grouping", LC),
        ("channel", LC),
        ("campaign", "String"),
        ("visitor_id", "String"),
        ("days", "SimpleAggregateFunction(groupUniqArrayArray, Array(Date))"),
    ),
    "channel_visitors": _cols(
        ("grouping", LC),
        ("period", LC),
        ("starts", "Date"),
        ("channel", LC),
        ("campaign", "String"),
        ("visitors", "AggregateFunction(groupBitmap, UInt64)"),
    ),
    "credit_versions": _cols(
        ("model", LC),
        ("conversion_id", "String"),
        ("oldest", "SimpleAggregateFunction(min, UInt32)"),
        ("newest", "SimpleAggregateFunction(max, UInt32)"),
    ),
}


def insert_columns(table: str) -> list[str]:
    """Names of the columns the writer inserts into ``table``, in the order of its rows."""
    return [c.name for c in TABLES[table] if c.inserted]


# Rows go to ClickHouse as JSONCompactColumns (one JSON array per column), written by orjson in one call: far less
# client CPU than clickhouse-connect's Native encoding, which builds each column in Python, and about the same for
# the server (docs/CLICKHOUSE.md, "The sink"). Times are ISO 8601 with a zone, which the server reads with
# date_time_input_format = 'best_effort'.
INSERT_FORMAT = "JSONCompactColumns"
INSERT_SETTINGS = {"date_time_input_format": "best_effort"}


def _json_default(value):
    if isinstance(value, Decimal):
        return format(value, "f")  # plain digits, like the canonical strings of the fast path (1E+2 -> 100)
    raise TypeError(f"cannot send {type(value).__name__} to ClickHouse")


def encode(rows: list[tuple]) -> bytes:
    """The rows as one JSONCompactColumns document (raises TypeError for a value JSON cannot carry)."""
    return orjson.dumps(list(zip(*rows, strict=False)), default=_json_default, option=orjson.OPT_UTC_Z)


def insert(client: Client, table: str, rows: list[tuple]) -> None:
    """Insert rows (tuples in the order of ``insert_columns(table)``) into ``table``."""
    client.raw_insert(
        table, insert_columns(table), insert_block=encode(rows), settings=INSERT_SETTINGS, fmt=INSERT_FORMAT
    )


# ClickHouse refuses an INSERT whose block spans more partitions than ``max_partitions_per_insert_block`` (100 by
# default, Code 252), however often it is retried: a batch of page views from 500 months would never go in. The
# writer sends each table's rows in blocks of at most this many partitions instead (docs/CLICKHOUSE.md).
MAX_PARTITIONS_PER_INSERT = 100


def _month(value) -> str:
    """The ``toYYYYMM`` partition of a time as the rows carry it, ``YYYY-MM``: from a canonical UTC string, or
    from a datetime (naive = UTC)."""
    if type(value) is str:
        return value[:7]
    value = value.astimezone(timezone.utc) if value.tzinfo is not None else value
    return f"{value.year:04d}-{value.month:02d}"


def _partition_of(table: str) -> Callable[[tuple], object] | None:
    """How to read a row's partition key for a table partitioned by month of ``occurred_at`` or by ``model``
    (sinks/migrations: events and touches by toYYYYMM(occurred_at), credits by model; the others have none)."""
    names = insert_columns(table)
    if table in ("events", "touches"):
        position = names.index("occurred_at")
        return lambda row: _month(row[position])
    if table == "credits":
        position = names.index("model")
        return lambda row: row[position]
    return None


PARTITION_KEYS: dict[str, Callable[[tuple], object]] = {
    table: key for table in TABLES if (key := _partition_of(table)) is not None
}


def partition_blocks(table: str, rows: list[tuple], limit: int = MAX_PARTITIONS_PER_INSERT) -> list[list[int]] | None:
    """Row positions grouped into insert blocks of at most ``limit`` partitions each, or None when all the rows
    fit in one block (the usual case: a batch spans a few months). Rows keep their order within a partition.

    The key is read in Python, so a time ClickHouse stores differently (years outside DateTime64's range are
    clamped) can only make two keys land in one partition, never one key in two: the blocks never hold more
    partitions than counted.
    """
    key = PARTITION_KEYS.get(table)
    if key is None:
        return None
    keys = [key(row) for row in rows]
    if len(set(keys)) <= limit:
        return None
    groups: dict[object, list[int]] = {}
    for position, value in enumerate(keys):
        groups.setdefault(value, []).append(position)
    members = list(groups.values())
    return [[p for group in members[i : i + limit] for p in group] for i in range(0, len(members), limit)]


class RecordKind(StrEnum):
    """What a topic carries, which decides how its records become rows."""

    SOURCE = "source"  # Envelope on events / crm / spend
    TOUCH = "touch"
    IDENTITY_LINK = "identity_link"
    LEAD = "lead"
    CONVERSION = "conversion"  # an attributed conversion: the conversions row and its credits rows
    CREDIT = "credit"  # the credits topic, which workers before 2026-12-06 wrote (one record per credit)
    DELIVERY = "delivery"  # DeliveryStatus on the deliveries topic (closedloop deliver)
    SCORE = "score"  # LeadScore on the lead-scores topic
    SALES_READY = "sales_ready"  # SalesReadyLead on the sales-ready topic
    AD_FEEDBACK = "ad_feedback"  # AdFeedback on the ad-feedback topic (closedloop deliver's ad destinations)


def topic_kinds(topics: Topics) -> dict[str, RecordKind]:
    """Topic name -> kind, for every topic the sink reads."""
    kinds = {name: RecordKind.SOURCE for name in topics.source_topics()}
    kinds.update(
        {
            topics.touches: RecordKind.TOUCH,
            topics.identity_links: RecordKind.IDENTITY_LINK,
            topics.leads: RecordKind.LEAD,
            topics.conversions: RecordKind.CONVERSION,
            topics.credits: RecordKind.CREDIT,
            topics.deliveries: RecordKind.DELIVERY,
            topics.scores: RecordKind.SCORE,
            topics.sales_ready: RecordKind.SALES_READY,
            topics.ad_feedback: RecordKind.AD_FEEDBACK,
        }
    )
    return kinds


class RecordError(ValueError):
    """A record that cannot become a row; the message is the dead-letter reason."""


@dataclass(frozen=True)
class Erasure:
    """A tombstone on the compacted leads topic: delete the lead's row (its raw email)."""

    lead_id: str


class Provenance(NamedTuple):
    """Where a record was read: stored with each raw event. Kafka's own ``ConsumerRecord`` has the same three
    attributes, so the sink passes the record itself (one object less per record)."""

    topic: str
    partition: int
    offset: int


Row = tuple
TableRow = tuple[str, Row]


def _s(value) -> str:
    return "" if value is None else value


def redacted_event_json(payload: PageView | Identify | CrmStatusChange | SpendRow) -> str:
    """The payload as JSON without personal data: no email, form field names kept but values removed."""
    data = payload.model_dump(mode="json")
    if "email" in data:
        data["email"] = None
    if isinstance(payload, Identify):
        data["fields"] = {name: "" for name in payload.fields}
    return orjson.dumps(data).decode()


def event_rows(envelope: Envelope, where: Provenance) -> list[TableRow]:
    """One ``events`` row per envelope, plus a ``spend`` row for spend events."""
    event = envelope.event
    common = (
        envelope.event_id,
        event.type,
        envelope.site_id,
        event.occurred_at,
        envelope.received_at,
        envelope.sent_at,
    )
    provenance = (envelope.schema_version, redacted_event_json(event), where.topic, where.partition, where.offset)
    rows: list[TableRow] = []
    if isinstance(event, PageView):
        click_id = next((name for name in CLICK_ID_FIELDS if getattr(event, name)), "")
        typed: tuple[Any, ...] = (
            event.visitor_id,
            event.url,
            _s(event.path),
            _s(event.referrer),
            _s(event.utm_source),
            _s(event.utm_medium),
            _s(event.utm_campaign),
            _s(event.utm_term),
            _s(event.utm_content),
            click_id,
            "",
            "",
            "",
            "",
            "",
            None,
            "",
        )
    elif isinstance(event, Identify):
        typed = (
            event.visitor_id,
            _s(event.url),
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            _s(event.form_id),
            "",
            "",
            "",
            "",
            None,
            "",
        )
    elif isinstance(event, CrmStatusChange):
        typed = (
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            event.crm,
            event.crm_object_id,
            _s(event.crm_contact_id),
            event.stage.value,
            event.deal_value,
            _s(event.currency),
        )
    else:  # SpendRow
        typed = (
            "",
            "",
            "",
            "",
            event.source,
            event.medium,
            event.campaign,
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            event.cost,
            event.currency,
        )
        rows.append(
            (
                "spend",
                (
                    event.date,
                    event.channel,
                    event.source,
                    event.medium,
                    event.campaign,
                    event.cost,
                    event.currency,
                    envelope.received_at,
                    envelope.event_id,
                ),
            )
        )
    rows.insert(0, ("events", common + typed + provenance))
    return rows


def touch_row(t: Touch) -> Row:
    return (
        t.touch_id,
        t.visitor_id,
        t.visitor_number,
        _s(t.lead_id),
        1 if t.lead_id else 0,
        t.site_id,
        t.occurred_at,
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
        _s(t.ads_consent),
        1 if t.do_not_track else 0,
    )


def identity_link_row(link: IdentityLink) -> Row:
    return (link.visitor_id, link.lead_id, link.linked_at, link.event_id, link.form_id)


def lead_row(lead: Lead) -> Row:
    return (lead.lead_id, lead.email, lead.first_identified_at)


def conversion_row(c: Conversion) -> Row:
    return (
        c.conversion_id,
        c.lead_id,
        c.stage.value,
        c.occurred_at,
        c.revenue,
        _s(c.currency),
        c.touch_count,
        c.first_channel,
        c.last_channel,
        c.event_id,
        _s(c.reason),
        c.version,
        [{"kind": click.kind, "value": click.value, "clicked_at": click.clicked_at} for click in c.clicks],
        _s(c.ads_consent),
    )


def credit_row(c: Credit) -> Row:
    return (
        c.conversion_id,
        c.lead_id,
        c.stage.value,
        c.model.value,
        c.touch_id,
        c.touch_index,
        c.touch_at,
        c.converted_at,
        c.channel,
        c.source,
        c.medium,
        c.campaign,
        c.credit,
        c.revenue,
        _s(c.currency),
        c.version,
    )


def delivery_row(d: DeliveryStatus) -> Row:
    return (
        d.delivery_key,
        d.message_id,
        d.kind,
        d.lead_id,
        d.destination,
        d.status,
        d.tries,
        d.http_status,
        d.reason,
        d.finished_at,
    )


def _breakdown(points: list[ScorePoints]) -> list[dict[str, Any]]:
    """A named tuple column takes JSON objects in the JSON input formats."""
    return [{"rule": p.rule, "points": p.points} for p in points]


def score_row(s: LeadScore) -> Row:
    return (s.lead_id, s.scored_at, s.score, _breakdown(s.breakdown), s.event_id)


def sales_ready_row(r: SalesReadyLead) -> Row:
    journey = r.model_dump(mode="json", include={"first_touch", "touches", "pages", "forms"})
    return (
        r.ready_id,
        r.lead_id,
        r.cycle,  # no email: it lives in `leads` only (migration 0017); report ready-leads joins it
        r.ready_at,
        r.reason,
        r.score,
        _breakdown(r.breakdown),
        orjson.dumps(journey).decode(),
        r.event_id,
    )


def ad_feedback_row(f: AdFeedback) -> Row:
    return (
        f.feedback_id,
        f.conversion_id,
        f.lead_id,
        f.stage,
        f.platform,
        f.route,
        f.action,
        f.conversion_name,
        f.click_kind,
        f.click_id,
        f.converted_at,
        f.value,
        _s(f.currency),
        f.status,
        f.reason,
        f.recorded_at,
    )


_OUTPUTS: dict[RecordKind, tuple[Any, str, Callable[[Any], tuple[Any, ...]]]] = {
    RecordKind.TOUCH: (Touch, "touches", touch_row),
    RecordKind.IDENTITY_LINK: (IdentityLink, "identity_links", identity_link_row),
    RecordKind.LEAD: (Lead, "leads", lead_row),
    RecordKind.CONVERSION: (Conversion, "conversions", conversion_row),
    RecordKind.CREDIT: (Credit, "credits", credit_row),
    RecordKind.DELIVERY: (DeliveryStatus, "deliveries", delivery_row),
    RecordKind.SCORE: (LeadScore, "lead_scores", score_row),
    RecordKind.SALES_READY: (SalesReadyLead, "sales_ready_leads", sales_ready_row),
    RecordKind.AD_FEEDBACK: (AdFeedback, "ad_feedback", ad_feedback_row),
}

# Upper bounds of the unsigned integer columns: pydantic checks ge=0, ClickHouse would wrap silently above.
_UINT32_MAX = 2**32 - 1


_FAST = {
    RecordKind.TOUCH: ("touches", canonical_rows.touch_row),
    RecordKind.IDENTITY_LINK: ("identity_links", canonical_rows.identity_link_row),
    RecordKind.LEAD: ("leads", canonical_rows.lead_row),
    RecordKind.CREDIT: ("credits", canonical_rows.credit_row),
}


def rows_for(
    kind: RecordKind, value: bytes | None, where: Provenance, key: str | None = None
) -> list[TableRow] | Erasure:
    """The rows one record becomes, or an :class:`Erasure` for a leads tombstone; RecordError when it does not fit.

    A record in canonical form (as ``serde.dumps`` writes it) is decoded by ``sinks.canonical_rows`` without building a
    model; any other record is validated by its pydantic model, which decides and explains.
    """
    if value is None:
        if kind is RecordKind.LEAD and key:
            return Erasure(key)
        raise RecordError(f"empty record (no value) on {where.topic}: only the leads topic takes tombstones")
    try:
        if kind is RecordKind.SOURCE:
            return canonical_rows.page_view_rows(value, where.topic, where.partition, where.offset)
        if kind is RecordKind.CONVERSION:
            return canonical_rows.conversion_rows(value)
        if kind in _FAST:  # the outputs written by the hundred thousand; a few kinds take the model path only
            table, fast_row = _FAST[kind]
            return [(table, fast_row(value))]
    except (canonical_rows.NotCanonical, canonical_rows.DecodeError, ValueError):
        pass  # not canonical: the model decides below
    return model_rows(kind, value, where)


def model_rows(kind: RecordKind, value: bytes, where: Provenance) -> list[TableRow]:
    """The rows of a record validated by its pydantic model (every record the fast path does not take)."""
    try:
        if kind is RecordKind.SOURCE:
            return event_rows(Envelope.model_validate_json(value), where)
        model, table, to_row = _OUTPUTS[kind]
        record = model.model_validate_json(value)
    except ValidationError as exc:
        raise RecordError(_validation_reason(kind, exc)) from None
    if kind is RecordKind.CONVERSION:
        if record.version > _UINT32_MAX or record.touch_count > _UINT32_MAX:
            raise RecordError("conversion version or touch_count exceeds UInt32")
        # An attributed conversion: its row, then one credits row per credit (what the credits topic carried).
        return [(table, to_row(record))] + [("credits", credit_row(credit)) for credit in record.credit_records()]
    if kind is RecordKind.CREDIT and (record.version > _UINT32_MAX or record.touch_index > _UINT32_MAX):
        raise RecordError("credit version or touch_index exceeds UInt32")
    return [(table, to_row(record))]


def _validation_reason(kind: RecordKind, exc: ValidationError) -> str:
    """A short reason naming the field paths, e.g. 'not a valid credit: credit: Input should be ...'."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(record)'}: {err['msg']}" for err in exc.errors()[:5]
    )
    return f"not a valid {kind.value} record: {problems}"
