"""Client-side idle back-off for aiokafka fetches.

A Kafka broker holds an empty fetch until ``fetch.max.wait.ms`` passes or data arrives, so an idle consumer costs
nothing. Some Kafka-protocol brokers (the embedded noida-db among them) answer an empty fetch at once; aiokafka then
sends the next fetch immediately and an idle Faust worker spins a whole core (measured: 4.3 s of CPU in 5 s idle;
0.05 s with this back-off). After an empty answer that came back early, we wait out the rest of the broker's
wait time on the client, capped at ``IDLE_BACKOFF_CAP_S`` so new data is seen quickly. With a broker that waits
properly the remaining time is about zero and nothing changes.

Busy pacing: while records trickle in (the worker's own lead-events, say), every answer has a little data, so
the consumer thread fetched again at once, hundreds of times a second, each fetch costing Python protocol work
in the worker and request handling in the broker (a third of the consumer thread's time and much of the
broker's, bench/worker.md). Fetches to a node therefore start at most every ``MIN_FETCH_INTERVAL_S``; the wait
comes before a fetch is sent, never between an answer and the agents that wait for its records, and a fetch
still brings up to ``consumer_max_fetch_size`` per partition, so it costs at most that much latency.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.consumer import fetcher

IDLE_BACKOFF_CAP_S = 0.1
MIN_FETCH_INTERVAL_S = 0.02

_original_proc_fetch_request = fetcher.Fetcher._proc_fetch_request


async def _proc_fetch_request_with_idle_backoff(self, assignment, node_id, request):
    last_started = self.__dict__.setdefault("_closedloop_fetch_started", {})
    pause = last_started.get(node_id, 0.0) + MIN_FETCH_INTERVAL_S - time.monotonic()
    if pause > 0:
        try:
            await asyncio.sleep(pause)
        except asyncio.CancelledError:
            return False  # closing or unassigned: the fetch is no longer wanted (what aiokafka returns then)
    started = last_started[node_id] = time.monotonic()
    has_new_data = await _original_proc_fetch_request(self, assignment, node_id, request)
    if not has_new_data:
        max_wait_s = getattr(request, "max_wait_time", 0) / 1000
        remaining = min(max_wait_s - (time.monotonic() - started), IDLE_BACKOFF_CAP_S)
        if remaining > 0:
            try:
                await asyncio.sleep(remaining)
            except asyncio.CancelledError:
                # The consumer is closing; the fetch itself is complete.
                return has_new_data
    return has_new_data


def install() -> None:
    """Patch aiokafka's fetcher once per process (idempotent)."""
    fetcher.Fetcher._proc_fetch_request = _proc_fetch_request_with_idle_backoff
