"""The OpenAPI document of the collector, built from the ``schemas`` models (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from collector.settings import CollectorSettings
from collector.webhooks.generic import GenericCrmEvent
from schemas.events import CrmStatusChange, Identify, PageView, SpendRow

_REF = "#/components/schemas/{model}"


def _schema(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF)
    defs.update(schema.pop("$defs", {}))
    return schema


def openapi_document(settings: CollectorSettings) -> dict[str, Any]:
    """OpenAPI 3.1: the request formats, and the error body every rejection uses."""
    defs: dict[str, Any] = {}
    components = {
        m.__name__: _schema(m, defs) for m in (PageView, Identify, CrmStatusChange, SpendRow, GenericCrmEvent)
    }
    components.update(defs)
    components["Error"] = {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "Stable reason, e.g. invalid_json, unknown_key."},
            "message": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {"type": "object", "properties": {"loc": {"type": "string"}, "msg": {"type": "string"}}},
            },
        },
    }
    event = {"oneOf": [{"$ref": _REF.format(model=m)} for m in ("PageView", "Identify", "CrmStatusChange", "SpendRow")]}
    error = {"content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}}

    def post(summary: str, body: dict[str, Any], codes: dict[str, str]) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                "responses": {
                    "200": {"description": "Accepted (see 'accepted', 'rejected' by index)."},
                    **{code: {"description": text, **error} for code, text in codes.items()},
                },
            }
        }

    auth_errors = {"401": "Missing or bad signature / credentials.", "503": "Secret not set, or spool full."}
    return {
        "openapi": "3.1.0",
        "info": {"title": "closedloop collector", "version": "1"},
        "paths": {
            "/v1/events": post(
                'One event, an array of events, or {"batch": [...]}; key in X-Closedloop-Key or ?key=.',
                {
                    "oneOf": [
                        event,
                        {"type": "array", "items": event, "maxItems": settings.max_batch_events},
                        {"type": "object", "properties": {"batch": {"type": "array", "items": event}}},
                    ]
                },
                {
                    "400": "Not JSON, or the wrong shape.",
                    "401": "Missing or unknown write key.",
                    "403": "Origin not allowed.",
                    "413": "Body or batch too large.",
                    "422": "No event valid.",
                    "503": "Spool full: retry after Retry-After seconds.",
                },
            ),
            "/v1/webhooks/hubspot": post("HubSpot webhook events (signature v3).", {"type": "array"}, auth_errors),
            "/v1/webhooks/pipedrive": post("Pipedrive webhooks v2 (HTTP Basic auth).", {"type": "object"}, auth_errors),
            "/v1/webhooks/crm": post(
                "Generic CRM format, X-Closedloop-Signature: sha256=<hex HMAC of the raw body>.",
                {
                    "type": "object",
                    "properties": {
                        "source": {"type": "string"},
                        "events": {"type": "array", "items": {"$ref": _REF.format(model="GenericCrmEvent")}},
                    },
                },
                auth_errors,
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
                    "responses": {"200": {"description": "JavaScript"}},
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
        "components": {"schemas": components},
    }
