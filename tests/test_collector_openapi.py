"""schemathesis over the collector's OpenAPI document, against a live ``closedloop collector`` on 127.0.0.1 with
the embedded broker: generated requests for every documented operation (valid bodies and invalid ones, for
/v1/events and each CRM webhook) must never get a 5xx, and every answer must be one the document lists, with
the content type and body it documents.

The webhooks authenticate their bodies, so the test signs each generated body as the CRM would (HubSpot's v3
signature, Pipedrive's Basic credentials, the generic HMAC): the fuzzing reaches the parsers behind the
signature check instead of stopping at 401. Examples are bounded per operation so the run takes well under a
minute.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from faults.support import CollectorProcess
from harness import unique
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from collector.webhooks import generic, hubspot
from deploy.topics import create_topics
from schemas.settings import PipelineSettings

pytestmark = pytest.mark.kafka

HUBSPOT_SECRET = "openapi-hubspot-secret"
PIPEDRIVE_USER, PIPEDRIVE_PASSWORD = "openapi", "openapi-pipedrive-password"
CRM_SECRET = "openapi-crm-secret"
WRITE_KEY = "demo-write-key"
WEBHOOKS = {"/v1/webhooks/hubspot", "/v1/webhooks/pipedrive", "/v1/webhooks/crm", "/v1/webhooks/salesforce"}
SALESFORCE_ORG, SALESFORCE_TOKEN = "00D5e000000KQ2eEAG", "openapi-salesforce-token"
EXAMPLES = 40  # per operation and mode: about 30 s for the whole run on the shared two-core machine
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def collector_url(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    prefix = unique("openapi")
    create_topics(PipelineSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=prefix))
    collector = CollectorProcess(
        tmp_path_factory.mktemp("openapi-collector"),
        kafka_bootstrap,
        prefix,
        extra_env={
            "CLOSEDLOOP_HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
            "CLOSEDLOOP_PIPEDRIVE_USER": PIPEDRIVE_USER,
            "CLOSEDLOOP_PIPEDRIVE_PASSWORD": PIPEDRIVE_PASSWORD,
            "CLOSEDLOOP_CRM_WEBHOOK_SECRET": CRM_SECRET,
            "CLOSEDLOOP_SALESFORCE_ORGANIZATION_IDS": json.dumps([SALESFORCE_ORG]),
            "CLOSEDLOOP_SALESFORCE_TOKEN": SALESFORCE_TOKEN,
        },
    )
    collector.start()
    try:
        yield f"http://127.0.0.1:{collector.port}"
    finally:
        collector.stop()


def signed(path: str, base_url: str, body: bytes) -> dict[str, str]:
    """The credentials a real sender puts on ``body`` for ``path``."""
    if path == "/v1/events":
        return {"X-Closedloop-Key": WRITE_KEY}
    if path == "/v1/webhooks/hubspot":
        timestamp = str(int(time.time() * 1000))
        signature = hubspot.sign(HUBSPOT_SECRET, "POST", base_url + path, body, timestamp)
        return {hubspot.SIGNATURE_HEADER: signature, hubspot.TIMESTAMP_HEADER: timestamp}
    if path == "/v1/webhooks/pipedrive":
        token = base64.b64encode(f"{PIPEDRIVE_USER}:{PIPEDRIVE_PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if path == "/v1/webhooks/crm":
        return {generic.SIGNATURE_HEADER: generic.sign(CRM_SECRET, body)}
    return {}


def send(case, collector_url: str):
    """Send a generated case as the sender of its path would: the body serialized once, then signed."""
    import requests

    kwargs = case.as_transport_kwargs(base_url=collector_url)
    headers = dict(kwargs.get("headers") or {})
    if case.method.upper() == "POST" and "json" in kwargs:
        body = json.dumps(kwargs.pop("json")).encode()  # the stdlib: generated integers may pass 64 bits
        headers["Content-Type"] = "application/json"
        kwargs["data"] = body
        headers.update(signed(case.path, collector_url, body))
        # A generated coding or origin would refuse the body before its parser (both have tests of their own).
        headers.pop("Content-Encoding", None)
        headers.pop("Origin", None)
    if case.path == "/v1/webhooks/salesforce":  # Salesforce's credential is the URL's token
        kwargs["params"] = {**(kwargs.get("params") or {}), "token": SALESFORCE_TOKEN}
        headers.pop("Content-Encoding", None)
    kwargs["headers"] = headers
    return requests.request(**kwargs, timeout=30)


def fuzz(operation, mode: GenerationMode, collector_url: str, statuses: Counter[tuple[str, int]]) -> None:
    """Send ``EXAMPLES`` generated cases of one operation, checking each answer against the document."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        response = send(case, collector_url)
        statuses[(operation.path, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda mode: mode.value)
def test_every_documented_operation_answers_as_documented_and_never_5xx(collector_url: str, mode) -> None:
    api = schemathesis.openapi.from_url(f"{collector_url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/events", *WEBHOOKS}, "an operation is missing from the document"
    statuses: Counter[tuple[str, int]] = Counter()
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue

        fuzz(operation, mode, collector_url, statuses)
    print(f"\n{mode.value}: " + ", ".join(f"{path} {status}: {n}" for (path, status), n in sorted(statuses.items())))
    # The signed bodies got past authentication to each parser (an answer other than 401/403/503 on every POST).
    reached = {path for (path, status) in statuses if status not in (401, 403, 503)}
    posts = {"/v1/events", *WEBHOOKS}
    assert reached >= posts, f"no generated body reached the parser of {posts - reached}"
