"""Benchmark: the worker's table state on RocksDB against memory: bytes per 100,000 visitors, and the time a
restart takes to be ready with the state of ``--visitors`` visitors (default 1,000,000; target < 30 s).

Method (results in bench/worker.md):
1. a private embedded broker (as ``closedloop up`` runs it) on free 127.0.0.1 ports, in a temporary directory;
2. real visitor states: one worker (memory store) processes ``generated_stream(--sample)`` to its end; the newest
   value of each key of its visitors changelog is a template;
3. a second app id's visitors changelog gets ``--visitors`` states: template i mod the sample, its visitor id
   replaced (key and value) by a new one, sent with kafka-python to the partition Kafka's default partitioner
   gives the key (as the events topic would);
4. for each store, workers of that app id are started and timed from the process start to Faust's "Worker ready"
   log line (recovery done, streams resumed), with their RSS then, and stopped with SIGTERM: memory (the whole
   changelog read into memory), RocksDB's first start (the whole changelog read into RocksDB), RocksDB restarted
   after that stop (``--restarts`` times), RocksDB restarted after a SIGKILL; a worker of a third app id with no
   state gives the baseline RSS. The RocksDB directory's size is read (``du``) after the first stop.

Bounded: every wait has a deadline, each worker is stopped by PID, the broker by ``deploy.stack.down``.

Run: ``.venv/bin/python bench/worker_state.py --visitors 1000000``
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_worker import (  # noqa: E402 - the test harness is the benchmark's harness too
    as_records,
    create_all_topics,
    generated_stream,
    running_worker,
    send,
    topic_records,
    wait_idle,
    worker_env,
    worker_settings,
)

from stream_jobs.runtime.topology import VISITORS_TABLE, changelog_topic  # noqa: E402

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
READY = b"Worker ready"


def rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def templates(settings, sample: int, tmp_path: Path) -> list[tuple[bytes, bytes]]:
    """(visitor id, newest state) of every visitor of a worker run over ``generated_stream(sample)``."""
    create_all_topics(settings)
    with running_worker(settings, tmp_path) as worker:
        send(settings, as_records(settings, generated_stream(sample)))
        wait_idle(settings, worker=worker, timeout=600)
    newest: dict[bytes, bytes] = {}
    for record in topic_records(settings, changelog_topic(settings.app_id, VISITORS_TABLE), timeout=600):
        if record.value is not None:
            newest[record.key] = record.value
    return list(newest.items())


def fill(settings, states: list[tuple[bytes, bytes]], visitors: int) -> int:
    """Send ``visitors`` visitor states to the settings' visitors changelog; the bytes of keys and values sent."""
    from kafka import KafkaProducer

    topic = changelog_topic(settings.app_id, VISITORS_TABLE)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_servers, acks=1, linger_ms=20, batch_size=512 * 1024, compression_type="lz4"
    )
    sent = 0
    try:
        for n in range(visitors):
            old_key, value = states[n % len(states)]
            new_key = f"b{n:07d}".encode()
            new_value = value.replace(b'"' + old_key + b'"', b'"' + new_key + b'"')
            producer.send(topic, key=new_key, value=new_value)
            sent += len(new_key) + len(new_value)
        producer.flush(timeout=600)
    finally:
        producer.close()
    return sent


def start_until_ready(settings, store: str, log_path: Path, timeout: float) -> tuple[subprocess.Popen, float, int]:
    """A worker process of ``settings`` on ``store``: (the process, seconds from its start to "Worker ready", its
    RSS then)."""
    env = {**worker_env(settings), "CLOSEDLOOP_WORKER_STORE": store, "CLOSEDLOOP_WORKER_APP_ID": settings.app_id}
    log = open(log_path, "ab")
    start = log_path.stat().st_size
    t0 = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "closedloop.cli", "worker", "--loglevel", "info"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}; see {log_path}")
        with open(log_path, "rb") as read:
            read.seek(start)
            if READY in read.read():
                return process, time.monotonic() - t0, rss(process.pid)
        time.sleep(0.1)
    stop(process, kill=True)
    raise RuntimeError(f"no 'Worker ready' within {timeout} s; see {log_path}")


def stop(process: subprocess.Popen, kill: bool = False) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=2_000, help="visitors of the run the states are copied from")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--restarts", type=int, default=3, help="RocksDB restarts after a stop")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a start may take")
    args = parser.parse_args()

    from deploy import stack
    from deploy.settings import private_stack_settings

    with tempfile.TemporaryDirectory(prefix="bench-worker-state-") as tmp:
        tmp_path = Path(tmp)
        stack_settings = private_stack_settings(tmp_path / "stack")
        stack.start_service(stack_settings, "kafka")
        try:
            bootstrap = stack_settings.kafka_servers
            base = worker_settings(bootstrap, f"bst{int(time.time())}", tmp_path / "data").model_copy(
                update={"partitions": args.partitions}
            )
            states = templates(
                base.model_copy(update={"topic_prefix": base.topic_prefix + "_sample"}), args.sample, tmp_path
            )
            mean = sum(len(k) + len(v) for k, v in states) / len(states)
            print(f"{len(states)} template states, {mean:.0f} bytes each (key + JSON value); load {load_average()}")

            settings = base.model_copy(update={"worker_app_id": f"{base.topic_prefix}-big"})
            create_all_topics(settings)
            t0 = time.monotonic()
            sent = fill(settings, states, args.visitors)
            print(
                f"changelog filled: {args.visitors:,} states, {sent / 2**20:,.0f} MiB in {time.monotonic() - t0:.0f} s"
            )

            empty = base.model_copy(update={"worker_app_id": f"{base.topic_prefix}-empty"})
            process, seconds, baseline = start_until_ready(empty, "memory", tmp_path / "empty.log", args.timeout)
            stop(process)
            print(f"no state: ready in {seconds:.1f} s, RSS {baseline / 2**20:.0f} MiB")

            scale = 100_000 / args.visitors
            process, seconds, resident = start_until_ready(settings, "memory", tmp_path / "memory.log", args.timeout)
            stop(process)
            print(
                f"memory: ready in {seconds:.1f} s (whole changelog), RSS {resident / 2**20:,.0f} MiB; "
                f"state {(resident - baseline) * scale / 2**20:.1f} MiB per 100,000 visitors; load {load_average()}"
            )

            process, seconds, resident = start_until_ready(settings, "rocksdb", tmp_path / "rocksdb.log", args.timeout)
            stop(process)
            on_disk = dir_bytes(settings.state_dir)
            print(
                f"rocksdb first start: ready in {seconds:.1f} s (whole changelog into RocksDB), RSS "
                f"{resident / 2**20:,.0f} MiB; directory {on_disk / 2**20:,.1f} MiB, "
                f"{on_disk * scale / 2**20:.1f} MiB per 100,000 visitors"
            )
            for n in range(args.restarts):
                process, seconds, resident = start_until_ready(
                    settings, "rocksdb", tmp_path / "rocksdb.log", args.timeout
                )
                stop(process, kill=n == args.restarts - 1)
                how = "then SIGKILLed" if n == args.restarts - 1 else "then stopped"
                print(
                    f"rocksdb restart {n + 1}: ready in {seconds:.1f} s, RSS {resident / 2**20:,.0f} MiB "
                    f"({how}); load {load_average()}"
                )
            process, seconds, resident = start_until_ready(settings, "rocksdb", tmp_path / "rocksdb.log", args.timeout)
            stop(process)
            print(f"rocksdb restart after the SIGKILL: ready in {seconds:.1f} s, RSS {resident / 2**20:,.0f} MiB")
        finally:
            stack.down(stack_settings, services=["kafka"])


if __name__ == "__main__":
    main()
