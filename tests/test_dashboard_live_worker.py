"""The live page on a real stream worker: a sale sent to the source topic shows up in the dashboard's live stream
(``/live/stream``, which polls the worker's ``/counters/``) within 5 s."""

from __future__ import annotations

import json
import re
import time

import pytest
from harness import wait_for
from starlette.testclient import TestClient
from test_worker import as_records, at, create_all_topics, crm, running_worker, send, worker_settings

from dashboard.app import create_app
from dashboard.settings import DashboardSettings

pytestmark = pytest.mark.kafka


def _no_clickhouse():
    raise AssertionError("the live page does not read ClickHouse")


def test_a_sale_reaches_the_live_stream_within_5_seconds(kafka_bootstrap, unique_name, tmp_path):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    dashboard = DashboardSettings(
        dashboard_counters_url=settings.web_url,
        dashboard_live_interval_seconds=0.2,
        dashboard_live_max_seconds=0.2,  # one event per request
    )
    client = TestClient(create_app(dashboard, client_factory=_no_clickhouse))

    def revenue(channel: str = "(none)") -> str | None:
        text = client.get("/live/stream?window=today&model=last_touch").text
        (event,) = [json.loads(m) for m in re.findall(r"^data: (.*)$", text, flags=re.M)]
        assert not event["error"], event["message"]
        return next((row["revenue"] for row in event["rows"] if row["channel"] == channel), None)

    with running_worker(settings, tmp_path):
        # A first sale warms the worker up (partitions assigned, tables recovered): no bound on it.
        send(settings, as_records(settings, [crm("won-warm", at(1), "customer", email="warm@example.com", value="1")]))
        wait_for(lambda: revenue() == "1.00", 90, "the first sale in the live stream", interval=0.2)
        sent = time.monotonic()
        send(settings, as_records(settings, [crm("won-2", at(1), "customer", email="ann@example.com", value="250")]))
        wait_for(lambda: revenue() == "251.00", 5, "the second sale in the live stream within 5 s", interval=0.2)
        assert time.monotonic() - sent < 5
