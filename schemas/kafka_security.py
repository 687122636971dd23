"""Kafka SASL and TLS: the ``CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL`` / ``_SASL_*`` / ``_SSL_*`` settings turned into the
keyword arguments of each client library the product uses, so that every construction site passes the same thing:

- :func:`kafka_python_security` for kafka-python's ``KafkaConsumer``, ``KafkaProducer`` and ``KafkaAdminClient``;
- :func:`aiokafka_security` for aiokafka's ``AIOKafkaProducer`` (the collector);
- :func:`faust_security` for ``faust.App`` (the worker): ``broker_credentials``.

One ``ssl.SSLContext`` serves all three (aiokafka and Faust accept nothing else, kafka-python accepts it too), so a
CA file or client certificate is read the same way everywhere. :func:`security_problems` is the settings' own check
(a bad combination is refused when the settings are read); :func:`login_problem` is what each process asks at start,
so that a wrong password or an untrusted certificate stops it with one clear line instead of endless retries.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.settings import PipelineSettings

__all__ = [
    "aiokafka_security",
    "faust_security",
    "kafka_python_security",
    "login_problem",
    "security_environment",
    "security_problems",
    "ssl_context",
]

SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


def security_problems(settings: PipelineSettings) -> list[str]:
    """What is wrong with the combination of Kafka security settings (empty when nothing is): each line says what,
    which variable, and how to fix it. Settings that would be silently ignored count as wrong: a password set for a
    PLAINTEXT connection is almost always a forgotten protocol."""
    protocol = settings.kafka_security_protocol
    problems: list[str] = []
    if protocol != "PLAINTEXT" and settings.kafka_bootstrap_servers is None:
        problems.append(
            f"CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL={protocol} needs a real Kafka: the embedded one listens in "
            "plaintext on 127.0.0.1. Set CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS to the brokers' secured listener, or "
            "unset CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL."
        )
    sasl = {
        "CLOSEDLOOP_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "CLOSEDLOOP_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "CLOSEDLOOP_KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
    }
    if protocol in SASL_PROTOCOLS:
        missing = [name for name, value in sasl.items() if not _given(value)]
        if missing:
            problems.append(
                f"CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL={protocol} logs in with SASL: set {', '.join(missing)} "
                "(mechanism PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, as the broker's sasl.enabled.mechanisms allow)."
            )
    else:
        stray = [name for name, value in sasl.items() if value is not None]
        if stray:
            problems.append(
                f"{', '.join(stray)} set, but CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL={protocol} does not log in: set "
                "the protocol to SASL_SSL (or SASL_PLAINTEXT), or unset them."
            )
    tls = {
        "CLOSEDLOOP_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "CLOSEDLOOP_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "CLOSEDLOOP_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
        "CLOSEDLOOP_KAFKA_SSL_KEY_PASSWORD": settings.kafka_ssl_key_password,
    }
    if protocol not in TLS_PROTOCOLS:
        stray = [name for name, value in tls.items() if value is not None]
        if stray:
            problems.append(
                f"{', '.join(stray)} set, but CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: set "
                "the protocol to SSL or SASL_SSL, or unset them."
            )
        return problems
    if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
        problems.append(
            "A client certificate needs both CLOSEDLOOP_KAFKA_SSL_CERTFILE and CLOSEDLOOP_KAFKA_SSL_KEYFILE "
            "(PEM files): set the other one, or unset both."
        )
    if settings.kafka_ssl_key_password is not None and settings.kafka_ssl_keyfile is None:
        problems.append("CLOSEDLOOP_KAFKA_SSL_KEY_PASSWORD is set without CLOSEDLOOP_KAFKA_SSL_KEYFILE: set both.")
    for name in ("CLOSEDLOOP_KAFKA_SSL_CAFILE", "CLOSEDLOOP_KAFKA_SSL_CERTFILE", "CLOSEDLOOP_KAFKA_SSL_KEYFILE"):
        path = tls[name]
        if path is not None and not path.expanduser().is_file():  # type: ignore[union-attr]
            problems.append(f"{name}={path}: no such file. Give the path of a readable PEM file.")
    if problems:
        return problems
    try:
        ssl_context(settings)
    except (OSError, ssl.SSLError, ValueError) as error:
        problems.append(
            f"The TLS files cannot be used ({error}): CLOSEDLOOP_KAFKA_SSL_CAFILE must hold PEM certificates, "
            "CLOSEDLOOP_KAFKA_SSL_CERTFILE a PEM certificate matching the PEM key in CLOSEDLOOP_KAFKA_SSL_KEYFILE "
            "(with CLOSEDLOOP_KAFKA_SSL_KEY_PASSWORD if the key is encrypted)."
        )
    return problems


def security_environment(settings: PipelineSettings) -> dict[str, str]:
    """The ``CLOSEDLOOP_KAFKA_*`` security variables that give a child process these settings (the password
    included: for a child's environment only, never for a log)."""
    values: dict[str, Any] = {
        "SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "SASL_USERNAME": settings.kafka_sasl_username,
        "SASL_PASSWORD": settings.kafka_sasl_password,
        "SSL_CAFILE": settings.kafka_ssl_cafile,
        "SSL_CERTFILE": settings.kafka_ssl_certfile,
        "SSL_KEYFILE": settings.kafka_ssl_keyfile,
        "SSL_KEY_PASSWORD": settings.kafka_ssl_key_password,
        "SSL_CHECK_HOSTNAME": None if settings.kafka_ssl_check_hostname else "false",
    }
    environment = {}
    for name, value in values.items():
        if value is None or (name == "SECURITY_PROTOCOL" and value == "PLAINTEXT"):
            continue
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        environment[f"CLOSEDLOOP_KAFKA_{name}"] = (
            str(Path(text).expanduser().resolve()) if isinstance(text, Path) else str(text)
        )
    return environment


def _given(value: Any) -> bool:
    if value is None:
        return False
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return bool(text)


def ssl_context(settings: PipelineSettings) -> ssl.SSLContext | None:
    """The TLS context of every client (None without TLS): the brokers' certificates checked against the CA file
    (else the system's CAs) and, unless turned off, their host names; the client certificate when one is set."""
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    cafile = settings.kafka_ssl_cafile
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(cafile.expanduser()) if cafile is not None else None
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None and settings.kafka_ssl_keyfile is not None:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile.expanduser()),
            str(settings.kafka_ssl_keyfile.expanduser()),
            password.get_secret_value() if password is not None else None,
        )
    return context


def _sasl(settings: PipelineSettings) -> dict[str, Any]:
    if settings.kafka_security_protocol not in SASL_PROTOCOLS:
        return {}
    password = settings.kafka_sasl_password
    return {
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": password.get_secret_value() if password is not None else None,
    }


def kafka_python_security(settings: PipelineSettings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's clients; empty for PLAINTEXT (the libraries' default)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    context = ssl_context(settings)
    return {
        "security_protocol": protocol,
        **({"ssl_context": context} if context else {}),  # used as given: its check_hostname decides
        **_sasl(settings),
    }


def aiokafka_security(settings: PipelineSettings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's clients; empty for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    context = ssl_context(settings)
    return {"security_protocol": protocol, **({"ssl_context": context} if context else {}), **_sasl(settings)}


def faust_security(settings: PipelineSettings) -> dict[str, Any]:
    """``broker_credentials`` for ``faust.App`` (Faust hands them to each of its aiokafka clients); empty for
    PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    from faust.auth import SASLCredentials, SSLCredentials

    context = ssl_context(settings)
    if protocol == "SSL":
        return {"broker_credentials": SSLCredentials(context)}
    sasl = _sasl(settings)
    # Faust picks SASL_SSL when given a context, SASL_PLAINTEXT otherwise.
    return {
        "broker_credentials": SASLCredentials(
            username=sasl["sasl_plain_username"],
            password=sasl["sasl_plain_password"],
            mechanism=sasl["sasl_mechanism"],
            ssl_context=context,
        )
    }


def login_problem(settings: PipelineSettings, timeout: float = 10.0) -> str | None:
    """Whether the brokers refuse this process: with TLS or SASL configured, one bootstrap (a metadata request)
    with the security settings, and a message naming the settings to fix when the brokers refuse the login or the
    TLS handshake fails. None when it works, with PLAINTEXT (nothing to refuse), or when no broker answers at all
    (each process has its own way of waiting for an absent broker). Call it where no event loop runs."""
    import asyncio

    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    # aiokafka logs why a connection failed and raises a generic "unable to bootstrap": keep those lines. A refused
    # login is logged as an error; a client certificate the broker refused only at debug level on aiokafka.conn,
    # which is turned up for the check and kept from the process's own log meanwhile. (aiokafka reports a refused
    # SCRAM login as such; kafka-python sees only a dropped connection.)
    failures = _Failures()
    client_log, connection_log = logging.getLogger("aiokafka"), logging.getLogger("aiokafka.conn")
    saved = (connection_log.level, connection_log.propagate)
    client_log.addHandler(failures)
    connection_log.addHandler(failures)
    connection_log.setLevel(logging.DEBUG)
    connection_log.propagate = False
    try:
        error = asyncio.run(asyncio.wait_for(_bootstrap(settings, timeout), timeout + 5))
    except (TimeoutError, asyncio.TimeoutError):
        error = None  # nobody answered in time
    finally:
        client_log.removeHandler(failures)
        connection_log.removeHandler(failures)
        connection_log.setLevel(saved[0])
        connection_log.propagate = saved[1]
    if error is None:
        return None
    reasons = [error, *failures.errors]
    for kind in ("login", "tls"):  # a refused login can end in a dropped TLS connection too: it comes first
        refused = next((reason for reason in reasons if refusal(reason) == kind), None)
        if refused is not None:
            return describe_connect_error(settings, refused)
    return None


async def _bootstrap(settings: PipelineSettings, timeout: float) -> BaseException | None:
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=settings.kafka_servers.split(","),
        client_id="closedloop-login-check",
        request_timeout_ms=int(timeout * 1000),
        **aiokafka_security(settings),
    )
    try:
        await client.bootstrap()
    except Exception as error:  # noqa: BLE001 - classified by the caller
        return error
    finally:
        await client.close()
    return None


class _Failures(logging.Handler):
    """The connection failures the client logs, as exceptions to classify (a bounded number)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if len(self.errors) < 20 and (record.levelno >= logging.ERROR or refusal(ConnectionError(message))):
            self.errors.append(ConnectionError(message))


def refusal(error: BaseException) -> str | None:
    """``"login"`` when ``error`` (from any of the client libraries, or anything it was raised from) says the
    brokers refused the SASL login, ``"tls"`` when the TLS handshake failed, else None."""
    seen: BaseException | None = error
    texts = []
    for _ in range(8):  # the chain of causes, bounded
        if seen is None:
            break
        texts.append(f"{type(seen).__name__}: {seen}".lower())
        seen = seen.__cause__ or seen.__context__
    text = " | ".join(texts)
    if "authentication" in text or "sasl" in text:
        return "login"
    if isinstance(error, ssl.SSLError) or any(word in text for word in ("certificate", "[ssl", "handshake")):
        return "tls"
    return None


def describe_connect_error(settings: PipelineSettings, error: BaseException) -> str:
    """A connection error as one line saying what the brokers refused and which settings to check (never the
    password)."""
    text = f"{type(error).__name__}: {error}"
    servers = settings.kafka_servers
    kind = refusal(error)
    if kind == "login":
        return (
            f"the Kafka brokers at {servers} refused the login of user {settings.kafka_sasl_username!r} with "
            f"{settings.kafka_sasl_mechanism} ({text}): check CLOSEDLOOP_KAFKA_SASL_USERNAME, "
            "CLOSEDLOOP_KAFKA_SASL_PASSWORD and CLOSEDLOOP_KAFKA_SASL_MECHANISM against the broker's users."
        )
    if kind == "tls":
        return (
            f"the TLS handshake with the Kafka brokers at {servers} failed ({text}): check "
            "CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL (the listener's protocol), CLOSEDLOOP_KAFKA_SSL_CAFILE (the CA that "
            "signed the brokers' certificates) and, for a broker that requires one, CLOSEDLOOP_KAFKA_SSL_CERTFILE/"
            "_KEYFILE."
        )
    return (
        f"cannot talk to the Kafka brokers at {servers} ({text}): check CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS and "
        f"that CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} is the listener's protocol."
    )
