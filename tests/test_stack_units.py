"""Unit tests of the stack's building blocks: no broker, no ClickHouse, only this process and short children."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from deploy import kafka_broker
from deploy.daemons import (
    DataDirLock,
    PidFile,
    StackError,
    flock_holder,
    free_port_run,
    lockf_holder,
    port_is_free,
    port_owner,
    process_matches,
    wait_until,
)
from deploy.settings import SettingsError, StackSettings, describe_validation_error, read_settings
from deploy.stack import _redacted
from deploy.topics import pipeline_topic_specs, topic_configs
from schemas.settings import PipelineSettings


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
        root,
        root / "kafka",
        root / "clickhouse",
        root / "run",
        root / "logs",
    )


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
        other = PidFile(tmp_path / "other.pid", ("kafka.Kafka", marker))
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
    assert names[:17] == [spec.name for spec in settings.topics.specs()]
    assert [spec.name for spec in specs if spec.compacted] == [
        "unit.leads",
        "unit.erased-leads",
        "unit-worker-visitors-changelog",
        "unit-worker-contacts-changelog",
        "unit-worker-leads-changelog",
        "unit-worker-scores-changelog",
        "unit-worker-counters-1m-changelog",
        "unit-worker-counters-1h-changelog",
        "unit-worker-counters-today-changelog",
    ]
    assert [spec.kind for spec in specs if not spec.compacted] == [
        "source",
        "source",
        "source",
        "internal",
        "output",
        "output",
        "output",
        "output",
        "output",
        "output",
        "dead-letters",
        "output",
        "dead-letters",
        "output",
        "output",  # ad-feedback
        "internal",
        "internal",
        "internal",
    ]


def test_topic_configs_follow_the_kind_and_the_settings() -> None:
    settings = PipelineSettings(
        topic_prefix="unit",
        retention_hours=48,
        retention_mb_per_partition=100,
        dead_letter_retention_hours=240,
        compaction_segment_hours=2,
    )
    by_name = {spec.name: topic_configs(spec, settings) for spec in pipeline_topic_specs(settings)}
    day, hour = 86_400_000, 3_600_000
    assert by_name["unit.events"] == {
        "cleanup.policy": "delete",
        "retention.ms": str(48 * hour),
        "retention.bytes": str(100 * 1024 * 1024),
        "segment.ms": str(day),
    }
    assert by_name["unit.credits"] == by_name["unit.events"]
    assert by_name["unit.dead-letters"] == {
        "cleanup.policy": "delete",
        "retention.ms": str(240 * hour),
        "retention.bytes": str(100 * 1024 * 1024),
        "segment.ms": str(day),
    }
    assert by_name["unit.leads"] == {
        "cleanup.policy": "compact",
        "segment.ms": str(2 * hour),
        "max.compaction.lag.ms": str(2 * hour),
        "delete.retention.ms": str(day),
    }
    assert by_name["unit-worker-visitors-changelog"] == by_name["unit.leads"]
    # windowed counters also forget expired windows: size + expiry of the 1-minute windows
    assert by_name["unit-worker-counters-1m-changelog"] == {
        "cleanup.policy": "compact,delete",
        "segment.ms": str(2 * hour),
        "max.compaction.lag.ms": str(2 * hour),
        "delete.retention.ms": str(day),
        "retention.ms": str((60 + 3600) * 1000),
    }
    short = PipelineSettings(topic_prefix="unit", retention_hours=3)
    assert topic_configs(short.topics.specs()[0], short)["segment.ms"] == str(3 * hour)


def test_replication_follows_the_cluster_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS", raising=False)  # CI may point the suite at a cluster
    assert PipelineSettings(data_dir=tmp_path).topic_replication_factor == 1
    assert PipelineSettings(data_dir=tmp_path, kafka_brokers=3).topic_replication_factor == 3
    assert PipelineSettings(data_dir=tmp_path, kafka_brokers=3, replication_factor=2).topic_replication_factor == 2
    assert PipelineSettings(kafka_bootstrap_servers="k:9092").topic_replication_factor == -1  # the broker's default
    # unset: as many nodes as the data directory's cluster was formatted with
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "cluster.json").write_text('{"cluster_id": "x", "nodes": 3}')
    settings = PipelineSettings(data_dir=tmp_path, embedded_kafka_port=9200)
    assert settings.kafka_nodes == 3
    assert settings.kafka_servers == "127.0.0.1:9200,127.0.0.1:9202,127.0.0.1:9204"


def test_kafka_node_properties_place_the_cluster_on_consecutive_ports(tmp_path: Path) -> None:
    settings = StackSettings(data_dir=tmp_path, embedded_kafka_port=9300, kafka_brokers=3, partitions=2)
    nodes = kafka_broker.nodes(settings)
    assert [(n.node_id, n.client_port, n.controller_port) for n in nodes] == [
        (1, 9300, 9301),
        (2, 9302, 9303),
        (3, 9304, 9305),
    ]
    lines = kafka_broker.server_properties(settings, nodes[1]).splitlines()
    assert "node.id=2" in lines
    assert "controller.quorum.voters=1@127.0.0.1:9301,2@127.0.0.1:9303,3@127.0.0.1:9305" in lines
    assert "listeners=PLAINTEXT://127.0.0.1:9302,CONTROLLER://127.0.0.1:9303" in lines
    assert f"log.dirs={tmp_path.resolve() / 'kafka' / 'node-2' / 'data'}" in lines
    for expected in (
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "offsets.topic.replication.factor=3",
        "transaction.state.log.min.isr=2",
        "auto.create.topics.enable=false",
        "num.partitions=2",
    ):
        assert expected in lines
    single = StackSettings(data_dir=tmp_path / "one", embedded_kafka_port=9300)
    lines = kafka_broker.server_properties(single, kafka_broker.nodes(single)[0]).splitlines()
    assert "controller.quorum.voters=1@127.0.0.1:9301" in lines
    assert "min.insync.replicas=1" in lines and "transaction.state.log.replication.factor=1" in lines


def test_java_versions_are_read_from_java_version_output() -> None:
    assert kafka_broker.java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert kafka_broker.java_major('openjdk version "21" 2023-09-19') == 21
    assert kafka_broker.java_major('java version "1.8.0_392"') == 8
    assert kafka_broker.java_major("bash: java: command not found") is None


def test_a_foreign_lockf_lock_is_named_by_its_pid(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    assert lockf_holder(lock) is None
    lock.write_text("")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'r+'); fcntl.lockf(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert lockf_holder(lock) == holder.pid
    finally:
        holder.communicate("", timeout=10)
    assert lockf_holder(lock) is None


def test_free_port_run_finds_consecutive_free_ports() -> None:
    first = free_port_run(6)
    assert all(port_is_free("127.0.0.1", port) for port in range(first, first + 6))


def test_passwords_are_redacted_in_messages() -> None:
    assert _redacted("http://u:secret@ch.example:8123/db") == "http://u:***@ch.example:8123/db"
    assert _redacted("http://ch.example:8123/db") == "http://ch.example:8123/db"
