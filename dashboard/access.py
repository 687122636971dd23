"""Who may read the dashboard: anyone on loopback without a token; with a token, only who sends it.

A dashboard bound to any other address without a token is refused before it starts (``check_binding``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

REALM = "closedloop dashboard"


class DashboardAccessError(ValueError):
    """The dashboard cannot start with these settings; the message says what to change."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def check_binding(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise DashboardAccessError(
            f"the dashboard would listen on {host}, which is not a loopback address, with no token: anyone who can "
            "reach it could read every report. Set CLOSEDLOOP_DASHBOARD_TOKEN (a long random string, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or bind to 127.0.0.1."
        )


def presented_token(headers: Headers) -> str | None:
    """The token of an ``Authorization`` header: Bearer, or the password of Basic auth."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


class TokenMiddleware:
    """401 for every request that does not carry the token (when one is set)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token:
            await self.app(scope, receive, send)
            return
        given = presented_token(Headers(scope=scope))
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            response = PlainTextResponse(
                "401: this dashboard needs its token (CLOSEDLOOP_DASHBOARD_TOKEN): send it as the password of "
                "HTTP Basic auth, or as 'Authorization: Bearer TOKEN'.\n",
                status_code=401,
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
