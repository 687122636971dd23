"""Why a lead was lost or disqualified, as each CRM path says it, reaches the CRM record's ``reason``."""

from __future__ import annotations

from pathlib import Path

import orjson
from collector_support import (
    CRM_SECRET,
    HUBSPOT_SECRET,
    basic_auth,
    collector_settings,
    dumps,
    hubspot_headers,
    offline_client,
    spooled,
)
from test_collector_unit import hubspot_event, pipedrive_body
from test_salesforce_webhook import ORG, SOAP, message, notification

from collector import imports
from collector.webhooks.generic import sign as sign_generic
from schemas.topics import Topics


def reasons(client) -> list[tuple[str, str | None]]:
    return [(e["stage"], e.get("reason")) for e in (orjson.loads(r.value)["event"] for r in spooled(client))]


def test_each_webhook_carries_the_reason(tmp_path: Path) -> None:
    settings = collector_settings(tmp_path, salesforce_organization_ids=[ORG])
    with offline_client(settings) as client:
        lost_deal = pipedrive_body(
            "deal",
            "change",
            {"id": 31, "status": "lost", "lost_reason": "Went with a competitor", "person_id": 12},
            {"status": "open"},
            meta_id="m-lost",
        )
        assert client.post("/v1/webhooks/pipedrive", json=lost_deal, headers=basic_auth()).json()["accepted"] == 1

        hubspot = [
            hubspot_event(
                1,
                subscriptionType="contact.propertyChange",
                objectId=5,
                propertyName="hs_lead_status",
                propertyValue="UNQUALIFIED",
            ),
            hubspot_event(
                2,
                subscriptionType="contact.propertyChange",
                objectId=6,
                propertyName="hs_lead_status",
                propertyValue="IN_PROGRESS",
            ),
            hubspot_event(
                3,
                subscriptionType="deal.propertyChange",
                objectId=70,
                propertyName="dealstage",
                propertyValue="closedlost",
                contactId=5,
                reason="No budget",
            ),
        ]
        body = orjson.dumps(hubspot)
        answer = client.post(
            "/v1/webhooks/hubspot",
            content=body,
            headers=hubspot_headers(body, "http://testserver/v1/webhooks/hubspot", HUBSPOT_SECRET),
        ).json()
        assert answer["accepted"] == 2
        assert answer["ignored"] == [
            {"index": 1, "reason": "lead status 'IN_PROGRESS' is not mapped (CLOSEDLOOP_HUBSPOT_LEAD_STATUSES)"}
        ]

        lost_opportunity = notification(
            "n-9", "Opportunity", Id="006Z", StageName="Closed Lost", IsClosed="true", ContactId="003Z",
            Loss_Reason__c="Price",
        )  # fmt: skip
        sf = client.post("/v1/webhooks/salesforce", content=message(lost_opportunity), headers=SOAP)
        assert sf.headers["x-closedloop-accepted"] == "1"

        generic = dumps(
            {"events": [{"id": "g1", "stage": "lost", "occurred_at": "2024-05-05T09:00:00Z", "email": "x@acme.test",
                         "reason": "Timing"}]}
        )  # fmt: skip
        headers = {"X-Closedloop-Signature": sign_generic(CRM_SECRET, generic)}
        assert client.post("/v1/webhooks/crm", content=generic, headers=headers).json()["accepted"] == 1

        assert reasons(client) == [
            ("lost", "Went with a competitor"),
            ("disqualified", "UNQUALIFIED"),
            ("lost", "No budget"),
            ("lost", "Price"),
            ("lost", "Timing"),
        ]


def test_a_sheet_reason_column(tmp_path: Path) -> None:
    path = tmp_path / "crm.csv"
    path.write_text(
        "email,stage,date,lost_reason\n"
        "a@acme.test,lost,2024-05-01T10:00:00Z,Too expensive\n"
        "b@acme.test,customer,2024-05-01T10:00:00Z,\n"
    )
    records = list(imports.parse_file(path, "crm", Topics("t"), imports.ImportSummary()))
    assert [(e["stage"], e.get("reason")) for e in (orjson.loads(r.value)["event"] for r in records)] == [
        ("lost", "Too expensive"),
        ("customer", None),
    ]
