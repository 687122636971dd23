"""Identifier rules shared by every component: junk identifiers and email normalisation."""

from __future__ import annotations

import re

# Values that browsers, tag managers and CRMs emit when an identifier is missing. They must never link anything.
JUNK_IDENTIFIERS = frozenset(
    {"", "null", "none", "nil", "undefined", "anonymous", "anon", "unknown", "0", "-1", "nan", "[object object]"}
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def is_junk_identifier(value: str | None) -> bool:
    """True when ``value`` is missing or one of the placeholder values that identify nobody."""
    return value is None or value.strip().lower() in JUNK_IDENTIFIERS


def normalize_email(email: str) -> str:
    """Trim and lower-case an email address; raise ValueError when it is not one."""
    normalized = email.strip().lower()
    if is_junk_identifier(normalized) or not _EMAIL.match(normalized):
        raise ValueError(f"{email!r} is not an email address (expected name@domain.tld)")
    return normalized
