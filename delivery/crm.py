"""CRM destinations: a task on the HubSpot contact, an activity on the Pipedrive person (docs/DELIVERY.md).

Both find the person by the message's email first, then create the record on them, each step with the sender's
retries. Neither API takes an idempotency key, so the seen-store is what keeps a replay from creating a second task
(a crash between the CRM's answer and the store's fsync can still repeat one: docs/DELIVERY.md, "Nothing twice").
A message without an email, or an email the CRM does not know, is dead at once with that reason: resending would
not help, and creating the person is the CRM's business, not ours.

Request shapes: HubSpot CRM API v3 (``POST /crm/v3/objects/contacts/search``, ``POST /crm/v3/objects/tasks`` with
the HUBSPOT_DEFINED task-to-contact association 204); Pipedrive API v1 (``GET /api/v1/persons/search`` with
``fields=email&exact_match=true``, ``POST /api/v1/activities``), its token in the ``x-api-token`` header so that it
never appears in a URL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlencode

from delivery.requests import Request, summary_lines
from delivery.sender import Outcome
from schemas.outbox import OutboxMessage

TASK_TO_CONTACT = 204  # HubSpot's default association type id: task -> contact
Sender = Callable[[Request], Outcome]


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _dead(reason: str, before: Outcome) -> Outcome:
    return Outcome(False, before.tries, before.status, reason)


def _answer(outcome: Outcome) -> object:
    try:
        return json.loads(outcome.body or b"null")
    except ValueError:
        return None


def hubspot_contact_search(message: OutboxMessage, base_url: str, token: str) -> Request:
    body = {
        "filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": message.email}]}],
        "properties": ["email"],
        "limit": 1,
    }
    return Request(
        "POST",
        f"{base_url.rstrip('/')}/crm/v3/objects/contacts/search",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        _json(body),
    )


def hubspot_task(message: OutboxMessage, contact_id: str, base_url: str, token: str, owner_id: str | None) -> Request:
    properties = {
        "hs_timestamp": message.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{message.occurred_at:%f}"[:3] + "Z",
        "hs_task_subject": message.title or f"{message.kind.replace('_', ' ')}: lead {message.lead_id}",
        "hs_task_body": "\n".join(summary_lines(message)),
        "hs_task_status": "NOT_STARTED",
        "hs_task_priority": "HIGH",
        "hs_task_type": "TODO",
    }
    if owner_id:
        properties["hubspot_owner_id"] = owner_id
    body = {
        "properties": properties,
        "associations": [
            {
                "to": {"id": contact_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": TASK_TO_CONTACT}],
            }
        ],
    }
    return Request(
        "POST",
        f"{base_url.rstrip('/')}/crm/v3/objects/tasks",
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        _json(body),
    )


def hubspot(message: OutboxMessage, send_one: Sender, base_url: str, token: str, owner_id: str | None) -> Outcome:
    if not message.email:
        return Outcome(False, 0, None, "no email in the message: HubSpot finds the contact by email")
    found = send_one(hubspot_contact_search(message, base_url, token))
    if not found.delivered:
        return found
    answer = _answer(found)
    results = answer.get("results") if isinstance(answer, dict) else None
    if not results or not isinstance(results[0], dict) or "id" not in results[0]:
        return _dead(
            "HubSpot has no contact with the lead's email: create it there, or route this kind elsewhere", found
        )
    created = send_one(hubspot_task(message, str(results[0]["id"]), base_url, token, owner_id))
    return replace(created, tries=found.tries + created.tries)


def pipedrive_person_search(message: OutboxMessage, base_url: str, token: str) -> Request:
    query = urlencode({"term": message.email or "", "fields": "email", "exact_match": "true", "limit": 1})
    return Request("GET", f"{base_url.rstrip('/')}/api/v1/persons/search?{query}", {"x-api-token": token})


def pipedrive_activity(message: OutboxMessage, person_id: int, base_url: str, token: str, kind: str) -> Request:
    body = {
        "subject": message.title or f"{message.kind.replace('_', ' ')}: lead {message.lead_id}",
        "type": kind,
        "person_id": person_id,
        "due_date": message.occurred_at.date().isoformat(),
        "note": "<br>".join(summary_lines(message)),
        "done": 0,
    }
    return Request(
        "POST",
        f"{base_url.rstrip('/')}/api/v1/activities",
        {"x-api-token": token, "Content-Type": "application/json"},
        _json(body),
    )


def pipedrive(message: OutboxMessage, send_one: Sender, base_url: str, token: str, activity_type: str) -> Outcome:
    if not message.email:
        return Outcome(False, 0, None, "no email in the message: Pipedrive finds the person by email")
    found = send_one(pipedrive_person_search(message, base_url, token))
    if not found.delivered:
        return found
    answer = _answer(found)
    data = answer.get("data") if isinstance(answer, dict) else None
    items = data.get("items") if isinstance(data, dict) else None
    item = items[0].get("item") if items and isinstance(items[0], dict) else None
    if not isinstance(item, dict) or not isinstance(item.get("id"), int):
        return _dead(
            "Pipedrive has no person with the lead's email: create them there, or route this kind elsewhere", found
        )
    created = send_one(pipedrive_activity(message, item["id"], base_url, token, activity_type))
    return replace(created, tries=found.tries + created.tries)
