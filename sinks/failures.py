"""What a failed ClickHouse request means for the sink: retry it, or find the rows ClickHouse rejects.

A decision over ClickHouse's answer only (the exception's type and text); the writer acts on it. The three kinds
and what the sink does with each: docs/CLICKHOUSE.md, "The sink".
"""

from __future__ import annotations

import re
from enum import Enum

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError


class Failure(Enum):
    """What a failed ClickHouse request means for the sink."""

    UNREACHABLE = "unreachable"  # no answer: retry
    REFUSED = "refused"  # an answer about the server's state: retry
    REJECTED = "rejected"  # an answer about the rows: split, dead-letter what does not fit


# Server errors about the server's own state, not the rows sent: the same insert can succeed later (after a
# migration, a merge, more memory or disk, a fixed password), so they are retried and nothing is dead-lettered.
# Every other error with a ClickHouse code is about the request (a bad value, overflow, too many partitions in
# the block, ...): retrying it would wedge the sink on one batch for good.
_SERVER_STATE_CODES = frozenset({
    16,  # NO_SUCH_COLUMN_IN_TABLE: a migration not applied
    47,  # UNKNOWN_IDENTIFIER
    60,  # UNKNOWN_TABLE
    81,  # UNKNOWN_DATABASE
    159, 160, 209, 210,  # TIMEOUT_EXCEEDED, TOO_SLOW, SOCKET_TIMEOUT, NETWORK_ERROR
    164, 242,  # READONLY, TABLE_IS_READ_ONLY
    173, 241,  # CANNOT_ALLOCATE_MEMORY, MEMORY_LIMIT_EXCEEDED
    192, 193, 194, 195, 497, 516,  # unknown user, wrong password, access denied, authentication failed
    202, 203,  # TOO_MANY_SIMULTANEOUS_QUERIES, NO_FREE_CONNECTION
    225, 285, 319, 999,  # replication and Keeper unavailable, unknown status of the insert
    236, 394, 473,  # ABORTED, QUERY_WAS_CANCELLED, DEADLOCK_AVOIDED
    243,  # NOT_ENOUGH_SPACE
    252,  # TOO_MANY_PARTS (merges behind) - but not "too many partitions for single INSERT block", below
    425, 439,  # SYSTEM_ERROR, CANNOT_SCHEDULE_TASK
})  # fmt: skip
_CODE = re.compile(r"Code: (\d+)")
_TOO_MANY_PARTITIONS = "Too many partitions for single INSERT block"


def classify(exc: DatabaseError) -> Failure:
    """Whether a ClickHouse error means unreachable, refused for its own state, or the rows rejected."""
    if isinstance(exc, OperationalError):
        return Failure.UNREACHABLE
    text = str(exc)
    match = _CODE.search(text)
    if match is None:
        return Failure.UNREACHABLE  # an HTTP error from something in between (a proxy), not ClickHouse's answer
    if _TOO_MANY_PARTITIONS in text:
        return Failure.REJECTED  # about the block: halves of it go in
    return Failure.REFUSED if int(match.group(1)) in _SERVER_STATE_CODES else Failure.REJECTED
