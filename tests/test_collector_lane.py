"""POST /v1/events goes through the app's events lane (collector/app.py, CollectorApp), which skips Starlette's
middleware and router: every answer must be the one Starlette's stack gives, headers included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from collector_support import SERVER_KEY, collector_settings
from starlette.testclient import TestClient

from collector.app import create_app
from collector.settings import DEMO_WRITE_KEY

PAGE = {"type": "page_view", "visitor_id": "v-1", "url": "https://acme.test/?utm_source=linkedin"}
IDENTIFY = {"type": "identify", "visitor_id": "v-1", "email": "ada@acme.test"}
BROWSER = {"X-Closedloop-Key": DEMO_WRITE_KEY}
SERVER = {"X-Closedloop-Key": SERVER_KEY}

# (name, path, headers, body): every kind of answer the endpoint gives.
REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("page view", "/v1/events", SERVER, orjson.dumps(PAGE)),
    ("identify", "/v1/events", SERVER, orjson.dumps(IDENTIFY)),
    ("batch, one invalid", "/v1/events", SERVER, orjson.dumps([PAGE, {"type": "page_view"}, IDENTIFY])),
    ("all invalid", "/v1/events", SERVER, orjson.dumps({"batch": [{"type": "page_view"}]})),
    ("key in the query", f"/v1/events?key={SERVER_KEY}", {}, orjson.dumps(PAGE)),
    ("browser, allowed origin", "/v1/events", {**BROWSER, "Origin": "https://acme.test"}, orjson.dumps(PAGE)),
    ("browser, other origin", "/v1/events", {**BROWSER, "Origin": "https://evil.test"}, orjson.dumps(PAGE)),
    ("browser, no origin", "/v1/events", BROWSER, orjson.dumps(PAGE)),
    ("server key, any origin", "/v1/events", {**SERVER, "Origin": "https://evil.test"}, orjson.dumps(PAGE)),
    ("browser sends a CRM event", "/v1/events", BROWSER, orjson.dumps({"type": "crm_status", "crm": "hubspot"})),
    ("no key", "/v1/events", {}, orjson.dumps(PAGE)),
    ("unknown key", "/v1/events", {"X-Closedloop-Key": "nope"}, orjson.dumps(PAGE)),
    ("not JSON", "/v1/events", SERVER, b"{nope"),
    ("empty body", "/v1/events", SERVER, b""),
    ("a number", "/v1/events", SERVER, b"42"),
    ("body over the limit", "/v1/events", SERVER, orjson.dumps({**PAGE, "title": "x" * 3000})),
    ("too many events", "/v1/events", SERVER, orjson.dumps([PAGE] * 4)),
]


def answers(tmp_path: Path, lane: bool, publisher: Any = None) -> tuple[list[tuple[Any, ...]], int, str]:
    """Each request's (name, status, headers, body with generated ids blanked), the lane's use, the metrics."""
    settings = collector_settings(
        tmp_path / ("lane" if lane else "starlette"),
        allowed_origins=["https://acme.test"],
        max_body_bytes=2048,
        max_batch_events=3,
    )
    app = create_app(settings, publisher=publisher)
    taken = []
    if lane:
        assert app.events_lane is not None
        inner = app.events_lane

        async def counting_lane(scope, receive, send):
            taken.append(scope["path"])
            await inner(scope, receive, send)

        app.events_lane = counting_lane
    else:
        app.events_lane = None
    out = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for name, path, headers, body in REQUESTS:
            response = client.post(path, headers=headers, content=body)
            document = response.json()
            if "event_ids" in document:
                document["event_ids"] = [len(event_id) for event_id in document["event_ids"]]
            out.append((name, response.status_code, sorted(response.headers.items()), document))
        # Other requests to the same path are Starlette's: a preflight and a wrong method.
        preflight = client.options(
            "/v1/events", headers={"Origin": "https://acme.test", "Access-Control-Request-Method": "POST"}
        )
        wrong_method = client.get("/v1/events")
        out.append(("preflight", preflight.status_code, sorted(preflight.headers.items()), preflight.text))
        out.append(("GET", wrong_method.status_code, sorted(wrong_method.headers.items()), wrong_method.json()))
        metrics = "\n".join(
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("closedloop_collector_events_") and "_created" not in line
        )
    return out, len(taken), metrics


def test_the_lane_answers_every_request_as_starlettes_stack_does(tmp_path: Path) -> None:
    through_starlette, starlette_lane_uses, starlette_metrics = answers(tmp_path, lane=False)
    through_lane, lane_uses, lane_metrics = answers(tmp_path, lane=True)
    assert (starlette_lane_uses, lane_uses) == (0, len(REQUESTS))  # the preflight and the GET are Starlette's
    for starlette_answer, lane_answer in zip(through_starlette, through_lane, strict=True):
        assert lane_answer == starlette_answer
    by_name = {name: (status, dict(headers), body) for name, status, headers, body in through_lane}
    # The answers themselves, so that both paths cannot agree on a wrong one.
    assert [(name, by_name[name][0]) for name, *_ in REQUESTS] == [
        ("page view", 200),
        ("identify", 200),
        ("batch, one invalid", 200),
        ("all invalid", 422),
        ("key in the query", 200),
        ("browser, allowed origin", 200),
        ("browser, other origin", 403),
        ("browser, no origin", 200),
        ("server key, any origin", 200),
        ("browser sends a CRM event", 422),
        ("no key", 401),
        ("unknown key", 401),
        ("not JSON", 400),
        ("empty body", 400),
        ("a number", 400),
        ("body over the limit", 413),
        ("too many events", 413),
    ]
    assert by_name["page view"][2] == {"accepted": 1, "rejected": [], "event_ids": [32]}
    assert by_name["browser, allowed origin"][1]["access-control-allow-origin"] == "https://acme.test"
    assert "access-control-allow-origin" not in by_name["browser, other origin"][1]
    assert by_name["page view"][1]["vary"] == "Origin"
    assert by_name["preflight"][0] == 200 and by_name["GET"][0] == 405
    # Accepted and rejected counts, by endpoint and reason, are the same whichever path answered.
    assert lane_metrics == starlette_metrics
    assert 'closedloop_collector_events_rejected_total{endpoint="/v1/events",reason="invalid_json"} 1.0' in lane_metrics
    assert 'closedloop_collector_events_accepted_total{endpoint="/v1/events",type="page_view"} 6.0' in lane_metrics


class BrokenPublisher:
    """A publisher with a bug: publishing raises something the app does not expect."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ready(self) -> dict[str, Any]:
        return {"broker": "reachable"}

    async def publish(self, records: list[Any]) -> None:
        raise RuntimeError("a bug in the publisher")


@pytest.mark.parametrize("lane", [True, False])
def test_an_unexpected_error_is_a_500_with_a_json_body(tmp_path: Path, lane: bool) -> None:
    app = create_app(collector_settings(tmp_path), publisher=BrokenPublisher())
    if not lane:
        app.events_lane = None
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/events", headers=SERVER, content=orjson.dumps(PAGE))
        metrics = client.get("/metrics").text
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "message": "the collector failed on this request; nothing was accepted, retry later",
    }
    assert 'closedloop_collector_events_rejected_total{endpoint="/v1/events",reason="internal_error"} 1.0' in metrics


def test_a_served_app_leaves_its_start_up_heap_out_of_garbage_collections(tmp_path: Path) -> None:
    import gc

    from collector.app import CollectorApp, create_served_app

    assert gc.get_freeze_count() == 0
    try:
        app = create_served_app(collector_settings(tmp_path))
        assert isinstance(app, CollectorApp) and app.events_lane is not None
        # Everything alive at that point, the app's routes and the publisher included, is frozen.
        assert gc.get_freeze_count() > 10_000
        assert all(obj is not app for obj in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()
