"""Benchmark: the data-driven models (sinks/datadriven.py) on one million journeys, computed in memory.

The journeys are generated in memory (seeded; untimed), then each model and order runs in its own child process,
so each peak RSS is that run's own; wall and CPU seconds (user + system of the process) of ``attribute()`` are
measured around the call, grouping the journeys included.

``--read`` measures the job's read instead: a private ClickHouse endpoint (``deploy.stack``, as ``closedloop up``
runs it) is filled by ``INSERT ... SELECT FROM numbers()`` with one visitor per journey (1 to 4 touches in March
2024, channels by hash), 30% of them linked to a lead and 2% reaching customer on 03-31; then
``read_journeys`` (the job's query, streamed) runs over March, timed with this process's CPU and the endpoint's
(from /proc). Results and method: bench/data_driven.md.

Run: ``.venv/bin/python -m bench.data_driven --journeys 1000000 --bootstrap 100`` (``--read`` for the read).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from sinks.datadriven import Journey, attribute

CHANNELS = (
    "Paid Search",
    "Organic Search",
    "Direct",
    "Email",
    "Referral",
    "Organic Social",
    "Paid Social",
    "Display",
    "Affiliates",
    "Organic Video",
    "Paid Video",
    "SMS",
)
POPULARITY = np.array([20, 25, 15, 10, 8, 6, 5, 4, 3, 2, 1, 1], dtype=np.float64)
LIFT = np.array([1.5, 1.2, 1.0, 2.0, 1.1, 0.8, 1.0, 0.5, 1.3, 0.7, 0.9, 1.6])


def journeys(count: int, seed: int) -> list[Journey]:
    """``count`` journeys: 1 + geometric(0.45) touches (at most 12), channels by popularity, about 4% converting."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.55, count), 12)
    touches = rng.choice(len(CHANNELS), int(lengths.sum()), p=POPULARITY / POPULARITY.sum())
    ends = np.cumsum(lengths)
    lift = np.add.reduceat(LIFT[touches], ends - lengths) / lengths
    converted = rng.random(count) < 0.025 * lift * np.sqrt(lengths)
    revenue = np.round(rng.lognormal(7.0, 1.0, count), 2)
    names = [CHANNELS[i] for i in touches.tolist()]
    out = []
    start = 0
    for i, end in enumerate(ends.tolist()):
        out.append(Journey(tuple(names[start:end]), bool(converted[i]), float(revenue[i]) if converted[i] else 0.0))
        start = end
    return out


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> None:
    data = journeys(args.journeys, args.seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), _cpu()
    result = attribute(data, args.model, order=args.order, bootstrap=args.bootstrap, seed=1)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    print(
        json.dumps(
            {
                "model": args.model,
                "order": args.order,
                "bootstrap": args.bootstrap,
                "journeys": result.journeys,
                "conversions": result.conversions,
                "channels": len(result.credits),
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "peak_rss_mb_after_generation": round(rss_before / 1024),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "top": [
                    (c.channel, round(c.share, 4), round(c.ci_low, 1), round(c.ci_high, 1))
                    for c in sorted(result.credits, key=lambda c: -c.share)[:3]
                ],
            }
        ),
        flush=True,
    )


def read(count: int) -> None:
    """Fill a private ClickHouse with ``count`` journeys and time the job's read of them."""
    import tempfile
    from datetime import date
    from pathlib import Path

    from bench.support import EmbeddedStack, cpu_seconds
    from sinks.client import connect
    from sinks.data_driven_job import read_journeys
    from sinks.migrate import migrate_up
    from sinks.settings import SinkSettings

    names = "[" + ", ".join(f"'{c}'" for c in CHANNELS) + "]"
    with tempfile.TemporaryDirectory() as root:
        stack = EmbeddedStack(Path(root)).start("clickhouse")
        try:
            settings = SinkSettings(clickhouse_url=stack.clickhouse_url("bench"), clickhouse_query_timeout=3600)
            migrate_up(settings)
            client = connect(settings)
            started = time.perf_counter()
            client.command(
                "INSERT INTO touches (touch_id, visitor_id, site_id, occurred_at, channel, source, medium, event_id) "
                "SELECT concat('t', toString(number), '-', toString(k)), concat('v', toString(number)), 's', "
                "toDateTime64('2024-03-01 00:00:00', 3, 'UTC') + toIntervalSecond(cityHash64(number) % 2000000 "
                f"+ k * 3600), arrayElement({names}, 1 + cityHash64(number, k) % 12), 'x', 'y', '' "
                f"FROM numbers({count}) ARRAY JOIN range(1 + toUInt32(cityHash64(number, 'n') % 4)) AS k"
            )
            client.command(
                "INSERT INTO identity_links (visitor_id, lead_id, linked_at, event_id) "
                "SELECT concat('v', toString(number)), concat('L', toString(number)), "
                f"toDateTime64('2024-03-01 00:00:00', 3, 'UTC'), '' FROM numbers({count}) WHERE number % 10 < 3"
            )
            client.command(
                "INSERT INTO conversions (conversion_id, lead_id, stage, occurred_at, revenue, currency, touch_count, "
                "event_id, version) SELECT concat('c', toString(number)), concat('L', toString(number)), 'customer', "
                "toDateTime64('2024-03-31 12:00:00', 3, 'UTC'), toDecimal64(100 + number % 900, 2), 'EUR', 0, '', 1 "
                f"FROM numbers({count}) WHERE number % 50 = 0"
            )
            print(json.dumps({"load_s": round(time.perf_counter() - started, 1)}), flush=True)
            server, wall, cpu = cpu_seconds(stack.clickhouse_pid), time.perf_counter(), _cpu()
            rows = converting = 0
            for _, converted, _ in read_journeys(client, "customer", date(2024, 3, 1), date(2024, 3, 31)):
                rows += 1
                converting += converted
            print(
                json.dumps(
                    {
                        "read_journeys": rows,
                        "converting": converting,
                        "wall_s": round(time.perf_counter() - wall, 2),
                        "client_cpu_s": round(_cpu() - cpu, 2),
                        "endpoint_cpu_s": round(cpu_seconds(stack.clickhouse_pid) - server, 2),
                        "client_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                    }
                ),
                flush=True,
            )
            client.close()
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journeys", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", default="markov:1,markov:2,markov:3,shapley:0", help="model:order,...")
    parser.add_argument("--read", action="store_true", help="Time the job's ClickHouse read instead.")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--order", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        child(args)
        return
    if args.read:
        print(f"load average {os.getloadavg()}", flush=True)
        read(args.journeys)
        print(f"load average {os.getloadavg()}", flush=True)
        return
    print(f"load average {os.getloadavg()}", flush=True)
    for spec in args.runs.split(","):
        model, order = spec.split(":")
        command = [sys.executable, "-m", "bench.data_driven", "--model", model, "--order", order or "1"]
        command += ["--journeys", str(args.journeys), "--bootstrap", str(args.bootstrap), "--seed", str(args.seed)]
        subprocess.run(command, check=True, timeout=3600)
    print(f"load average {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
