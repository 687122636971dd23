"""The single-machine stack: ``up`` starts the embedded broker and ClickHouse endpoint (only those the settings do
not point at real servers), waits until they answer, creates the topics and applies the ClickHouse migrations;
``down`` stops what ``up`` started, by PID, and keeps the data; ``status`` says what runs and whether it is healthy.

Layout under the data directory (``.closedloop/`` by default)::

    kafka/           Apache Kafka's data: cluster.json and node-<id>/ per node (see deploy.kafka_broker)
    clickhouse/      the chDB data directory
    local-password   the embedded ClickHouse's password (user default; mode 0600), also the worker's /diagnostics/
    run/*.pid        PIDs of the processes ``up`` started; run/stack.lock while up/down work
    logs/*.log       their logs (Kafka's rotated by log4j; *.out holds a process's own output)
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy import kafka_broker
from deploy.daemons import (
    DataDirLock,
    PidFile,
    StackError,
    describe_port_owner,
    flock_holder,
    lockf_holder,
    log_tail,
    port_is_free,
    process_cmdline,
    start_detached,
    stop_pid,
    wait_until,
)
from deploy.settings import EMBEDDED_HOST, StackSettings
from deploy.topics import create_topics
from schemas.kafka_security import kafka_python_security
from schemas.settings import ensure_local_password
from sinks.migrate import migrate_up

SERVICES = ("kafka", "clickhouse")
Report = Callable[[str], None]

# Processes started by this Python process (tests, `closedloop demo`): kept so that stopping them also collects
# their exit status, instead of leaving zombies and ResourceWarnings behind.
_children: dict[int, subprocess.Popen] = {}


def _quiet(message: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------------------------
# Where each service is and how to recognise its process


@dataclass(frozen=True)
class EmbeddedService:
    """One process of the stack: the ClickHouse endpoint, or one Kafka node (``kafka``, or ``kafka-<id>`` in a
    cluster)."""

    name: str
    service: str  # "kafka" or "clickhouse": the part of the stack it belongs to
    port: int
    port_setting: str
    data_dir: Path
    pid_file: PidFile
    log: Path  # the log a person reads (Kafka's own, rotated)
    output: Path  # where the process's stdout and stderr go
    node: kafka_broker.KafkaNode | None = None
    extra_ports: tuple[int, ...] = ()

    def running_port(self, pid: int) -> int | None:
        """The port the running process was started with (it may differ from today's settings)."""
        argv = process_cmdline(pid) or []
        if self.node is not None:
            return kafka_broker.running_port(argv)
        if "--port" in argv[:-1]:
            try:
                return int(argv[argv.index("--port") + 1])
            except ValueError:
                return None
        return None


def embedded_processes(settings: StackSettings, name: str) -> list[EmbeddedService]:
    """The processes of one part of the stack: one per Kafka node, or the ClickHouse endpoint."""
    if name == "kafka":
        processes = []
        for node in kafka_broker.nodes(settings):
            label = kafka_broker.node_log_name(settings, node)
            processes.append(
                EmbeddedService(
                    name=label,
                    service="kafka",
                    port=node.client_port,
                    port_setting="CLOSEDLOOP_EMBEDDED_KAFKA_PORT",
                    data_dir=node.root,
                    pid_file=PidFile(settings.run_dir / f"{label}.pid", kafka_broker.node_markers(node)),
                    log=settings.logs_dir / f"{label}.log",
                    output=settings.logs_dir / f"{label}.out",
                    node=node,
                    extra_ports=(node.controller_port,),
                )
            )
        return processes
    if name == "clickhouse":
        data_dir = settings.clickhouse_dir
        log = settings.logs_dir / "clickhouse.log"
        return [
            EmbeddedService(
                name="clickhouse",
                service="clickhouse",
                port=settings.embedded_clickhouse_port,
                port_setting="CLOSEDLOOP_EMBEDDED_CLICKHOUSE_PORT",
                data_dir=data_dir,
                pid_file=PidFile(settings.run_dir / "clickhouse.pid", ("clickhouse_endpoint.server", str(data_dir))),
                log=log,
                output=log,
            )
        ]
    raise ValueError(f"unknown service {name!r}; expected one of {SERVICES}")


def embedded_service(settings: StackSettings, name: str) -> EmbeddedService:
    """The process called ``name`` (``clickhouse``, ``kafka``, ``kafka-2``, ...)."""
    for process in embedded_processes(settings, "clickhouse" if name == "clickhouse" else "kafka"):
        if process.name == name:
            return process
    raise ValueError(f"unknown process {name!r}")


def is_embedded(settings: StackSettings, name: str) -> bool:
    return settings.kafka_is_embedded if name == "kafka" else settings.clickhouse_is_embedded


# ---------------------------------------------------------------------------------------------------------------
# Health


def clickhouse_request(url: str, query: str | None = None, timeout: float = 2.0) -> str:
    """GET /ping (query None) or POST a query to a ClickHouse HTTP endpoint given as a settings URL
    (``http://user:password@host:port/database``); returns the body, raises OSError or HTTPError."""
    parts = urllib.parse.urlsplit(url)
    base = f"{parts.scheme}://{parts.hostname}:{parts.port or (8443 if parts.scheme == 'https' else 8123)}"
    headers = {}
    if parts.username:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    if query is None:
        request = urllib.request.Request(f"{base}/ping", headers=headers)
    else:
        request = urllib.request.Request(f"{base}/", data=query.encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode(errors="replace")


AUTHENTICATION_FAILED = "516"  # ClickHouse's code for a wrong user or password (X-ClickHouse-Exception-Code)


def clickhouse_health(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(healthy, detail): /ping answers 'Ok.' and the server tells its version."""
    try:
        if clickhouse_request(url, timeout=timeout).strip() != "Ok.":
            return False, "/ping did not answer 'Ok.'"
        version = clickhouse_request(url, "SELECT version()", timeout=timeout).strip()
        return True, f"ClickHouse {version}"
    except urllib.error.HTTPError as error:
        if error.headers.get("X-ClickHouse-Exception-Code") == AUTHENTICATION_FAILED:
            return False, "refuses the password (Code: 516, AUTHENTICATION_FAILED)"
        return False, f"HTTP {error.code}: {error.read().decode(errors='replace').strip()[:200]}"
    except OSError as error:
        return False, f"not reachable: {getattr(error, 'reason', error)}"


def service_health(settings: StackSettings, name: str) -> tuple[bool, str]:
    """(healthy, detail) of a part of the stack, ``kafka`` (every broker) or ``clickhouse``."""
    if name == "clickhouse":
        return clickhouse_health(settings.clickhouse)
    return kafka_broker.metadata_ok(settings.kafka_servers, client_kwargs=kafka_python_security(settings))


def process_health(settings: StackSettings, process: EmbeddedService) -> tuple[bool, str]:
    """(healthy, detail) of one embedded process."""
    if process.node is None:
        return clickhouse_health(settings.clickhouse)
    return _node_health(settings, process, process.node)


def _node_health(settings: StackSettings, process: EmbeddedService, node: kafka_broker.KafkaNode) -> tuple[bool, str]:
    """A node is ready when it answers metadata and sees every node of its cluster registered."""
    ok, detail, facts = kafka_broker.cluster_state(node.bootstrap)
    if not ok:
        return False, detail
    expected = settings.kafka_nodes
    if len(facts["brokers"]) < expected:
        return False, f"{len(facts['brokers'])} of {expected} nodes registered"
    size = kafka_broker.data_size(node.log_dir) / 1e6
    pid = process.pid_file.running_pid()
    version = kafka_broker.running_version(process_cmdline(pid) or []) if pid else None
    return True, (
        f"Apache Kafka {version or settings.kafka_version}, node {node.node_id} of "
        f"{len(facts['brokers'])}, {facts['topics']} topics, data {size:.1f} MB"
    )


# ---------------------------------------------------------------------------------------------------------------
# Starting


def _launch_clickhouse(settings: StackSettings, process: EmbeddedService, die_with_parent: bool) -> subprocess.Popen:
    # The endpoint's documented entry point; run here rather than through its start_server_process so that
    # test fixtures can tie its life to theirs.
    argv = [
        sys.executable,
        "-m",
        "clickhouse_endpoint.server",
        "--path",
        str(process.data_dir),
        "--host",
        EMBEDDED_HOST,
        "--port",
        str(process.port),
        "--password-file",
        str(password_file(settings)),
    ]
    repo_root = str(Path(__file__).resolve().parent.parent)
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])),
    )
    _check_can_start(process)
    ensure_local_password(password_file(settings))
    process.data_dir.mkdir(parents=True, exist_ok=True)
    return start_detached(argv, process.output, cwd=settings.data_root, env=env, die_with_parent=die_with_parent)


def password_file(settings: StackSettings) -> Path:
    """The data directory's password file (``schemas.settings.LOCAL_PASSWORD_FILE``), as an absolute path."""
    return settings.data_root / settings.local_password_file.name


def _check_can_start(process: EmbeddedService) -> None:
    """Clear errors before starting: data directory held by a process we did not start, port taken."""
    if process.node is not None:
        holder: int | str | None = lockf_holder(process.node.log_dir / ".lock")
        if holder is not None:
            raise StackError(
                f"The broker data directory {process.node.log_dir} is locked by another process (PID {holder}), "
                f"not started by this stack. Stop process {holder}, or use another data directory "
                f"(CLOSEDLOOP_DATA_DIR)."
            )
    else:
        holder = flock_holder(process.data_dir / "status")
        if holder is not None:
            raise StackError(
                f"The ClickHouse data directory {process.data_dir} is locked by another process (PID {holder}, "
                f"lock file {process.data_dir / 'status'}); chDB allows one process per directory. Stop process "
                f"{holder}, or use another data directory (CLOSEDLOOP_DATA_DIR)."
            )
    for port in (process.port, *process.extra_ports):
        if not port_is_free(EMBEDDED_HOST, port):
            what = "" if port == process.port else " (its controller port, the client port + 1)"
            raise StackError(
                f"Port {port} for the embedded {process.name}{what} is already in use by "
                f"{describe_port_owner(port)}. Stop that process, or choose a free port with "
                f"{process.port_setting}=<port>."
            )


def start_service(
    settings: StackSettings, name: str, report: Report = _quiet, die_with_parent: bool = False
) -> dict[str, int]:
    """Start the processes of one part of the stack (``kafka``: every node at once, since a cluster's quorum
    needs a majority; ``clickhouse``) that do not run yet, and wait until each answers. Returns process name ->
    PID. ``die_with_parent`` (test fixtures) stops them with the calling process even if that one is killed."""
    if name == "kafka":
        kafka_broker.recorded_cluster(settings)  # a data directory made for another node count: say so first
    processes = embedded_processes(settings, name)
    pids: dict[str, int] = {}
    launched: dict[str, subprocess.Popen] = {}
    for process in processes:
        pid = process.pid_file.running_pid()
        if pid is None:
            continue
        port = process.running_port(pid)
        if port is not None and port != process.port:
            raise StackError(
                f"The embedded {process.name} already runs (PID {pid}) on port {port}, but {process.port_setting} "
                f"says {process.port}. Run `closedloop down` first to restart it on the new port."
            )
        report(f"{process.name}: already running (PID {pid}, port {process.port})")
        pids[process.name] = pid
    to_start = [process for process in processes if process.name not in pids]
    settings.ensure_data_dir()
    try:
        if to_start and name == "kafka":
            java = kafka_broker.java_binary()
            lib = kafka_broker.ensure_jars(settings, report)
            archive = kafka_broker.class_archive(settings, java, lib, report)
            for process in to_start:
                _check_can_start(process)
            chosen = [process.node for process in to_start if process.node is not None]
            kafka_broker.prepare_nodes(settings, chosen, java, lib, settings.logs_dir)
            for process, node in zip(to_start, chosen, strict=False):
                launched[process.name] = start_detached(
                    kafka_broker.node_argv(settings, node, java, lib, archive),
                    process.output,
                    cwd=settings.data_root,
                    die_with_parent=die_with_parent,
                )
        elif to_start:
            launched[to_start[0].name] = _launch_clickhouse(settings, to_start[0], die_with_parent)
        for process in to_start:
            child = launched[process.name]
            process.pid_file.write(child.pid)
            _children[child.pid] = child
            pids[process.name] = child.pid
            report(f"{process.name}: started (PID {child.pid}, port {process.port}, log {process.log})")
        for process in processes:
            _wait_healthy(settings, process, pids[process.name], launched.get(process.name))
    except BaseException:
        for process in to_start:
            if process.name in launched:
                _stop(settings, process, launched[process.name].pid)
        raise
    return pids


def _wait_healthy(
    settings: StackSettings, process: EmbeddedService, pid: int, child: subprocess.Popen | None = None
) -> None:
    last = ["no answer yet"]

    def still_running() -> bool:
        # Right after the fork, /proc/PID/cmdline still shows our own command line, so a child we just started
        # is checked through its Popen, not its markers.
        if child is not None:
            return child.poll() is None
        return process.pid_file.running_pid() == pid

    def answered() -> bool:
        if not still_running():
            raise StackError(
                f"The embedded {process.name} exited while starting. Its log ({process.log}) ends "
                f"with:\n{log_tail(process.log)}\n{log_tail(process.output, 5)}"
            )
        ok, detail = process_health(settings, process)
        last[0] = detail
        if process.node is None and "Code: 516" in detail:
            raise StackError(
                f"The embedded {process.name} (PID {pid}) refuses the password in {password_file(settings)}: it was "
                f"started with another one (or, before this version, with none). Restart it with `closedloop down` "
                f"and `closedloop up`."
            )
        return ok

    try:
        wait_until(answered, settings.start_timeout_seconds, f"the embedded {process.name}", interval=0.2)
    except TimeoutError:
        raise StackError(
            f"The embedded {process.name} (PID {pid}) did not answer within {settings.start_timeout_seconds:.0f} s "
            f"(last check: {last[0]}). See its log {process.log}; raise CLOSEDLOOP_START_TIMEOUT_SECONDS on a slow "
            f"machine."
        ) from None


@dataclass
class UpResult:
    started: dict[str, int] = field(default_factory=dict)  # process -> PID started now
    already_running: dict[str, int] = field(default_factory=dict)
    external: list[str] = field(default_factory=list)
    topics_created: list[str] = field(default_factory=list)
    topics_reconciled: list[str] = field(default_factory=list)
    migrations: str = ""


def up(
    settings: StackSettings,
    services: Sequence[str] = SERVICES,
    topics: bool = True,
    migrate: bool = True,
    report: Report = _quiet,
) -> UpResult:
    """Bring the stack up (idempotent): start what is embedded and not running, check what is external, then
    create the topics (reconciling the configs of existing ones) and apply the migrations."""
    result = UpResult()
    loose = settings.ensure_data_dir()
    if loose is not None:
        report(
            f"data directory {settings.data_root}: was open to other users (mode {loose:04o}), now 0700 (owner "
            f"only: it holds raw events, the spool and the local password)"
        )
    ensure_local_password(password_file(settings))
    with DataDirLock(settings.run_dir / "stack.lock"):
        for name in services:
            if not is_embedded(settings, name):
                ok, detail = service_health(settings, name)
                if not ok:
                    where = settings.kafka_servers if name == "kafka" else _redacted(settings.clickhouse)
                    raise StackError(
                        f"The {name} server at {where} does not answer ({detail}). Check that it runs "
                        f"and that the setting pointing at it is right."
                    )
                report(f"{name}: using the external server ({detail})")
                result.external.append(name)
                continue
            before = {process.name: process.pid_file.running_pid() for process in embedded_processes(settings, name)}
            for process_name, pid in start_service(settings, name, report).items():
                (result.already_running if before.get(process_name) == pid else result.started)[process_name] = pid
    if topics and "kafka" in services:
        created = create_topics(settings)
        result.topics_created = created.created
        result.topics_reconciled = created.reconciled
        report(
            f"topics: {len(created.created)} created, {len(created.reconciled)} reconciled, "
            f"{len(created.existing) - len(created.reconciled)} already as configured"
        )
    if migrate and "clickhouse" in services:
        result.migrations = apply_migrations(settings, report)
    return result


def apply_migrations(settings: StackSettings, report: Report = _quiet) -> str:
    """Apply the ClickHouse migrations (``sinks.migrate.migrate_up``, which creates the database too)."""
    try:
        applied = migrate_up(settings)
    except Exception as error:
        raise StackError(
            f"Applying the ClickHouse migrations failed: {error}. Fix the migration or the server, "
            f"then run `closedloop up` again (applied migrations are not repeated)."
        ) from error
    labels = list(applied or [])
    report(f"migrations: {len(labels)} applied" + (f" ({', '.join(map(str, labels))})" if labels else ", up to date"))
    return f"{len(labels)} applied"


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


# ---------------------------------------------------------------------------------------------------------------
# Stopping


def down(settings: StackSettings, services: Sequence[str] = SERVICES, report: Report = _quiet) -> dict[str, int]:
    """Stop the embedded processes ``up`` started (by PID, verified), keep their data. Returns process -> PID.
    A cluster's nodes get SIGTERM together: one stopped after the others could not reach a controller quorum
    for its controlled shutdown and would wait for SIGKILL."""
    stopped: dict[str, int] = {}
    settings.ensure_data_dir()  # the lock below would otherwise create it with the default mode
    with DataDirLock(settings.run_dir / "stack.lock"):
        # ClickHouse first: nothing depends on it stopping late.
        for name in reversed(services):
            running = []
            for process in embedded_processes(settings, name):
                pid = process.pid_file.running_pid()
                if pid is None:
                    report(f"{process.name}: not running")
                else:
                    running.append((process, pid))
            with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
                list(pool.map(lambda item: _stop(settings, *item), running))
            for process, pid in running:
                stopped[process.name] = pid
                report(f"{process.name}: stopped (PID {pid}); data kept in {process.data_dir}")
    return stopped


def _stop(settings: StackSettings, process: EmbeddedService, pid: int) -> None:
    child = _children.pop(pid, None)
    if not stop_pid(pid, process.pid_file.markers, settings.stop_timeout_seconds) and child is not None:
        # Our own child that has not exec'd yet (or never will): its Popen is proof enough that it is ours.
        child.terminate()
        try:
            child.wait(timeout=settings.stop_timeout_seconds)
        except subprocess.TimeoutExpired:
            child.kill()
    if child is not None:
        child.wait(timeout=10)
    process.pid_file.remove()


# ---------------------------------------------------------------------------------------------------------------
# Status


@dataclass
class ServiceStatus:
    name: str
    mode: str  # "embedded" or "external"
    address: str
    running: bool
    healthy: bool
    detail: str
    pid: int | None = None
    data_dir: str | None = None
    log: str | None = None


@dataclass
class StackStatus:
    data_dir: str
    services: list[ServiceStatus]

    @property
    def healthy(self) -> bool:
        return all(service.healthy for service in self.services)

    def as_dict(self) -> dict:
        return {
            "data_dir": self.data_dir,
            "healthy": self.healthy,
            "services": [asdict(service) for service in self.services],
        }


def status(settings: StackSettings) -> StackStatus:
    """What runs, where, with which PID, and whether it answers: one row per process (each Kafka node)."""
    services = []
    for name in SERVICES:
        if not is_embedded(settings, name):
            ok, detail = service_health(settings, name)
            address = settings.kafka_servers if name == "kafka" else _redacted(settings.clickhouse)
            services.append(ServiceStatus(name, "external", address, running=ok, healthy=ok, detail=detail))
            continue
        for process in embedded_processes(settings, name):
            pid = process.pid_file.running_pid()
            port = (process.running_port(pid) if pid else None) or process.port
            address = f"{EMBEDDED_HOST}:{port}" if name == "kafka" else f"http://{EMBEDDED_HOST}:{port}"
            if pid is None:
                ok, detail = False, "not running (start it with `closedloop up`)"
            else:
                ok, detail = process_health(settings, process)
            services.append(
                ServiceStatus(
                    process.name,
                    "embedded",
                    address,
                    running=pid is not None,
                    healthy=ok,
                    detail=detail,
                    pid=pid,
                    data_dir=str(process.data_dir),
                    log=str(process.log),
                )
            )
    return StackStatus(data_dir=str(settings.data_root), services=services)
