"""Streaming conversion counters: windowed Faust tables served as JSON by the worker's web server.

Three tumbling-window tables (``counters-1m``, ``counters-1h``, ``counters-today``: 60 s, 3600 s, 86400 s,
UTC-aligned) count conversions and sum revenue per ``(model, stage, channel)``, for two models: ``last_touch``
(the conversion's last non-direct channel) and ``first_touch`` (its first channel). A table key is a stage; its
value maps each counter key of that stage (``model|stage|channel``) to ``[conversions, revenue in cents]``, the
entries that came to zero left out. So counting a conversion costs one table write per window, not one per model
and channel (two to four for a re-attributed one): each write is a changelog record through Faust's table and
producer buffer, and those writes were the worker's regression of issue 19 (bench/worker.md, 2026-12-06). Windows
written by an earlier version hold one key per counter key with its ``[conversions, cents]``; they are read the
same way until they expire.

Choices
    - Windows are **processing time** (the worker's wall clock when it first counted the conversion), not the
      time the conversion happened: the counters answer "what converted in the last minute of stream", which is
      what ``closedloop watch`` shows while events flow. Reports by event time come from ClickHouse. The JSON
      says so (``"time": "processing"``), and so does ``watch``.
    - A conversion counts once, in the windows of the moment it was first counted, under the channels and revenue
      of its **newest** version: when a late touch re-emits it (version 2, 3 ...), the previous version's
      contribution is subtracted in those same windows and the new one added (:func:`count_changes`). Counting
      follows emission: a re-emission held back by coalescing (docs/STREAMS.md) is counted when it goes out, once,
      against what the version emitted before said (``Emitted.first_channel``, ``last_channel``, ``revenue``).
      The moment is kept in the lead's state (``Emitted.counted_at``), so a restart does not lose it; under
      ``exactly_once`` the counters' changelogs, the leads table and the input offsets commit together, so a
      replay counts nothing twice. A window already expired is not written back.
    - Each worker serves the counts of the partitions it owns (one worker by default: all of them).

``GET /counters/?window=1m|1h|today[&at=UNIX_SECONDS]`` (``at``: a moment in an earlier window still kept, default
now) returns
``{"window", "time": "processing", "window_start", "window_end", "rows": [{"model", "stage", "channel",
"conversions", "revenue"}], "totals": {...}, "dead_letters": n, "held_reemissions": n}`` (``held_reemissions``:
leads whose changed conversions wait for their re-emission, docs/STREAMS.md; a drain waits for 0); ``revenue`` is a
decimal string with two places; rows whose conversions and revenue are both 0 (a conversion moved to another
channel) are left out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable

from schemas.outputs import Conversion
from stream_jobs.runtime.topology import COUNTER_EXPIRES as EXPIRES
from stream_jobs.runtime.topology import COUNTER_WINDOWS, counter_table

MODELS = ("last_touch", "first_touch")


def counter_key(model: str, stage: str, channel: str) -> str:
    return f"{model}|{stage}|{channel}"


def _cents(conversion: Conversion) -> int:
    return int((conversion.revenue or Decimal(0)) * 100)


def count_changes(previous: Conversion | None, current: Conversion) -> dict[str, tuple[int, int]]:
    """What counting ``current`` changes per counter key, ``(conversions, cents)``: ``previous`` (the version of
    the same conversion counted before, or None) is taken out, ``current`` put in. Keys that do not change are
    left out, so a re-emission with the same channels and revenue changes nothing."""
    changes: dict[str, list[int]] = {}
    for conversion, sign in ((previous, -1), (current, 1)):
        if conversion is None:
            continue
        cents, stage = _cents(conversion), conversion.stage.value
        for model, channel in (("last_touch", conversion.last_channel), ("first_touch", conversion.first_channel)):
            entry = changes.setdefault(counter_key(model, stage, channel), [0, 0])
            entry[0] += sign
            entry[1] += sign * cents
    return {key: (count, cents) for key, (count, cents) in changes.items() if count or cents}


def stage_counts(counts: dict[str, list[int]], changes: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    """A stage's counts (counter key -> ``[conversions, cents]``) after ``changes``, as a new dict; an entry that
    comes to zero is dropped, so the value holds only the channels with something counted."""
    updated = dict(counts)
    for key, (count, cents) in changes.items():
        before_count, before_cents = updated.get(key, (0, 0))
        after = [before_count + count, before_cents + cents]
        if after[0] or after[1]:
            updated[key] = after
        else:
            updated.pop(key, None)
    return updated


def window_counts(stored: Iterable[tuple[str, Any]]) -> dict[str, list[int]]:
    """Counter key -> ``[conversions, cents]`` of one window's stored ``(table key, value)`` pairs: a stage's
    counts (a dict), or one counter key's ``[conversions, cents]`` as an earlier version wrote them."""
    totals: dict[str, list[int]] = {}
    for table_key, value in stored:
        for key, (count, cents) in value.items() if isinstance(value, dict) else ((table_key, value),):
            entry = totals.setdefault(key, [0, 0])
            entry[0] += count
            entry[1] += cents
    return totals


class Counters:
    """The windowed tables, their updates from conversions, and the JSON snapshot of the current windows."""

    def __init__(
        self,
        app: Any,
        partitions: int,
        dead_letter_total: Callable[[], int] = lambda: 0,
        held_total: Callable[[], int] = lambda: 0,
    ) -> None:
        self.dead_letter_total = dead_letter_total
        self.held_total = held_total
        # The moment the tables read and write at: the wall clock, or the time a conversion was first counted.
        self._at: float | None = None
        self.tables = {
            # In memory whatever the worker's store: a few keys, and expiry deletes them outside of any event.
            window: app.Table(counter_table(window), default=dict, partitions=partitions, store="memory://")
            .tumbling(size, expires=EXPIRES[window])
            .relative_to(self._moment)
            for window, size in COUNTER_WINDOWS.items()
        }

    def _moment(self, event: Any = None) -> float:
        # Faust's relative_to_now() would use the partition's latest message timestamp inside an agent, not the clock.
        return time.time() if self._at is None else self._at

    def record(self, conversion: Conversion, previous: Conversion | None, counted_at: float) -> None:
        """Count ``conversion`` in the windows that contain ``counted_at`` (the moment its first version was
        counted), taking out ``previous``, the version counted before (None for a new conversion)."""
        changes = count_changes(previous, conversion)
        if not changes:
            return
        stage = conversion.stage.value  # every change is of this stage: previous is the same conversion
        now = time.time()
        self._at = counted_at
        try:
            for window, table in self.tables.items():
                size = COUNTER_WINDOWS[window]
                if counted_at - counted_at % size + size + EXPIRES[window] < now:
                    continue  # expired: Faust would only delete it again
                table[stage] = stage_counts(table[stage].value(), changes)
        finally:
            self._at = None

    def snapshot(self, window: str, now: float | None = None) -> dict:
        """The counts of the window that contains ``now`` (default: the current time)."""
        if window not in self.tables:
            raise ValueError(f"unknown window {window!r}: use one of {', '.join(COUNTER_WINDOWS)}")
        now = time.time() if now is None else now
        size = COUNTER_WINDOWS[window]
        start = now - now % size
        wrapper = self.tables[window]
        # Read the store directly: a windowed table lists its keys only with a key index (one more changelog).
        stored = [
            (key, value)
            for (key, (window_start, _window_end)), value in list(wrapper.table.data.items())
            if abs(window_start - start) <= 1e-6
        ]
        rows: list[dict[str, Any]] = []
        for key, (conversions, cents) in window_counts(stored).items():
            if not conversions and not cents:
                continue  # every conversion counted here moved to another channel
            model, stage, channel = key.split("|", 2)
            rows.append(
                {
                    "model": model,
                    "stage": stage,
                    "channel": channel,
                    "conversions": conversions,
                    "revenue": str(Decimal(cents).scaleb(-2)),
                }
            )
        rows.sort(key=lambda r: (r["model"], r["stage"], -r["conversions"], r["channel"]))
        totals: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["model"] != "last_touch":
                continue
            entry = totals.setdefault(row["stage"], {"conversions": 0, "revenue": Decimal(0)})
            entry["conversions"] += row["conversions"]
            entry["revenue"] += Decimal(row["revenue"])
        return {
            "window": window,
            "time": "processing",
            "window_start": datetime.fromtimestamp(start, timezone.utc).isoformat(),
            "window_end": datetime.fromtimestamp(start + size, timezone.utc).isoformat(),
            "rows": rows,
            "totals": {
                stage: {"conversions": t["conversions"], "revenue": str(t["revenue"])}
                for stage, t in sorted(totals.items())
            },
            "dead_letters": self.dead_letter_total(),
            "held_reemissions": self.held_total(),
        }

    def install_web(self, app: Any) -> None:
        """``GET /counters/?window=...`` on the worker's web server."""
        counters = self

        @app.page("/counters/")
        async def counters_view(web: Any, request: Any) -> Any:
            window = request.query.get("window", "1m")
            at = request.query.get("at")
            try:
                now = _unix_seconds(at) if at is not None else None
                return web.json(counters.snapshot(window, now))
            except ValueError as error:
                return web.json({"error": str(error)}, status=400)


def _unix_seconds(text: str) -> float:
    """The ``at`` parameter: seconds since the epoch, e.g. ``at=1795454400``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"at={text!r} is not a time: give seconds since 1970-01-01 UTC, e.g. at=1795454400")
    return value
