"""``POST /v1/webhooks/salesforce``: Salesforce outbound messages in the shape of Salesforce's outbound messaging
WSDL (``notifications`` of the ``http://soap.sforce.com/2005/09/outbound`` namespace, sObjects of
``urn:sobject.enterprise.soap.sforce.com``), answered with the documented ``Ack``. Salesforce itself cannot reach
this machine: the messages below follow the WSDL and the sample notification of its documentation."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from collector_support import collector_settings, offline_client, spooled

ORG = "00D5e000000KQ2eEAG"
ENDPOINT = "/v1/webhooks/salesforce"
SOAP = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b'<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    b"</notificationsResponse></soapenv:Body></soapenv:Envelope>"
)


def message(*notifications: str, organization: str = ORG) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{organization}</OrganizationId>
   <ActionId>04k5e000000CaRkAAK</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/60.0/00D5e000000KQ2e</EnterpriseUrl>
   <PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/60.0/00D5e000000KQ2e</PartnerUrl>
   {"".join(notifications)}
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>""".encode()


def notification(notification_id: str, sobject_type: str, **fields: str | None) -> str:
    values = "".join(
        f'<sf:{name} xsi:nil="true"/>' if value is None else f"<sf:{name}>{value}</sf:{name}>"
        for name, value in fields.items()
    )
    return (
        f"<Notification><Id>{notification_id}</Id>"
        f'<sObject xsi:type="sf:{sobject_type}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{values}</sObject>'
        "</Notification>"
    )


WON = notification(
    "04l5e00000Gx7QzAAJ",
    "Opportunity",
    Id="0065e00000AbCdEAAV",
    StageName="Closed Won",
    Amount="12500.5",
    CurrencyIsoCode="EUR",
    IsWon="true",
    IsClosed="true",
    ContactId="0035e00000XyZaBAAV",
    LastModifiedDate="2024-05-06T10:20:30.000Z",
)
CONTACT = notification(
    "04l5e00000Gx7R0AAJ",
    "Contact",
    Id="0035e00000XyZaBAAV",
    Email="Ann@Acme.test",
    LastModifiedDate="2024-05-01T08:00:00.000Z",
)
WORKING = notification(
    "04l5e00000Gx7R1AAJ",
    "Lead",
    Id="00Q5e00000LeAdAAAA",
    Email="bob@acme.test",
    Status="Working - Contacted",
    ConvertedContactId=None,
    LastModifiedDate="2024-05-02T09:00:00.000Z",
)
ACCOUNT = notification("04l5e00000Gx7R2AAJ", "Account", Id="0015e00000ZkM3hAAF", Name="Acme Corporation")


@pytest.fixture
def client(tmp_path: Path):
    with offline_client(collector_settings(tmp_path, salesforce_organization_ids=[ORG])) as client:
        yield client


def records(client) -> list[tuple[str, str, dict]]:
    return [(r.topic, r.key.decode(), orjson.loads(r.value)) for r in spooled(client)]


def test_notifications_become_stage_changes_and_are_acknowledged(client) -> None:
    response = client.post(ENDPOINT, content=message(WON, CONTACT, WORKING, ACCOUNT), headers=SOAP)
    assert response.status_code == 200, response.text
    assert response.content == ACK
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    counts = {name: response.headers[f"x-closedloop-{name}"] for name in ("accepted", "duplicates", "ignored")}
    assert counts == {"accepted": "3", "duplicates": "0", "ignored": "1"}
    assert response.headers["x-closedloop-rejected"] == "0"
    got = [
        (topic, key, e["event_id"], e["site_id"], e["event"]["stage"], e["event"]["occurred_at"])
        for topic, key, e in records(client)
    ]
    assert got == [
        (
            "closedloop.crm",
            "salesforce:0035e00000XyZaBAAV",
            "salesforce:00D5e000000KQ2e:04l5e00000Gx7QzAAJ",
            "salesforce:00D5e000000KQ2e",
            "customer",
            "2024-05-06T10:20:30Z",
        ),
        (
            "closedloop.crm",
            "ann@acme.test",
            "salesforce:00D5e000000KQ2e:04l5e00000Gx7R0AAJ",
            "salesforce:00D5e000000KQ2e",
            "lead",
            "2024-05-01T08:00:00Z",
        ),
        (
            "closedloop.crm",
            "bob@acme.test",
            "salesforce:00D5e000000KQ2e:04l5e00000Gx7R1AAJ",
            "salesforce:00D5e000000KQ2e",
            "mql",
            "2024-05-02T09:00:00Z",
        ),
    ]
    won, contact, lead = (e["event"] for _, _, e in records(client))
    assert (won["deal_value"], won["currency"], won["crm_object_id"], won["crm_contact_id"]) == (
        "12500.50",
        "EUR",
        "0065e00000AbCdEAAV",
        "0035e00000XyZaBAAV",
    )
    assert (contact["email"], contact["crm_contact_id"]) == ("ann@acme.test", "0035e00000XyZaBAAV")
    assert (lead["crm_object_id"], lead["crm_contact_id"]) == ("00Q5e00000LeAdAAAA", "00Q5e00000LeAdAAAA")


def test_a_resent_message_is_acknowledged_and_counted_once(client) -> None:
    first = client.post(ENDPOINT, content=message(WON, CONTACT), headers=SOAP)
    again = client.post(ENDPOINT, content=message(CONTACT, WON), headers=SOAP)
    assert (first.content, again.content) == (ACK, ACK)
    assert (again.headers["x-closedloop-accepted"], again.headers["x-closedloop-duplicates"]) == ("0", "2")
    assert len(records(client)) == 2


def test_opportunity_stages_without_is_won(client) -> None:
    open_one = notification("n-open", "Opportunity", Id="006A", StageName="Negotiation/Review", ContactId="003A")
    lost = notification("n-lost", "Opportunity", Id="006B", StageName="Closed Lost", IsClosed="true", ContactId="003B")
    response = client.post(ENDPOINT, content=message(open_one, lost), headers=SOAP)
    assert response.headers["x-closedloop-accepted"] == "2"
    assert [(key, e["event"]["stage"], e["event"]["deal_value"]) for _, key, e in records(client)] == [
        ("salesforce:003A", "opportunity", None),
        ("salesforce:003B", "lost", None),
    ]


def test_a_won_amount_without_a_currency_is_rejected_by_field_and_still_acknowledged(client, tmp_path) -> None:
    won = notification("n-1", "Opportunity", Id="006C", IsWon="true", Amount="100", ContactId="003C")
    unmapped = notification("n-2", "Lead", Id="00QA", Email="c@acme.test", Status="Nurturing")
    response = client.post(ENDPOINT, content=message(won, unmapped), headers=SOAP)
    assert (response.status_code, response.content) == (200, ACK)
    counts = [response.headers[f"x-closedloop-{n}"] for n in ("accepted", "ignored", "rejected")]
    assert counts == ["0", "1", "1"]
    assert records(client) == []

    settings = collector_settings(tmp_path / "other", salesforce_organization_ids=[ORG], salesforce_currency="USD")
    with offline_client(settings) as other:
        assert other.post(ENDPOINT, content=message(won), headers=SOAP).headers["x-closedloop-accepted"] == "1"
        assert [(e["event"]["deal_value"], e["event"]["currency"]) for _, _, e in records(other)] == [("100.00", "USD")]


def fault_of(response) -> tuple[int, str, str]:
    from xml.etree.ElementTree import fromstring

    body = fromstring(response.content)
    fault = body.find(
        "{http://schemas.xmlsoap.org/soap/envelope/}Body/{http://schemas.xmlsoap.org/soap/envelope/}Fault"
    )
    assert fault is not None, response.text
    return response.status_code, fault.findtext("faultcode"), fault.findtext("faultstring")


def test_refusals_are_soap_faults_naming_the_fix(client, tmp_path) -> None:
    other_org = client.post(ENDPOINT, content=message(WON, organization="00D000000000001AAA"), headers=SOAP)
    assert fault_of(other_org) == (
        403,
        "soapenv:Client",
        "organization 00D000000000001AAA is not in CLOSEDLOOP_SALESFORCE_ORGANIZATION_IDS",
    )
    assert fault_of(client.post(ENDPOINT, content=b"{}", headers=SOAP))[:2] == (400, "soapenv:Client")
    not_outbound = client.post(ENDPOINT, content=b"<a><b/></a>", headers=SOAP)
    assert fault_of(not_outbound)[2].startswith("no <notifications xmlns='http://soap.sforce.com/2005/09/outbound'>")
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>'
    assert fault_of(client.post(ENDPOINT, content=bomb, headers=SOAP))[:2] == (400, "soapenv:Client")
    many = message(*(notification(f"n{i}", "Contact", Id=f"003{i}", Email=f"p{i}@a.test") for i in range(101)))
    assert fault_of(client.post(ENDPOINT, content=many, headers=SOAP))[0] == 413
    assert records(client) == []

    with offline_client(collector_settings(tmp_path / "none")) as unconfigured:
        status, code, text = fault_of(unconfigured.post(ENDPOINT, content=message(WON), headers=SOAP))
        assert (status, code) == (503, "soapenv:Server")
        assert "CLOSEDLOOP_SALESFORCE_ORGANIZATION_IDS" in text


def test_the_15_character_organization_id_and_the_url_token(tmp_path) -> None:
    settings = collector_settings(tmp_path, salesforce_organization_ids=[ORG[:15]], salesforce_token="t0ken")
    with offline_client(settings) as client:
        wrong = client.post(f"{ENDPOINT}?token=nope", content=message(CONTACT), headers=SOAP)
        assert fault_of(wrong)[:2] == (401, "soapenv:Client")
        assert "?token=" in fault_of(wrong)[2]
        right = client.post(f"{ENDPOINT}?token=t0ken", content=message(CONTACT), headers=SOAP)
        assert (right.content, right.headers["x-closedloop-accepted"]) == (ACK, "1")
