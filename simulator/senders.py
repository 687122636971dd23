"""Send a simulated run through the collector's HTTP endpoints, the way a website and CRMs would.

- the website's tracker: ``page_view`` and ``identify`` events on ``POST /v1/events`` with the site's write key
  and an ``Origin`` header, each visitor's events in order: one request per event (as ``sendBeacon`` does) with
  ``web_batch=1``, or up to ``web_batch`` of a visitor's events per request (a tracker with a send queue; the
  default, because on two shared cores the HTTP client's cost per request would dominate the demo);
- HubSpot: ``POST /v1/webhooks/hubspot`` with arrays of ``contact.propertyChange`` (lifecycle stage) and
  ``deal.propertyChange`` (deal stage) events, signed with signature v3;
- Pipedrive: ``POST /v1/webhooks/pipedrive`` with webhooks v2 deliveries (person created, labels added, deal
  created, deal won/lost), HTTP Basic auth;
- any other CRM: ``POST /v1/webhooks/crm`` in the generic format, signed with HMAC-SHA256;
- a spreadsheet: CSV rows (``email, stage, value, currency, date``) written to a file at the end of the run and
  imported with ``closedloop import crm``'s code (which publishes to the broker: there is no HTTP import);
- spend: ``spend`` events on ``POST /v1/events`` with a server key, one batch per day.

Days are sent in order; within a day, website events first (visitors concurrently, each visitor's events in
sequence, so a landing page view always precedes the pages it led to), then the day's CRM changes and spend.
Concurrency is bounded by a semaphore; 503 (spool full, Retry-After) and connection errors are retried with
back-off; any other rejection is counted and its first messages kept for the summary.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from simulator.model import (
    DEFAULT_SITE_URL,
    FormSubmit,
    Journey,
    PageVisit,
    SimulatedDays,
    SpendLine,
    StageChange,
    ads_consent_for,
)
from simulator.truth import iso

# Credentials the demo configures on its collector and uses here (never use them outside a demo).
DEMO_WRITE_KEY = "demo-write-key"
DEMO_SERVER_KEY = "demo-server-key"
DEMO_HUBSPOT_SECRET = "demo-hubspot-client-secret"
DEMO_PIPEDRIVE_USER = "pipedrive"
DEMO_PIPEDRIVE_PASSWORD = "demo-pipedrive-password"
DEMO_CRM_SECRET = "demo-crm-webhook-secret"
# Pipedrive label ids the simulated sales team uses; the collector maps them with CLOSEDLOOP_PIPEDRIVE_LABEL_IDS.
PIPEDRIVE_LABELS = {"mql": 101, "sql": 102, "lost": 103, "disqualified": 104}
HUBSPOT_PORTAL_ID = 4455667
PIPEDRIVE_COMPANY_ID = 7788
HUBSPOT_LIFECYCLE = {
    "lead": "lead",
    "mql": "marketingqualifiedlead",
    "sql": "salesqualifiedlead",
    "opportunity": "opportunity",
}


def demo_collector_environment() -> dict[str, str]:
    """The collector settings (environment variables) that accept what the senders send with the defaults."""
    return {
        "CLOSEDLOOP_SITE_KEYS": json.dumps({DEMO_WRITE_KEY: "demo"}),
        "CLOSEDLOOP_SERVER_KEYS": json.dumps({DEMO_SERVER_KEY: "demo-ads"}),
        "CLOSEDLOOP_HUBSPOT_CLIENT_SECRET": DEMO_HUBSPOT_SECRET,
        "CLOSEDLOOP_PIPEDRIVE_USER": DEMO_PIPEDRIVE_USER,
        "CLOSEDLOOP_PIPEDRIVE_PASSWORD": DEMO_PIPEDRIVE_PASSWORD,
        "CLOSEDLOOP_PIPEDRIVE_LABEL_IDS": json.dumps({str(v): k for k, v in PIPEDRIVE_LABELS.items()}),
        "CLOSEDLOOP_CRM_WEBHOOK_SECRET": DEMO_CRM_SECRET,
        # the simulated site's pages send browser events with their Origin, as a real site's would
        "CLOSEDLOOP_ALLOWED_ORIGINS": json.dumps([DEFAULT_SITE_URL]),
    }


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send: the collector's URL and the credentials it was configured with."""

    collector_url: str = "http://127.0.0.1:8000"
    write_key: str = DEMO_WRITE_KEY
    server_key: str = DEMO_SERVER_KEY
    hubspot_secret: str = DEMO_HUBSPOT_SECRET
    pipedrive_user: str = DEMO_PIPEDRIVE_USER
    pipedrive_password: str = DEMO_PIPEDRIVE_PASSWORD
    crm_secret: str = DEMO_CRM_SECRET
    concurrency: int = 8  # httpx's pool costs CPU per connection: a few busy ones beat many idle ones
    web_batch: int = 20  # website events per request (1 = one request per event, like sendBeacon)
    timeout_s: float = 30.0
    # The spreadsheet's rows go in with `closedloop import crm`'s code, straight to the broker:
    kafka_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "closedloop"
    csv_dir: Path | None = None  # where the spreadsheet exports are written; None = a temp dir


@dataclass
class SendStats:
    """What was sent, what the collector said, and when each sampled touch was sent (for delay measurement)."""

    requests: int = 0
    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # per kind of event
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    ignored: int = 0
    retries: int = 0
    problems: list[str] = field(default_factory=list)
    touch_sent_at: dict[str, float] = field(default_factory=dict)  # touch id -> wall time its page view was accepted
    started: float = 0.0
    finished: float = 0.0

    @property
    def events(self) -> int:
        return sum(self.sent.values())

    @property
    def seconds(self) -> float:
        return max(self.finished - self.started, 1e-9)

    def problem(self, message: str) -> None:
        self.rejected += 1
        if len(self.problems) < 20:
            self.problems.append(message)


class SendError(Exception):
    """The collector could not be reached or refused everything; the message says what to do."""


Progress = Callable[[str, int], None]  # (kind of event, how many more were sent)


class Sender:
    """Sends one run's days through the collector. Use ``await Sender(...).send(run)``."""

    def __init__(self, endpoint: Endpoint, progress: Progress | None = None, touch_sample_every: int = 1) -> None:
        self.endpoint = endpoint
        self.progress = progress or (lambda kind, n: None)
        self.stats = SendStats()
        self.sample_every = max(1, touch_sample_every)
        self._landings: dict[str, str] = {}  # event id of a landing page view -> touch id
        self._semaphore = asyncio.Semaphore(endpoint.concurrency)
        self._client: httpx.AsyncClient | None = None

    # -- the run ---------------------------------------------------------------------------------------------

    async def send(self, run: SimulatedDays, spend: Sequence[SpendLine] | None = None) -> SendStats:
        """Send every event of ``run``, day by day; return the statistics."""
        self.stats.started = time.time()
        spend_by_day: dict[int, list[SpendLine]] = defaultdict(list)
        for line in run.spend() if spend is None else spend:
            spend_by_day[(line.day - run.config.epoch).days].append(line)
        for journey in run.journeys():
            for index, touch in enumerate(journey.touches):
                if index % self.sample_every == 0:
                    self._landings[touch.event_id] = touch.touch_id
        csv_rows: list[tuple[Journey, StageChange]] = []
        size = self.endpoint.concurrency
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        async with httpx.AsyncClient(
            base_url=self.endpoint.collector_url.rstrip("/"), limits=limits, timeout=self.endpoint.timeout_s
        ) as client:
            self._client = client
            await self._check_reachable()
            for day in range(run.first_day, run.end_day):
                web, crm = run.day_events(day)
                await self._send_web(web)
                csv_rows += [(j, s) for j, s in crm if s.crm == "csv"]
                await self._send_crm([(j, s) for j, s in crm if s.crm != "csv"])
                await self._send_spend(spend_by_day.get(day, []))
        if csv_rows:
            await asyncio.to_thread(self._import_csv, csv_rows, run)
        self.stats.finished = time.time()
        return self.stats

    async def _check_reachable(self) -> None:
        assert self._client is not None
        try:
            response = await self._client.get("/healthz")
        except httpx.HTTPError as exc:
            raise SendError(
                f"the collector at {self.endpoint.collector_url} does not answer ({exc!r}); "
                "start it with `closedloop collector` or pass --collector URL"
            ) from None
        if response.status_code != 200:
            raise SendError(
                f"{self.endpoint.collector_url}/healthz answered {response.status_code}: is it the "
                "closedloop collector?"
            )

    # -- HTTP with retries -----------------------------------------------------------------------------------

    async def _post(
        self,
        kind: str,
        count: int,
        path: str,
        body: bytes,
        headers: dict[str, str],
        sign: Callable[[bytes], dict[str, str]] | None = None,
        extra: tuple[str, int] = ("", 0),
    ) -> dict[str, Any] | None:
        """POST with bounded concurrency; retry 503/connection errors; count the answer. Returns the JSON body.

        ``count`` events of ``kind`` are in the body (and ``extra`` = (kind, count) of a second kind)."""
        assert self._client is not None
        delay = 0.2
        async with self._semaphore:
            for _attempt in range(8):
                request_headers = {"Content-Type": "application/json", **headers, **(sign(body) if sign else {})}
                try:
                    response = await self._client.post(path, content=body, headers=request_headers)
                except httpx.TransportError as exc:
                    problem = f"{path}: {exc!r}"
                else:
                    if response.status_code == 503 or response.status_code == 429:
                        problem = f"{path}: {response.status_code} {response.text[:200]}"
                        delay = max(delay, float(response.headers.get("retry-after", delay)))
                    else:
                        self.stats.requests += 1
                        self._sent(kind, count, extra)
                        return self._count(path, response, count + extra[1])
                self.stats.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._sent(kind, count, extra)
        for _ in range(count + extra[1]):
            self.stats.problem(f"gave up after 8 attempts: {problem}")
        return None

    def _sent(self, kind: str, count: int, extra: tuple[str, int]) -> None:
        for name, n in ((kind, count), extra):
            if n:
                self.stats.sent[name] += n
                self.progress(name, n)

    def _count(self, path: str, response: httpx.Response, count: int) -> dict[str, Any] | None:
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code >= 400:
            for _ in range(count):
                self.stats.problem(f"{path}: {response.status_code} {response.text[:300]}")
            return None
        self.stats.accepted += int(answer.get("accepted", 0))
        self.stats.duplicates += int(answer.get("duplicates", 0))
        self.stats.ignored += len(answer.get("ignored", []))
        for rejected in answer.get("rejected", []):
            self.stats.problem(f"{path}: rejected {json.dumps(rejected)[:300]}")
        for ignored in answer.get("ignored", []):
            if len(self.stats.problems) < 20:
                self.stats.problems.append(f"{path}: ignored {json.dumps(ignored)[:300]}")
        return answer

    # -- the website -----------------------------------------------------------------------------------------

    async def _send_web(self, events: list[PageVisit | FormSubmit]) -> None:
        by_visitor: dict[str, list[PageVisit | FormSubmit]] = defaultdict(list)
        for event in events:
            by_visitor[event.visitor_id].append(event)
        await asyncio.gather(*(self._send_visitor(seq) for seq in by_visitor.values()))

    async def _send_visitor(self, events: list[PageVisit | FormSubmit]) -> None:
        """One visitor's events of a day, in order: one request each, or batches of ``web_batch`` (a tracker
        with a send queue), never more than one request of the visitor in flight."""
        origin = "/".join(events[0].url.split("/", 3)[:3])
        size = self.endpoint.web_batch
        for start in range(0, len(events), size):
            chunk = events[start : start + size]
            payloads = [web_payload(event) for event in chunk]
            headers = {
                "X-Closedloop-Key": self.endpoint.write_key,
                "Origin": origin,
                "User-Agent": next((e.user_agent for e in chunk if isinstance(e, PageVisit)), ""),
            }
            body = json.dumps(payloads[0] if size == 1 else payloads).encode()
            pages = sum(1 for event in chunk if isinstance(event, PageVisit))
            answer = await self._post(
                "page views", pages, "/v1/events", body, headers, extra=("forms", len(chunk) - pages)
            )
            if answer is None:
                continue
            accepted_at = time.time()
            accepted = set(answer.get("event_ids", []))
            for event in chunk:
                touch_id = self._landings.get(event.event_id)
                if touch_id and event.event_id in accepted:
                    self.stats.touch_sent_at[touch_id] = accepted_at

    # -- CRMs ------------------------------------------------------------------------------------------------

    async def _send_crm(self, changes: list[tuple[Journey, StageChange]]) -> None:
        hubspot = [hubspot_event(j, s) for j, s in changes if s.crm == "hubspot"]
        generic = [generic_event(j, s) for j, s in changes if s.crm == "generic"]
        pipedrive = [pipedrive_delivery(j, s) for j, s in changes if s.crm == "pipedrive"]
        tasks = []
        for start in range(0, len(hubspot), 100):  # HubSpot sends up to 100 events per request
            chunk = hubspot[start : start + 100]
            tasks.append(
                self._post(
                    "CRM changes",
                    len(chunk),
                    "/v1/webhooks/hubspot",
                    json.dumps(chunk).encode(),
                    {},
                    self._hubspot_signature,
                )
            )
        if generic:
            body = json.dumps({"source": "salesforce-sync", "events": generic}).encode()
            tasks.append(self._post("CRM changes", len(generic), "/v1/webhooks/crm", body, {}, self._crm_signature))
        basic = base64.b64encode(f"{self.endpoint.pipedrive_user}:{self.endpoint.pipedrive_password}".encode()).decode()
        for delivery in pipedrive:  # Pipedrive calls once per change
            tasks.append(
                self._post(
                    "CRM changes",
                    1,
                    "/v1/webhooks/pipedrive",
                    json.dumps(delivery).encode(),
                    {"Authorization": f"Basic {basic}"},
                )
            )
        await asyncio.gather(*tasks)

    def _hubspot_signature(self, body: bytes) -> dict[str, str]:
        from collector.webhooks.hubspot import sign  # the exact v3 algorithm HubSpot documents

        timestamp = str(int(time.time() * 1000))
        uri = f"{self.endpoint.collector_url.rstrip('/')}/v1/webhooks/hubspot"
        return {
            "X-HubSpot-Signature-v3": sign(self.endpoint.hubspot_secret, "POST", uri, body, timestamp),
            "X-HubSpot-Request-Timestamp": timestamp,
        }

    def _crm_signature(self, body: bytes) -> dict[str, str]:
        from collector.webhooks.generic import sign

        return {"X-Closedloop-Signature": sign(self.endpoint.crm_secret, body)}

    def _import_csv(self, rows: list[tuple[Journey, StageChange]], run: SimulatedDays) -> None:
        """The spreadsheet: one export for the run, imported with ``closedloop import crm``.

        The export is kept in ``csv_dir`` when there is one; else it lives in a temporary directory, removed
        once imported.
        """
        if self.endpoint.csv_dir is None:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="closedloop-sim-") as directory:
                self._write_and_import(Path(directory), rows, run)
        else:
            self._write_and_import(self.endpoint.csv_dir, rows, run)

    def _write_and_import(self, directory: Path, rows: list[tuple[Journey, StageChange]], run: SimulatedDays) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"crm-sheet-days-{run.first_day:04d}-{run.end_day - 1:04d}.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["email", "stage", "value", "currency", "date", "reason"])
            for journey, change in rows:
                value = "" if change.deal_value is None else str(change.deal_value)
                row = [journey.email, change.stage, value, change.currency or "", iso(change.at), change.reason or ""]
                writer.writerow(row)
        from collector.imports import publish_file
        from schemas.topics import Topics

        summary = publish_file(path, "crm", self.endpoint.kafka_servers, Topics(self.endpoint.topic_prefix))
        self.stats.requests += 1
        self.stats.sent["CRM changes"] += len(rows)
        self.progress("CRM changes", len(rows))
        self.stats.accepted += summary.published
        for line, errors in summary.rejected:
            self.stats.problem(f"{path}:{line}: rejected: {json.dumps(errors)[:300]}")
        for _ in range(summary.publish_failures):
            self.stats.problem(f"{path}: a row was not acknowledged by the broker at {self.endpoint.kafka_servers}")

    # -- spend -----------------------------------------------------------------------------------------------

    async def _send_spend(self, lines: list[SpendLine]) -> None:
        if not lines:
            return
        body = json.dumps([spend_event(line) for line in lines]).encode()
        await self._post("spend rows", len(lines), "/v1/events", body, {"X-Closedloop-Key": self.endpoint.server_key})


# -- wire formats (pure) -------------------------------------------------------------------------------------


def _now_iso() -> str:
    return iso(datetime.now().astimezone())


def web_payload(event: PageVisit | FormSubmit) -> dict[str, Any]:
    """The JSON the tracker sends for a page view or a form submit."""
    payload: dict[str, Any]
    if isinstance(event, PageVisit):
        payload = {
            "type": "page_view",
            "event_id": event.event_id,
            "visitor_id": event.visitor_id,
            "session_id": event.session_id,
            "url": event.url,
            "title": event.title,
            "screen": event.screen,
            "user_agent": event.user_agent,
            "occurred_at": iso(event.at),
            "sent_at": _now_iso(),
        }
        if event.referrer:
            payload["referrer"] = event.referrer
    else:
        payload = {
            "type": "identify",
            "event_id": event.event_id,
            "visitor_id": event.visitor_id,
            "email": event.email,
            "form_id": event.form_id,
            "url": event.url,
            "fields": event.fields,
            "occurred_at": iso(event.at),
            "sent_at": _now_iso(),
        }
    consent = ads_consent_for(event.visitor_id)  # what the site's banner told the tracker (docs/ADS.md)
    if consent is not None:
        payload["ads_consent"] = consent
    return payload


def _millis(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def hubspot_event(journey: Journey, change: StageChange) -> dict[str, Any]:
    """One element of a HubSpot webhook array: a contact lifecycle change, or a deal stage change."""
    common = {
        "eventId": int(change.key[:12], 16),
        "subscriptionId": 1207,
        "portalId": HUBSPOT_PORTAL_ID,
        "appId": 3344,
        "occurredAt": _millis(change.at),
        "attemptNumber": 0,
        "changeSource": "CRM_UI",
    }
    if change.stage in HUBSPOT_LIFECYCLE:
        event = {
            **common,
            "subscriptionType": "contact.propertyChange",
            "objectId": int(journey.crm_contact_id),
            "propertyName": "lifecyclestage",
            "propertyValue": HUBSPOT_LIFECYCLE[change.stage],
        }
        if change.stage == "lead":
            event["email"] = journey.email  # the contact's creation: added by the form integration's workflow
        return event
    event = {
        **common,
        "subscriptionType": "deal.propertyChange",
        "objectId": int(journey.crm_deal_id),
        "propertyName": "dealstage",
        "propertyValue": "closedwon" if change.stage == "customer" else "closedlost",
        "contactId": int(journey.crm_contact_id),
    }
    if change.deal_value is not None:
        event.update(amount=str(change.deal_value), currency=change.currency)
    if change.reason is not None:
        event["reason"] = change.reason  # closed_lost_reason, as the API lookup or an enriching workflow adds it
    return event


def pipedrive_delivery(journey: Journey, change: StageChange) -> dict[str, Any]:
    """A Pipedrive webhooks v2 delivery for one change: person created, label added, deal created / won / lost."""
    person_id = int(journey.crm_contact_id) % 10**7
    deal_id = int(journey.crm_deal_id)
    stages_before = [s.stage for s in journey.stages if s.at < change.at]
    labels_before = [PIPEDRIVE_LABELS[s] for s in stages_before if s in ("mql", "sql")]
    meta = {
        "version": "2.0",
        "company_id": PIPEDRIVE_COMPANY_ID,
        "id": change.key,
        "attempt": 1,
        "timestamp": _millis(change.at),
        "user_id": 91,
        "host": "northwind.pipedrive.com",
    }
    if change.stage == "lead":
        return {
            "meta": {**meta, "action": "create", "entity": "person", "entity_id": str(person_id)},
            "data": {
                "id": person_id,
                "name": journey.name,
                "label_ids": [],
                "emails": [{"value": journey.email, "primary": True, "label": "work"}],
            },
            "previous": None,
        }
    has_deal = "opportunity" in stages_before
    if change.stage == "opportunity":
        return {
            "meta": {**meta, "action": "create", "entity": "deal", "entity_id": str(deal_id)},
            "data": {
                "id": deal_id,
                "person_id": person_id,
                "title": f"{journey.company} deal",
                "status": "open",
                "value": 0,
                "currency": "EUR",
            },
            "previous": None,
        }
    if change.stage == "customer" or (change.stage == "lost" and has_deal):
        status = "won" if change.stage == "customer" else "lost"
        data = {"id": deal_id, "person_id": person_id, "status": status, "title": f"{journey.company} deal"}
        if change.deal_value is not None:
            data.update(value=float(change.deal_value), currency=change.currency)
        if change.reason is not None:
            data["lost_reason"] = change.reason
        return {
            "meta": {**meta, "action": "change", "entity": "deal", "entity_id": str(deal_id)},
            "data": data,
            "previous": {"status": "open"},
        }
    # mql, sql, lost before any deal, disqualified: the sales team adds a label to the person.
    labels = [*labels_before, PIPEDRIVE_LABELS[change.stage]]
    return {
        "meta": {**meta, "action": "change", "entity": "person", "entity_id": str(person_id)},
        "data": {"id": person_id, "name": journey.name, "label_ids": labels},
        "previous": {"label_ids": labels_before},
    }


def generic_event(journey: Journey, change: StageChange) -> dict[str, Any]:
    """An event of the generic CRM webhook format."""
    event = {
        "id": change.key,
        "stage": change.stage,
        "occurred_at": iso(change.at),
        "email": journey.email,
        "object_id": journey.crm_deal_id if change.stage in ("opportunity", "customer") else None,
        "reason": change.reason,
    }
    if change.deal_value is not None:
        event.update(value=str(change.deal_value), currency=change.currency)
    return {k: v for k, v in event.items() if v is not None}


def spend_event(line: SpendLine) -> dict[str, Any]:
    """A ``spend`` event of ``POST /v1/events`` (needs a server key)."""
    return {
        "type": "spend",
        "event_id": f"spend:{line.day.isoformat()}:{line.channel}:{line.source}:{line.medium}:{line.campaign}",
        "occurred_at": f"{line.day.isoformat()}T23:59:59Z",
        "date": line.day.isoformat(),
        "channel": line.channel,
        "source": line.source,
        "medium": line.medium,
        "campaign": line.campaign,
        "cost": str(line.cost),
        "currency": line.currency,
    }
