"""Records the worker cannot process go to ``{p}.dead-letters``, with why and where they came from.

An undecodable record (not JSON, not an ``Envelope``), a record failing validation, an event on the wrong topic,
or one whose processing raised: each becomes one :class:`schemas.outputs.DeadLetter` (reason, topic, partition,
offset, key, raw value) and is counted per source topic. The agent then goes on with the next record: one bad
record never stops the worker, and its offset is committed like any other (it is kept, in the dead-letter topic).
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import orjson
from pydantic import ValidationError

from schemas import serde
from schemas.outputs import DeadLetter
from stream_jobs.runtime.outputs import Outputs

log = logging.getLogger(__name__)

COMPONENT = "stream_jobs"
MAX_VALUE_CHARS = 100_000


def error_reason(error: Exception) -> str:
    """A short, helpful reason: the field paths and messages of a validation error, else the exception."""
    if isinstance(error, ValidationError):
        problems = []
        for item in error.errors()[:5]:
            where = ".".join(str(part) for part in item.get("loc", ())) or "(record)"
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        more = f" (+{error.error_count() - 5} more)" if error.error_count() > 5 else ""
        return f"invalid {error.title}: " + "; ".join(problems) + more
    return f"{type(error).__name__}: {error}"


def record_ids(value: bytes | None) -> dict[str, str]:
    """The ids a source record names, read without validating it, for the log lines about it: ``event_id`` (of an
    envelope, a lead event or a contact record's envelope) and ``lead_id``. Empty when it is not JSON."""
    try:
        record = orjson.loads(value or b"")
    except (orjson.JSONDecodeError, TypeError):  # on the failure path: it must not fail itself
        return {}
    if not isinstance(record, dict):
        return {}
    envelope = record.get("envelope")
    ids = {
        "event_id": record.get("event_id") or (envelope.get("event_id") if isinstance(envelope, dict) else None),
        "lead_id": record.get("lead_id"),
    }
    return {name: found for name, found in ids.items() if isinstance(found, str) and found}


def dead_letter(
    reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> DeadLetter:
    """The dead-letter record for one source record."""
    raw = (value or b"").decode("utf-8", errors="replace")
    return DeadLetter(
        component=COMPONENT,
        reason=reason[:2000],
        topic=topic,
        partition=partition,
        offset=offset,
        key=serde.decode_key(key),
        value=raw[:MAX_VALUE_CHARS],
        failed_at=datetime.now(timezone.utc),
    )


class DeadLetters:
    """Sends dead letters through the agents' outputs (under exactly_once in the source partition's transaction)
    and counts them per source topic."""

    def __init__(self, outputs: Outputs, topic: str) -> None:
        self.outputs = outputs
        self.topic = topic
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    async def send(self, event: Any, reason: str) -> None:
        """Dead-letter the record behind a Faust event (its message gives topic, partition, offset)."""
        message = event.message
        await self.send_record(reason, message.topic, message.partition, message.offset, message.key, message.value)

    async def send_record(
        self, reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        """Dead-letter a record the agent holds itself (a CRM event that waited too long for its contact's email):
        ``topic``, ``partition`` and ``offset`` say which input record the agent was processing."""
        record = dead_letter(reason, topic, partition, offset, key, value)
        self.counts[topic] += 1
        log.warning(
            "dead letter",
            extra={"reason": reason, "topic": topic, "partition": partition, "offset": offset, **record_ids(value)},
        )
        await self.outputs.send(self.topic, key, serde.dumps(record))
