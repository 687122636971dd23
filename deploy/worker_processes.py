"""``closedloop worker --processes N``: N stream-worker processes on one machine, in one consumer group.

Faust runs an app in one process on one core, and Kafka hands each partition of the source topics to one member of
the group, so partitions are the unit of scale: N processes share ``CLOSEDLOOP_PARTITIONS`` partitions, and a
process beyond the partitions idles. This parent process only starts and watches them:

- process n runs ``closedloop worker --processes 1 --web-port <port + n>`` with the same settings otherwise (same
  app id, so one group); its state directory is named by that port (``WorkerSettings.state_dir``);
- one that exits while the parent is not stopping is started again after a second, with its state directory
  (it reads its RocksDB and the changelog records written since); more than :data:`MAX_RESTARTS` in
  :data:`RESTART_WINDOW_S` stops them all (something is wrong that a restart does not fix);
- SIGTERM or SIGINT is passed on to every process, which stops as one worker does (leaves the group, commits);
  one still running after :data:`STOP_TIMEOUT_S` is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from types import FrameType

from deploy.daemons import term_when_parent_dies

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
RESTART_DELAY_S = 1.0
STOP_TIMEOUT_S = 30.0  # the worker flushes its producer for at most 15 s (compat.faust_patches)
POLL_S = 0.2

log = logging.getLogger("closedloop.worker")


@dataclass
class WorkerProcess:
    """One worker process of the group and its recent starts."""

    index: int
    web_port: int
    argv: list[str]
    process: subprocess.Popen | None = None
    starts: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_RESTARTS + 1))

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, preexec_fn=term_when_parent_dies)
        self.starts.append(time.monotonic())
        log.info(
            "worker process started",
            extra={"worker_process": self.index, "pid": self.process.pid, "port": self.web_port},
        )

    def restarting_too_often(self) -> bool:
        return len(self.starts) > MAX_RESTARTS and time.monotonic() - self.starts[0] < RESTART_WINDOW_S


def worker_argv(index: int, web_port: int, loglevel: str | None) -> list[str]:
    argv = [sys.executable, "-m", "closedloop.cli", "worker", "--processes", "1", "--web-port", str(web_port)]
    return argv + (["--loglevel", loglevel] if loglevel else [])


def run(count: int, first_web_port: int, loglevel: str | None) -> int:
    """Start ``count`` worker processes and watch them until SIGTERM/SIGINT; the exit status for the command."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers = [WorkerProcess(n, first_web_port + n, worker_argv(n, first_web_port + n, loglevel)) for n in range(count)]
    status = 0
    try:
        for worker in workers:
            worker.start()
        while not stopping:
            time.sleep(POLL_S)
            for worker in workers:
                assert worker.process is not None
                code = worker.process.poll()
                if code is None or stopping:
                    continue
                log.warning(
                    "worker process exited; starting it again",
                    extra={"worker_process": worker.index, "pid": worker.process.pid, "exit_code": code},
                )
                if worker.restarting_too_often():
                    log.error(
                        "worker process keeps exiting; stopping every worker process",
                        extra={"worker_process": worker.index, "restarts": MAX_RESTARTS, "within_s": RESTART_WINDOW_S},
                    )
                    stopping, status = True, 1
                    break
                time.sleep(RESTART_DELAY_S)
                worker.start()
    finally:
        _stop_all(workers)
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python; nothing to restore
                signal.signal(sig, handler)
    return status


def _stop_all(workers: list[WorkerProcess]) -> None:
    running = [w.process for w in workers if w.process is not None and w.process.poll() is None]
    for process in running:
        os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker process did not stop in time; killed", extra={"pid": process.pid})
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
