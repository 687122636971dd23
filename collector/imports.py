"""CSV imports, the spreadsheet way: CRM status rows and marketing spend rows -> the same Kafka records the
webhooks and the spend model produce.

``crm`` columns: ``email`` (or ``contact_id``), ``stage``, ``date``; optional ``value``, ``currency``, ``reason``
(or ``lost_reason``: why the lead was lost or disqualified), ``id`` (the row's record id in your sheet; defaults to
the lead id of the email, never the address itself).
``spend`` columns: ``date``, ``channel``, ``cost``, ``currency``; optional ``source``, ``medium``, ``campaign``.
Headers are case-insensitive; extra columns are ignored. A bad row is reported with its line number and never
stops the good ones; so is a date outside the accepted times (``collector.window``: by default twenty years back
to a day ahead), a row that is not valid UTF-8 (spreadsheets save in other encodings too) and a row the CSV reader
cannot split (a field over its size limit).

Event ids are derived from the row's content, so importing the same file twice produces records downstream
recognises as the same events.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, TextIO

from pydantic import ValidationError

from collector import window
from collector.errors import validation_errors
from collector.events import now_utc, record_for
from collector.spool import SpoolRecord
from collector.webhooks import without_emails
from schemas.events import CrmStatusChange, Envelope, LifecycleStage, SpendRow, as_utc
from schemas.identity import lead_id_for
from schemas.settings import DEV_LEAD_ID_KEY
from schemas.topics import Topics

ImportKind = Literal["crm", "spend"]

STAGE_NAMES: dict[str, LifecycleStage] = {
    **{stage.value: stage for stage in LifecycleStage},
    "subscriber": LifecycleStage.LEAD,
    "marketing qualified lead": LifecycleStage.MQL,
    "marketingqualifiedlead": LifecycleStage.MQL,
    "sales qualified lead": LifecycleStage.SQL,
    "salesqualifiedlead": LifecycleStage.SQL,
    "opp": LifecycleStage.OPPORTUNITY,
    "won": LifecycleStage.CUSTOMER,
    "closed won": LifecycleStage.CUSTOMER,
    "closedwon": LifecycleStage.CUSTOMER,
    "closed lost": LifecycleStage.LOST,
    "closedlost": LifecycleStage.LOST,
    "unqualified": LifecycleStage.DISQUALIFIED,
}
REQUIRED = {"crm": ("stage", "date"), "spend": ("date", "channel", "cost", "currency")}


class RowRejected(Exception):
    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['loc']}: {e['msg']}" for e in errors))
        self.errors = errors


@dataclass
class ImportSummary:
    rows: int = 0
    accepted: int = 0
    published: int = 0
    rejected: list[tuple[int, list[dict[str, str]]]] = field(default_factory=list)  # (line, errors)
    publish_failures: int = 0


@dataclass(frozen=True)
class UnreadableRow:
    """A data row that cannot be read as text columns: its rejection reasons, as a row's ``RowRejected`` has."""

    errors: list[dict[str, str]]


ENCODING_HINT = "save the file as CSV UTF-8 (in Excel: Save As > CSV UTF-8)"
# Bytes that are not UTF-8 are read as lone surrogates (errors="surrogateescape"), which valid UTF-8 never
# decodes to: one undecodable row is then told apart from the good ones instead of ending the whole import.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _open(path: Path) -> TextIO:
    return open(path, newline="", encoding="utf-8-sig", errors="surrogateescape")


def _undecodable(row: dict[str, str]) -> list[dict[str, str]]:
    """A rejection per column whose text holds bytes that are not UTF-8 (naming the first such byte)."""
    errors = []
    for column, value in row.items():
        found = _UNDECODABLE.search(value)
        if found is not None:
            byte = ord(found.group()) - 0xDC00
            errors.append(
                {
                    "loc": column,
                    "msg": f"not valid UTF-8 (byte 0x{byte:02x} at character {found.start() + 1}); {ENCODING_HINT}",
                }
            )
    return errors


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str] | UnreadableRow]]:
    """(line number, row with lower-cased keys) for every data row; a BOM and blank lines are fine. A row that
    is not valid UTF-8 or that the CSV reader refuses comes as an :class:`UnreadableRow` with the reason."""
    with _open(path) as handle:
        reader = csv.DictReader(handle)
        try:
            if reader.fieldnames is None:
                return
        except csv.Error:
            return  # an unreadable header: missing_columns says so before any row is read
        reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:  # e.g. a field over csv.field_size_limit(): the reader goes on after it
                # DictReader's own line_num moves only on success; its reader's counts the line that failed.
                yield (
                    reader.reader.line_num,
                    UnreadableRow([{"loc": "", "msg": f"cannot read this line as CSV: {error}"}]),
                )
                continue
            line = reader.line_num  # the physical line the row ends on (blank lines counted)
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                continue
            values = {k: (v or "").strip() if isinstance(v, str) else "" for k, v in row.items() if k is not None}
            errors = _undecodable(values)
            yield line, UnreadableRow(errors) if errors else values


def header_problem(path: Path) -> str | None:
    """Why the header line cannot be read (not UTF-8, not CSV), or None."""
    try:
        with _open(path) as handle:
            header = next(csv.reader(handle), [])
    except csv.Error as error:
        return f"the header line cannot be read as CSV: {error}"
    if any(_UNDECODABLE.search(name) for name in header):
        return f"the header line is not valid UTF-8; {ENCODING_HINT}"
    return None


def missing_columns(path: Path, kind: ImportKind) -> list[str]:
    """Required columns the header lacks (checked once, before any row)."""
    try:
        with _open(path) as handle:
            header = next(csv.reader(handle), [])
    except csv.Error:
        header = []
    names = {name.strip().lower() for name in header}
    missing = [name for name in REQUIRED[kind] if name not in names]
    if kind == "crm" and not names & {"email", "contact_id"}:
        missing.append("email (or contact_id)")
    return missing


def crm_envelope(
    row: dict[str, str],
    received_at: datetime,
    accepted_times: window.AcceptedTimes = window.DEFAULT_IMPORT,
    lead_key: bytes = DEV_LEAD_ID_KEY.encode(),
    day_ends_in: tzinfo = timezone.utc,
) -> Envelope:
    """One CRM row -> an envelope with a ``CrmStatusChange`` from the ``spreadsheet`` CRM.

    A ``date`` without a time (``2024-05-03``) is the end of that day in ``day_ends_in``
    (``CLOSEDLOOP_IMPORT_TIME_ZONE``), or the import's time for a row dated today: a sheet says on which day a lead
    was won, and that day's visits and forms came before it, so they are in its journey. Midnight, the earlier
    reading, put the change before every visit of its own day (credited to ``(none)`` when the lead was new).

    The record id is the row's ``id``, else the lead id of its email (``lead_key``: ``CLOSEDLOOP_LEAD_ID_KEY``,
    the stream jobs' key), else its contact id: an id that is an email address is stored as its lead id, since
    the raw email is kept only in the ``leads`` table. The event id is derived from the lead id too, not from the
    address."""
    errors: list[dict[str, str]] = []
    stage = STAGE_NAMES.get(" ".join(row.get("stage", "").lower().replace("_", " ").split()))
    if stage is None:
        errors.append(
            {
                "loc": "stage",
                "msg": f"unknown stage {row.get('stage', '')!r}; use one of "
                + ", ".join(s.value for s in LifecycleStage)
                + " (or won, closed won, closed lost)",
            }
        )
    day_only = len(row.get("date", "")) == 10
    occurred_at = _when(row.get("date", ""), errors, received_at, accepted_times, day_ends_in)
    value = _amount(row.get("value", ""), "value", errors)
    email, contact = row.get("email") or None, row.get("contact_id") or None
    if email is None and contact is None:
        errors.append({"loc": "email", "msg": "empty: each row needs the lead's email (or a contact_id)"})
    if errors:
        raise RowRejected(errors)
    try:
        change = CrmStatusChange(
            crm="spreadsheet",
            crm_object_id=row.get("id") or email or contact or "",
            crm_contact_id=contact,
            email=email,
            stage=stage,
            deal_value=value,
            currency=(row.get("currency") or "").upper() or None,
            reason=row.get("reason") or row.get("lost_reason") or None,
            occurred_at=occurred_at,
        )
    except ValidationError as exc:
        raise RowRejected(validation_errors(exc)) from None
    change = without_emails(change, lead_key)
    who = change.lead_key if change.email is None else lead_id_for(change.email, lead_key)
    # A day-only row's id names its day, not the time it became, so importing the sheet again keeps the id.
    moment = f"{row['date']}@{day_ends_in}" if day_only else change.occurred_at.isoformat()
    digest = _digest(who, change.stage, moment, change.deal_value, change.currency)
    return Envelope(event_id=f"spreadsheet:{digest}", site_id="spreadsheet", received_at=received_at, event=change)


def spend_envelope(
    row: dict[str, str],
    received_at: datetime,
    accepted_times: window.AcceptedTimes = window.DEFAULT_IMPORT,
    lead_key: bytes = b"",
) -> Envelope:
    """One spend row -> an envelope with a ``SpendRow`` (``lead_key`` is unused: spend names nobody)."""
    errors: list[dict[str, str]] = []
    occurred_at = _when(row.get("date", ""), errors, received_at, accepted_times)
    cost = _amount(row.get("cost", ""), "cost", errors)
    if errors:
        raise RowRejected(errors)
    try:
        spend = SpendRow(
            date=occurred_at.date(),
            channel=row.get("channel", ""),
            source=row.get("source", ""),
            medium=row.get("medium", ""),
            campaign=row.get("campaign", ""),
            cost=cost,
            currency=row.get("currency", "").upper(),
            occurred_at=occurred_at,
        )
    except ValidationError as exc:
        raise RowRejected(validation_errors(exc)) from None
    if not spend.channel:
        raise RowRejected([{"loc": "channel", "msg": "must not be empty (e.g. Paid Search)"}])
    return Envelope(
        event_id=f"spend:{_digest(spend.spend_key, spend.cost, spend.currency)}",
        site_id="spend-import",
        received_at=received_at,
        event=spend,
    )


def parse_file(
    path: Path,
    kind: ImportKind,
    topics: Topics,
    summary: ImportSummary,
    on_row: Callable[[int], None] = lambda line: None,
    accepted_times: window.AcceptedTimes = window.DEFAULT_IMPORT,
    lead_key: bytes = DEV_LEAD_ID_KEY.encode(),
    day_zone: tzinfo = timezone.utc,
) -> Iterator[SpoolRecord]:
    """The Kafka records of every good row; bad rows are added to ``summary.rejected`` with their line.
    ``lead_key`` is ``CLOSEDLOOP_LEAD_ID_KEY``, ``day_zone`` ``CLOSEDLOOP_IMPORT_TIME_ZONE`` (see
    :func:`crm_envelope`)."""
    make = functools.partial(crm_envelope, day_ends_in=day_zone) if kind == "crm" else spend_envelope
    received_at = now_utc()
    for line, row in read_rows(path):
        summary.rows += 1
        if isinstance(row, UnreadableRow):
            summary.rejected.append((line, row.errors))
            on_row(line)
            continue
        try:
            envelope = make(row, received_at, accepted_times, lead_key)
        except RowRejected as exc:
            summary.rejected.append((line, exc.errors))
        else:
            summary.accepted += 1
            yield record_for(envelope, topics)
        on_row(line)


def publish_file(
    path: Path,
    kind: ImportKind,
    bootstrap_servers: str,
    topics: Topics,
    on_row: Callable[[int], None] = lambda line: None,
    timeout_s: float = 60.0,
    accepted_times: window.AcceptedTimes = window.DEFAULT_IMPORT,
    lead_key: bytes = DEV_LEAD_ID_KEY.encode(),
    day_zone: tzinfo = timezone.utc,
    client_kwargs: Mapping[str, Any] | None = None,
) -> ImportSummary:
    """Parse and publish (acks=all); returns once every record is acknowledged or failed. ``client_kwargs``: the
    producer's security settings (``schemas.kafka_security.kafka_python_security``)."""
    from kafka import KafkaProducer

    summary = ImportSummary()
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","),
        acks="all",
        linger_ms=20,
        compression_type="lz4",
        enable_idempotence=True,
        **(client_kwargs or {}),
    )
    futures = []
    try:
        for record in parse_file(path, kind, topics, summary, on_row, accepted_times, lead_key, day_zone):
            futures.append(producer.send(record.topic, key=record.key, value=record.value))
        producer.flush(timeout=timeout_s)
    finally:
        producer.close(timeout=10)
    for future in futures:
        if future.succeeded():
            summary.published += 1
        else:
            summary.publish_failures += 1
    return summary


def _when(
    text: str,
    errors: list[dict[str, str]],
    received_at: datetime,
    accepted_times: window.AcceptedTimes,
    day_ends_in: tzinfo | None = None,
) -> datetime:
    """The row's time. A date without a time is midnight UTC, or with ``day_ends_in`` the last microsecond of
    that day in that zone (no later than ``received_at``), see :func:`crm_envelope`."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if day_ends_in is None:
                when = datetime.combine(day, time(0), tzinfo=timezone.utc)
            else:
                when = min(as_utc(datetime.combine(day, time.max, tzinfo=day_ends_in)), received_at)
        else:
            when = as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except (ValueError, OverflowError):  # as_utc's too: a time out of range in UTC
        errors.append({"loc": "date", "msg": f"{text!r} is not a date; use YYYY-MM-DD or ISO 8601 date-time"})
        return received_at
    problem = accepted_times.problem(when, received_at, setting="CLOSEDLOOP_IMPORT_ACCEPT_PAST_DAYS")
    if problem is not None:
        errors.append({"loc": "date", "msg": problem})
    return when


def _amount(text: str, column: str, errors: list[dict[str, str]]) -> Decimal | None:
    if not text:
        return None
    try:
        amount = Decimal(text.replace(" ", ""))
    except InvalidOperation:
        errors.append({"loc": column, "msg": f"{text!r} is not a number; write it like 1200.50 (no currency sign)"})
        return None
    if not amount.is_finite():
        errors.append({"loc": column, "msg": f"{text!r} is not a finite number"})
        return None
    return amount


def _digest(*parts: Any) -> str:
    return hashlib.sha1("|".join("" if p is None else str(p) for p in parts).encode()).hexdigest()[:32]
