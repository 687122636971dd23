"""Turn an HTTP request into what the engine runs: credentials, settings, binds, the statement, data.

Follows ClickHouse's HTTPHandler: the ``query`` URL parameter, a line break and the body make up the
statement text; for ``INSERT ... FORMAT x`` whatever follows the format name is the data. A
multipart/form-data body instead carries ``query`` and ``param_*`` as form fields.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value
from urllib.parse import parse_qsl

from clickhouse_endpoint import sqltext
from clickhouse_endpoint.errors import ClickHouseError, codes

# URL parameters ClickHouse's HTTP handler consumes itself (reserved names), plus the settings
# that only steer the HTTP layer: none of them is applied to the engine.
HTTP_ONLY_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "compress",
        "decompress",
        "user",
        "password",
        "quota_key",
        "query_id",
        "stacktrace",
        "role",
        "buffer_size",
        "wait_end_of_query",
        "session_id",
        "session_timeout",
        "session_check",
        "client_protocol_version",
        "close_session",
        "enable_http_compression",
        "http_zlib_compression_level",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "cancel_http_readonly_queries_on_client_close",
        "http_native_compression_disable_checksumming_on_decompress",
        "add_http_cors_header",
        "http_response_buffer_size",
        "http_wait_end_of_query",
        "http_write_exception_in_output_format",
        "http_response_headers",
    }
)
HEAD_LIMIT = 1 << 20  # an INSERT statement longer than this before its data is refused


@dataclass
class RequestParams:
    """The URL parameters of one request, sorted by what consumes them."""

    raw: dict[str, str]
    settings: dict[str, str] = field(default_factory=dict)
    binds: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, query_string: str) -> "RequestParams":
        raw: dict[str, str] = {}
        for key, value in parse_qsl(query_string, keep_blank_values=True):
            raw.setdefault(key, value)  # the first occurrence wins, as in Poco's HTMLForm.get
        params = cls(raw)
        for key, value in raw.items():
            params.add(key, value)
        return params

    def add(self, key: str, value: str) -> None:
        if not key or key in HTTP_ONLY_PARAMS:
            return
        if key.startswith("param_"):
            self.binds.setdefault(key[len("param_") :], value)
        else:
            self.settings[key] = value

    def get(self, key: str, default: str = "") -> str:
        return self.raw.get(key, default)

    def flag(self, key: str) -> bool:
        return self.raw.get(key, "0").strip().lower() in ("1", "true", "yes", "on")


_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&\s]*", re.IGNORECASE)


def redact_request_line(line: str) -> str:
    """The request line with a ``password`` URL parameter's value replaced, so a debug log never holds it."""
    return _PASSWORD_PARAM.sub(r"\1***", line)


def credentials(headers, params: RequestParams) -> tuple[str, str]:
    """User and password from X-ClickHouse-User/Key headers, Basic auth, or URL parameters."""
    user = headers.get("X-ClickHouse-User")
    password = headers.get("X-ClickHouse-Key")
    auth = headers.get("Authorization") or ""
    if user is None and auth.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(auth[6:].strip()).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise ClickHouseError(
                codes.AUTHENTICATION_FAILED, "Malformed Basic Authorization header", "AUTHENTICATION_FAILED"
            ) from None
        user, _, password = decoded.partition(":")
    if user is None:
        user = params.raw.get("user")
        password = params.raw.get("password", password)
    return user or "default", password or ""


def read_multipart(content_type: str, body: bytes, params: RequestParams) -> str:
    """Parse a multipart/form-data body: ``query`` fields form the statement, ``param_*`` are binds."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ClickHouseError(codes.BAD_ARGUMENTS, "Malformed multipart/form-data body", "BAD_ARGUMENTS")
    query = params.get("query")
    for part in message.iter_parts():
        raw_name = part.get_param("name", header="content-disposition")
        name = collapse_rfc2231_value(raw_name) if isinstance(raw_name, tuple) else raw_name
        if part.get_filename() is not None:
            raise ClickHouseError(
                codes.NOT_IMPLEMENTED,
                f"External data (form file '{name}') is not supported by the embedded endpoint: "
                "insert the data into a table first",
                "NOT_IMPLEMENTED",
            )
        payload = part.get_payload(decode=True)
        value = payload.decode("utf-8") if isinstance(payload, bytes) else ""
        if name == "query":
            query += value
        elif name:
            params.add(name, value)
    return query


@dataclass
class Statement:
    """The statement of one request: either SQL to run whole, or an INSERT head plus its data."""

    sql: str
    insert: sqltext.InsertHead | None = None
    data: Iterator[bytes] | None = None


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClickHouseError(
            codes.BAD_ARGUMENTS, f"The query is not valid UTF-8 (byte {exc.start})", "BAD_ARGUMENTS"
        ) from None


def read_statement(query_param: str, body: Iterator[bytes]) -> Statement:
    """Split ``query_param + '\\n' + body`` into the statement and, for INSERT ... FORMAT, the data stream.

    Only the head of an INSERT is buffered; its data stays a stream (``Statement.data``).
    """
    head = bytearray(query_param.encode("utf-8") + b"\n") if query_param else bytearray()
    exhausted = False

    def pull() -> bool:
        nonlocal exhausted
        for piece in body:
            if piece:
                head.extend(piece)
                return True
        exhausted = True
        return False

    while True:
        window = bytes(head[:HEAD_LIMIT])
        text = window.decode("latin-1")
        keyword = sqltext.first_keyword(text)
        if not keyword and not exhausted:
            pull()  # only blanks or an open comment so far
            continue
        if keyword != "INSERT":
            break
        found = sqltext.split_insert(text, complete=exhausted and len(head) <= HEAD_LIMIT)
        if isinstance(found, sqltext.InsertHead):
            statement = found.statement.encode("latin-1").decode("utf-8")
            data = bytes(head[found.data_offset :])
            return Statement(sql=statement, insert=found, data=_chain(data, body))
        if found == sqltext.NOT_STREAMABLE:
            break
        if len(head) > HEAD_LIMIT:
            raise ClickHouseError(
                codes.SYNTAX_ERROR,
                f"INSERT statement without FORMAT in the first {HEAD_LIMIT} bytes of the request",
                "SYNTAX_ERROR",
            )
        pull()
    for piece in body:
        head.extend(piece)
    return Statement(sql=_utf8(bytes(head)))


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
