"""The embedded broker: Apache Kafka itself, in KRaft combined mode (each node a broker and a controller), on
127.0.0.1, one node or a three-node cluster.

Kafka's jars come from Maven Central through ``deploy/kafka/pom.xml`` into a versioned cache outside the data
directory (``~/.cache/closedloop/kafka-<version>/lib``), fetched once and shared by every data directory and test
session. Each node has its own folder under the data directory's ``kafka/``::

    kafka/cluster.json         the cluster id, the node count and the Kafka version it was formatted with
    kafka/secure-listener.json optional: an extra TLS/SASL client listener on each node (``SecureListener``)
    kafka/node-<id>/server.properties, log4j2.properties
    kafka/node-<id>/data/      the node's log directory (formatted once with kafka.tools.StorageTool)

Node ``k`` (0-based) listens for clients on ``embedded_kafka_port + 2k`` and for the controller quorum on the port
after it, so one setting places the whole cluster. The quorum's voters are static (``controller.quorum.voters``):
a node may come back on other ports and still find its quorum.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.daemons import StackError
from deploy.settings import EMBEDDED_HOST, StackSettings

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
MIN_JAVA = 17
JAVA_HINT = (
    "Install Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless), or point "
    "CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS at an existing Kafka instead."
)
MAVEN_HINT = (
    "Install Apache Maven (Debian: apt-get install maven) so that the first start can fetch Kafka's jars "
    "from Maven Central, or point CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS at an existing Kafka instead."
)


@dataclass(frozen=True)
class KafkaNode:
    """One node of the embedded cluster: its id, ports and files."""

    node_id: int
    client_port: int
    controller_port: int
    root: Path  # kafka/node-<id>

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def log_config(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def log_dir(self) -> Path:
        return self.root / "data"

    @property
    def bootstrap(self) -> str:
        return f"{EMBEDDED_HOST}:{self.client_port}"


def nodes(settings: StackSettings) -> list[KafkaNode]:
    base = settings.embedded_kafka_port
    return [
        KafkaNode(
            node_id=k + 1,
            client_port=base + 2 * k,
            controller_port=base + 2 * k + 1,
            root=settings.kafka_dir / f"node-{k + 1}",
        )
        for k in range(settings.kafka_nodes)
    ]


def node_markers(node: KafkaNode) -> tuple[str, ...]:
    """What /proc/PID/cmdline must contain for a PID to be this node's broker."""
    return ("kafka.Kafka", str(node.properties))


# ---------------------------------------------------------------------------------------------------------------
# Java and the jars


def java_binary() -> str:
    """The ``java`` to run Kafka with (``$JAVA_HOME/bin/java``, else the one on PATH), checked to be 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    in_home = Path(home) / "bin" / "java" if home else None
    java = str(in_home) if in_home is not None and in_home.is_file() else shutil.which("java")
    if java is None:
        raise StackError(f"Apache Kafka needs Java, and no `java` was found. {JAVA_HINT}")
    try:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StackError(f"Cannot run {java} -version ({error}). {JAVA_HINT}") from None
    major = java_major(shown)
    if major is None or major < MIN_JAVA:
        first = shown.strip().splitlines()[0] if shown.strip() else "no version printed"
        raise StackError(f"Apache Kafka needs Java {MIN_JAVA} or newer; {java} is {first!r}. {JAVA_HINT}")
    return java


def java_major(version_output: str) -> int | None:
    """The major version from ``java -version``'s output: 'version "17.0.15"' -> 17, 'version "1.8.0_392"' -> 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def jar_dir(settings: StackSettings) -> Path:
    return settings.kafka_cache_root / f"kafka-{settings.kafka_version}" / "lib"


def ensure_jars(settings: StackSettings, report: Callable[[str], None]) -> Path:
    """Kafka's jars for ``settings.kafka_version``, fetched with Maven on first use. A lock file keeps two
    processes from fetching at once; the folder appears only once complete (fetched beside it, then renamed)."""
    lib = jar_dir(settings)
    if (lib / ".complete").exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            f"Apache Kafka {settings.kafka_version}'s jars are not in {lib} yet, and no `mvn` was "
            f"found to fetch them. {MAVEN_HINT}"
        )
    lib.parent.mkdir(parents=True, exist_ok=True)
    with open(lib.parent.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (lib / ".complete").exists():  # another process fetched them while we waited
            return lib
        report(f"kafka: fetching Apache Kafka {settings.kafka_version}'s jars with Maven into {lib} (once)")
        staging = Path(tempfile.mkdtemp(prefix="lib-", dir=lib.parent))
        try:
            done = subprocess.run(
                [
                    mvn,
                    "-B",
                    "-q",
                    "-f",
                    str(POM),
                    "dependency:copy-dependencies",
                    f"-Dkafka.version={settings.kafka_version}",
                    f"-DoutputDirectory={staging}",
                ],
                capture_output=True,
                text=True,
                timeout=900,
                cwd=lib.parent,
            )
            if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
                output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise StackError(
                    f"Maven could not fetch Apache Kafka {settings.kafka_version} "
                    f"(CLOSEDLOOP_KAFKA_VERSION): exit {done.returncode}.\n{output}\nCheck that Maven "
                    f"Central is reachable and that the version exists."
                )
            (staging / ".complete").write_text(settings.kafka_version + "\n")
            shutil.rmtree(lib, ignore_errors=True)
            staging.rename(lib)
        except subprocess.TimeoutExpired:
            raise StackError("Maven did not finish fetching Kafka's jars within 15 minutes.") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return lib


# ---------------------------------------------------------------------------------------------------------------
# Configuration and storage


def server_properties(settings: StackSettings, node: KafkaNode) -> str:
    """The node's server.properties. Replication follows the cluster size: 3 copies with 2 in sync on three
    nodes, 1 on one; Kafka's own topics get few partitions (the defaults, 50, slow every start)."""
    cluster = nodes(settings)
    replicas = min(3, len(cluster))
    min_isr = 2 if replicas >= 3 else 1
    voters = ",".join(f"{other.node_id}@{EMBEDDED_HOST}:{other.controller_port}" for other in cluster)
    values = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{EMBEDDED_HOST}:{node.client_port},CONTROLLER://{EMBEDDED_HOST}:"
        f"{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{EMBEDDED_HOST}:{node.client_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": node.log_dir,
        "auto.create.topics.enable": "false",  # every topic is created with its configs by deploy.topics
        "num.partitions": settings.partitions,
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": 8,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": 8,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": 0,
        "unclean.leader.election.enable": "false",
        "num.network.threads": 2,
        "num.io.threads": 4,
        "background.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "num.replica.fetchers": 1,
        "log.cleaner.threads": 1,
        "log.cleaner.dedupe.buffer.size": 8 * 1024 * 1024,
        "log.retention.check.interval.ms": 300_000,
    }
    secure = secure_listener(settings)
    if secure is not None:
        values.update(secure.server_properties(node, values))
    lines = ["# Written by closedloop (deploy/kafka_broker.py) at each start; edit the settings, not this file."]
    lines += [f"{key}={value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def log4j_properties(log_file: Path) -> str:
    """Kafka's own log: INFO and above, rotated at 20 MB, five files kept."""
    return "\n".join(
        [
            "rootLogger.level=INFO",
            "rootLogger.appenderRef.file.ref=file",
            "appender.file.type=RollingFile",
            "appender.file.name=file",
            f"appender.file.fileName={log_file}",
            f"appender.file.filePattern={log_file}.%i",
            "appender.file.layout.type=PatternLayout",
            "appender.file.layout.pattern=[%d] %p %m (%c)%n",
            "appender.file.policies.type=Policies",
            "appender.file.policies.size.type=SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size=20MB",
            "appender.file.strategy.type=DefaultRolloverStrategy",
            "appender.file.strategy.max=5",
            # The controller's and the state change logs repeat every metadata change at INFO: keep them quiet.
            "logger.controller.name=kafka.controller",
            "logger.controller.level=WARN",
            "logger.statechange.name=state.change.logger",
            "logger.statechange.level=WARN",
            "",
        ]
    )


def _cluster_file(settings: StackSettings) -> Path:
    return settings.kafka_dir / "cluster.json"


def recorded_cluster(settings: StackSettings) -> dict | None:
    """What ``kafka/cluster.json`` says (None before the first start); refuses a data directory made for
    another node count than the settings ask for."""
    path = _cluster_file(settings)
    try:
        known = json.loads(path.read_text())
    except FileNotFoundError:
        known = None
    except ValueError:
        raise StackError(
            f"{path} is not valid JSON: remove the data directory's kafka/ folder (its topics are "
            f"lost) or restore the file."
        ) from None
    if known is not None:
        if known.get("nodes") != settings.kafka_nodes:
            raise StackError(
                f"The broker data in {settings.kafka_dir} belongs to a {known.get('nodes')}-node cluster, but "
                f"CLOSEDLOOP_KAFKA_BROKERS (or --kafka-brokers) asks for {settings.kafka_nodes}. Use "
                f"another data directory (CLOSEDLOOP_DATA_DIR), or `closedloop down` and remove {settings.kafka_dir}."
            )
    return known


def new_cluster_id() -> str:
    """A cluster id as Kafka's StorageTool random-uuid makes one (16 random bytes, URL-safe base64 without
    padding, never starting with '-'), without starting a JVM for it."""
    while True:
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not made.startswith("-"):
            return made


def cluster_id(settings: StackSettings) -> str:
    """The data directory's cluster id, made once."""
    known = recorded_cluster(settings)
    if known is not None:
        return str(known["cluster_id"])
    new_id = new_cluster_id()
    settings.kafka_dir.mkdir(parents=True, exist_ok=True)
    _cluster_file(settings).write_text(
        json.dumps({"cluster_id": new_id, "nodes": settings.kafka_nodes, "kafka_version": settings.kafka_version})
        + "\n"
    )
    return new_id


def prepare_nodes(settings: StackSettings, chosen: list[KafkaNode], java: str, lib: Path, logs_dir: Path) -> None:
    """Write each node's configuration and format its storage unless already formatted (the nodes at once:
    each format is a JVM start)."""
    identity = cluster_id(settings)
    to_format = []
    for node in chosen:
        node.root.mkdir(parents=True, exist_ok=True)
        node.properties.write_text(server_properties(settings, node))
        node.log_config.write_text(log4j_properties(logs_dir / f"{node_log_name(settings, node)}.log"))
        if not (node.log_dir / "meta.properties").exists():
            to_format.append(node)
    with ThreadPoolExecutor(max_workers=max(1, len(to_format))) as pool:
        list(pool.map(lambda node: _format(node, identity, java, lib), to_format))


def _format(node: KafkaNode, identity: str, java: str, lib: Path) -> None:
    secure = _read_secure_listener(node.root.parent)
    scram_arguments = secure.scram_arguments() if secure is not None else []
    formatted = subprocess.run(
        [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={node.log_config}",
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            identity,
            "-c",
            str(node.properties),
            "--ignore-formatted",
            *scram_arguments,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if formatted.returncode != 0:
        raise StackError(
            f"Formatting the Kafka storage in {node.log_dir} failed:\n"
            f"{(formatted.stderr or formatted.stdout).strip()[-1500:]}"
        )


SECURE_LISTENER_FILE = "secure-listener.json"  # in the data directory's kafka/ folder


@dataclass(frozen=True)
class SecureListener:
    """An extra client listener with TLS and/or SASL on each embedded node, beside its PLAINTEXT one (which the
    nodes, ``closedloop up`` and ``status`` keep using): to try the clients' security settings
    (``CLOSEDLOOP_KAFKA_SECURITY_PROTOCOL`` etc.) against the embedded Kafka. Node ``k`` (1-based) listens on
    ``port + k - 1``. Kept in ``kafka/secure-listener.json`` (:func:`write_secure_listener`) and read at each
    start; its SCRAM users are made when a node's storage is formatted (the first start), PLAIN users at each
    start. Passwords sit in that file: the data directory is the owner's alone (0700)."""

    protocol: str  # SSL, SASL_PLAINTEXT or SASL_SSL
    port: int
    keystore: Path | None = None  # PEM: the node's private key (PKCS#8, unencrypted) and certificate chain
    truststore: Path | None = None  # PEM CA certificates: when set, clients must show a certificate it signed
    plain_users: tuple[tuple[str, str], ...] = ()  # (user, password)
    scram_users: tuple[tuple[str, str], ...] = ()  # (user, password) for SCRAM-SHA-256 and SCRAM-SHA-512

    LISTENER = "SECURE"

    def bootstrap(self, node: KafkaNode) -> str:
        return f"{EMBEDDED_HOST}:{self.port + node.node_id - 1}"

    def server_properties(self, node: KafkaNode, values: dict) -> dict[str, object]:
        """The properties that add this listener to ``values`` (the node's own)."""
        name = self.LISTENER
        prefix = f"listener.name.{name.lower()}."
        address = f"{name}://{self.bootstrap(node)}"
        extra: dict[str, object] = {
            "listeners": f"{values['listeners']},{address}",
            "advertised.listeners": f"{values['advertised.listeners']},{address}",
            "listener.security.protocol.map": f"{values['listener.security.protocol.map']},{name}:{self.protocol}",
        }
        if self.protocol in ("SSL", "SASL_SSL"):
            if self.keystore is None:
                raise StackError(f"the {self.protocol} listener of the embedded Kafka needs a keystore (PEM)")
            extra[prefix + "ssl.keystore.type"] = "PEM"
            extra[prefix + "ssl.keystore.location"] = self.keystore
            if self.truststore is not None:
                extra[prefix + "ssl.truststore.type"] = "PEM"
                extra[prefix + "ssl.truststore.location"] = self.truststore
                extra[prefix + "ssl.client.auth"] = "required"
        if self.protocol.startswith("SASL_"):
            mechanisms = (["PLAIN"] if self.plain_users else []) + (
                ["SCRAM-SHA-256", "SCRAM-SHA-512"] if self.scram_users else []
            )
            extra[prefix + "sasl.enabled.mechanisms"] = ",".join(mechanisms)
            if self.plain_users:
                users = " ".join(f'user_{user}="{password}"' for user, password in self.plain_users)
                extra[prefix + "plain.sasl.jaas.config"] = (
                    f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
                )
            for mechanism in ("scram-sha-256", "scram-sha-512") if self.scram_users else ():
                extra[prefix + f"{mechanism}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        return extra

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM users."""
        return [
            argument
            for user, password in self.scram_users
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for argument in ("--add-scram", f"{mechanism}=[name={user},password={password}]")
        ]


def write_secure_listener(settings: StackSettings, listener: SecureListener) -> Path:
    """Keep ``listener`` for the next starts of the embedded Kafka of ``settings`` (before its first start, for
    SCRAM users)."""
    settings.kafka_dir.mkdir(parents=True, exist_ok=True)
    path = settings.kafka_dir / SECURE_LISTENER_FILE
    fields = {
        "protocol": listener.protocol,
        "port": listener.port,
        "keystore": str(listener.keystore) if listener.keystore else None,
        "truststore": str(listener.truststore) if listener.truststore else None,
        "plain_users": [list(user) for user in listener.plain_users],
        "scram_users": [list(user) for user in listener.scram_users],
    }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(json.dumps(fields, indent=2) + "\n")
    return path


def secure_listener(settings: StackSettings) -> SecureListener | None:
    """The data directory's extra secured listener (None: only the PLAINTEXT one)."""
    return _read_secure_listener(settings.kafka_dir)


def _read_secure_listener(kafka_dir: Path) -> SecureListener | None:
    path = kafka_dir / SECURE_LISTENER_FILE
    try:
        fields = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise StackError(f"{path} is not valid JSON: fix it or remove it (the secured listener goes).") from None
    return SecureListener(
        protocol=fields["protocol"],
        port=int(fields["port"]),
        keystore=Path(fields["keystore"]) if fields.get("keystore") else None,
        truststore=Path(fields["truststore"]) if fields.get("truststore") else None,
        plain_users=tuple((user, password) for user, password in fields.get("plain_users", [])),
        scram_users=tuple((user, password) for user, password in fields.get("scram_users", [])),
    )


def node_log_name(settings: StackSettings, node: KafkaNode) -> str:
    """``kafka`` for a single node, ``kafka-<id>`` in a cluster: the name of its PID file, log and status row."""
    return "kafka" if settings.kafka_nodes == 1 else f"kafka-{node.node_id}"


def node_argv(
    settings: StackSettings,
    node: KafkaNode,
    java: str,
    lib: Path,
    archive: Path | None = None,
    dump_archive: Path | None = None,
) -> list[str]:
    heap = settings.kafka_heap_mb
    sharing = ([f"-XX:SharedArchiveFile={archive}"] if archive else []) + (
        [f"-XX:ArchiveClassesAtExit={dump_archive}"] if dump_archive else []
    )
    return [
        java,
        *sharing,
        "-Xlog:cds=off",
        "-Xlog:cds+dynamic=off",
        f"-Xms{min(256, heap)}m",
        f"-Xmx{heap}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={node.log_config}",
        f"-Dclosedloop.kafka.version={settings.kafka_version}",
        f"-Dclosedloop.kafka.port={node.client_port}",
        "-cp",
        f"{lib}/*",
        "kafka.Kafka",
        str(node.properties),
    ]


def class_archive(settings: StackSettings, java: str, lib: Path, report: Callable[[str], None]) -> Path | None:
    """A class-data-sharing archive of the broker's classes, so that a node starts without parsing and
    verifying them again (bench/kafka.md has the start times). Made once per Kafka version and Java: a
    throw-away node starts, serves one record and stops, and the JVM writes the classes it loaded at exit.
    None when it cannot be made; a node then starts without one."""
    stamp = hashlib.sha1(f"{os.path.realpath(java)}|{lib}".encode()).hexdigest()[:10]
    archive = lib.parent / f"classes-{stamp}.jsa"
    if archive.exists():
        return archive
    with open(lib.parent.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if archive.exists():
            return archive
        report("kafka: making a class-data archive for faster starts (once)")
        try:
            _train_archive(settings, java, lib, archive)
        except (OSError, StackError, subprocess.SubprocessError, TimeoutError) as error:
            report(f"kafka: no class-data archive ({error}); nodes start without one")
    return archive if archive.exists() else None


def _train_archive(settings: StackSettings, java: str, lib: Path, archive: Path) -> None:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from deploy.daemons import free_port_run, wait_until

    with tempfile.TemporaryDirectory(prefix="closedloop-kafka-cds-") as scratch:
        trainee = StackSettings(
            data_dir=Path(scratch),
            embedded_kafka_port=free_port_run(2),
            kafka_brokers=1,
            kafka_version=settings.kafka_version,
            kafka_cache_dir=settings.kafka_cache_root,
            kafka_bootstrap_servers=None,
            clickhouse_url=None,
        )
        node = nodes(trainee)[0]
        prepare_nodes(trainee, [node], java, lib, Path(scratch) / "logs")
        partial = archive.with_suffix(f".{os.getpid()}.tmp")
        with open(Path(scratch) / "out.log", "wb") as out:
            process = subprocess.Popen(
                node_argv(trainee, node, java, lib, dump_archive=partial),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until(
                lambda: process.poll() is not None or metadata_ok(node.bootstrap, 1.0)[0],
                settings.start_timeout_seconds,
                "the class-data training node",
                interval=0.2,
            )
            admin = KafkaAdminClient(bootstrap_servers=node.bootstrap)
            try:
                admin.create_topics([NewTopic("warm-up", 1, 1)])
            finally:
                admin.close()
            producer = KafkaProducer(bootstrap_servers=node.bootstrap, acks="all")
            producer.send("warm-up", b"{}").get(timeout=30)
            producer.close()
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(timeout=120)
        if process.returncode in (0, 128 + 15) and partial.exists():  # 143: the JVM's exit after SIGTERM
            partial.rename(archive)
        else:
            partial.unlink(missing_ok=True)


def running_version(argv: list[str]) -> str | None:
    for arg in argv:
        if arg.startswith("-Dclosedloop.kafka.version="):
            return arg.split("=", 1)[1]
    return None


def running_port(argv: list[str]) -> int | None:
    for arg in argv:
        if arg.startswith("-Dclosedloop.kafka.port="):
            try:
                return int(arg.split("=", 1)[1])
            except ValueError:
                return None
    return None


def data_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512  # index files are sparse
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------------------------------------------
# Health


def cluster_state(
    bootstrap_servers: str, timeout: float = 3.0, client_kwargs: Mapping[str, Any] | None = None
) -> tuple[bool, str, dict]:
    """Whether the cluster answers a metadata request: (ok, detail, facts); facts has ``brokers`` (node ids),
    ``topics`` (count, without Kafka's own) and ``cluster_id``. ``client_kwargs``: the security settings of a real
    Kafka (``schemas.kafka_security.kafka_python_security``)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    timeout_ms = int(timeout * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers.split(","),
            request_timeout_ms=max(timeout_ms, 1000) + 500,
            bootstrap_timeout_ms=timeout_ms,
            reconnect_backoff_max_ms=200,
            client_id="closedloop-health",
            **(client_kwargs or {}),
        )
    except (KafkaError, OSError, ValueError) as error:
        return False, f"{type(error).__name__}: {error}", {}
    try:
        described = admin.describe_cluster()
        topics = [name for name in admin.list_topics() if not name.startswith("__")]
        brokers = sorted(
            int(broker["broker_id"]) for broker in described.get("brokers", []) if not broker.get("is_fenced")
        )
        facts = {"brokers": brokers, "topics": len(topics), "cluster_id": described.get("cluster_id")}
        return True, f"{len(brokers)} broker{'s' if len(brokers) != 1 else ''}, {len(topics)} topics", facts
    except (KafkaError, OSError) as error:
        return False, f"{type(error).__name__}: {error}", {}
    finally:
        admin.close()


def metadata_ok(
    bootstrap_servers: str, timeout: float = 3.0, client_kwargs: Mapping[str, Any] | None = None
) -> tuple[bool, str]:
    """Whether the broker answers a Kafka metadata request: (ok, detail)."""
    ok, detail, _ = cluster_state(bootstrap_servers, timeout, client_kwargs)
    return ok, detail


def prepare(settings: StackSettings, report: Callable[[str], None]) -> None:
    """Everything a first start would fetch or make: Kafka's jars and the class-data archive."""
    java = java_binary()
    lib = ensure_jars(settings, report)
    archive = class_archive(settings, java, lib, report)
    report(
        f"kafka: Apache Kafka {settings.kafka_version} ready in {lib.parent}"
        + ("" if archive else " (without a class-data archive)")
    )


if __name__ == "__main__":  # `python -m deploy.kafka_broker`: `make demo` and `make test` prepare Kafka first
    import sys

    from deploy.settings import SettingsError, read_settings

    try:
        prepare(read_settings(StackSettings), lambda line: print(line, flush=True))
    except (SettingsError, StackError) as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
