"""When the sink seals a batch, commits offsets, how long a poll may block, and how it backs off after a failure.

The decisions only: no Kafka, no ClickHouse, no clock. The writer (``sinks/writer.py``) passes the time (one
monotonic clock, in seconds) and its counts, and does what the answer says, so each rule can be tested at exact
times without a broker (``tests/test_sink_policy.py``). The same split as getsentry/arroyo's ``CommitPolicy`` and
batching step beside its stream processor. Why each rule is what it is: docs/CLICKHOUSE.md, "The sink".
"""

from __future__ import annotations

from dataclasses import dataclass

from sinks.settings import SinkSettings

# The longest one poll blocks: how soon an idle sink sees a stop request or a batch falling due. Kafka holds an
# empty fetch for fetch_max_wait_ms, so an idle sink waits inside the poll and needs no sleep of its own.
POLL_TIMEOUT_MS = 200


@dataclass(frozen=True)
class SinkPolicy:
    """Batch bounds, commit interval, poll timeout and retry back-off of one sink (see the module docstring)."""

    max_rows: int = 10_000
    max_seconds: float = 1.0
    max_bytes: int | None = None  # bytes of record values in the batch; None: no bound
    commit_interval: float = 5.0
    retry_initial: float = 0.2
    retry_max: float = 10.0
    poll_timeout_ms: int = POLL_TIMEOUT_MS

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_seconds <= 0 or (self.max_bytes is not None and self.max_bytes < 1):
            raise ValueError(f"a batch needs bounds above zero: {self}")
        if self.commit_interval < 0 or self.retry_initial <= 0 or self.retry_max <= 0 or self.poll_timeout_ms < 0:
            raise ValueError(f"intervals and back-offs cannot be negative, back-offs not zero: {self}")

    @classmethod
    def from_settings(cls, settings: SinkSettings) -> SinkPolicy:
        return cls(
            max_rows=settings.sink_batch_rows,
            max_seconds=settings.sink_batch_seconds,
            max_bytes=settings.sink_batch_bytes,
            commit_interval=settings.sink_commit_interval_seconds,
            retry_initial=settings.sink_retry_initial_seconds,
            retry_max=settings.sink_retry_max_seconds,
        )

    def batch_due(self, *, now: float, started_at: float | None, rows: int, size: int = 0) -> bool:
        """Whether the pending batch should be sealed and inserted.

        ``started_at``: when its first record was read (None: nothing read, never due); ``rows``: rows in it;
        ``size``: bytes of its records' values. A batch of dead letters only (no rows) is still due by age, so
        their offsets are committed. The writer asks after each poll, so a batch can pass a bound by one poll.
        """
        if started_at is None:
            return False
        if rows >= self.max_rows or (self.max_bytes is not None and size >= self.max_bytes):
            return True
        return now - started_at >= self.max_seconds

    def poll_timeout(self, *, now: float, started_at: float | None) -> int:
        """Milliseconds the next poll may block: the poll timeout, cut short when the pending batch falls due."""
        if started_at is None:
            return self.poll_timeout_ms
        due_in = started_at + self.max_seconds - now
        return max(0, min(self.poll_timeout_ms, int(due_in * 1000)))

    def commit_due(self, *, now: float, last_commit: float, caught_up: bool, failures: int = 0) -> bool:
        """Whether to commit the offsets of the batches already written (a flush or a stop commits regardless).

        While records keep coming, at most every ``commit_interval`` since the last attempt: a commit is a
        blocking round trip. Once ``caught_up`` (an empty poll, nothing pending or in flight), at once. After
        ``failures`` commits in a row failed for a retriable reason (the broker or the group's coordinator away),
        not before the back-off of the last failure has passed either.
        """
        wait = 0.0 if caught_up else self.commit_interval
        if failures > 0:
            wait = max(wait, self.retry_delay(failures - 1))
        return now - last_commit >= wait

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0 = the first failure): ``retry_initial``
        doubling up to ``retry_max``. The same back-off serves an unreachable or refusing ClickHouse and a commit
        that could not reach the broker; retries never give up (nothing is committed or lost meanwhile)."""
        if attempt < 0:
            raise ValueError(f"attempt must be 0 or more, got {attempt}")
        # 2.0 ** 1024 overflows a float; long before that the ceiling applies.
        return min(self.retry_initial * 2.0 ** min(attempt, 1000), self.retry_max)
