"""The single-machine stack on real processes: up/down/status, idempotence, data surviving a restart, and the
errors a user meets (port taken, binary missing, data directory locked, bad setting).

Every stack here lives in a temporary directory on free ports, so a developer's own stack on 9092/8123 is never
touched; each test stops what it started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import wait_for

from deploy import stack
from deploy.daemons import StackError, process_cmdline
from deploy.settings import StackSettings
from deploy.settings import private_stack_settings as embedded_settings

CLI_TIMEOUT = 120


def run_cli(
    *args: str, settings: StackSettings | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``closedloop ARGS`` in a subprocess with the environment describing ``settings``."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("CLOSEDLOOP_")}
    if settings is not None:
        environment.update(
            CLOSEDLOOP_DATA_DIR=str(settings.data_dir),
            CLOSEDLOOP_EMBEDDED_KAFKA_PORT=str(settings.embedded_kafka_port),
            CLOSEDLOOP_EMBEDDED_CLICKHOUSE_PORT=str(settings.embedded_clickhouse_port),
        )
    environment.update(env or {})
    environment["COLUMNS"] = "200"  # rich wraps long lines at 80 columns otherwise
    return subprocess.run(
        [sys.executable, "-m", "closedloop.cli", *args],
        env=environment,
        text=True,
        capture_output=True,
        timeout=CLI_TIMEOUT,
    )


def alive(pid: int) -> bool:
    return process_cmdline(pid) is not None


@pytest.fixture
def stack_settings(tmp_path: Path) -> Iterator[StackSettings]:
    """Settings of a private embedded stack; whatever it started is stopped afterwards."""
    settings = embedded_settings(tmp_path / "stack")
    yield settings
    stack.down(settings)


# -----------------------------------------------------------------------------------------------------------
# With both embedded services


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_up_twice_starts_nothing_twice_and_status_json(stack_settings: StackSettings) -> None:
    first = run_cli("up", settings=stack_settings)
    assert first.returncode == 0, first.stderr
    pids = {name: int((stack_settings.run_dir / f"{name}.pid").read_text()) for name in ("kafka", "clickhouse")}
    assert all(alive(pid) for pid in pids.values())

    second = run_cli("up", settings=stack_settings)
    assert second.returncode == 0, second.stderr
    assert f"kafka: already running (PID {pids['kafka']}" in second.stdout
    assert f"clickhouse: already running (PID {pids['clickhouse']}" in second.stdout
    assert "topics: 0 created" in second.stdout
    after = {name: int((stack_settings.run_dir / f"{name}.pid").read_text()) for name in ("kafka", "clickhouse")}
    assert after == pids

    shown = run_cli("status", "--json", settings=stack_settings)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["data_dir"] == str(stack_settings.data_root)
    assert status["healthy"] is True
    kafka, clickhouse = status["services"]
    assert (kafka["name"], kafka["mode"], kafka["running"], kafka["healthy"], kafka["pid"]) == (
        "kafka",
        "embedded",
        True,
        True,
        pids["kafka"],
    )
    assert kafka["address"] == f"127.0.0.1:{stack_settings.embedded_kafka_port}"
    assert kafka["data_dir"] == str(stack_settings.kafka_dir / "node-1")
    assert kafka["detail"].startswith("Apache Kafka 4.4.0, node 1 of 1, ")
    assert kafka["log"] == str(stack_settings.logs_dir / "kafka.log")
    assert (clickhouse["name"], clickhouse["mode"], clickhouse["healthy"], clickhouse["pid"]) == (
        "clickhouse",
        "embedded",
        True,
        pids["clickhouse"],
    )
    assert clickhouse["address"] == f"http://127.0.0.1:{stack_settings.embedded_clickhouse_port}"
    assert clickhouse["detail"].startswith("ClickHouse 26.")

    stopped = run_cli("down", settings=stack_settings)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(pid) for pid in pids.values())
    assert not (stack_settings.run_dir / "kafka.pid").exists()

    down_status = run_cli("status", "--json", settings=stack_settings)
    assert down_status.returncode == 1
    assert [s["running"] for s in json.loads(down_status.stdout)["services"]] == [False, False]


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_down_keeps_data_and_up_finds_it_again(stack_settings: StackSettings) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    stack.up(stack_settings, migrate=False)
    topic = stack_settings.topics.events
    producer = KafkaProducer(bootstrap_servers=stack_settings.kafka_servers)
    for i in range(3):
        producer.send(topic, key=b"visitor-1", value=f"record-{i}".encode()).get(timeout=10)
    producer.close()
    database = stack_settings.clickhouse_database
    stack.clickhouse_request(stack_settings.clickhouse, f"CREATE DATABASE `{database}`")
    stack.clickhouse_request(
        stack_settings.clickhouse,
        f"CREATE TABLE `{database}`.kept (id UInt32, name String) ENGINE = MergeTree ORDER BY id",
    )
    stack.clickhouse_request(stack_settings.clickhouse, f"INSERT INTO `{database}`.kept VALUES (1, 'a'), (2, 'b')")
    old_pids = set(stack.down(stack_settings).values())
    assert not any(alive(pid) for pid in old_pids)

    result = stack.up(stack_settings, migrate=False)
    assert set(result.started) == {"kafka", "clickhouse"}
    assert result.topics_created == []
    rows = stack.clickhouse_request(
        stack_settings.clickhouse, f"SELECT id, name FROM `{database}`.kept ORDER BY id FORMAT TSV"
    )
    assert rows == "1\ta\n2\tb\n"

    consumer = KafkaConsumer(
        bootstrap_servers=stack_settings.kafka_servers, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    values = []
    deadline = time.monotonic() + 15
    while len(values) < 3 and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            values.extend(record.value for record in batch)
    consumer.close()
    assert values == [b"record-0", b"record-1", b"record-2"]


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_real_server_settings_start_nothing_embedded(
    kafka_bootstrap: str, clickhouse_http_url: str, unique_name: str, tmp_path: Path
) -> None:
    from kafka.admin import KafkaAdminClient

    settings = StackSettings(
        data_dir=tmp_path / "stack",
        kafka_bootstrap_servers=kafka_bootstrap,
        clickhouse_url=f"{clickhouse_http_url}/{unique_name}",
        topic_prefix=unique_name,
    )
    result = stack.up(settings)
    assert result.external == ["kafka", "clickhouse"]
    assert result.started == {}
    assert not (settings.run_dir / "kafka.pid").exists()
    assert not (settings.run_dir / "clickhouse.pid").exists()
    assert not settings.kafka_dir.exists() and not settings.clickhouse_dir.exists()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    listed = {name for name in admin.list_topics() if name.startswith(f"{unique_name}.")}
    admin.close()
    assert listed == {spec.name for spec in settings.topics.specs()}
    assert stack.clickhouse_request(settings.clickhouse, f"EXISTS DATABASE `{unique_name}`").strip() == "1"
    assert (
        stack.clickhouse_request(settings.clickhouse, f"EXISTS TABLE `{unique_name}`.schema_migrations").strip() == "1"
    )

    current = stack.status(settings).as_dict()
    assert [(s["name"], s["mode"], s["healthy"], s["pid"]) for s in current["services"]] == [
        ("kafka", "external", True, None),
        ("clickhouse", "external", True, None),
    ]
    assert stack.down(settings) == {}
    stack.clickhouse_request(settings.clickhouse, f"DROP DATABASE `{unique_name}`")


@pytest.mark.kafka
def test_topics_get_the_configs_of_their_kind_and_up_reconciles_them(stack_settings: StackSettings) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    stack.up(stack_settings, services=["kafka"])
    topics = stack_settings.topics
    changelog = f"{stack_settings.topic_prefix}-worker-visitors-changelog"
    names = [topics.events, topics.dead_letters, topics.leads, changelog]

    def configs() -> dict[str, tuple[str, ...]]:
        keys = ("cleanup.policy", "retention.ms", "retention.bytes")
        admin = KafkaAdminClient(bootstrap_servers=stack_settings.kafka_servers)
        try:

            def described() -> dict:
                # right after creation a topic's configs may not be described yet: wait for every one
                found = admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, name) for name in names], config_filter="all"
                ).get("topic", {})
                return found if all(key in found.get(name, {}) for name in names for key in keys) else {}

            found = wait_for(described, 15, "the topics' configs")
        finally:
            admin.close()
        return {name: tuple(found[name][key]["value"] for key in keys) for name in names}

    week, month, gib = str(168 * 3_600_000), str(720 * 3_600_000), str(1024 * 1024 * 1024)
    assert configs() == {
        topics.events: ("delete", week, gib),
        topics.dead_letters: ("delete", month, gib),
        topics.leads: ("compact", week, "-1"),
        changelog: ("compact", week, "-1"),
    }

    # Another retention in the settings: the next `up` sets it on the existing topics, data kept.
    changed = stack_settings.model_copy(update={"retention_hours": 24.0, "retention_mb_per_partition": 10})
    result = stack.up(changed, services=["kafka"])
    assert result.topics_created == []
    assert topics.events in result.topics_reconciled and topics.leads not in result.topics_reconciled
    # the brokers apply a config change from the metadata log, a moment after the answer
    reconciled = ("delete", str(24 * 3_600_000), str(10 * 1024 * 1024))
    wait_for(lambda: configs()[topics.events] == reconciled, 15, "the new retention on the events topic")
    assert stack.up(changed, services=["kafka"]).topics_reconciled == []


@pytest.mark.kafka
def test_a_three_node_cluster_replicates_every_topic_and_comes_back(tmp_path: Path) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    settings = embedded_settings(tmp_path / "stack", kafka_brokers=3)
    try:
        started = run_cli("up", "--kafka-brokers", "3", settings=settings)
        assert started.returncode == 0, started.stderr
        # later commands find the node count in the data directory, without the option
        shown = run_cli("status", "--json", settings=settings)
        rows = [s for s in json.loads(shown.stdout)["services"] if s["name"].startswith("kafka")]
        assert [(s["name"], s["healthy"], s["address"]) for s in rows] == [
            (f"kafka-{k + 1}", True, f"127.0.0.1:{settings.embedded_kafka_port + 2 * k}") for k in range(3)
        ]
        assert [s["detail"].split(",")[:2] for s in rows] == [
            ["Apache Kafka 4.4.0", f" node {k + 1} of 3"] for k in range(3)
        ]
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_servers)
        try:
            described = admin.describe_topics([settings.topics.events])[0]["partitions"]
            assert sorted(len(p["replica_nodes"]) for p in described) == [3, 3, 3, 3]
            assert sorted(len(p["isr_nodes"]) for p in described) == [3, 3, 3, 3]
            configs = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, settings.topics.events)], config_filter="all"
            )["topic"][settings.topics.events]
            assert configs["min.insync.replicas"]["value"] == "2"
        finally:
            admin.close()
        # a smaller cluster on the same data is refused with a way out
        refused = run_cli("up", "--kafka-brokers", "1", settings=settings)
        assert refused.returncode == 1
        assert "belongs to a 3-node cluster" in " ".join(refused.stderr.split())
        stopped = run_cli("down", settings=settings)
        assert stopped.returncode == 0, stopped.stderr
        stopped_nodes = [
            line.split(":")[0].strip() for line in stopped.stdout.splitlines() if "kafka-" in line and "stopped" in line
        ]
        assert stopped_nodes == ["kafka-1", "kafka-2", "kafka-3"]
        again = run_cli("up", settings=settings)
        assert again.returncode == 0, again.stderr
        assert "topics: 0 created" in again.stdout
    finally:
        stack.down(settings)


# -----------------------------------------------------------------------------------------------------------
# Errors: nothing must start, and the message must say what to do


def test_port_taken_is_a_clear_error(stack_settings: StackSettings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", stack_settings.embedded_kafka_port))
        taken.listen()
        result = run_cli("up", settings=stack_settings)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert (
        f"Port {stack_settings.embedded_kafka_port} for the embedded kafka is already in use by process "
        f"{os.getpid()}" in message
    )
    assert "CLOSEDLOOP_EMBEDDED_KAFKA_PORT=<port>" in message
    assert not (stack_settings.run_dir / "kafka.pid").exists()


def test_missing_java_is_a_clear_error(stack_settings: StackSettings, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_cli("up", settings=stack_settings, env={"PATH": str(empty), "JAVA_HOME": ""})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "Apache Kafka needs Java, and no `java` was found." in message
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS" in message
    assert not (stack_settings.run_dir / "kafka.pid").exists()


def test_missing_maven_before_the_first_fetch_is_a_clear_error(stack_settings: StackSettings, tmp_path: Path) -> None:
    import shutil

    only_java = tmp_path / "bin"
    only_java.mkdir()
    (only_java / "java").symlink_to(shutil.which("java"))
    cache = tmp_path / "empty-cache"
    result = run_cli(
        "up",
        settings=stack_settings,
        env={"PATH": str(only_java), "JAVA_HOME": "", "CLOSEDLOOP_KAFKA_CACHE_DIR": str(cache)},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    lib = cache / "kafka-4.4.0" / "lib"
    assert f"Apache Kafka 4.4.0's jars are not in {lib} yet, and no `mvn` was found" in message
    assert "apt-get install maven" in message
    assert not (stack_settings.run_dir / "kafka.pid").exists()


def test_data_dir_locked_by_another_up_is_a_clear_error(stack_settings: StackSettings) -> None:
    lock = stack_settings.run_dir / "stack.lock"
    stack_settings.run_dir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); "
            "sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StackError) as raised:
            stack.up(stack_settings.model_copy(), migrate=False)
    finally:
        holder.communicate("", timeout=10)
    message = str(raised.value)
    assert f"is locked by another process (PID {holder.pid}, lock file {lock})" in message
    assert "CLOSEDLOOP_DATA_DIR" in message
    assert not (stack_settings.run_dir / "kafka.pid").exists()


@pytest.mark.clickhouse
def test_clickhouse_dir_held_by_a_foreign_process_is_a_clear_error(stack_settings: StackSettings) -> None:
    path = stack_settings.clickhouse_dir
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import chdb, sys; c = chdb.connect(sys.argv[1]); print('open', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StackError) as raised:
            stack.start_service(stack_settings, "clickhouse")
    finally:
        holder.communicate("", timeout=30)
    assert f"The ClickHouse data directory {path} is locked by another process (PID {holder.pid}" in str(raised.value)
    assert not (stack_settings.run_dir / "clickhouse.pid").exists()


@pytest.mark.clickhouse
def test_up_makes_the_data_directory_private_and_every_client_uses_its_password(stack_settings: StackSettings) -> None:
    import urllib.error

    stack_settings.data_root.mkdir(mode=0o755, parents=True)
    stack_settings.data_root.chmod(0o755)
    lines: list[str] = []
    stack.up(stack_settings, services=["clickhouse"], report=lines.append)
    assert stack_settings.data_root.stat().st_mode & 0o777 == 0o700
    assert any("was open to other users (mode 0755), now 0700" in line for line in lines), lines
    password_file = stack_settings.data_root / "local-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert f"default:{password}@" in stack_settings.clickhouse

    # The CLI finds the password in the data directory when CLOSEDLOOP_CLICKHOUSE_URL is unset.
    shown = run_cli("sql", "SELECT count() AS n FROM schema_migrations", "--format", "csv", settings=stack_settings)
    assert (shown.returncode, shown.stdout.splitlines()[0]) == (0, "n"), shown.stderr
    healthy = run_cli("status", "--json", settings=stack_settings)
    assert json.loads(healthy.stdout)["services"][1]["healthy"] is True, healthy.stdout
    address = f"http://127.0.0.1:{stack_settings.embedded_clickhouse_port}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        stack.clickhouse_request(address, "SELECT 1")
    assert refused.value.code == 403 and refused.value.headers["X-ClickHouse-Exception-Code"] == "516"

    # A password that no longer matches the running endpoint is said at once, not after the start timeout.
    password_file.write_text("another\n")
    started = time.monotonic()
    with pytest.raises(StackError) as mismatch:
        stack.up(stack_settings, services=["clickhouse"], migrate=False)
    assert time.monotonic() - started < stack_settings.start_timeout_seconds / 2
    assert f"refuses the password in {password_file}" in str(mismatch.value)
    assert "closedloop down" in str(mismatch.value)
    password_file.write_text(password + "\n")

    stack.down(stack_settings, services=["clickhouse"])
    stack.up(stack_settings, services=["clickhouse"], migrate=False)  # restarted: the same password
    assert stack.clickhouse_request(stack_settings.clickhouse, "SELECT 1").strip() == "1"


def test_bad_setting_is_printed_readably() -> None:
    result = run_cli("status", env={"CLOSEDLOOP_PARTITIONS": "many", "CLOSEDLOOP_EMBEDDED_KAFKA_PORT": "70000"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [" ".join(line.split()) for line in result.stderr.splitlines()]
    assert lines[0] == "Invalid settings:"
    assert "CLOSEDLOOP_EMBEDDED_KAFKA_PORT='70000': Input should be less than or equal to 65525" in lines
    assert (
        "CLOSEDLOOP_PARTITIONS='many': Input should be a valid integer, unable to parse string as an integer" in lines
    )
