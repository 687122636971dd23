"""Unit tests of sinks.policy: the sink's decisions at exact times, with no broker, no ClickHouse and no clock.

Times are seconds on an arbitrary monotonic clock; the values are chosen to be exact in binary floating point, so
"not due at T - epsilon" means the float just below T.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from sinks.policy import POLL_TIMEOUT_MS, SinkPolicy
from sinks.settings import SinkSettings

ROOT = Path(__file__).resolve().parent.parent
T0 = 1000.0  # when the batch's first record was read


def just_below(value: float) -> float:
    return math.nextafter(value, -math.inf)


def test_the_defaults_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SinkSettings.model_fields:
        monkeypatch.delenv(f"CLOSEDLOOP_{name.upper()}", raising=False)
    defaults = SinkPolicy(max_rows=10_000, max_seconds=1.0, commit_interval=5.0, retry_initial=0.2, retry_max=10.0)
    assert SinkPolicy.from_settings(SinkSettings()) == defaults == SinkPolicy()  # the two sets of defaults agree
    assert (defaults.max_bytes, defaults.poll_timeout_ms) == (None, 200)
    tuned = SinkSettings(
        sink_batch_rows=50,
        sink_batch_seconds=0.25,
        sink_batch_bytes=4096,
        sink_commit_interval_seconds=0,
        sink_retry_initial_seconds=0.1,
        sink_retry_max_seconds=0.5,
    )
    assert SinkPolicy.from_settings(tuned) == SinkPolicy(
        max_rows=50, max_seconds=0.25, max_bytes=4096, commit_interval=0.0, retry_initial=0.1, retry_max=0.5
    )


# -- when a batch is due ----------------------------------------------------------------------------------------


def test_a_batch_is_due_at_max_rows_and_not_one_row_before() -> None:
    policy = SinkPolicy(max_rows=100, max_seconds=1.0)
    assert not policy.batch_due(now=T0, started_at=T0, rows=99)
    assert policy.batch_due(now=T0, started_at=T0, rows=100)
    assert policy.batch_due(now=T0, started_at=T0, rows=250)  # a poll can pass the bound


def test_a_batch_is_due_at_its_age_and_not_just_before() -> None:
    policy = SinkPolicy(max_rows=100, max_seconds=1.0)
    assert not policy.batch_due(now=T0, started_at=T0, rows=1)
    assert not policy.batch_due(now=just_below(T0 + 1.0), started_at=T0, rows=1)
    assert policy.batch_due(now=T0 + 1.0, started_at=T0, rows=1)
    assert policy.batch_due(now=T0 + 300.0, started_at=T0, rows=1)


def test_a_batch_of_dead_letters_only_is_due_by_age() -> None:
    # no rows, but records were read: their offsets have to be committed (and their dead letters published)
    policy = SinkPolicy(max_rows=100, max_seconds=1.0)
    assert not policy.batch_due(now=just_below(T0 + 1.0), started_at=T0, rows=0)
    assert policy.batch_due(now=T0 + 1.0, started_at=T0, rows=0)


def test_an_empty_batch_is_never_due() -> None:
    policy = SinkPolicy(max_rows=1, max_seconds=0.001, max_bytes=1)
    assert not policy.batch_due(now=T0 + 1e6, started_at=None, rows=0, size=0)


def test_a_batch_is_due_at_max_bytes_when_bounded_and_never_by_bytes_otherwise() -> None:
    bounded = SinkPolicy(max_rows=10_000, max_seconds=1.0, max_bytes=1_000_000)
    assert not bounded.batch_due(now=T0, started_at=T0, rows=5, size=999_999)
    assert bounded.batch_due(now=T0, started_at=T0, rows=5, size=1_000_000)
    unbounded = SinkPolicy(max_rows=10_000, max_seconds=1.0)
    assert not unbounded.batch_due(now=T0, started_at=T0, rows=5, size=10**12)


# -- how long a poll may block ----------------------------------------------------------------------------------


def test_a_poll_blocks_for_the_poll_timeout_when_nothing_is_pending() -> None:
    policy = SinkPolicy(max_rows=100, max_seconds=1.0)
    assert POLL_TIMEOUT_MS == 200
    assert policy.poll_timeout(now=T0, started_at=None) == 200
    assert SinkPolicy(poll_timeout_ms=50).poll_timeout(now=T0, started_at=None) == 50


def test_a_poll_is_cut_short_when_the_pending_batch_falls_due() -> None:
    policy = SinkPolicy(max_rows=100, max_seconds=1.0)
    assert policy.poll_timeout(now=T0, started_at=T0) == 200  # due in 1 s: the whole poll timeout
    assert policy.poll_timeout(now=T0 + 0.75, started_at=T0) == 200  # due in 250 ms
    assert policy.poll_timeout(now=T0 + 0.875, started_at=T0) == 125  # due in 125 ms: only that long
    assert policy.poll_timeout(now=T0 + 1.0, started_at=T0) == 0  # due now
    assert policy.poll_timeout(now=T0 + 5.0, started_at=T0) == 0  # overdue: never negative


# -- when offsets are committed ---------------------------------------------------------------------------------


def test_under_load_offsets_are_committed_at_the_interval_and_not_before() -> None:
    policy = SinkPolicy(commit_interval=5.0)
    last = T0
    assert not policy.commit_due(now=T0, last_commit=last, caught_up=False)
    assert not policy.commit_due(now=just_below(T0 + 5.0), last_commit=last, caught_up=False)
    assert policy.commit_due(now=T0 + 5.0, last_commit=last, caught_up=False)


def test_a_caught_up_sink_commits_at_once() -> None:
    policy = SinkPolicy(commit_interval=5.0)
    assert policy.commit_due(now=T0, last_commit=T0, caught_up=True)


def test_interval_zero_commits_after_every_batch() -> None:
    policy = SinkPolicy(commit_interval=0.0)
    assert policy.commit_due(now=T0, last_commit=T0, caught_up=False)


def test_after_retriable_commit_failures_the_next_commit_waits_for_the_back_off() -> None:
    policy = SinkPolicy(commit_interval=5.0, retry_initial=0.25, retry_max=8.0)
    # caught up: at once without failures; after 1 failure 0.25 s after the attempt, after 3 failures 1 s
    assert not policy.commit_due(now=just_below(T0 + 0.25), last_commit=T0, caught_up=True, failures=1)
    assert policy.commit_due(now=T0 + 0.25, last_commit=T0, caught_up=True, failures=1)
    assert not policy.commit_due(now=just_below(T0 + 1.0), last_commit=T0, caught_up=True, failures=3)
    assert policy.commit_due(now=T0 + 1.0, last_commit=T0, caught_up=True, failures=3)
    # under load: the longer of the interval and the back-off
    assert not policy.commit_due(now=just_below(T0 + 5.0), last_commit=T0, caught_up=False, failures=1)
    assert policy.commit_due(now=T0 + 5.0, last_commit=T0, caught_up=False, failures=1)
    assert not policy.commit_due(now=just_below(T0 + 8.0), last_commit=T0, caught_up=False, failures=20)
    assert policy.commit_due(now=T0 + 8.0, last_commit=T0, caught_up=False, failures=20)


# -- back-off ---------------------------------------------------------------------------------------------------


def test_the_back_off_doubles_from_the_first_delay_up_to_the_ceiling() -> None:
    policy = SinkPolicy(retry_initial=0.2, retry_max=10.0)
    assert [policy.retry_delay(attempt) for attempt in range(9)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]
    assert policy.retry_delay(10_000) == 10.0  # no float overflow however long an outage lasts


def test_the_back_off_is_the_same_as_doubling_the_delay_each_time() -> None:
    # the writer's sequence before the policy existed: delay = initial, then delay = min(delay * 2, ceiling)
    policy = SinkPolicy(retry_initial=0.1, retry_max=0.5)
    delay, expected = 0.1, []
    for _ in range(6):
        expected.append(delay)
        delay = min(delay * 2, 0.5)
    assert [policy.retry_delay(attempt) for attempt in range(6)] == expected == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


def test_the_ceiling_holds_from_the_first_retry() -> None:
    assert SinkPolicy(retry_initial=20.0, retry_max=10.0).retry_delay(0) == 10.0


def test_nonsense_values_are_refused() -> None:
    with pytest.raises(ValueError):
        SinkPolicy(max_rows=0)
    with pytest.raises(ValueError):
        SinkPolicy(max_seconds=0)
    with pytest.raises(ValueError):
        SinkPolicy(max_bytes=0)
    with pytest.raises(ValueError):
        SinkPolicy(retry_initial=0)
    with pytest.raises(ValueError):
        SinkPolicy(commit_interval=-1)
    with pytest.raises(ValueError):
        SinkPolicy().retry_delay(-1)


# -- the policy stays a policy ----------------------------------------------------------------------------------


def test_the_policy_decides_and_moves_nothing() -> None:
    """No Kafka, no ClickHouse, no clock of its own: the writer passes the time, so every rule above is exact."""
    tree = ast.parse((ROOT / "sinks" / "policy.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    forbidden = {"kafka", "aiokafka", "clickhouse_connect", "time", "threading", "datetime", "sinks.writer"}
    assert {name for name in imported if name.split(".")[0] in forbidden or name in forbidden} == set()
