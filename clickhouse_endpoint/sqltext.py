"""Just enough SQL scanning to serve ClickHouse's HTTP interface in front of chDB.

chDB parses and runs the SQL itself; the HTTP layer only needs three answers that ClickHouse's
server derives from its own parser: where the data of an ``INSERT ... FORMAT x`` starts, which
output format a statement uses (for ``X-ClickHouse-Format``), and whether a statement produces a
result set at all. The scanner works on ``latin-1`` decoded text so that character offsets are
byte offsets into the request body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Statements whose first keyword means "this returns rows" (ClickHouse then reports the format).
_RESULT_KEYWORDS = frozenset(
    {"SELECT", "WITH", "SHOW", "DESC", "DESCRIBE", "EXISTS", "EXPLAIN", "CHECK", "KILL", "VALUES", "FROM"}
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = " \t\r\n\f\v"
_UNTERMINATED = -1


def _skip_quoted(text: str, i: int) -> int:
    """Index just past the quoted literal or identifier starting at ``text[i]``; -1 if unterminated."""
    quote = text[i]
    i += 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and text[i + 1] == quote:  # doubled quote escapes itself
                i += 2
                continue
            return i + 1
        i += 1
    return _UNTERMINATED


def _skip_comment(text: str, i: int) -> int | None:
    """Index past a comment starting at ``i``, None when no comment starts there, -1 if unterminated."""
    if text.startswith("--", i) or text.startswith("#!", i) or text.startswith("# ", i):
        end = text.find("\n", i)
        return _UNTERMINATED if end < 0 else end + 1
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        return _UNTERMINATED if end < 0 else end + 2
    return None


def top_level_words(text: str, start: int = 0):
    """Yield ``(word_upper, begin, end)`` for bare words outside quotes, comments and parentheses.

    Stops silently at an unterminated literal or comment: for a streamed body that means "need more
    text" and for a complete query chDB will report the syntax error itself.
    """
    i, n, depth = start, len(text), 0
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            i = _skip_quoted(text, i)
            if i == _UNTERMINATED:
                return
            continue
        skipped = _skip_comment(text, i)
        if skipped is not None:
            if skipped == _UNTERMINATED:
                return
            i = skipped
            continue
        if ch == "(" or ch == "[":
            depth += 1
        elif ch == ")" or ch == "]":
            depth = max(0, depth - 1)
        elif ch.isalpha() or ch == "_":
            match = _WORD.match(text, i)
            assert match is not None
            if depth == 0:
                yield match.group(0).upper(), i, match.end()
            i = match.end()
            continue
        i += 1


def first_keyword(text: str) -> str:
    """The first top-level word of a statement, upper-cased ('' when there is none, '(' for a subquery)."""
    i, n = 0, len(text)
    while i < n:
        if text[i] in _SPACE:
            i += 1
            continue
        skipped = _skip_comment(text, i)
        if skipped is None:
            break
        if skipped == _UNTERMINATED:
            return ""
        i = skipped
    if i < n and text[i] == "(":
        return "("
    match = _WORD.match(text, i)
    return match.group(0).upper() if match else ""


def explicit_format(text: str) -> str | None:
    """The format named by a trailing ``FORMAT name`` clause (optionally before SETTINGS), else None."""
    words = list(top_level_words(text))
    for index, (word, _begin, _end) in enumerate(words):
        if word != "FORMAT" or index + 1 >= len(words):
            continue
        name, name_begin, name_end = words[index + 1]
        between = text[_end:name_begin]
        if not between or between.strip(_SPACE):
            continue
        rest = text[name_end:].strip(_SPACE + ";")
        if not rest or (index + 2 < len(words) and words[index + 2][0] == "SETTINGS"):
            return text[name_begin:name_end]
    return None


def produces_result(text: str) -> bool:
    """True when the statement returns a result set (ClickHouse then sends X-ClickHouse-Format)."""
    keyword = first_keyword(text)  # no full scan: an INSERT ... VALUES body may be megabytes
    return keyword == "(" or keyword in _RESULT_KEYWORDS


@dataclass(frozen=True)
class InsertHead:
    """An ``INSERT ... FORMAT name`` statement split from the data that follows it."""

    statement: str  # the INSERT without its FORMAT clause (the engine appends SELECT ... FROM file() to it)
    format: str
    data_offset: int  # where the data starts in the scanned text


NEED_MORE = "need-more"
NOT_STREAMABLE = "not-streamable"


def split_insert(text: str, complete: bool) -> InsertHead | str:
    """Find where an INSERT's inline data starts.

    Returns an ``InsertHead`` for ``INSERT ... FORMAT name <data>``, ``NOT_STREAMABLE`` for
    INSERTs that chDB must run whole (``VALUES``, ``SELECT``) and ``NEED_MORE`` when the text seen so
    far ends before the format name and more of the body may follow (``complete`` is False).
    Like ClickHouse, the data begins after the format name, spaces and tabs, and one line break.
    """
    for word, begin, end in top_level_words(text):
        if word in ("VALUES", "SELECT", "WITH"):
            return NOT_STREAMABLE
        if word != "FORMAT":
            continue
        match = re.compile(r"[ \t\r\n\f]+([A-Za-z_][A-Za-z0-9_]*)").match(text, end)
        if match is None or (match.end() == len(text) and not complete):
            break  # the format name may continue in the next chunk
        pos = match.end()
        while pos < len(text) and text[pos] in " \t\f":
            pos += 1
        if pos < len(text) and text[pos] == "\r":
            pos += 1
        if pos < len(text) and text[pos] == "\n":
            pos += 1
        elif pos >= len(text) and not complete:
            break  # the line break may arrive with the next chunk
        return InsertHead(text[:begin].rstrip(_SPACE), match.group(1), pos)
    return NOT_STREAMABLE if complete else NEED_MORE
