"""What the benchmark scripts share: a private embedded stack (Apache Kafka, the ClickHouse endpoint) in a temporary
directory on free loopback ports, stopped by PID; CPU and memory of processes from /proc; what else the machine
was running.

The stack is the one ``closedloop up`` runs (``deploy.stack``), so a benchmark measures the broker the pipeline
really uses. Every process it starts dies with the benchmark too (``die_with_parent``), even on a crash.
"""

from __future__ import annotations

import collections
import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy import stack
from deploy.daemons import free_port as free_port  # re-exported: the stack's own, as in tests/harness.py
from deploy.kafka_broker import data_size
from deploy.settings import StackSettings, private_stack_settings

HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {HOST}:{port}")


def cpu_seconds(pids: list[int] | int) -> float:
    """utime + stime of these processes (all their threads), from /proc; a process that is gone counts 0."""
    total = 0.0
    for pid in [pids] if isinstance(pids, int) else pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """A process and its direct children (a uvicorn supervisor and its workers)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


SECTIONS = ["blog", "pricing", "docs", "product", "customers", "careers", "integrations", "compare"]
REFERRERS = [
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://www.linkedin.com/",
    "https://t.co/x1",
    "https://news.ycombinator.com/",
    "https://duckduckgo.com/",
    None,
    None,
]
CAMPAIGNS = [
    {},
    {},
    {},
    {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "brand-search"},
    {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "2026-11-digest"},
    {"utm_source": "linkedin", "utm_medium": "paid_social", "utm_campaign": "q4-launch", "utm_content": "v2"},
]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
]


def tracker_page_view(rng: random.Random, visitors: int = 20_000) -> tuple[dict, str]:
    """A page view as ``collector/static/tracker.js`` sends it (random 32-hex ids, a page of a marketing site, a
    referrer, UTM parameters on some URLs, the screen), and the user agent of the request that carries it."""
    visitor = rng.randrange(visitors)
    section = rng.choice(SECTIONS)
    campaign = rng.choice(CAMPAIGNS)
    query = "&".join(f"{name}={value}" for name, value in campaign.items())
    url = f"https://www.example-shop.com/{section}/{rng.randrange(400)}-{section}-page" + (f"?{query}" if query else "")
    event = {
        "type": "page_view",
        "visitor_id": f"{visitor:08x}" + rng.getrandbits(96).to_bytes(12).hex(),
        "session_id": rng.getrandbits(128).to_bytes(16).hex(),
        "url": url,
        "title": f"{section.title()} {rng.randrange(400)} | Example Shop",
        "referrer": rng.choice(REFERRERS),
        "screen": rng.choice(["1920x1080", "1440x900", "390x844", "2560x1440"]),
        **campaign,
    }
    return event, USER_AGENTS[visitor % len(USER_AGENTS)]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busiest_processes(limit: int = 6, own: set[int] | None = None) -> str:
    """The processes using the most CPU right now (top's one-shot view), marking the benchmark's own: what else
    ran beside a measurement."""
    try:
        out = subprocess.run(
            ["top", "-bn1", "-w", "200", "-o", "%CPU"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "top unavailable"
    header = next((i for i, line in enumerate(out) if line.lstrip().startswith("PID")), None)
    if header is None:
        return "top unavailable"
    rows = []
    for line in out[header + 1 : header + 1 + limit]:
        parts = line.split(None, 11)
        if len(parts) < 12 or float(parts[8].replace(",", ".")) < 1.0:
            continue
        mine = " (bench)" if own and int(parts[0]) in own else ""
        rows.append(f"{parts[11][:24]}{mine} {parts[8]}%")
    return ", ".join(rows) or "nothing above 1%"


def process_table() -> dict[int, tuple[str, int, float]]:
    """Every process on the machine: PID -> (command name, parent PID, CPU seconds so far)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (name, int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK)
    return table


def others_busy(before: dict, after: dict, seconds: float, own: set[int]) -> str:
    """What processes other than the benchmark's (``own``, its descendants and this process's children) used
    between two ``process_table`` snapshots: their total in cores and the three busiest."""
    mine = set(own) | {os.getpid()}
    changed = True
    while changed:  # descendants of our processes (uvicorn workers, wrk, producer processes) are ours too
        changed = False
        for pid, (_, parent, _) in after.items():
            if parent in mine and pid not in mine:
                mine.add(pid)
                changed = True
    used = collections.Counter()
    for pid, (name, _, cpu) in after.items():
        if pid not in mine:
            used[name] += cpu - (before[pid][2] if pid in before else 0.0)
    total = sum(used.values()) / max(seconds, 1e-9)
    top = ", ".join(f"{name} {cpu / seconds:.2f}" for name, cpu in used.most_common(3) if cpu / seconds >= 0.02)
    return f"others {total:.2f} cores" + (f" ({top})" if top else "")


def wait_for_quiet(max_wait_s: float = 180.0, below: float = 1.5, say=print) -> str:
    """Wait (at most ``max_wait_s``) until the 1-minute load average is under ``below``; returns what the machine
    looked like when the wait ended, for the write-up."""
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(min(15.0, max(0.0, deadline - time.monotonic())))
    state = f"load average {load_average()}; busiest: {busiest_processes()}"
    say(f"machine before the run: {state}", flush=True)
    return state


@dataclass
class EmbeddedStack:
    """A private Kafka node and/or ClickHouse endpoint under ``root``, as ``closedloop up`` runs them."""

    root: Path
    settings: StackSettings = field(init=False)
    services: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.settings = private_stack_settings(self.root, kafka_brokers=1)

    def start(self, *services: str) -> EmbeddedStack:
        for name in services:
            self.services.append(name)
            self.pids.update(stack.start_service(self.settings, name, die_with_parent=True))
        return self

    def stop(self, *services: str) -> None:
        """Stop what ``start`` started, or only ``services`` of it (SIGTERM by PID, Kafka's controlled shutdown;
        SIGKILL after the stop timeout)."""
        names = [name for name in self.services if not services or name in services]
        if names:
            stack.down(self.settings, services=names)
            self.services = [name for name in self.services if name not in names]

    @property
    def kafka_pid(self) -> int:
        return self.pids["kafka"]

    @property
    def clickhouse_pid(self) -> int:
        return self.pids["clickhouse"]

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_servers

    def clickhouse_url(self, database: str) -> str:
        """The embedded endpoint's URL with the data directory's password, for ``database``."""
        return f"{self.settings.clickhouse.rsplit('/', 1)[0]}/{database}"

    def kafka_data_bytes(self) -> int:
        """The broker's data on disk (blocks allocated: its index files are sparse)."""
        return data_size(self.settings.kafka_dir)
