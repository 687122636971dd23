"""Error bodies the collector answers with: what was wrong, where (a field path), and what to do.

Every rejection is JSON::

    {"error": "invalid_event", "message": "...", "errors": [{"loc": "body.0.visitor_id", "msg": "..."}]}

``error`` is a stable machine-readable reason (also the ``reason`` label of the rejection metric).
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson
from pydantic import ValidationError
from starlette.responses import Response


class ApiError(Exception):
    """A rejection: raised anywhere in a request, turned into a JSON response by the app."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()), status_code=self.status, headers=self.headers, media_type="application/json"
        )


def format_loc(loc: Iterable[Any], prefix: str = "") -> str:
    """('event', 0, 'visitor_id') -> 'event.0.visitor_id'; pydantic's union tags are dropped."""
    parts = [prefix] if prefix else []
    for part in loc:
        text = str(part)
        # Discriminated unions put the tag ("page_view") into the path; the user never wrote it.
        if text in ("page_view", "identify", "crm_status", "spend"):
            continue
        parts.append(text)
    return ".".join(parts) or "body"


def validation_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """pydantic errors -> [{"loc": "a.b", "msg": "..."}], with messages a person can act on."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "field required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field (not part of this event type; check the spelling)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append({"loc": format_loc(err["loc"], prefix), "msg": msg})
    return out


def invalid_json(detail: str) -> ApiError:
    return ApiError(400, "invalid_json", f"the request body is not valid JSON: {detail}")


def body_too_large(limit: int) -> ApiError:
    return ApiError(
        413, "body_too_large", f"the request body is larger than {limit} bytes; split it into smaller batches"
    )


def not_configured(setting: str, endpoint: str) -> ApiError:
    return ApiError(
        503,
        "not_configured",
        f"{endpoint} is disabled: set {setting} on the collector to enable it "
        "(unauthenticated CRM data is never accepted)",
    )


def spool_full(retry_after: int) -> ApiError:
    return ApiError(
        503,
        "spool_full",
        "the broker is unreachable and the on-disk spool is full; nothing was accepted, retry later",
        headers={"Retry-After": str(retry_after)},
    )
