"""Broker outage: accepted events are spooled on disk, survive a collector restart, and all arrive once the
broker is back, in order, none twice. Uses a broker of its own, stopped and restarted by PID."""

from __future__ import annotations

from pathlib import Path

import pytest
from collector_support import collector_settings, create_source_topics, read_topic
from harness import EmbeddedKafka, wait_for
from starlette.testclient import TestClient

from collector.app import create_app

pytestmark = pytest.mark.kafka

KEY = {"X-Closedloop-Key": "demo-write-key"}


def page(seq: int) -> dict:
    return {
        "type": "page_view",
        "visitor_id": "vis-seq",
        "event_id": f"seq-{seq:03d}",
        "title": f"seq-{seq:03d}",
        "url": f"https://acme.test/p/{seq}",
    }


def test_outage_spools_and_replays_in_order_once(own_broker: EmbeddedKafka, tmp_path: Path) -> None:
    broker = own_broker
    settings = collector_settings(
        tmp_path / "collector", bootstrap=broker.bootstrap, prefix="outage", publish_timeout_s=3.0
    )
    create_source_topics(broker.bootstrap, settings)
    sent = 0

    def post(client: TestClient, count: int) -> None:
        nonlocal sent
        for _ in range(count):
            response = client.post("/v1/events", headers=KEY, json=page(sent))
            assert response.status_code == 200, response.text
            sent += 1

    with TestClient(create_app(settings)) as client:
        post(client, 5)  # broker up: straight through
        assert client.app.state.publisher.spool.empty
        broker.stop()
        post(client, 5)  # the first waits out the delivery timeout, then everything goes to the spool
        spool = client.app.state.publisher.spool
        assert not spool.empty
        assert client.get("/readyz").status_code == 503
        assert "closedloop_collector_records_spooled_total 5.0" in client.get("/metrics").text

    # The collector restarts while the broker is still down: the spool is on disk and reclaimed.
    with TestClient(create_app(settings)) as client:
        assert not client.app.state.publisher.spool.empty
        post(client, 5)
        broker.start()
        post(client, 5)  # queued behind the spool until it drains: order is kept
        wait_for(lambda: client.app.state.publisher.spool.empty, 60, "the spool to drain")
        post(client, 5)  # direct again
        assert client.get("/readyz").status_code == 200

    records = read_topic(broker.bootstrap, settings.topics.events, sent)
    titles = [value["event"]["title"] for _, value in records]
    assert titles == [f"seq-{i:03d}" for i in range(sent)]  # all, in order, none twice
    assert {key for key, _ in records} == {"vis-seq"}
