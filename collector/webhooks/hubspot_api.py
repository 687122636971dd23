"""What HubSpot's webhook events leave out, asked of HubSpot's CRM API with a private app's token.

HubSpot's property-change events carry an object id and the changed property only: no email on a contact's
lifecycle change, and neither the contact nor the amount on a deal's stage change. With
``CLOSEDLOOP_HUBSPOT_PRIVATE_APP_TOKEN`` set, :meth:`HubSpotApi.complete` fills the fields the collector reads
(``email``, ``contactId``, ``amount``, ``currency``, ``reason``) on the events that lack them, from:

- ``GET /crm/v3/objects/contacts/{id}?properties=email``;
- ``GET /crm/v4/objects/deals/{id}/associations/contacts`` (the deal's contacts; the lowest id is the one
  credited, so a deal's revenue is counted once and the choice does not depend on the order HubSpot lists them);
- ``GET /crm/v3/objects/deals/{id}?properties=amount,deal_currency_code,closed_lost_reason`` (a deal without a
  currency code is in ``CLOSEDLOOP_HUBSPOT_CURRENCY``, the account's company currency; a lost deal's reason).

Answers are cached for ``hubspot_api_cache_s``. A 429 or 5xx is retried after its ``Retry-After`` (else an
exponential back-off with jitter) while the request's budget lasts; past it, :class:`HubSpotUnavailable` makes the
webhook answer 503 so that HubSpot sends the delivery again later. A deleted record (404) completes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx

from collector.settings import CollectorSettings
from schemas.retry import backoff_seconds, retry_after_seconds

CACHE_ENTRIES = 10_000
DEAL_PROPERTIES = "amount,deal_currency_code,closed_lost_reason"
CONCURRENT_REQUESTS = 4  # private apps may send 100-190 requests per 10 s: a burst of deals stays well under


class HubSpotUnavailable(Exception):
    """HubSpot's API did not answer usefully within the budget; ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Deal:
    contact_ids: tuple[str, ...]
    amount: str | None
    currency: str | None
    lost_reason: str | None


class HubSpotApi:
    """One per collector process (an HTTP connection pool and the cache); ``close`` at shutdown."""

    def __init__(self, settings: CollectorSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        assert settings.hubspot_private_app_token is not None
        self.settings = settings
        self._client = httpx.AsyncClient(
            base_url=settings.hubspot_api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {settings.hubspot_private_app_token.get_secret_value()}"},
            timeout=settings.hubspot_api_timeout_s,
            transport=transport,
        )
        self._cache: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._slots = asyncio.Semaphore(CONCURRENT_REQUESTS)

    async def close(self) -> None:
        await self._client.aclose()

    async def complete(self, events: list[Any]) -> list[Any]:
        """The events with the missing fields filled in where HubSpot knows them (copies; others unchanged)."""
        deadline = time.monotonic() + self.settings.hubspot_api_budget_s
        completed = await asyncio.gather(*(self._complete_one(event, deadline) for event in events))
        return list(completed)

    async def _complete_one(self, event: Any, deadline: float) -> Any:
        if not isinstance(event, dict):
            return event
        kind, prop = event.get("subscriptionType"), event.get("propertyName")
        object_id = event.get("objectId")
        if not isinstance(object_id, int | str) or isinstance(object_id, bool) or not str(object_id).isdigit():
            return event
        if kind == "contact.propertyChange" and prop in ("lifecyclestage", "hs_lead_status") and not event.get("email"):
            email = await self.contact_email(str(object_id), deadline)
            return {**event, "email": email} if email else event
        if kind == "deal.propertyChange" and prop == "dealstage" and event.get("contactId") is None:
            deal = await self.deal(str(object_id), deadline)
            if deal is None or not deal.contact_ids:
                return event
            contact = deal.contact_ids[0]
            extra: dict[str, Any] = {"contactId": contact}
            email = event.get("email") or await self.contact_email(contact, deadline)
            if email:
                extra["email"] = email
            if event.get("reason") is None and deal.lost_reason is not None:
                extra["reason"] = deal.lost_reason
            if event.get("amount") is None and deal.amount is not None:
                extra["amount"] = deal.amount
                extra["currency"] = event.get("currency") or deal.currency or self.settings.hubspot_currency
            return {**event, **extra}
        return event

    async def contact_email(self, contact_id: str, deadline: float) -> str | None:
        found = await self._get(f"/crm/v3/objects/contacts/{contact_id}", {"properties": "email"}, deadline)
        email = (found or {}).get("properties", {}).get("email")
        return email if isinstance(email, str) and email.strip() else None

    async def deal(self, deal_id: str, deadline: float) -> Deal | None:
        record, links = await asyncio.gather(
            self._get(f"/crm/v3/objects/deals/{deal_id}", {"properties": DEAL_PROPERTIES}, deadline),
            self._get(f"/crm/v4/objects/deals/{deal_id}/associations/contacts", {"limit": "500"}, deadline),
        )
        if record is None:
            return None
        properties = record.get("properties") or {}
        contacts = sorted(
            {str(link["toObjectId"]) for link in (links or {}).get("results", []) if "toObjectId" in link},
            key=lambda contact: (len(contact), contact),  # numeric order of digit strings
        )
        amount = properties.get("amount")
        currency = properties.get("deal_currency_code")
        reason = properties.get("closed_lost_reason")
        return Deal(
            tuple(contacts),
            str(amount) if amount not in (None, "") else None,
            currency.upper() if isinstance(currency, str) and currency else None,
            reason.strip() if isinstance(reason, str) and reason.strip() else None,
        )

    async def _get(self, path: str, params: dict[str, str], deadline: float) -> dict[str, Any] | None:
        """The JSON answer, None for a 404, HubSpotUnavailable when the budget runs out or access is refused."""
        key = f"{path}?{sorted(params.items())}"
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            self._cache.move_to_end(key)
            return cached[1]
        attempt = 0
        while True:
            async with self._slots:
                try:
                    response = await self._client.get(path, params=params)
                except httpx.HTTPError as exc:
                    response, failure = None, f"{type(exc).__name__}"
            if response is not None:
                if response.status_code == 200:
                    return self._remember(key, response.json())
                if response.status_code == 404:
                    return self._remember(key, None)
                if response.status_code in (401, 403):
                    raise HubSpotUnavailable(
                        f"HubSpot refused {path} ({response.status_code}): check CLOSEDLOOP_HUBSPOT_PRIVATE_APP_TOKEN "
                        "and its scopes crm.objects.contacts.read and crm.objects.deals.read",
                        retry_after=60,
                    )
                failure = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    raise HubSpotUnavailable(f"HubSpot answered {failure} to {path}", retry_after=60)
            wait = retry_after_seconds(response.headers.get("retry-after")) if response is not None else None
            if wait is None:
                wait = backoff_seconds(attempt + 1, base=0.25, cap=8.0)
            if time.monotonic() + wait > deadline:
                raise HubSpotUnavailable(
                    f"HubSpot's API did not answer {path} in time ({failure})", retry_after=max(1, round(wait))
                )
            await asyncio.sleep(wait)
            attempt += 1

    def _remember(self, key: str, value: Any) -> Any:
        self._cache[key] = (time.monotonic() + self.settings.hubspot_api_cache_s, value)
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return value
