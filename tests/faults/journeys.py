"""Deterministic journeys sent through the collector, and the state the pipeline ends with, for the fault tests
that run the whole pipeline (collector, stream worker, sink).

- :func:`journeys`: per visitor, the HTTP requests of a fixed script: sessions of page views over several channels
  (fixed ``occurred_at`` and event ids), a form (identify), an MQL and a won deal from the CRM (``crm_status`` with
  a server key), a visit after the deal. ``run`` names a copy: the same script with other visitor ids, event
  ids and emails, so that two runs can share one pipeline and be compared.
- :class:`ScriptedLoad`: each visitor sends its script over a keep-alive connection, one request at a time, paced;
  the tail of every script waits for ``resume`` (set by the test once a fault is over).
- :func:`pipeline_state`: the touches, identity links, conversions and credits of one run as the documented
  views read them (``touches FINAL``, ``identity_links FINAL``, ``conversions FINAL``, ``credits_current``),
  with every id of the run renamed to the reference run's and the columns that depend on arrival order left out
  (``version``; ``visitor_number``, made from a Kafka offset).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Self

import orjson

from schemas.identity import lead_id_for
from stream_jobs.rules.lifecycle import conversion_id_for
from stream_jobs.rules.sessions import touch_id_for

from .support import ANSWER_TIMEOUT_S, HOST, WRITE_KEY, Answer, Load, exchange

SERVER_KEY = "faults-server-key"  # crm_status needs a server key; page views and forms use the browser key
SITE = "https://shop.example.com"
LEAD_KEY = "faults-lead-key"  # the collector and the worker must hash emails with the same key
STAGES = ("lead", "mql", "customer")
TOUCHES_PER_VISITOR = (
    6  # what journeys() makes: Paid Search, Organic Social, Email, Direct, Organic Search, Paid Social
)


@dataclass(frozen=True)
class Request:
    key: str  # X-Closedloop-Key
    events: tuple[dict, ...]

    @property
    def ids(self) -> list[str]:
        return [event["event_id"] for event in self.events]


@dataclass(frozen=True)
class Script:
    """One visitor's requests: ``head`` at once, ``tail`` once the test says so."""

    head: tuple[Request, ...]
    tail: tuple[Request, ...]


def visitor_id(run: str, n: int) -> str:
    return f"{run}-v{n:03d}"


def email_of(run: str, n: int) -> str | None:
    """Every fifth visitor stays anonymous."""
    return None if n % 5 == 4 else f"{run}-lead{n:03d}@example.com"


class _Visitor:
    """Makes one visitor's events, their ids numbered in the order made."""

    def __init__(self, visitor: str, email: str | None) -> None:
        self.visitor = visitor
        self.email = email
        self.count = 0

    def event(self, kind: str, at: datetime, **fields: object) -> dict:
        self.count += 1
        occurred_at = at.isoformat().replace("+00:00", "Z")
        return {"type": kind, "event_id": f"{self.visitor}-{self.count:02d}", "occurred_at": occurred_at, **fields}

    def view(self, at: datetime, path: str, referrer: str | None = None) -> Request:
        page = self.event("page_view", at, visitor_id=self.visitor, url=f"{SITE}{path}")
        if referrer:
            page["referrer"] = referrer
        return Request(WRITE_KEY, (page,))

    def form(self, at: datetime) -> Request:
        return Request(
            WRITE_KEY, (self.event("identify", at, visitor_id=self.visitor, email=self.email, form_id="demo"),)
        )

    def crm(self, at: datetime, stage: str, **fields: object) -> Request:
        deal = f"deal-{self.visitor}"
        change = self.event("crm_status", at, crm="generic", crm_object_id=deal, email=self.email, stage=stage)
        return Request(SERVER_KEY, (change | fields,))


def journeys(run: str, visitors: int, base: datetime) -> dict[str, Script]:
    """Visitor id -> its script. Sessions are hours or days apart, so that no two page views of a visitor could
    be read as one session whatever arrives late; ``base`` must lie within the collector's accepted times.

    Six touches per visitor (Paid Search, Organic Social, Email, Direct, Organic Search, Paid Social), page views
    inside sessions that are none; four of five visitors fill in a form, reach MQL, and every other one of those
    is won. The head ends with the visit after the form; the tail holds the later visits and the CRM's changes."""
    scripts = {}
    for n in range(visitors):
        start = base + timedelta(minutes=7 * n)
        make = _Visitor(visitor_id(run, n), email_of(run, n))
        head = [
            make.view(start, f"/?utm_source=google&utm_medium=cpc&utm_campaign=c{n % 3}"),
            make.view(start + timedelta(minutes=3), "/pricing", f"{SITE}/"),
            make.view(start + timedelta(minutes=6), "/features", f"{SITE}/pricing"),
            make.view(start + timedelta(hours=3), "/blog/launch", "https://www.linkedin.com/"),
            make.view(start + timedelta(hours=3, minutes=4), "/pricing", f"{SITE}/blog/launch"),
            make.view(start + timedelta(days=1), f"/?utm_source=newsletter&utm_medium=email&utm_campaign=m{n % 2}"),
            make.view(start + timedelta(days=1, minutes=2), "/demo", f"{SITE}/"),
        ]
        if make.email:
            head.append(make.form(start + timedelta(days=1, minutes=3)))
        head.append(make.view(start + timedelta(days=2), "/pricing"))
        tail = [
            make.view(start + timedelta(days=2, minutes=1), "/contact", f"{SITE}/pricing"),
            make.view(start + timedelta(days=3), "/", "https://www.google.com/"),
        ]
        if make.email:
            tail.append(make.crm(start + timedelta(days=1, hours=2), "mql"))
            if n % 2 == 0:
                value = f"{1000 + n}.50"
                tail.append(make.crm(start + timedelta(days=4), "customer", deal_value=value, currency="EUR"))
        tail.append(make.view(start + timedelta(days=5), "/?utm_source=facebook&utm_medium=paid_social"))
        scripts[make.visitor] = Script(tuple(head), tuple(tail))
    return scripts


def renaming(run: str, reference: str, visitors: int, scripts: dict[str, Script], lead_key: bytes) -> dict[str, str]:
    """Every id of ``run`` (visitor, event, touch, lead, conversion ids, emails) -> the same id of ``reference``."""
    names = {}
    for n in range(visitors):
        ours, theirs = visitor_id(run, n), visitor_id(reference, n)
        names[ours] = theirs
        for request in scripts[ours].head + scripts[ours].tail:
            for event_id in request.ids:
                their_event = theirs + event_id.removeprefix(ours)
                names[event_id] = their_event
                names[touch_id_for(ours, event_id)] = touch_id_for(theirs, their_event)
        email, their_email = email_of(run, n), email_of(reference, n)
        if email and their_email:
            names[email] = their_email
            lead, their_lead = lead_id_for(email, lead_key), lead_id_for(their_email, lead_key)
            names[lead] = their_lead
            for stage in STAGES:
                names[conversion_id_for(lead, stage)] = conversion_id_for(their_lead, stage)
    return names


# ---------------------------------------------------------------------------------------------------------------
# The load


class ScriptedLoad:
    """Every visitor sends its script in order over one keep-alive connection, one request out at a time, each
    paced to ``interval`` seconds; the tails wait until ``resume`` is set. Runs in a thread; bounded by
    ``max_seconds`` whatever happens."""

    def __init__(self, port: int, scripts: dict[str, Script], interval: float, max_seconds: float = 150.0) -> None:
        self.port = port
        self.scripts = scripts
        self.interval = interval
        self.max_seconds = max_seconds
        self.load = Load()
        self.resume = threading.Event()
        self.heads_done = 0  # visitors whose head is answered
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="scripted-load", daemon=True)

    @property
    def head_events(self) -> int:
        return sum(len(r.events) for s in self.scripts.values() for r in s.head)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.resume.set()
        self._thread.join(timeout=self.max_seconds + ANSWER_TIMEOUT_S)

    def finish(self, timeout: float) -> Load:
        """Let the tails go, wait until every script is sent; what the load saw."""
        self.resume.set()
        self._thread.join(timeout=timeout)
        assert not self._thread.is_alive(), f"the scripted load did not finish within {timeout:g} s"
        if self._error is not None:
            raise AssertionError(f"the scripted load failed: {self._error!r}") from self._error
        return self.load

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # noqa: BLE001 - reported by finish()
            self._error = error

    async def _main(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        await asyncio.gather(
            *(self._visitor(visitor, script, n, deadline) for n, (visitor, script) in enumerate(self.scripts.items()))
        )

    def _http(self, request: Request) -> bytes:
        body = orjson.dumps(list(request.events))
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nX-Closedloop-Key: {request.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head + body

    async def _visitor(self, visitor: str, script: Script, n: int, deadline: float) -> None:
        connection: list = [None, None]  # reader, writer
        next_at = time.monotonic() + (n % 10) / 10 * self.interval  # staggered, not all at once
        try:
            for request in script.head:
                next_at = await self._send(visitor, request, connection, next_at, deadline)
            self.heads_done += 1
            if connection[1] is not None:  # the server closes a connection idle for 5 s (uvicorn's keep-alive)
                connection[1].close()
                connection[:] = [None, None]
            while not self.resume.is_set():
                assert time.monotonic() < deadline, "the scripted load waited past its bound for resume"
                await asyncio.sleep(0.05)
            for request in script.tail:
                next_at = await self._send(visitor, request, connection, next_at, deadline)
        finally:
            if connection[1] is not None:
                connection[1].close()

    async def _send(self, visitor: str, request: Request, connection: list, next_at: float, deadline: float) -> float:
        assert time.monotonic() < deadline, f"the scripted load ran past its bound of {self.max_seconds:g} s"
        pause = next_at - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        next_at = max(next_at + self.interval, time.monotonic())
        ids, load = request.ids, self.load
        sent_at = time.monotonic()
        try:
            if connection[1] is None:
                connection[:] = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), 5)
            status, body = await asyncio.wait_for(
                exchange(connection[0], connection[1], self._http(request)), ANSWER_TIMEOUT_S
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
            load.unanswered.update(ids)
            load.answers.append(Answer(sent_at, time.monotonic() - sent_at, None, len(ids), type(error).__name__))
            if connection[1] is not None:
                connection[1].close()
            connection[:] = [None, None]
            return next_at
        answer = orjson.loads(body) if body else {}
        if status == 200:
            assert answer.get("event_ids") == ids, f"a 200 that does not accept {ids}: {answer!r}"
            load.accepted.extend((visitor, event_id) for event_id in ids)
            load.answers.append(Answer(sent_at, time.monotonic() - sent_at, 200, len(ids)))
        else:
            load.refused.update(ids)
            load.answers.append(Answer(sent_at, time.monotonic() - sent_at, status, len(ids), str(answer)))
        return next_at


def combined(*loads: Load) -> Load:
    """One Load of several runs' (for the checks of the events table, which holds them all)."""
    whole = Load()
    for load in loads:
        whole.accepted += load.accepted
        whole.refused |= load.refused
        whole.unanswered |= load.unanswered
        whole.answers += load.answers
    return whole


# ---------------------------------------------------------------------------------------------------------------
# What the pipeline ends with

# Per table: what to read (the views the docs tell users to read), every column but those that depend on arrival
# order (``version``: a conversion reached before a late touch arrived is re-emitted with version + 1;
# ``visitor_number``: made from the offset of the visitor's first event), and which rows belong to a run (``{run}``).
_RUN_CONVERSIONS = "SELECT conversion_id FROM conversions FINAL WHERE startsWith(event_id, '{run}-')"
TABLES = {
    "touches": (
        "touches FINAL",
        "touch_id, visitor_id, lead_id, lead_known, site_id, occurred_at, channel, source, medium, campaign, term, "
        "content, click_id, referrer_host, landing_path, event_id",
        "startsWith(visitor_id, '{run}-')",
    ),
    "identity_links": (
        "identity_links FINAL",
        "visitor_id, lead_id, linked_at, event_id, form_id",
        "startsWith(visitor_id, '{run}-')",
    ),
    "conversions": (
        "conversions FINAL",
        "conversion_id, lead_id, stage, occurred_at, revenue, currency, touch_count, first_channel, last_channel, "
        "event_id, reason",
        "startsWith(event_id, '{run}-')",
    ),
    "credits": (
        "credits_current",
        "conversion_id, lead_id, stage, model, touch_id, touch_index, touch_at, converted_at, channel, source, "
        "medium, campaign, credit, revenue, currency",
        f"conversion_id IN ({_RUN_CONVERSIONS})",
    ),
}


def pipeline_state(query: Callable[[str], list[tuple]], run: str, names: dict[str, str] | None = None) -> dict:
    """Table -> the set of rows of ``run``, every id renamed through ``names``."""
    names = names or {}
    state = {}
    for table, (source, columns, where) in TABLES.items():
        rows = query(f"SELECT {columns} FROM {source} WHERE {where.format(run=run)}")
        state[table] = {tuple(names.get(v, v) if isinstance(v, str) else v for v in row) for row in rows}
    return state


def differences(found: dict, expected: dict, shown: int = 3) -> str:
    """What differs per table: counts, and a few rows only one side has."""
    lines = []
    for table in expected:
        missing, extra = expected[table] - found[table], found[table] - expected[table]
        if missing or extra:
            lines.append(
                f"{table}: {len(found[table])} rows, {len(expected[table])} expected; only in the reference "
                f"{sorted(missing, key=repr)[:shown]}; only after the fault {sorted(extra, key=repr)[:shown]}"
            )
    return "\n".join(lines)


def default_base() -> datetime:
    """Midnight UTC 30 days ago: inside the collector's accepted times, the same for both runs of a test."""
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=30)
