"""Background processes of the stack: start detached, PID files, stop by PID, port checks, bounded waits.

A PID file alone is not proof: PIDs are reused. Every check reads ``/proc/PID/cmdline`` and requires the marker the
process was started with (its data directory), so ``down`` never signals a process the stack did not start.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class StackError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Processes and PID files


def process_cmdline(pid: int) -> list[str] | None:
    """The argv of a live process, or None when it is gone or a zombie (a zombie has an empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if not raw:
        return None
    return raw.rstrip(b"\0").decode("utf-8", "replace").split("\0")


def process_matches(pid: int, markers: Sequence[str]) -> bool:
    """Whether ``pid`` is alive and its command line contains every marker (as an argument or part of one)."""
    argv = process_cmdline(pid)
    if argv is None:
        return False
    joined = "\0".join(argv)
    return all(marker in joined for marker in markers)


@dataclass(frozen=True)
class PidFile:
    """``run/<name>.pid``: the PID of a process the stack started, checked against its command-line markers."""

    path: Path
    markers: tuple[str, ...]

    def read(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{pid}\n")
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def running_pid(self) -> int | None:
        """The recorded PID if that process still is ours and alive; a stale file is removed."""
        pid = self.read()
        if pid is None:
            return None
        if process_matches(pid, self.markers):
            return pid
        self.remove()
        return None


def term_when_parent_dies() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def start_detached(
    argv: Sequence[str],
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (so a Ctrl-C in the terminal does not reach it), output appended to
    ``log_path``. ``die_with_parent`` (for test fixtures) makes the kernel stop it if this process dies without
    cleaning up. Raises StackError when the executable is missing."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
                preexec_fn=term_when_parent_dies if die_with_parent else None,
            )
        except FileNotFoundError:
            raise StackError(f"Cannot start {argv[0]}: no such file.") from None
        except PermissionError:
            raise StackError(f"Cannot start {argv[0]}: it is not executable (chmod +x it).") from None


def _reaped(pid: int) -> bool:
    """Reap ``pid`` if it is our exited child; True once it is gone."""
    _reap(pid)
    return process_cmdline(pid) is None


def _reap(pid: int) -> None:
    """Collect the exit status when the process is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_pid(pid: int, markers: Sequence[str], timeout: float, sig: int = signal.SIGTERM) -> bool:
    """Stop a process by PID after checking it still is the one we started: ``sig``, wait up to ``timeout``,
    then SIGKILL. Returns False when the PID was no longer ours (nothing signalled)."""
    if not process_matches(pid, markers):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if process_cmdline(pid) is None:
            return True
        time.sleep(0.05)
    if process_matches(pid, markers):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_until(lambda: _reaped(pid), 5.0, "process to exit after SIGKILL")
    return True


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for error messages (the broker's GLIBC 'weak version' warning is noise)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    kept = [line for line in text if "weak version" not in line]
    return "\n".join(kept[-lines:])


# ---------------------------------------------------------------------------------------------------------------
# Ports


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (SO_REUSEADDR, like the servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_port_run(count: int, host: str = "127.0.0.1", avoid: Sequence[int] = ()) -> int:
    """The first of ``count`` consecutive ports that are all free now (an embedded Kafka node takes two)."""
    for _ in range(200):
        first = free_port(host)
        ports = range(first, first + count)
        if first + count <= 65535 and not set(ports) & set(avoid) and all(port_is_free(host, p) for p in ports):
            return first
    raise RuntimeError(f"no run of {count} free ports found on {host}")


def port_owner(port: int) -> int | None:
    """The PID listening on a local TCP port, from /proc (None when unknown or not visible to us)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(entry.name)
        except OSError:
            continue
    return None


def describe_port_owner(port: int) -> str:
    """'process 123 (java ... kafka.Kafka ...)' or 'another process', for error messages."""
    pid = port_owner(port)
    if pid is None:
        return "another process"
    argv = process_cmdline(pid) or ["?"]
    return f"process {pid} ({' '.join(argv)[:120]})"


def tcp_connectable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Waiting and locking


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``condition`` until it returns something truthy; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class DataDirLock:
    """An exclusive lock on ``run/stack.lock`` (flock, holder's PID inside) while ``up`` or ``down`` works, so two
    commands never start or stop the same services at once. Released automatically if the holder dies."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> DataDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise StackError(
                        f"The data directory {self.path.parent.parent} is locked by another process "
                        f"(PID {holder}, lock file {self.path}). Wait for that `closedloop up/down` to finish, "
                        f"stop process {holder}, or use another data directory (CLOSEDLOOP_DATA_DIR)."
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lockf_holder(path: Path) -> int | None:
    """The PID holding a POSIX record lock on ``path`` (as Kafka does on each log directory's ``.lock``, through
    Java's FileChannel.tryLock), or None when nobody does or the file is absent."""
    try:
        fd = os.open(path, os.O_RDWR)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None
    try:
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        lock_type, _whence, _start, _length, pid = struct.unpack("hhqqi", answer)
        return None if lock_type == fcntl.F_UNLCK else pid
    finally:
        os.close(fd)


def flock_holder(path: Path) -> str | None:
    """If another process holds an flock on ``path`` (as chDB does on its ``status`` file), what the file says
    about it (chDB writes 'PID: n'); None when the file is free or absent."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            content = os.pread(fd, 256, 0).decode(errors="replace")
            for line in content.splitlines():
                if line.startswith("PID:"):
                    return line.split(":", 1)[1].strip()
            return "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
