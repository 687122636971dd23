"""Identifier rules shared by every component: junk identifiers, email normalisation and the lead id.

The lead id lives here because the collector and the stream jobs must compute the same one: the stream jobs key
every lead by it, and the collector stores it where a CRM record would otherwise carry the raw email (the raw
email lives only in the ``leads`` table, which ``closedloop erase`` empties of a person).
"""

from __future__ import annotations

import hashlib
import hmac
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


LEAD_ID_LENGTH = 32


def lead_id_for(email: str, key: bytes) -> str:
    """The lead id of an email: HMAC-SHA256(key, normalised email), hex, 32 characters.

    A keyed hash, so analytics tables carry an id that cannot be reversed by hashing a list of known addresses.
    Raises ValueError when ``email`` is junk or not an email address, or when the key is empty.
    """
    if not key:
        raise ValueError("the lead id key is empty: set CLOSEDLOOP_LEAD_ID_KEY")
    normalized = normalize_email(email)
    return hmac.new(key, normalized.encode("utf-8"), hashlib.sha256).hexdigest()[:LEAD_ID_LENGTH]


def is_email(value: str | None) -> bool:
    """True when ``value`` reads as an email address (after trimming and lower-casing)."""
    if value is None:
        return False
    try:
        normalize_email(value)
    except ValueError:
        return False
    return True


def pseudonymous_id(value: str, key: bytes) -> str:
    """``value`` itself, or its lead id when it is an email address: for identifiers a CRM may fill with one
    (a record id, a contact id), so that no stored identifier is a raw email."""
    return lead_id_for(value, key) if is_email(value) else value
