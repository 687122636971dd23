"""The OpenAPI document of the collector, built from the ``schemas`` and webhook models (served at
``/openapi.json``). Each POST describes its body and lists every answer it can give, with its body, so a client
generator, or a fuzzer (tests/test_collector_openapi.py runs schemathesis over it), knows them all."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from collector.settings import CollectorSettings
from collector.webhooks.generic import MAX_EVENTS as GENERIC_MAX_EVENTS
from collector.webhooks.generic import GenericCrmEvent
from collector.webhooks.hubspot import HubSpotEvent
from collector.webhooks.pipedrive import PipedriveDelivery
from schemas.events import CrmStatusChange, Identify, PageView, SpendRow

_REF = "#/components/schemas/{model}"


def _ref(model: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=model)}


def _schema(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF)
    defs.update(schema.pop("$defs", {}))
    return schema


_FIELD_ERRORS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["loc", "msg"],
        "properties": {"loc": {"type": "string"}, "msg": {"type": "string"}},
    },
}


def _answer_schemas() -> dict[str, Any]:
    """The bodies the collector answers with: the error body, and what an accepted request reports."""
    rejection = {
        "type": "object",
        "required": ["index", "errors"],
        "description": "An event of the body that was not accepted, by its index, and what to fix in it.",
        "properties": {"index": {"type": "integer", "minimum": 0}, "errors": _FIELD_ERRORS},
    }
    ignored = {
        "type": "object",
        "required": ["index", "reason"],
        "description": "A CRM event that is valid but not a lifecycle change the collector follows.",
        "properties": {"index": {"type": "integer", "minimum": 0}, "reason": {"type": "string"}},
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "description": "Every refusal. 'invalid_events' (422) also reports 'accepted' (0) and 'rejected'.",
            "properties": {
                "error": {"type": "string", "description": "Stable reason, e.g. invalid_json, unknown_key."},
                "message": {"type": "string", "description": "What was wrong and how to fix it."},
                "errors": _FIELD_ERRORS,
                "accepted": {"type": "integer", "minimum": 0},
                "duplicates": {"type": "integer", "minimum": 0},
                "ignored": {"type": "array", "items": _ref("Ignored")},
                "rejected": {"type": "array", "items": _ref("Rejection")},
                "event_ids": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Rejection": rejection,
        "Ignored": ignored,
        "EventsAccepted": {
            "type": "object",
            "required": ["accepted", "rejected", "event_ids"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 1},
                "rejected": {"type": "array", "items": _ref("Rejection")},
                "event_ids": {"type": "array", "items": {"type": "string"}, "description": "In body order."},
            },
        },
        "WebhookAccepted": {
            "type": "object",
            "required": ["accepted", "duplicates", "ignored", "rejected", "event_ids"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0},
                "duplicates": {"type": "integer", "minimum": 0, "description": "Deliveries accepted before."},
                "ignored": {"type": "array", "items": _ref("Ignored")},
                "rejected": {"type": "array", "items": _ref("Rejection")},
                "event_ids": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": description}


def openapi_document(settings: CollectorSettings) -> dict[str, Any]:
    """OpenAPI 3.1: the request formats, the answers, and the error body every rejection uses."""
    defs: dict[str, Any] = {}
    models: tuple[type[BaseModel], ...] = (
        PageView,
        Identify,
        CrmStatusChange,
        SpendRow,
        GenericCrmEvent,
        HubSpotEvent,
        PipedriveDelivery,
    )
    components = {m.__name__: _schema(m, defs) for m in models}
    components.update(defs)
    components.update(_answer_schemas())
    event = {"oneOf": [_ref(m) for m in ("PageView", "Identify", "CrmStatusChange", "SpendRow")]}
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    retry_after = {"Retry-After": {"description": "Seconds to wait (spool full).", "schema": {"type": "string"}}}

    def post(
        summary: str,
        body: dict[str, Any],
        accepted: str,
        codes: dict[str, str],
        headers: list[dict[str, Any]],
        security: list[dict[str, list[str]]],
    ) -> dict[str, Any]:
        responses: dict[str, Any] = {
            "200": {
                "description": "Accepted; events that were not are reported in 'rejected' by index.",
                "content": {"application/json": {"schema": _ref(accepted)}},
            },
        }
        for code, text in codes.items():
            responses[code] = {"description": text, **error}
        responses["503"]["headers"] = retry_after
        return {
            "post": {
                "summary": summary,
                "parameters": [
                    *headers,
                    _header("Content-Encoding", "gzip or deflate when the body is compressed."),
                ],
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                "responses": responses,
            }
        }

    body_errors = {
        "400": "Not JSON, not the documented shape, an empty batch, or a body that is not valid gzip/deflate.",
        "413": f"Body larger than {settings.max_body_bytes} bytes (sent or decoded), or too many events.",
        "415": "A Content-Encoding other than gzip or deflate.",
        "422": "Not one event was valid: 'rejected' says what to fix in each.",
    }
    webhook_errors = {
        "401": "Missing or bad signature / credentials.",
        **body_errors,
        "503": "The webhook's secret is not set (not_configured), or the spool is full (spool_full).",
    }
    generic_events = {"type": "array", "items": _ref("GenericCrmEvent"), "minItems": 1}
    return {
        "openapi": "3.1.0",
        "info": {"title": "closedloop collector", "version": "1"},
        "paths": {
            "/v1/events": post(
                'One event, an array of events, or {"batch": [...]}; key in X-Closedloop-Key or ?key=.',
                {
                    "oneOf": [
                        event,
                        {"type": "array", "items": event, "minItems": 1, "maxItems": settings.max_batch_events},
                        {
                            "type": "object",
                            "required": ["batch"],
                            "additionalProperties": False,
                            "properties": {
                                "batch": {
                                    "type": "array",
                                    "items": event,
                                    "minItems": 1,
                                    "maxItems": settings.max_batch_events,
                                }
                            },
                        },
                    ]
                },
                "EventsAccepted",
                {
                    "400": body_errors["400"],
                    "401": "Missing or unknown write key.",
                    "403": "Origin not allowed.",
                    "413": body_errors["413"],
                    "415": body_errors["415"],
                    "422": body_errors["422"],
                    "503": "Spool full: retry after Retry-After seconds.",
                },
                [_header("Origin", "The page's origin: browser keys accept only CLOSEDLOOP_ALLOWED_ORIGINS.")],
                [{"writeKey": []}, {"writeKeyQuery": []}],
            ),
            "/v1/webhooks/hubspot": post(
                "HubSpot webhook events (signature v3).",
                {"type": "array", "items": _ref("HubSpotEvent"), "minItems": 1},
                "WebhookAccepted",
                webhook_errors,
                [_header("X-HubSpot-Request-Timestamp", "Milliseconds since the epoch, within 5 minutes.")],
                [{"hubspotSignature": []}],
            ),
            "/v1/webhooks/pipedrive": post(
                "Pipedrive webhooks v2 (HTTP Basic auth).",
                _ref("PipedriveDelivery"),
                "WebhookAccepted",
                webhook_errors,
                [],
                [{"pipedriveBasic": []}],
            ),
            "/v1/webhooks/crm": post(
                "Generic CRM format, X-Closedloop-Signature: sha256=<hex HMAC of the raw body>.",
                {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["events"],
                            "additionalProperties": False,
                            "properties": {
                                "source": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
                                "events": {**generic_events, "maxItems": GENERIC_MAX_EVENTS},
                            },
                        },
                        _ref("GenericCrmEvent"),
                        {**generic_events, "maxItems": GENERIC_MAX_EVENTS},
                    ]
                },
                "WebhookAccepted",
                webhook_errors,
                [],
                [{"crmSignature": []}],
            ),
            "/v1/webhooks/salesforce": {
                "post": {
                    "summary": "Salesforce outbound messages (SOAP); organization id checked, optional ?token=.",
                    "parameters": [{"name": "token", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "requestBody": {
                        "required": True,
                        "content": {"text/xml": {"schema": {"type": "string", "description": "SOAP notifications"}}},
                    },
                    "responses": {
                        code: {"description": text, "content": {"text/xml": {"schema": {"type": "string"}}}}
                        for code, text in {
                            "200": "SOAP Ack; counts in X-Closedloop-Accepted/-Duplicates/-Ignored/-Rejected.",
                            "400": "SOAP fault: not XML, or not an outbound message.",
                            "401": "SOAP fault: wrong or missing token.",
                            "403": "SOAP fault: organization not configured.",
                            "413": "SOAP fault: body too large.",
                            "503": "SOAP fault: endpoint not configured, or spool full.",
                        }.items()
                    },
                }
            },
            "/tracker.js": {
                "get": {
                    "summary": "The website tracker (minified).",
                    "responses": {"200": {"description": "JavaScript"}, "304": {"description": "Not modified"}},
                }
            },
            "/healthz": {"get": {"summary": "The process is up.", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {
                "get": {
                    "summary": "The broker is reachable.",
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "broker unreachable (events are being spooled)"},
                    },
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {"200": {"description": "text"}}}},
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "writeKey": {"type": "apiKey", "in": "header", "name": "X-Closedloop-Key"},
                "writeKeyQuery": {"type": "apiKey", "in": "query", "name": "key"},
                "hubspotSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-HubSpot-Signature-v3",
                    "description": "base64 HMAC-SHA256(client secret, method + URI + body + timestamp).",
                },
                "pipedriveBasic": {"type": "http", "scheme": "basic"},
                "crmSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Closedloop-Signature",
                    "description": "sha256=<hex HMAC-SHA256(CLOSEDLOOP_CRM_WEBHOOK_SECRET, raw body)>.",
                },
            },
        },
    }
