"""``POST /v1/webhooks/salesforce``: Salesforce outbound messages (SOAP), from a workflow rule or a flow.

Salesforce signs nothing. The ``OrganizationId`` of every message must be one of
``CLOSEDLOOP_SALESFORCE_ORGANIZATION_IDS`` (403 otherwise), and when ``CLOSEDLOOP_SALESFORCE_TOKEN`` is set the
endpoint URL configured in Salesforce must carry it as ``?token=...`` (401 otherwise).

The body is a SOAP envelope holding ``notifications`` with up to 100 ``Notification`` elements, each an ``Id``
(kept across Salesforce's retries: the delivery id) and an ``sObject`` with the fields chosen for the message.
Mapping (by the sObject's ``xsi:type``):

- ``Lead``: ``Status`` through ``salesforce_lead_statuses`` (statuses not listed are ignored); the person is
  ``ConvertedContactId`` once converted, else the lead's ``Id``; ``Email`` when sent.
- ``Contact``: ``lead`` stage with ``Email`` (``crm_contact_id`` = the contact's ``Id``), which links the contact
  to the person for the opportunities that name it.
- ``Opportunity``: won (``IsWon``, or a ``StageName`` mapped to customer) -> customer with ``Amount`` and
  ``CurrencyIsoCode`` (else ``salesforce_currency``); closed and not won (or mapped to lost) -> lost; any other
  stage -> opportunity (``salesforce_opportunity_stages`` overrides a stage name). The person is ``ContactId``.
- the reason a lead or opportunity was lost or disqualified: the first non-empty field named in
  ``salesforce_reason_fields`` (custom fields such as ``Loss_Reason__c``).
- other objects are ignored and reported as such.

The change's time is the sObject's ``LastModifiedDate`` (else ``SystemModstamp``, ``CreatedDate``, the time the
message arrived). The answer is the SOAP ``Ack`` Salesforce expects, else it retries the message for 24 hours;
what was accepted, duplicate, ignored or rejected is in the ``X-Closedloop-*`` headers and the collector's log.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from pydantic import ValidationError

from collector.errors import ApiError, not_configured, validation_errors
from collector.settings import CollectorSettings
from collector.webhooks import CrmChange, WebhookResult, epoch_to_datetime, money, window_rejection, without_emails
from schemas.events import CrmStatusChange, LifecycleStage

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100  # the WSDL's maxOccurs
QUOTE = {'"': "&quot;"}  # escape() for attribute values

ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body>'
    f'<notificationsResponse xmlns="{OUTBOUND}"><Ack>true</Ack></notificationsResponse>'
    "</soapenv:Body></soapenv:Envelope>"
).encode()


MEDIA_TYPE = "text/xml; charset=utf-8"  # SOAP 1.1's, as Salesforce sends and expects


def fault(error: ApiError) -> bytes:
    """A SOAP 1.1 fault carrying the collector's error: Salesforce shows its faultstring in the delivery queue."""
    code = "soapenv:Server" if error.status >= 500 else "soapenv:Client"
    details = "".join(
        f'<error loc="{escape(str(item.get("loc", "")), QUOTE)}">{escape(str(item.get("msg", "")))}</error>'
        for item in error.errors
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{escape(error.message)}</faultstring>"
        f'<detail><closedloop error="{escape(error.error, QUOTE)}">{details}</closedloop></detail>'
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    ).encode()


@dataclass(frozen=True)
class Notification:
    """One ``Notification``: its id, the sObject's type and its fields (local names; nil fields are None)."""

    id: str
    object_type: str
    fields: dict[str, str | None]


def verify(token: str | None, settings: CollectorSettings) -> None:
    """Raise ApiError unless the endpoint is configured and, when a token is configured, the URL carries it."""
    if not settings.salesforce_organization_ids:
        raise not_configured("CLOSEDLOOP_SALESFORCE_ORGANIZATION_IDS", "POST /v1/webhooks/salesforce")
    expected = settings.salesforce_token
    if expected is not None and not hmac.compare_digest((token or "").encode(), expected.get_secret_value().encode()):
        raise ApiError(
            401,
            "bad_token",
            "the URL's token parameter does not match CLOSEDLOOP_SALESFORCE_TOKEN: configure the outbound "
            "message's endpoint URL as https://<collector>/v1/webhooks/salesforce?token=<that value>",
        )


def read_notifications(body: bytes) -> tuple[str, list[Notification]]:
    """The organization id and the notifications of one outbound message; 400 naming what is wrong."""
    if not body.strip():
        raise ApiError(400, "empty_body", "the request body is empty; Salesforce sends a SOAP envelope")
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise ApiError(400, "invalid_xml", f"the request body is not XML Salesforce would send: {exc}") from None
    notifications = root.find(f"{{{SOAP_ENV}}}Body/{{{OUTBOUND}}}notifications")
    if notifications is None:
        raise ApiError(
            400,
            "invalid_shape",
            f"no <notifications xmlns={OUTBOUND!r}> in the SOAP body: this endpoint takes Salesforce outbound messages",
        )
    organization = (notifications.findtext(f"{{{OUTBOUND}}}OrganizationId") or "").strip()
    if not organization:
        raise ApiError(
            400, "invalid_shape", "the message has no OrganizationId", [{"loc": "OrganizationId", "msg": "missing"}]
        )
    elements = notifications.findall(f"{{{OUTBOUND}}}Notification")
    if len(elements) > MAX_NOTIFICATIONS:
        raise ApiError(413, "too_many_notifications", f"{len(elements)} notifications; Salesforce sends at most 100")
    return organization, [_notification(element) for element in elements]


def _notification(element: Element) -> Notification:
    sobject = element.find(f"{{{OUTBOUND}}}sObject")
    object_type = "" if sobject is None else (sobject.get(f"{{{XSI}}}type") or "").rpartition(":")[2]
    fields: dict[str, str | None] = {}
    for child in [] if sobject is None else list(sobject):
        name = child.tag.rpartition("}")[2]
        fields[name] = None if child.get(f"{{{XSI}}}nil") == "true" else (child.text or "").strip()
    return Notification((element.findtext(f"{{{OUTBOUND}}}Id") or "").strip(), object_type, fields)


def same_organization(given: str, configured: list[str]) -> bool:
    """Salesforce ids have a case-sensitive 15-character form and an 18-character one (a checksum added)."""
    return any(given[:15] == known[:15] for known in configured)


def parse(body: bytes, settings: CollectorSettings, received_at: datetime | None = None) -> WebhookResult:
    """One outbound message -> its status changes; notifications of other objects are ignored, invalid ones
    rejected by index (naming the field)."""
    received_at = received_at or datetime.now(timezone.utc)
    organization, notifications = read_notifications(body)
    if not same_organization(organization, settings.salesforce_organization_ids):
        raise ApiError(
            403,
            "unknown_organization",
            f"organization {organization} is not in CLOSEDLOOP_SALESFORCE_ORGANIZATION_IDS",
            [{"loc": "OrganizationId", "msg": "not a configured organization"}],
        )
    result = WebhookResult()
    for index, notification in enumerate(notifications):
        if not notification.id:
            result.rejected.append({"index": index, "errors": [{"loc": f"Notification.{index}.Id", "msg": "missing"}]})
            continue
        try:
            stage, extra, reason = _stage(notification, settings)
        except ApiError as exc:
            errors = [{**error, "loc": f"Notification.{index}.{error['loc']}"} for error in exc.errors]
            result.rejected.append({"index": index, "errors": errors})
            continue
        if stage is None:
            result.ignored.append({"index": index, "reason": reason})
            continue
        time_field, occurred_at = _occurred_at(notification.fields, received_at)
        try:
            change = CrmStatusChange(crm="salesforce", stage=stage, occurred_at=occurred_at, **extra)
        except ValidationError as exc:
            result.rejected.append({"index": index, "errors": validation_errors(exc, prefix=f"Notification.{index}")})
            continue
        loc = f"Notification.{index}.sObject.{time_field}"
        if rejected := window_rejection(index, change, settings.accepted_times, received_at, loc):
            result.rejected.append(rejected)
            continue
        result.changes.append(
            CrmChange(
                f"{organization[:15]}:{notification.id}",
                f"salesforce:{organization[:15]}",
                without_emails(change, settings.lead_key_bytes),
            )
        )
    return result


def _stage(
    notification: Notification, settings: CollectorSettings
) -> tuple[LifecycleStage | None, dict[str, Any], str]:
    """(stage or None, the change's other fields, why it was ignored)."""
    fields, kind = notification.fields, notification.object_type
    object_id = fields.get("Id") or ""
    reason = next((fields[name] for name in settings.salesforce_reason_fields if fields.get(name)), None)
    if kind == "Lead":
        status = fields.get("Status")
        stage = settings.salesforce_lead_statuses.get(status or "")
        person = fields.get("ConvertedContactId") or object_id
        who = {
            "crm_object_id": object_id,
            "crm_contact_id": person,
            "email": fields.get("Email") or None,
            "reason": reason,
        }
        return stage, who, f"lead status {status!r} is not in CLOSEDLOOP_SALESFORCE_LEAD_STATUSES"
    if kind == "Contact":
        who = {"crm_object_id": object_id, "crm_contact_id": object_id, "email": fields.get("Email") or None}
        return LifecycleStage.LEAD, who, ""
    if kind == "Opportunity":
        who = {"crm_object_id": object_id, "crm_contact_id": fields.get("ContactId") or None, "reason": reason}
        stage = _opportunity_stage(fields, settings)
        if stage is not LifecycleStage.CUSTOMER:
            return stage, who, ""
        value = money(fields.get("Amount"))
        currency = fields.get("CurrencyIsoCode") or settings.salesforce_currency
        if value is not None and currency is None:
            raise ApiError(
                422,
                "invalid_event",
                "no currency",
                [
                    {
                        "loc": "sObject.CurrencyIsoCode",
                        "msg": "a won opportunity's Amount needs a currency: add CurrencyIsoCode to the outbound "
                        "message's fields, or set CLOSEDLOOP_SALESFORCE_CURRENCY to the organization's currency",
                    }
                ],
            )
        return stage, {**who, "deal_value": value, "currency": currency if value is not None else None}, ""
    return None, {}, f"{kind or 'an sObject without xsi:type'} is not a Lead, Contact or Opportunity"


def _opportunity_stage(fields: dict[str, str | None], settings: CollectorSettings) -> LifecycleStage:
    mapped = settings.salesforce_opportunity_stages.get(fields.get("StageName") or "")
    if mapped is not None:
        return mapped
    if fields.get("IsWon") == "true":
        return LifecycleStage.CUSTOMER
    if fields.get("IsClosed") == "true":
        return LifecycleStage.LOST
    return LifecycleStage.OPPORTUNITY


def _occurred_at(fields: dict[str, str | None], received_at: datetime) -> tuple[str, datetime]:
    for name in ("LastModifiedDate", "SystemModstamp", "CreatedDate"):
        when = epoch_to_datetime(fields.get(name))
        if when is not None:
            return name, when
    return "LastModifiedDate", received_at
