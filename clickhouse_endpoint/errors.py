"""ClickHouse error codes, the HTTP status ClickHouse maps each to, and engine-message parsing."""

from __future__ import annotations

import re
from types import SimpleNamespace

# The codes this endpoint raises itself (values from ClickHouse's ErrorCodes.cpp; a test checks them
# against the engine's system.errors).
codes = SimpleNamespace(
    CANNOT_PARSE_INPUT_ASSERTION_FAILED=27,
    BAD_ARGUMENTS=36,
    NOT_IMPLEMENTED=48,
    SYNTAX_ERROR=62,
    UNKNOWN_COMPRESSION_METHOD=89,
    READONLY=164,
    NETWORK_ERROR=210,
    CANNOT_DECOMPRESS=271,
    SESSION_IS_LOCKED=373,
    HTTP_LENGTH_REQUIRED=381,
    ACCESS_DENIED=497,
    AUTHENTICATION_FAILED=516,
    UNKNOWN_EXCEPTION=1002,
)

# ClickHouse's exceptionCodeToHTTPStatus, by error name; names are resolved to codes at start-up
# from the engine's own system.errors so this table cannot drift from the engine version.
STATUS_BY_NAME = {
    401: ("REQUIRED_PASSWORD",),
    403: ("UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED", "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"),
    400: (
        "BAD_ARGUMENTS",
        "CANNOT_COMPILE_REGEXP",
        "CANNOT_PARSE_TEXT",
        "CANNOT_PARSE_ESCAPE_SEQUENCE",
        "CANNOT_PARSE_QUOTED_STRING",
        "CANNOT_PARSE_DATE",
        "CANNOT_PARSE_DATETIME",
        "CANNOT_PARSE_NUMBER",
        "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
        "CANNOT_PARSE_IPV4",
        "CANNOT_PARSE_IPV6",
        "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        "CANNOT_PARSE_UUID",
        "DUPLICATE_COLUMN",
        "ILLEGAL_COLUMN",
        "UNKNOWN_ELEMENT_IN_AST",
        "UNKNOWN_TYPE_OF_AST_NODE",
        "THERE_IS_NO_COLUMN",
        "TOO_DEEP_AST",
        "TOO_BIG_AST",
        "UNEXPECTED_AST_STRUCTURE",
        "SYNTAX_ERROR",
        "INCORRECT_DATA",
        "TYPE_MISMATCH",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    ),
    404: (
        "UNKNOWN_TABLE",
        "UNKNOWN_FUNCTION",
        "UNKNOWN_IDENTIFIER",
        "UNKNOWN_TYPE",
        "UNKNOWN_STORAGE",
        "UNKNOWN_DATABASE",
        "UNKNOWN_SETTING",
        "UNKNOWN_DIRECTION_OF_SORTING",
        "UNKNOWN_AGGREGATE_FUNCTION",
        "UNKNOWN_FORMAT",
        "UNKNOWN_DATABASE_ENGINE",
        "UNKNOWN_TYPE_OF_QUERY",
        "UNKNOWN_ROLE",
    ),
    413: ("QUERY_IS_TOO_LARGE",),
    501: ("NOT_IMPLEMENTED",),
    503: ("SOCKET_TIMEOUT", "CANNOT_OPEN_FILE", "CANNOT_SCHEDULE_TASK"),
    411: ("HTTP_LENGTH_REQUIRED",),
    408: ("TIMEOUT_EXCEEDED",),
    415: ("UNSUPPORTED_MEDIA_TYPE",),
}

_ENGINE_MESSAGE = re.compile(r"Code: (\d+)\. (DB::Exception: .*)", re.DOTALL)
_NAME_SUFFIX = re.compile(r"\(([A-Z0-9_]+)\)(?: \(version [^)]*\))?\s*$")


class ClickHouseError(Exception):
    """An error to report the way ClickHouse does: ``Code: N. DB::Exception: ...`` plus a status."""

    def __init__(self, code: int, message: str, name: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.name = name

    def text(self, version: str) -> str:
        """The response body line, with the ``(NAME) (version X)`` tail ClickHouse appends."""
        body = self.message if self.message.startswith("DB::Exception: ") else f"DB::Exception: {self.message}"
        body = body.rstrip()
        if self.name and not _NAME_SUFFIX.search(body):
            body = f"{body} ({self.name})"
        if "(version " not in body[-80:]:
            body = f"{body} (version {version})"
        return f"Code: {self.code}. {body}\n"


def from_engine(exc: BaseException) -> ClickHouseError:
    """Turn a chDB exception (``RuntimeError('... Code: 60. DB::Exception: ...')``) into a ClickHouseError."""
    text = str(exc)
    match = _ENGINE_MESSAGE.search(text)
    if match is None:
        return ClickHouseError(codes.UNKNOWN_EXCEPTION, f"DB::Exception: {text}", "UNKNOWN_EXCEPTION")
    return ClickHouseError(int(match.group(1)), match.group(2))


def status_table(code_by_name: dict[str, int]) -> dict[int, int]:
    """Map error codes to HTTP statuses, given the engine's name -> code table."""
    table = {}
    for status, names in STATUS_BY_NAME.items():
        for name in names:
            if name in code_by_name:
                table[code_by_name[name]] = status
    return table
