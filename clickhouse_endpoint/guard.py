"""What the embedded endpoint refuses to run: every known way for a statement to reach outside its own data.

chDB is clickhouse-local in a library: its ``default`` user may read and write any file the process can
(``file()``, ``INTO OUTFILE``, ``FROM INFILE``, a path used as a table name in the ``default`` database, the
``File`` engine), fetch URLs, connect to other databases and hosts (``url``, ``s3``, ``remote``, ``mysql``, the
``Kafka`` engine, dictionary sources) and start programs. A ClickHouse server stops these with grants on
``SOURCES``; chDB does take a users file with grants, but then the endpoint's own inserts, which read their body
with ``file()`` (``Engine.insert``), would need that grant too, and neither ``file()`` as a scalar function nor
``INTO OUTFILE`` is covered by a grant in local mode. So the endpoint checks each statement itself:

1. The engine formats the statement (``formatQuerySingleLine``, the SQL passed as a parameter, never spliced
   into other SQL). That is ClickHouse's own parser: comments are gone, heredocs and escaped identifiers
   (`` `fi\\x6ce` ``) come back plain, and a request with two statements is refused as a server refuses it.
2. The canonical text is scanned for the names of table functions, table and database engines and dictionary
   sources that are not on the local lists below (derived from the engine's ``system.table_functions``,
   ``system.table_engines`` and ``system.database_engines``, so a new way out in a newer chDB is refused until it
   is listed as local), for ``INTO OUTFILE`` / ``FROM INFILE``, ``BACKUP`` / ``RESTORE``, ``ATTACH ... FROM``, a
   path (a name with ``/``) used as an identifier, and the settings that name files.

A refusal is ClickHouse's ACCESS_DENIED (497, HTTP 403) with the reason. Tables that already exist are not
checked again when read; the endpoint could only have created them before this guard existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from clickhouse_endpoint.errors import ClickHouseError, codes

# Table functions, engines and database engines that only touch the engine's own data (or generate data).
LOCAL_TABLE_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "SQLStandardValues",
        "dictionary",
        "format",
        "fuzzJSON",
        "fuzzQuery",
        "generateRandom",
        "generateSeries",
        "generate_series",
        "input",
        "loop",
        "merge",
        "mergeTreeAnalyzeIndexes",
        "mergeTreeAnalyzeIndexesUUID",
        "mergeTreeCodecBlockCounts",
        "mergeTreeIndex",
        "mergeTreeProjection",
        "mergeTreeTextIndex",
        "null",
        "numbers",
        "numbers_mt",
        "primes",
        "prometheusQuery",
        "prometheusQueryRange",
        "timeSeriesData",
        "timeSeriesMetricFamilies",
        "timeSeriesMetrics",
        "timeSeriesSamples",
        "timeSeriesSelector",
        "timeSeriesTags",
        "values",
        "view",
        "viewExplain",
        "viewIfPermitted",
        "zeros",
        "zeros_mt",
    )
)
LOCAL_TABLE_ENGINES = frozenset(
    name.lower()
    for name in (
        "AggregatingMergeTree",
        "Alias",
        "Buffer",
        "CoalescingMergeTree",
        "CollapsingMergeTree",
        "Dictionary",
        "EmbeddedRocksDB",
        "FuzzJSON",
        "FuzzQuery",
        "GenerateRandom",
        "GraphiteMergeTree",
        "Join",
        "Log",
        "Loop",
        "MaterializedView",
        "Memory",
        "Merge",
        "MergeTree",
        "Null",
        "ReplacingMergeTree",
        "Set",
        "StripeLog",
        "SummingMergeTree",
        "TimeSeries",
        "TinyLog",
        "VersionedCollapsingMergeTree",
        "View",
    )
)
LOCAL_DATABASE_ENGINES = frozenset(name.lower() for name in ("Atomic", "Dictionary", "Memory", "Ordinary", "Lazy"))
# Functions that are not table functions but read files or reach hosts: file(path) returns a file's contents,
# hasColumnInTable(host, ...) connects to a server, disk(type = ..., path = ...) defines a disk anywhere.
OUTSIDE_FUNCTIONS = frozenset({"file", "hascolumnintable", "disk"})
# Settings whose value is a file to read or write.
PATH_SETTINGS = frozenset(
    {
        "format_schema",
        "output_format_schema",
        "format_template_resultset",
        "format_template_row",
    }
)
# Dictionary sources that are local data (everything else, FILE, HTTP, EXECUTABLE, MYSQL, CLICKHOUSE with a
# host, ..., is refused).
LOCAL_DICTIONARY_SOURCES = frozenset({"null"})

_TOKEN = re.compile(
    r"\s+|(?P<literal>'(?:[^'\\]|\\.|'')*')|(?P<quoted>`(?:[^`\\]|\\.|``)*`|\"(?:[^\"\\]|\\.|\"\")*\")"
    r"|(?P<param>\{[^{}]*\})|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<other>.)",
    re.DOTALL,
)
_PARAM = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*Identifier\s*\}", re.IGNORECASE)
_NAME_TAIL = re.compile(r"(\([A-Z0-9_]+\))\s*$")
DOCS = 'docs/CLICKHOUSE.md, "The embedded endpoint: password, loopback, what it refuses"'


@dataclass(frozen=True)
class Token:
    kind: str  # literal, quoted, param, word, other
    text: str

    @property
    def name(self) -> str:
        """A word or quoted identifier as the engine reads it (lower-cased for comparisons)."""
        if self.kind == "quoted":
            return self.text[1:-1].replace("``", "`").lower()
        return self.text.lower()


def tokens(canonical: str) -> list[Token]:
    """The tokens of a statement as the engine formats it (no comments, no heredocs)."""
    found = []
    for match in _TOKEN.finditer(canonical):
        kind = match.lastgroup
        if kind is not None:
            found.append(Token(kind, match.group(kind)))
    return found


def _refused(what: str, fix: str) -> ClickHouseError:
    return ClickHouseError(
        codes.ACCESS_DENIED,
        f"The embedded ClickHouse endpoint does not run {what}: it reaches files, hosts or programs outside its own "
        f"data ({DOCS}). {fix}",
        "ACCESS_DENIED",
    )


_FIX_DATA = (
    "Load a file by sending it as the body of INSERT INTO table FORMAT fmt (curl --data-binary @file); "
    "use a ClickHouse server (CLOSEDLOOP_CLICKHOUSE_URL) for what the embedded one refuses."
)


class Guard:
    """Refuses statements that would reach outside the engine's data; built from the engine's own catalogue."""

    def __init__(
        self, table_functions: Iterable[str], table_engines: Iterable[str], database_engines: Iterable[str]
    ) -> None:
        self.outside_table_functions = {name.lower() for name in table_functions} - LOCAL_TABLE_FUNCTIONS
        self.outside_engines = ({name.lower() for name in table_engines} - LOCAL_TABLE_ENGINES) | (
            {name.lower() for name in database_engines} - LOCAL_DATABASE_ENGINES
        )
        self.outside_functions = self.outside_table_functions | self.outside_engines | OUTSIDE_FUNCTIONS

    def check_settings(self, settings: Mapping[str, str]) -> None:
        """Refuse URL settings that name files or change the SQL dialect."""
        for name, value in settings.items():
            self._check_setting(name.lower(), value)

    def _check_setting(self, name: str, value: str) -> None:
        if name in PATH_SETTINGS:
            raise _refused(
                f"the setting {name} (it names a file)",
                "Send the schema or template inline (format_template_row_format, ...) instead.",
            )
        if name == "dialect" and value.strip().strip("'").lower() != "clickhouse":
            raise _refused(f"the dialect {value[:40]!r}", "Only ClickHouse SQL is checked, so only it is run.")

    def check(self, canonical: str, binds: Mapping[str, str]) -> None:
        """Raise ACCESS_DENIED when the formatted statement ``canonical`` would reach outside the engine's data."""
        found = tokens(canonical)
        words = [token for token in found if token.kind == "word"]
        if words and words[0].name in ("backup", "restore"):
            raise _refused(
                f"{words[0].text.upper()} (backups go to files or disks)",
                "Copy data with INSERT INTO ... SELECT, or back up the data directory while it is stopped.",
            )
        if words and words[0].name == "attach" and any(word.name == "from" for word in words):
            raise _refused("ATTACH ... FROM a path", _FIX_DATA)
        in_settings = bool(words) and words[0].name == "set"
        for index, token in enumerate(found):
            following = found[index + 1] if index + 1 < len(found) else None
            if token.kind == "word" and token.name == "settings":
                in_settings = True
            if token.kind == "word" and token.name in ("outfile", "infile"):
                into = "INTO OUTFILE" if token.name == "outfile" else "FROM INFILE"
                raise _refused(
                    f"{into} (it writes or reads a file on this machine)",
                    "Read the result from the HTTP answer, or send the data as the request body.",
                )
            if token.kind in ("word", "quoted") and following is not None and following.text == "(":
                self._check_call(token, found, index)
            if token.kind == "word" and token.name == "engine" and following is not None and following.text == "=":
                engine = found[index + 2] if index + 2 < len(found) else None
                if engine is not None and engine.name in self.outside_engines:
                    raise _refused(f"the engine {engine.text}", _FIX_DATA)
            if token.kind == "quoted" and "/" in token.name:
                raise _refused(
                    f"{token.text[:80]} as a name (a path: in chDB's default database a path reads that file)",
                    "Name tables without '/'.",
                )
            if in_settings and token.kind == "word" and following is not None and following.text == "=":
                value = found[index + 2].text if index + 2 < len(found) else ""
                self._check_setting(token.name, value)
        for name in _PARAM.findall(canonical):
            if "/" in binds.get(name, ""):
                raise _refused(
                    f"the identifier parameter {name} = {binds[name][:80]!r} (a path: in chDB's default "
                    f"database a path reads that file)",
                    "Name tables without '/'.",
                )

    def _check_call(self, token: Token, found: list[Token], index: int) -> None:
        name = token.name
        previous = found[index - 2].name if index >= 2 and found[index - 1].text == "(" else ""
        if previous == "source" and name not in LOCAL_DICTIONARY_SOURCES:
            raise _refused(
                f"a dictionary with the source {token.text}",
                "Fill a table and use the CLICKHOUSE source only on a ClickHouse server; here, join the table instead.",
            )
        if name in self.outside_functions:
            kind = (
                "the table function"
                if name in self.outside_table_functions
                else "the engine"
                if name in self.outside_engines
                else "the function"
            )
            raise _refused(f"{kind} {token.text}(...)", _FIX_DATA)


def format_error(error: ClickHouseError) -> ClickHouseError:
    """The engine's error about the statement, without the ``In scope SELECT formatQuerySingleLine(...)`` of the
    query that formatted it (positions already refer to the statement itself)."""
    message = error.message
    scope = message.find(" In scope SELECT formatQuerySingleLine(")
    if scope >= 0:
        name = _NAME_TAIL.search(message)
        head = message[:scope].rstrip().removesuffix(":").rstrip()
        message = head + ("" if head.endswith(".") else ".") + (f" {name.group(1)}" if name else "")
    return ClickHouseError(error.code, message, error.name)


def statement_for_check(sql: str, insert_format: str | None) -> str:
    """The statement as the engine parses it: an INSERT's head gets its ``FORMAT`` back (without it, it does not
    parse)."""
    return f"{sql} FORMAT {insert_format}" if insert_format else sql
