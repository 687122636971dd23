"""Two stream-worker processes on one machine (``closedloop worker --processes 2``, one consumer group), one of them
SIGKILLed in the middle of the stream: the other takes nothing of its state, the parent starts it again with its
state directory, it recovers its partitions, and the credits the pair ends with equal those of one worker that was
never interrupted (exact, per conversion, model and touch). The stream and the comparison are those of
``test_worker_kill.py``.

Partitions are the unit of scale: with 2 partitions each process serves one of each source topic.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from harness import wait_for
from test_worker import (
    Worker,
    _is_idle,
    as_records,
    create_all_topics,
    final_credits,
    generated_stream,
    get_json,
    read_all,
    running_worker,
    send,
    wait_idle,
    worker_settings,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka]


def worker_children(parent: int) -> dict[int, int]:
    """Web port -> PID of each running ``closedloop worker`` process whose parent is ``parent`` (from /proc)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # it exited while we looked
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent or b"--web-port" not in argv:
            continue
        children[int(argv[argv.index(b"--web-port") + 1])] = int(entry.name)
    return children


def events_partitions(settings, port: int) -> set[str]:
    """The events partitions the worker on ``port`` has (its /diagnostics/ page); empty while it does not answer."""
    password = settings.local_password_file.read_text().strip()
    try:
        diagnostics = get_json(f"http://{settings.worker_web_host}:{port}/diagnostics/", password=password)
    except OSError:
        return set()
    return {name for name in diagnostics["partitions"] if name.startswith(f"{settings.topics.events}[")}


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_two_worker_processes_one_killed_mid_stream_end_with_the_credits_of_one_uninterrupted_worker(
    kafka_bootstrap, unique_name, tmp_path, guarantee
):
    stream = generated_stream()
    reference = worker_settings(kafka_bootstrap, f"{unique_name}_ref", tmp_path / "ref").model_copy(
        update={"processing_guarantee": guarantee}
    )
    create_all_topics(reference)
    with running_worker(reference, tmp_path) as worker:
        send(reference, as_records(reference, stream))
        wait_idle(reference, worker=worker, timeout=180)
    expected = final_credits(reference)
    assert len({k[0] for k in expected}) > 50

    settings = worker_settings(kafka_bootstrap, f"{unique_name}_two", tmp_path / "two").model_copy(
        update={"processing_guarantee": guarantee}
    )
    first, second = settings.worker_web_port, settings.worker_web_port + 1
    create_all_topics(settings)
    pair = Worker(settings, tmp_path / "two-workers.log", args=("--processes", "2")).start()
    try:
        assert pair.process is not None
        split: dict[int, set[str]] = {}

        def one_partition_each() -> bool:
            split.update({port: events_partitions(settings, port) for port in (first, second)})
            return all(len(split[port]) == 1 for port in (first, second))

        wait_for(one_partition_each, 180, lambda: f"a partition for each process ({split}):\n{pair.log_tail()}")
        assert split[first] | split[second] == {f"{settings.topics.events}[{p}]" for p in range(2)}

        send(settings, as_records(settings, stream))
        wait_for(
            lambda: read_all(settings, settings.topics.conversions),
            120,
            lambda: f"the first conversions:\n{pair.log_tail()}",
            interval=0.2,
        )
        killed = worker_children(pair.process.pid)[second]
        os.kill(killed, signal.SIGKILL)  # by PID, in the middle of the stream
        assert not _is_idle(settings), "the workers finished before one was killed: make the stream longer"
        wait_for(
            lambda: worker_children(pair.process.pid).get(second, killed) != killed,
            30,
            lambda: f"the killed process started again:\n{pair.log_tail()}",
        )
        wait_idle(settings, worker=pair, timeout=240)
        assert final_credits(settings) == expected
        children = worker_children(pair.process.pid)
        assert set(children) == {first, second}
    finally:
        pair.stop()
    assert pair.process.returncode == 0, pair.log_tail()
    assert not [pid for pid in children.values() if Path(f"/proc/{pid}").exists()]  # SIGTERM reached both
