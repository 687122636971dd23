"""Benchmark: sustained events/s through the stream-jobs worker, its CPU and memory, and state size.

Method (see bench/worker.md for results):
1. start a private embedded broker, fresh for each run (or use CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS), create the
   topics;
2. pre-load the input: ``--visitors`` visitors with 4 page views each over several channels, a third of them
   identifying (half of those sharing an email with another device), CRM mql/opportunity/customer changes;
3. start ``--workers`` ``closedloop worker`` processes (one app), time from "all ready" until their group has
   committed every input offset; read each worker's CPU time (user + system) and RSS from /proc, and the
   broker's CPU time when its PIDs are known (private broker, or ``--broker-pid``); also the sustained rate on the
   events topic (10% to 90% of its records applied, from the visitors changelog's end offsets) and when the first
   and last output records appeared;
4. state size: bytes of the newest value per key in each changelog topic (what a compacted topic keeps and
   what a restart recovers), scaled to 100,000 visitors; and the records written to each (one per table write);
5. outputs of the last run: records and bytes (key + value) the worker wrote to each topic (output, internal and
   changelog topics, committed records only), per input event. Deterministic for a given input and worker version,
   whatever the machine's load, apart from the order in which a lead's events from different partitions meet
   (and, since 2026-12-06, which re-emissions fall within one coalescing interval).

``--repeat N`` runs steps 1-3 N times on fresh topics and reports the median; ``--py-spy FILE`` records the
first worker of the first run with py-spy (``--gil``, raw format) for a profile of where the time goes.

Run: ``.venv/bin/python bench/worker.py --visitors 5000 --repeat 3``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_worker import (  # noqa: E402 - the test harness is the benchmark's harness too
    Worker,
    as_records,
    create_all_topics,
    free_port,
    generated_stream,
    send,
    topic_records,
    wait_idle,
    worker_settings,
)

from stream_jobs.runtime.topology import TABLES, changelog_topic  # noqa: E402

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def proc_sample(pid: int) -> tuple[float, float, int]:
    """(user CPU seconds, system CPU seconds, RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS, rss


def compacted_bytes(settings, topic: str) -> tuple[int, int, int]:
    """(records, keys, bytes of key + newest value per key) of a topic."""
    newest: dict[bytes, int] = {}
    records = 0
    for r in topic_records(settings, topic, timeout=600):
        newest[r.key] = len(r.key or b"") + len(r.value or b"")
        records += 1
    return records, len(newest), sum(newest.values())


@dataclass
class Run:
    events: int
    seconds: float
    worker_user: float
    worker_sys: float
    broker_cpu: float | None
    rss_end: int
    rss_peak: int
    load: str
    sustained: float | None = None
    first_output: float | None = None
    last_output: float | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def worker_cpu(self) -> float:
        return self.worker_user + self.worker_sys

    def line(self) -> str:
        broker = (
            f"; broker CPU {self.broker_cpu:.1f}s = {self.broker_cpu / self.events * 1000:.2f} s/1k"
            if self.broker_cpu is not None
            else ""
        )
        sustained = (
            f" (events topic 10%-90%: {self.sustained:,.0f}/s; first output {self.first_output:.1f}s after "
            f"ready, last {self.last_output or 0:.1f}s)"
            if self.sustained and self.first_output is not None
            else ""
        )
        return (
            f"{self.events} events in {self.seconds:.1f}s = {self.rate:,.0f} events/s{sustained}; worker CPU "
            f"{self.worker_cpu:.1f}s (user {self.worker_user:.1f}, sys {self.worker_sys:.1f}) = "
            f"{self.worker_cpu / self.events * 1000:.2f} s per 1,000 events, "
            f"{self.worker_cpu / self.seconds * 100:.0f}% of one core{broker}; RSS end "
            f"{self.rss_end / 2**20:.0f} MiB, peak {self.rss_peak / 2**20:.0f} MiB; load {self.load}"
        )


def end_offsets_total(consumer, partitions) -> int:
    return sum(consumer.end_offsets(partitions).values())


class Progress:
    """Samples how many events-topic records the worker has applied (the visitors changelog gets one record per
    page view or identify) every 0.2 s, for the sustained rate between 10% and 90% of them: the window that
    leaves out group join, table recovery and the tail."""

    def __init__(self, settings, expected: int) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.expected = expected
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_servers, enable_auto_commit=False)
        topic = changelog_topic(settings.app_id, "visitors")
        self.partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        self.outputs = [
            TopicPartition(t, p)
            for t in (settings.topics.credits, settings.topics.conversions, topic)
            for p in range(settings.partitions)
        ]
        # Assigned (never polled) so that the client keeps these topics' metadata: kafka-python 3.0 answered
        # end_offsets of topics it had no metadata for with a KeyError, which ended the sampling thread.
        self.consumer.assign(self.partitions + self.outputs)
        self.samples: list[tuple[float, int]] = []
        self.output_samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            now = time.monotonic()
            self.samples.append((now, end_offsets_total(self.consumer, self.partitions)))
            self.output_samples.append((now, end_offsets_total(self.consumer, self.outputs)))
            time.sleep(0.2)

    def last_output_after(self, start: float) -> float | None:
        """When the worker produced its last output record (credits, conversions, visitors changelog)."""
        final = self.output_samples[-1][1] if self.output_samples else 0
        return next((t - start for t, n in self.output_samples if n >= final), None)

    def start(self) -> "Progress":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.consumer.close()

    def first_output_after(self, start: float) -> float | None:
        return next((t - start for t, n in self.samples if n > 0), None)

    def sustained_rate(self) -> float | None:
        """Events-topic records per second between 10% and 90% applied."""
        low, high = 0.1 * self.expected, 0.9 * self.expected
        t_low = next(((t, n) for t, n in self.samples if n >= low), None)
        t_high = next(((t, n) for t, n in self.samples if n >= high), None)
        if not t_low or not t_high or t_high[0] <= t_low[0]:
            return None
        return (t_high[1] - t_low[1]) / (t_high[0] - t_low[0])


def broker_cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of the broker's processes (every node of a cluster), None when unknown."""
    return sum(sum(proc_sample(pid)[:2]) for pid in pids) if pids else None


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def one_run(bootstrap: str, tmp_path: Path, args, run_no: int, broker_pids: list[int]) -> tuple[Run, object]:
    settings = worker_settings(bootstrap, f"bench_{int(time.time())}_{run_no}", tmp_path / f"data{run_no}")
    if args.partitions:
        settings = settings.model_copy(update={"partitions": args.partitions})
    create_all_topics(settings)
    stream = generated_stream(args.visitors)
    records = as_records(settings, stream)
    kinds = {"page_view": 0, "identify": 0, "crm_status": 0}
    for envelope in stream:
        kinds[envelope.event.type] += 1
    t0 = time.monotonic()
    send(settings, records)
    print(f"run {run_no}: loaded {len(records)} events {kinds} in {time.monotonic() - t0:.1f}s", flush=True)

    events_topic_records = kinds["page_view"] + kinds["identify"]
    workers = [
        Worker(settings.model_copy(update={"worker_web_port": free_port()}), tmp_path / f"worker{run_no}-{i}.log")
        for i in range(args.workers)
    ]
    # Start all, then time from the moment every one is up (the first may already be working: it counts).
    for worker in workers:
        worker.start()
    pids = [worker.process.pid for worker in workers]
    print(f"run {run_no}: worker pids {pids}", flush=True)
    spy = None
    if args.py_spy and run_no == 0:
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(pids[0]),
                "-f",
                "raw",
                "-o",
                args.py_spy,
                "-r",
                "100",
                "--gil",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    progress = Progress(settings, events_topic_records)
    before = {pid: proc_sample(pid) for pid in pids}
    broker_before = broker_cpu_seconds(broker_pids)
    start = time.monotonic()
    progress.start()
    peak_rss = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_rss
        while not done.is_set():
            peak_rss = max(peak_rss, sum(proc_sample(pid)[2] for pid in pids))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_idle(settings, timeout=3600, worker=workers[0])
        elapsed = time.monotonic() - start
        load = load_average()
        done.set()
        after = {pid: proc_sample(pid) for pid in pids}
        broker_after = broker_cpu_seconds(broker_pids)
    finally:
        done.set()
        progress.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        for worker in workers:
            worker.stop()
    # wait_idle needs three quiet polls (about 1 s) after the last commit: subtract it.
    busy = max(elapsed - 1.0, 0.001)
    run = Run(
        events=len(records),
        seconds=busy,
        worker_user=sum(after[p][0] - before[p][0] for p in pids),
        worker_sys=sum(after[p][1] - before[p][1] for p in pids),
        broker_cpu=None if not broker_pids else broker_after - broker_before,
        rss_end=sum(after[p][2] for p in pids),
        rss_peak=peak_rss,
        load=load,
        sustained=progress.sustained_rate(),
        first_output=progress.first_output_after(start),
        last_output=progress.last_output_after(start),
    )
    print(f"run {run_no}: {run.line()}", flush=True)
    return run, settings


def report_outputs(settings, events: int) -> None:
    """Records and bytes the worker wrote per topic, and in all, per input event (see the module docstring)."""
    from stream_jobs.runtime.topology import crm_contacts_topic

    topics = settings.topics
    written = [
        topics.touches,
        topics.identity_links,
        topics.leads,
        topics.conversions,
        topics.credits,
        topics.dead_letters,
        topics.lead_events,
        crm_contacts_topic(settings.app_id),
        *(changelog_topic(settings.app_id, table) for table in TABLES),
    ]
    total_records = total_bytes = 0
    for topic in written:
        records = size = 0
        for r in topic_records(settings, topic, timeout=600):
            records += 1
            size += len(r.key or b"") + len(r.value or b"")
        total_records += records
        total_bytes += size
        print(
            f"  output {topic:44s} {records:8d} records {size / 2**20:8.2f} MiB = "
            f"{records / events:6.3f} records, {size / events:8.1f} bytes per input event"
        )
    print(
        f"outputs per input event ({events} events): {total_records / events:.3f} records, "
        f"{total_bytes / events:,.0f} bytes"
    )


def report_state(settings, visitors: int) -> None:
    total = 0
    for table in TABLES:
        records, keys, size = compacted_bytes(settings, changelog_topic(settings.app_id, table))
        total += size
        # Records written, not only kept: each table write is one, and the worker's dearest operation.
        print(f"  state {table:16s} {keys:8d} keys {size / 2**20:8.2f} MiB, {records:8d} records written")
    print(f"state per 100,000 visitors: {total / visitors * 100_000 / 2**20:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes of one app")
    parser.add_argument("--partitions", type=int, default=0, help="partitions per topic (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median is reported")
    parser.add_argument("--broker-pid", type=int, default=None, help="PID of an external broker, for its CPU")
    parser.add_argument("--py-spy", default=None, help="record the first worker of run 0 with py-spy into FILE")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        tmp_path = Path(tmp)
        external = os.environ.get("CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS")
        runs = []
        for run_no in range(args.repeat):
            # A fresh private broker per run: no run pays for the topics of the ones before it.
            stack_settings, bootstrap = None, external
            broker_pids = [args.broker_pid] if args.broker_pid else []
            if not external:
                from deploy import stack
                from deploy.settings import private_stack_settings

                stack_settings = private_stack_settings(tmp_path / f"stack{run_no}")
                broker_pids = list(stack.start_service(stack_settings, "kafka").values())
                bootstrap = stack_settings.kafka_servers
            try:
                run, settings = one_run(bootstrap, tmp_path, args, run_no, broker_pids)
                runs.append(run)
                if run_no == args.repeat - 1:
                    report_state(settings, args.visitors)
                    report_outputs(settings, run.events)
            finally:
                if stack_settings is not None:
                    stack.down(stack_settings, services=["kafka"])
        median = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
        rates = [r.rate for r in runs]
        print(f"median of {len(runs)} ({args.workers} worker(s)): {median.line()}")
        print(
            f"rates: {', '.join(f'{r:,.0f}' for r in rates)} events/s (median {statistics.median(rates):,.0f}); "
            f"CPU s per 1,000 events: {', '.join(f'{r.worker_cpu / r.events * 1000:.2f}' for r in runs)}"
        )


if __name__ == "__main__":
    main()
