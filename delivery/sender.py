"""Sending one request with retries: exponential back-off with full jitter, ``Retry-After`` honoured on 429/503.

A 2xx is delivered; a 4xx other than 408/429 will not get better by resending and is dead at once; 5xx, 408, 429
and network errors are retried until ``max_tries``, then dead with the last reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from delivery.requests import Request
from schemas.retry import backoff_seconds, retry_after_seconds

RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    tries: int
    status: int | None  # the last HTTP status, None when the last try got no answer
    reason: str  # "" when delivered
    body: bytes = b""  # the answer's body when delivered (a CRM search's result), else empty


def send(
    client: httpx.Client,
    request: Request,
    *,
    max_tries: int,
    base_seconds: float = 1.0,
    cap_seconds: float = 60.0,
    max_retry_after_seconds: float = 300.0,
    sleep: Callable[[float], object] = time.sleep,
) -> Outcome:
    status: int | None = None
    reason = ""
    for attempt in range(1, max_tries + 1):
        try:
            response = client.request(request.method, request.url, headers=request.headers, content=request.body)
        except httpx.HTTPError as error:
            status, reason = None, f"{type(error).__name__}: no answer from the destination"
            wait = backoff_seconds(attempt, base_seconds, cap_seconds)
        else:
            status = response.status_code
            if 200 <= status < 300:
                return Outcome(True, attempt, status, "", response.content)
            reason = f"HTTP {status}: {response.text[:200]}"
            if status not in RETRYABLE:
                return Outcome(False, attempt, status, reason)
            wait = backoff_seconds(attempt, base_seconds, cap_seconds)
            if status in (429, 503):
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                if asked is not None:
                    wait = min(asked, max_retry_after_seconds)
        if attempt < max_tries:
            sleep(wait)
    return Outcome(False, max_tries, status, f"gave up after {max_tries} tries; last: {reason}")
