"""Pure request builders: one outbox message -> the HTTP request a destination documents. No I/O here.

Generic webhook signature (mirrors the inbound ``POST /v1/webhooks/crm`` scheme, plus a timestamp against replays):
``X-Closedloop-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256(secret, ``"<unix seconds>." + raw body``). The receiver recomputes it, compares in constant time and
refuses a timestamp older than its tolerance (e.g. 5 minutes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from schemas.outbox import OutboxMessage

SIGNATURE_HEADER = "X-Closedloop-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def idempotency_key(message: OutboxMessage, destination: str) -> str:
    """One key per (message, destination): the same on every retry and replay, different per destination."""
    return hashlib.sha256(f"{destination}\x00{message.message_id}".encode()).hexdigest()[:32]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, now: int, tolerance_seconds: int = 300) -> bool:
    """What a receiver does (also the docs' example): parse, check the age, compare in constant time."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body).encode(), header.strip().encode())


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True, default=str).encode()


def webhook_body(message: OutboxMessage) -> bytes:
    return _json(message.model_dump(mode="json"))


def generic_webhook(message: OutboxMessage, url: str, secret: str, timestamp: int) -> Request:
    body = webhook_body(message)
    return Request(
        "POST",
        url,
        {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: idempotency_key(message, "webhook"),
            SIGNATURE_HEADER: signature(secret, timestamp, body),
        },
        body,
    )


def slack_text(message: OutboxMessage) -> str:
    title = message.title or f"{message.kind.replace('_', ' ')}: lead {message.lead_id}"
    score = message.payload.get("score")
    return f"{title} (score {score})" if score is not None else title


def summary_lines(message: OutboxMessage) -> list[str]:
    """The lines every human-facing destination shows under the title: lead, time, score, first touch."""
    lines = [f"Lead: {message.lead_id}", f"At: {message.occurred_at.isoformat()}"]
    score = message.payload.get("score")
    if score is not None:
        lines.append(f"Score: {score}")
    first_touch = message.payload.get("first_touch")
    if isinstance(first_touch, dict):
        lines.append("First touch: " + ", ".join(f"{k}={v}" for k, v in sorted(first_touch.items())))
    return lines


def slack(message: OutboxMessage, url: str) -> Request:
    """Slack incoming webhook: ``{"text": ..., "blocks": [...]}``; ``text`` is the notification fallback."""
    text = slack_text(message)
    lines = [f"*{text}*", f"Lead: `{message.lead_id}`", *summary_lines(message)[1:]]
    lines = [line for line in lines if not line.startswith("Score: ")]  # the title carries the score
    body = {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]}
    # Slack's incoming webhooks ignore the header; sent for symmetry with every other destination.
    headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: idempotency_key(message, "slack")}
    return Request("POST", url, headers, _json(body))
