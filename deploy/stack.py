"""The single-machine stack: ``up`` starts the embedded broker and ClickHouse endpoint (only those the settings do
not point at real servers), waits until they answer, creates the topics and applies the ClickHouse migrations;
``down`` stops what ``up`` started, by PID, and keeps the data; ``status`` says what runs and whether it is healthy.

Layout under the data directory (``.closedloop/`` by default)::

    kafka/           the broker's data (noida-db)
    clickhouse/      the chDB data directory
    run/*.pid        PIDs of the processes ``up`` started; run/stack.lock while up/down work
    logs/*.log       their output
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy import kafka_broker
from deploy.processes import (
    DataDirLock,
    PidFile,
    StackError,
    describe_port_owner,
    flock_holder,
    log_tail,
    port_is_free,
    process_cmdline,
    start_detached,
    stop_pid,
    wait_until,
)
from deploy.settings import EMBEDDED_HOST, StackSettings
from deploy.topics import create_topics, pipeline_topic_specs

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
    name: str
    port: int
    port_setting: str
    data_dir: Path
    pid_file: PidFile
    log: Path

    def running_port(self, pid: int) -> int | None:
        """The port the running process was started with (it may differ from today's settings)."""
        argv = process_cmdline(pid) or []
        flag = "--kafka-port" if self.name == "kafka" else "--port"
        if flag in argv[:-1]:
            try:
                return int(argv[argv.index(flag) + 1])
            except ValueError:
                return None
        return None


def embedded_service(settings: StackSettings, name: str) -> EmbeddedService:
    if name == "kafka":
        data_dir = settings.kafka_dir
        markers = kafka_broker.broker_markers(data_dir)
        port, port_setting = settings.embedded_kafka_port, "CLOSEDLOOP_EMBEDDED_KAFKA_PORT"
    elif name == "clickhouse":
        data_dir = settings.clickhouse_dir
        markers = ("deploy.clickhouse_server", str(data_dir))
        port, port_setting = settings.embedded_clickhouse_port, "CLOSEDLOOP_EMBEDDED_CLICKHOUSE_PORT"
    else:
        raise ValueError(f"unknown service {name!r}; expected one of {SERVICES}")
    return EmbeddedService(
        name=name, port=port, port_setting=port_setting, data_dir=data_dir,
        pid_file=PidFile(settings.run_dir / f"{name}.pid", markers), log=settings.logs_dir / f"{name}.log",
    )


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


def clickhouse_health(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(healthy, detail): /ping answers 'Ok.' and the server tells its version."""
    try:
        if clickhouse_request(url, timeout=timeout).strip() != "Ok.":
            return False, "/ping did not answer 'Ok.'"
        version = clickhouse_request(url, "SELECT version()", timeout=timeout).strip()
        return True, f"ClickHouse {version}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}: {error.read().decode(errors='replace').strip()[:200]}"
    except OSError as error:
        return False, f"not reachable: {getattr(error, 'reason', error)}"


def service_health(settings: StackSettings, name: str) -> tuple[bool, str]:
    if name == "kafka":
        return kafka_broker.metadata_ok(settings.kafka_servers)
    return clickhouse_health(settings.clickhouse)


# ---------------------------------------------------------------------------------------------------------------
# Starting


def _launch(settings: StackSettings, service: EmbeddedService, check: Callable[[], None],
            die_with_parent: bool) -> subprocess.Popen:
    """Start the service's process (after ``check``); returns its Popen."""
    env = None
    if service.name == "kafka":
        binary = kafka_broker.find_binary(settings.noida_db_binary)
        argv = kafka_broker.broker_argv(binary, service.data_dir, EMBEDDED_HOST, service.port)
    else:
        if importlib.util.find_spec("deploy.clickhouse_server") is None:
            raise StackError("The ClickHouse endpoint module deploy.clickhouse_server is missing from this install. "
                             "Reinstall closedloop (`pip install -e .`).")
        # The endpoint's documented entry point; run here rather than through its start_server_process so that
        # test fixtures can tie its life to theirs.
        argv = [sys.executable, "-m", "deploy.clickhouse_server", "--path", str(service.data_dir),
                "--host", EMBEDDED_HOST, "--port", str(service.port)]
        repo_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONUNBUFFERED="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")])))
    check()
    service.data_dir.mkdir(parents=True, exist_ok=True)
    return start_detached(argv, service.log, cwd=settings.data_root, env=env, die_with_parent=die_with_parent)


def _check_can_start(service: EmbeddedService) -> None:
    """Clear errors before starting: data directory owned by a process we did not start, port taken."""
    if service.name == "kafka":
        owner = kafka_broker.foreign_owner(service.data_dir)
        if owner is not None:
            raise StackError(
                f"The broker data directory {service.data_dir} is locked by another process (PID {owner}, see "
                f"{service.data_dir / 'noida.control.json'}), not started by this stack. Stop process {owner}, "
                f"or use another data directory (CLOSEDLOOP_DATA_DIR)."
            )
    else:
        holder = flock_holder(service.data_dir / "status")
        if holder is not None:
            raise StackError(
                f"The ClickHouse data directory {service.data_dir} is locked by another process (PID {holder}, "
                f"lock file {service.data_dir / 'status'}); chDB allows one process per directory. Stop process "
                f"{holder}, or use another data directory (CLOSEDLOOP_DATA_DIR)."
            )
    if not port_is_free(EMBEDDED_HOST, service.port):
        raise StackError(
            f"Port {service.port} for the embedded {service.name} is already in use by "
            f"{describe_port_owner(service.port)}. Stop that process, or choose a free port with "
            f"{service.port_setting}=<port>."
        )


def start_service(settings: StackSettings, name: str, report: Report = _quiet, die_with_parent: bool = False) -> int:
    """Start one embedded service unless it already runs; wait until it answers. Returns its PID.
    ``die_with_parent`` (test fixtures) stops it with the calling process even if that one is killed."""
    service = embedded_service(settings, name)
    pid = service.pid_file.running_pid()
    if pid is not None:
        port = service.running_port(pid)
        if port is not None and port != service.port:
            raise StackError(
                f"The embedded {name} already runs (PID {pid}) on port {port}, but {service.port_setting} says "
                f"{service.port}. Run `closedloop down` first to restart it on the new port."
            )
        report(f"{name}: already running (PID {pid}, port {service.port})")
        _wait_healthy(settings, service, pid)
        return pid
    settings.data_root.mkdir(parents=True, exist_ok=True)
    process = _launch(settings, service, lambda: _check_can_start(service), die_with_parent)
    service.pid_file.write(process.pid)
    _children[process.pid] = process
    report(f"{name}: started (PID {process.pid}, port {service.port}, log {service.log})")
    try:
        _wait_healthy(settings, service, process.pid, process)
    except StackError:
        _stop(settings, service, process.pid)
        raise
    return process.pid


def _wait_healthy(settings: StackSettings, service: EmbeddedService, pid: int,
                  process: subprocess.Popen | None = None) -> None:
    last = ["no answer yet"]

    def still_running() -> bool:
        # Right after the fork, /proc/PID/cmdline still shows our own command line, so a child we just started
        # is checked through its Popen, not its markers.
        if process is not None:
            return process.poll() is None
        return service.pid_file.running_pid() == pid

    def answered() -> bool:
        if not still_running():
            raise StackError(f"The embedded {service.name} exited while starting. Its log ({service.log}) ends "
                             f"with:\n{log_tail(service.log)}")
        ok, detail = service_health(settings, service.name)
        last[0] = detail
        return ok

    try:
        wait_until(answered, settings.start_timeout_seconds, f"the embedded {service.name}", interval=0.2)
    except TimeoutError:
        raise StackError(
            f"The embedded {service.name} (PID {pid}) did not answer within {settings.start_timeout_seconds:.0f} s "
            f"(last check: {last[0]}). See its log {service.log}; raise CLOSEDLOOP_START_TIMEOUT_SECONDS on a slow "
            f"machine."
        ) from None


@dataclass
class UpResult:
    started: dict[str, int] = field(default_factory=dict)      # service -> PID started now
    already_running: dict[str, int] = field(default_factory=dict)
    external: list[str] = field(default_factory=list)
    topics_created: list[str] = field(default_factory=list)
    migrations: str = ""


def up(settings: StackSettings, services: Sequence[str] = SERVICES, topics: bool = True, migrate: bool = True,
       report: Report = _quiet) -> UpResult:
    """Bring the stack up (idempotent): start what is embedded and not running, check what is external, then
    create the topics and apply the migrations."""
    result = UpResult()
    with DataDirLock(settings.run_dir / "stack.lock"):
        for name in services:
            if not is_embedded(settings, name):
                ok, detail = service_health(settings, name)
                if not ok:
                    where = settings.kafka_servers if name == "kafka" else _redacted(settings.clickhouse)
                    raise StackError(f"The {name} server at {where} does not answer ({detail}). Check that it runs "
                                     f"and that the setting pointing at it is right.")
                report(f"{name}: using the external server ({detail})")
                result.external.append(name)
                continue
            before = embedded_service(settings, name).pid_file.running_pid()
            pid = start_service(settings, name, report)
            (result.already_running if before == pid else result.started)[name] = pid
    if topics and "kafka" in services:
        created = create_topics(settings.kafka_servers, pipeline_topic_specs(settings), settings.partitions,
                                settings.replication_factor)
        result.topics_created = created.created
        report(f"topics: {len(created.created)} created, {len(created.existing)} already there")
    if migrate and "clickhouse" in services:
        result.migrations = apply_migrations(settings, report)
    return result


def apply_migrations(settings: StackSettings, report: Report = _quiet) -> str:
    """Apply the ClickHouse migrations (``sinks.migrate.migrate_up``, which creates the database too). Until
    the sinks package provides it, only the database is created, with a notice."""
    migrate_up = _find_migrate_up()
    if migrate_up is None:
        database = settings.clickhouse_database
        try:
            clickhouse_request(settings.clickhouse, f"CREATE DATABASE IF NOT EXISTS `{database}`", timeout=30)
        except urllib.error.HTTPError as error:
            raise StackError(f"Cannot create the ClickHouse database {database}: "
                             f"{error.read().decode(errors='replace').strip()[:300]}") from None
        report(f"migrations: not available yet (no sinks.migrate.migrate_up); created database {database} only")
        return "skipped"
    try:
        applied = migrate_up(settings)
    except Exception as error:  # noqa: BLE001 - any migration failure is reported with its reason, not a traceback
        raise StackError(f"Applying the ClickHouse migrations failed: {error}. Fix the migration or the server, "
                         f"then run `closedloop up` again (applied migrations are not repeated).") from error
    labels = list(applied or [])
    report(f"migrations: {len(labels)} applied" + (f" ({', '.join(map(str, labels))})" if labels else ", up to date"))
    return f"{len(labels)} applied"


def _find_migrate_up() -> Callable[[StackSettings], object] | None:
    for module_name in ("sinks.migrate", "sinks.migrations"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name not in (module_name, "sinks"):
                raise
            continue
        function = getattr(module, "migrate_up", None)
        if callable(function):
            return function
    return None


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


# ---------------------------------------------------------------------------------------------------------------
# Stopping


def down(settings: StackSettings, services: Sequence[str] = SERVICES, report: Report = _quiet) -> dict[str, int]:
    """Stop the embedded services ``up`` started (by PID, verified), keep their data. Returns service -> PID."""
    stopped: dict[str, int] = {}
    with DataDirLock(settings.run_dir / "stack.lock"):
        # ClickHouse first: nothing depends on it stopping late, and the broker's final save takes the longest.
        for name in reversed(services):
            service = embedded_service(settings, name)
            pid = service.pid_file.running_pid()
            if pid is None:
                report(f"{name}: not running")
                continue
            _stop(settings, service, pid)
            stopped[name] = pid
            report(f"{name}: stopped (PID {pid}); data kept in {service.data_dir}")
    return stopped


# ---------------------------------------------------------------------------------------------------------------
# Status


def _stop(settings: StackSettings, service: EmbeddedService, pid: int) -> None:
    child = _children.pop(pid, None)
    if not stop_pid(pid, service.pid_file.markers, settings.stop_timeout_seconds) and child is not None:
        # Our own child that has not exec'd yet (or never will): its Popen is proof enough that it is ours.
        child.terminate()
        try:
            child.wait(timeout=settings.stop_timeout_seconds)
        except subprocess.TimeoutExpired:
            child.kill()
    if child is not None:
        child.wait(timeout=10)
    service.pid_file.remove()


@dataclass
class ServiceStatus:
    name: str
    mode: str                 # "embedded" or "external"
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
        return {"data_dir": self.data_dir, "healthy": self.healthy,
                "services": [asdict(service) for service in self.services]}


def status(settings: StackSettings) -> StackStatus:
    """What runs, where, with which PID, and whether it answers."""
    services = []
    for name in SERVICES:
        if not is_embedded(settings, name):
            ok, detail = service_health(settings, name)
            address = settings.kafka_servers if name == "kafka" else _redacted(settings.clickhouse)
            services.append(ServiceStatus(name, "external", address, running=ok, healthy=ok, detail=detail))
            continue
        service = embedded_service(settings, name)
        pid = service.pid_file.running_pid()
        port = (service.running_port(pid) if pid else None) or service.port
        address = f"{EMBEDDED_HOST}:{port}" if name == "kafka" else f"http://{EMBEDDED_HOST}:{port}"
        if pid is None:
            ok, detail = False, "not running (start it with `closedloop up`)"
        else:
            ok, detail = service_health(settings, name)
        services.append(ServiceStatus(name, "embedded", address, running=pid is not None, healthy=ok,
                                      detail=detail, pid=pid, data_dir=str(service.data_dir), log=str(service.log)))
    return StackStatus(data_dir=str(settings.data_root), services=services)
