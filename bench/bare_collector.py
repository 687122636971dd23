"""The collector's HTTP ceiling: a bare ASGI app under the same uvicorn (uvloop, httptools, same workers) that
answers ``POST /v1/events`` like the collector does, without parsing, validating or publishing anything.

It reads the whole body and answers 200 with a body of the collector's shape (``accepted``, ``rejected``,
``event_ids``: the events counted by a byte search, ids sliced from one random hex string per request). What the
collector costs beyond this app is its own work plus Kafka's round trip (bench/collector_load.py, bench/collector.md).

    .venv/bin/python -m uvicorn bench.bare_collector:app --workers 2 --loop uvloop --http httptools --port 8001
"""

from __future__ import annotations

import os

import orjson

HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    count = max(1, body.count(b'"type"'))
    ids = os.urandom(16 * count).hex()
    answer = orjson.dumps(
        {"accepted": count, "rejected": [], "event_ids": [ids[i : i + 32] for i in range(0, 32 * count, 32)]}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*HEADERS, (b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})
