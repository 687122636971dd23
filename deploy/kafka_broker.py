"""The embedded Kafka-protocol broker: noida-db from its wheel, one process per data directory.

``noida-db start --data-dir DIR --only kafka --kafka-port PORT`` runs in the foreground; it keeps the log in memory,
saves it to ``DIR/kafka.json`` every few seconds and on SIGTERM/SIGINT, and reads it back at start. We run the
binary itself rather than the ``noida-db`` console script, because the script is a Python wrapper around a child
process: the PID we record must be the broker's, so that stopping it by PID lets it save its data.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from deploy.processes import StackError

BINARY_HINT = "Install it with `pip install noida-db` (it is a dependency of closedloop), or set CLOSEDLOOP_NOIDA_DB_BINARY."


def find_binary(configured: str | None) -> Path:
    """The noida-db broker executable: the configured path, else the binary inside the noida-db wheel, else
    ``noida-db`` on PATH. Raises StackError saying how to install it when none exists."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            found = shutil.which(configured)
            if found is None:
                raise StackError(f"The broker binary {configured} (CLOSEDLOOP_NOIDA_DB_BINARY) does not exist. "
                                 f"{BINARY_HINT}")
            path = Path(found)
        return _executable(path)
    try:
        from importlib.resources import files

        shipped = Path(str(files("noida_db").joinpath("noida-db")))
        if shipped.is_file():
            return _executable(shipped)
    except ModuleNotFoundError:
        pass
    found = shutil.which("noida-db")
    if found is None:
        raise StackError(f"The Kafka broker binary noida-db was not found. {BINARY_HINT}")
    return Path(found)


def _executable(path: Path) -> Path:
    """Wheels do not always keep the executable bit; the noida-db wrapper sets it too."""
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | 0o111)
        except OSError:
            raise StackError(f"The broker binary {path} is not executable and cannot be made so: chmod +x it.") from None
    return path.resolve()


def broker_argv(binary: Path, data_dir: Path, host: str, port: int) -> list[str]:
    return [str(binary), "start", "--data-dir", str(data_dir), "--host", host, "--only", "kafka",
            "--kafka-port", str(port)]


def broker_markers(data_dir: Path) -> tuple[str, ...]:
    """What /proc/PID/cmdline must contain for a PID to be this stack's broker."""
    return ("noida-db", "start", str(data_dir))


def foreign_owner(data_dir: Path) -> int | None:
    """The PID of a live noida-db that owns ``data_dir`` (from its ``noida.control.json``), if any."""
    try:
        control = json.loads((data_dir / "noida.control.json").read_text())
        pid = int(control["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    from deploy.processes import process_matches

    return pid if process_matches(pid, ("noida-db",)) else None


def metadata_ok(bootstrap_servers: str, timeout: float = 2.0) -> tuple[bool, str]:
    """Whether the broker answers a Kafka metadata request: (ok, detail)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    timeout_ms = int(timeout * 1000)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            request_timeout_ms=max(timeout_ms, 1000) + 500,
            bootstrap_timeout_ms=timeout_ms,
            connections_max_idle_ms=max(timeout_ms, 1000) + 1000,
            metadata_max_age_ms=timeout_ms,
            reconnect_backoff_max_ms=200,
        )
    except (KafkaError, OSError, ValueError) as error:
        return False, f"{type(error).__name__}: {error}"
    try:
        topics = consumer.topics()
        return True, f"{len(topics)} topics"
    except (KafkaError, OSError) as error:
        return False, f"{type(error).__name__}: {error}"
    finally:
        consumer.close()
