"""Unit tests of the stack's building blocks: no broker, no ClickHouse, only this process and short children."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from deploy.processes import (
    DataDirLock,
    PidFile,
    StackError,
    flock_holder,
    port_is_free,
    port_owner,
    process_matches,
    wait_until,
)
from deploy.settings import SettingsError, StackSettings, describe_validation_error, read_settings
from deploy.stack import _redacted
from deploy.topics import _as_spec, pipeline_topic_specs
from schemas.topics import TopicSpec


def test_validation_error_names_each_variable_and_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOSEDLOOP_PARTITIONS", "0")
    monkeypatch.setenv("CLOSEDLOOP_TOPIC_PREFIX", "bad prefix!")
    with pytest.raises(SettingsError) as raised:
        read_settings(StackSettings)
    assert str(raised.value).splitlines() == [
        "Invalid settings:",
        "  CLOSEDLOOP_TOPIC_PREFIX='bad prefix!': String should match pattern '^[A-Za-z0-9._-]+$'",
        "  CLOSEDLOOP_PARTITIONS='0': Input should be greater than or equal to 1",
        "Fix the environment variable(s) above (or unset them to use the defaults) and run again.",
    ]


def test_describe_validation_error_single() -> None:
    with pytest.raises(ValidationError) as raised:
        StackSettings(stop_timeout_seconds=-1)
    assert describe_validation_error(raised.value, StackSettings).splitlines()[:2] == [
        "Invalid setting:",
        "  CLOSEDLOOP_STOP_TIMEOUT_SECONDS=-1: Input should be greater than 0",
    ]


def test_stack_layout_is_under_the_absolute_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = StackSettings(data_dir=Path(".closedloop"))
    root = tmp_path.resolve() / ".closedloop"
    assert (settings.data_root, settings.kafka_dir, settings.clickhouse_dir, settings.run_dir, settings.logs_dir) == (
        root, root / "kafka", root / "clickhouse", root / "run", root / "logs")


def test_pid_file_accepts_only_a_live_process_with_the_markers(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker-dir")
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", marker], stdin=subprocess.PIPE)
    try:
        ours = PidFile(tmp_path / "ours.pid", ("-c", marker))
        ours.write(child.pid)
        # Until the child has exec'd, /proc shows our own command line: wait for its own.
        wait_until(lambda: process_matches(child.pid, ("-c", marker)), 10.0, "the child to exec", interval=0.01)
        assert ours.running_pid() == child.pid
        # Same PID, other markers: a reused PID must not pass for ours, and the stale file goes.
        other = PidFile(tmp_path / "other.pid", ("noida-db", marker))
        other.write(child.pid)
        assert other.running_pid() is None
        assert not other.path.exists()
    finally:
        child.communicate(b"", timeout=10)
    assert ours.running_pid() is None
    assert not ours.path.exists()
    assert process_matches(os.getpid(), ("python",)) or process_matches(os.getpid(), ("pytest",))


def test_port_checks_name_the_listening_process() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        assert port_owner(port) == os.getpid()
    assert port_is_free("127.0.0.1", port)


def test_data_dir_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    lock_path = tmp_path / "run" / "stack.lock"
    with DataDirLock(lock_path):
        assert lock_path.read_text().strip() == str(os.getpid())
        with pytest.raises(StackError) as raised:
            with DataDirLock(lock_path, timeout=0.2):
                pass
        assert f"is locked by another process (PID {os.getpid()}, lock file {lock_path})" in str(raised.value)
    with DataDirLock(lock_path, timeout=0.2):
        pass


def test_flock_holder_reads_the_pid_line(tmp_path: Path) -> None:
    status = tmp_path / "status"
    assert flock_holder(status) is None
    status.write_text("PID: 4242\nStarted at: now\n")
    assert flock_holder(status) is None  # present but nobody holds it
    import fcntl

    with open(status) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert flock_holder(status) == "4242"


def test_wait_until_returns_the_value_or_names_what_it_waited_for() -> None:
    values = iter([0, 0, 7])
    assert wait_until(lambda: next(values), 5.0, "seven", interval=0.01) == 7
    with pytest.raises(TimeoutError, match="waiting for nothing"):
        wait_until(lambda: False, 0.05, "nothing", interval=0.01)


def test_topic_specs_include_internal_topics_once() -> None:
    settings = StackSettings(topic_prefix="unit")
    specs = pipeline_topic_specs(settings)
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names))
    assert names[:10] == [spec.name for spec in settings.topics.specs()]
    assert [spec.name for spec in specs if spec.compacted][0] == "unit.leads"
    assert _as_spec("app-visitors-changelog") == TopicSpec(
        "app-visitors-changelog", "table key", compacted=True, doc="stream jobs internal")


def test_passwords_are_redacted_in_messages() -> None:
    assert _redacted("http://u:secret@ch.example:8123/db") == "http://u:***@ch.example:8123/db"
    assert _redacted("http://ch.example:8123/db") == "http://ch.example:8123/db"
