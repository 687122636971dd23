"""Who may talk to the embedded endpoint: this machine's own clients, with the password.

- **The password** of user ``default`` lives in a file (mode 0600): ``closedloop up`` makes
  ``<data_dir>/local-password`` and passes it with ``--password-file``; run by hand, the endpoint makes
  ``<path>/password``. Clients send it as ClickHouse's HTTP interface takes it: HTTP Basic auth, the
  ``X-ClickHouse-User``/``X-ClickHouse-Key`` headers, or the ``user``/``password`` URL parameters.
- **Loopback names only.** A web page can make a browser send requests to 127.0.0.1 (a cross-site POST with
  ``Content-Type: text/plain`` needs no preflight), or rebind its own host name to 127.0.0.1 (DNS rebinding), and
  the endpoint would see a local connection either way. A browser always names the site it thinks it talks to:
  the ``Host`` of a rebound request is the attacker's name, and a cross-site request carries the page's ``Origin``.
  So a request whose ``Host`` or ``Origin`` is not a loopback name (127.0.0.0/8, ``localhost``, ``[::1]``) is
  refused before anything else. A request without ``Host`` cannot come from a browser and is let through.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from urllib.parse import urlsplit

PASSWORD_FILE = "password"  # under --path when the endpoint is run by hand without --password-file


def load_password(path: str) -> str:
    """The password in ``path``; a new random one there (mode 0600) when the file is missing or empty."""
    try:
        with open(path, encoding="utf-8") as kept:
            password = kept.read().strip()
        if password:
            if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
                os.chmod(path, 0o600)
            return password
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(secrets.token_urlsafe(24) + "\n")
    os.replace(temporary, path)
    with open(path, encoding="utf-8") as kept:
        return kept.read().strip()


def password_matches(given: str, expected: str) -> bool:
    """Constant-time comparison; an empty expected password never matches."""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def is_loopback_name(host: str) -> bool:
    """True for ``localhost``, an IPv4 address in 127.0.0.0/8 or ``[::1]``, each with or without ``:port``."""
    host = host.strip().lower()
    if host.startswith("["):
        address, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not _is_port_suffix(rest)):
            return False
    else:
        address, colon, port = host.partition(":")
        if colon and not port.isdigit():
            return False
    if address in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _is_port_suffix(rest: str) -> bool:
    return rest.startswith(":") and rest[1:].isdigit()


def request_refusal(host: str | None, origin: str | None, port: int) -> str | None:
    """Why a request must be refused (its ``Host`` or ``Origin`` is not this machine), or None when it may go on."""
    if host is not None and not is_loopback_name(host):
        return (
            f"The embedded ClickHouse endpoint only answers requests addressed to this machine by a loopback "
            f"name (localhost, 127.0.0.1, [::1]); this one has Host: {host[:100]}. It refuses other names so "
            f"that a web page cannot reach it through DNS rebinding: connect to http://127.0.0.1:{port}/."
        )
    if origin is not None and not _is_loopback_origin(origin):
        return (
            f"The embedded ClickHouse endpoint refuses requests sent by a web page (Origin: {origin[:100]}), so "
            f"that a site open in a browser cannot query it. Send the request from a program or curl, without "
            f"an Origin header."
        )
    return None


def _is_loopback_origin(origin: str) -> bool:
    parts = urlsplit(origin.strip())
    return parts.scheme in ("http", "https") and is_loopback_name(parts.netloc)
