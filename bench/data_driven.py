"""Benchmark: the data-driven models (sinks/datadriven.py) on one million journeys, computed in memory.

The journeys are generated in memory (seeded; untimed), then each model and order runs in its own child process,
so each peak RSS is that run's own; wall and CPU seconds (user + system of the process) of ``attribute()`` are
measured around the call, grouping the journeys included. The job's ClickHouse read is not part of this script
(bench/data_driven.md says what was measured of it). Results and method: bench/data_driven.md.

Run: ``.venv/bin/python -m bench.data_driven --journeys 1000000 --bootstrap 100``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journeys", type=int, default=1_000_000)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", default="markov:1,markov:2,markov:3,shapley:0", help="model:order,...")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--order", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        child(args)
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
