"""The ground truth of a simulation, as JSON lines: what the product should find, journey by journey.

One file per run (``truth-<first day>-<end day>.jsonl``) holds the cumulative truth at the run's end: every journey
since day 0, cut at the end of the run's last day, so that the last file alone describes everything sent so far.

Line kinds (the ``kind`` field):

- ``run``: the header: seed, epoch, days covered, horizon (the end of the last day), visitors per day, currency;
- ``journey``: one person: ``visitor_ids``, ``email`` (null until a form is sent), ``lead_at`` (first form),
  ``touches`` (every session start, with ``touch_id``, ``visitor_id``, ``event_id``, ``occurred_at``, ``channel``,
  ``source``, ``medium``, ``campaign``, ``term``, ``content``, ``click_id``, ``referrer_host``, ``landing_path``),
  ``pages`` (``[occurred_at, visitor_id, path]``), ``forms``, ``stages`` (CRM changes: ``stage``, ``occurred_at``,
  ``crm``, ``deal_value``, ``currency``), ``deal_value`` (of the won deal, else null);
- ``spend``: one day, channel and campaign: ``date``, ``channel``, ``source``, ``medium``, ``campaign``, ``cost``.

Times are UTC ISO 8601 with milliseconds (``2025-01-06T14:53:03.396Z``); money is a decimal string.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from simulator.model import Journey, SimulatedDays, SpendLine, spend_lines


def iso(value: datetime) -> str:
    """UTC ISO 8601 with milliseconds and a ``Z``."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def journey_record(journey: Journey) -> dict[str, Any]:
    """The JSON object of one journey (already cut at the horizon)."""
    won = next((s for s in journey.stages if s.stage == "customer"), None)
    lead_at = journey.lead_at
    return {
        "kind": "journey",
        "journey_id": journey.journey_id,
        "start_day": journey.start_day,
        "first_channel": journey.channel,
        "visitor_ids": list(journey.visitor_ids),
        "email": journey.email if journey.forms else None,
        "lead_at": iso(lead_at) if lead_at else None,
        "crm": journey.crm or None,
        "crm_contact_id": journey.crm_contact_id or None,
        "touches": [
            {
                "touch_id": t.touch_id,
                "visitor_id": t.visitor_id,
                "event_id": t.event_id,
                "occurred_at": iso(t.at),
                "channel": t.channel,
                "source": t.source,
                "medium": t.medium,
                "campaign": t.campaign,
                "term": t.term,
                "content": t.content,
                "click_id": t.click_id,
                "referrer_host": t.referrer_host,
                "landing_path": t.landing_path,
            }
            for t in journey.touches
        ],
        "pages": [[iso(p.at), p.visitor_id, p.path] for p in journey.page_views],
        "forms": [
            {"event_id": f.event_id, "visitor_id": f.visitor_id, "occurred_at": iso(f.at), "form_id": f.form_id}
            for f in journey.forms
        ],
        "stages": [
            {
                "stage": s.stage,
                "occurred_at": iso(s.at),
                "crm": s.crm,
                "deal_value": None if s.deal_value is None else str(s.deal_value),
                "currency": s.currency,
                "reason": s.reason,
            }
            for s in journey.stages
        ],
        "deal_value": None if won is None else str(won.deal_value),
        "currency": None if won is None else won.currency,
    }


def spend_record(line: SpendLine) -> dict[str, Any]:
    return {
        "kind": "spend",
        "date": line.day.isoformat(),
        "channel": line.channel,
        "source": line.source,
        "medium": line.medium,
        "campaign": line.campaign,
        "cost": str(line.cost),
        "currency": line.currency,
    }


def truth_records(run: SimulatedDays) -> Iterator[dict[str, Any]]:
    """Header, journeys and spend of everything sent from day 0 to the end of ``run``."""
    config = run.config
    yield {
        "kind": "run",
        "seed": config.seed,
        "epoch": config.epoch.isoformat(),
        "first_day": run.first_day,
        "end_day": run.end_day,
        "start": iso(run.start),
        "horizon": iso(run.end),
        "visitors_per_day": config.visitors_per_day,
        "site_url": config.site_url,
        "currency": config.currency,
    }
    for journey in run.known_journeys():
        yield journey_record(journey)

    for line in spend_lines(config, 0, run.end_day):
        yield spend_record(line)


def write_truth(run: SimulatedDays, path: Path) -> Path:
    """Write the cumulative truth of ``run`` to ``path`` (atomically: a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        for record in truth_records(run):
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
    partial.replace(path)
    return path


@dataclass(frozen=True)
class Truth:
    """A truth file read back: the header, the journeys and the spend lines, as plain JSON objects."""

    run: dict[str, Any]
    journeys: list[dict[str, Any]]
    spend: list[dict[str, Any]]


def read_truth(path: Path) -> Truth:
    """Read a truth file; raise ValueError naming the line when it is not one."""
    run: dict[str, Any] | None = None
    journeys: list[dict[str, Any]] = []
    spend: list[dict[str, Any]] = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                kind = record["kind"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{path}:{number}: not a ground-truth record (expected JSON with a 'kind')") from None
            if kind == "run":
                run = record
            elif kind == "journey":
                journeys.append(record)
            elif kind == "spend":
                spend.append(record)
    if run is None:
        raise ValueError(f"{path}: no 'run' header line; was it written by simulator.truth?")
    return Truth(run, journeys, spend)


def summarize(journeys: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Counts for a one-line summary: journeys, visitors, touches, page views, leads, customers."""
    totals = {"journeys": 0, "visitors": 0, "touches": 0, "page_views": 0, "leads": 0, "customers": 0}
    for journey in journeys:
        totals["journeys"] += 1
        totals["visitors"] += len({t["visitor_id"] for t in journey["touches"]})
        totals["touches"] += len(journey["touches"])
        totals["page_views"] += len(journey["pages"])
        totals["leads"] += journey["lead_at"] is not None
        totals["customers"] += journey["deal_value"] is not None
    return totals
