"""The live page on the real pipeline's front half: a lead's page view and form, and then its won deal, posted to a
running collector's HTTP API (``POST /v1/events``, the generic CRM webhook), go through Kafka to a real stream
worker, whose counters the dashboard's live page (open in headless Chromium) polls; the deal's revenue shows up in
the page, under the page view's channel, within 5 s of the first POST, without a reload."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from collector_support import CRM_SECRET, collector_settings
from dashboard_support import chromium_browser, serving
from test_worker import KEY, create_all_topics, running_worker, worker_settings

from collector.app import create_app as create_collector
from collector.webhooks.generic import sign
from dashboard.app import create_app as create_dashboard
from dashboard.settings import DashboardSettings

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

SITE = "https://shop.example.com"
WRITE_KEY = {"X-Closedloop-Key": "demo-write-key"}  # the collector's default site key


def _no_clickhouse():
    raise AssertionError("the live page does not read ClickHouse")


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _won_deal(http: httpx.Client, deal: str, email: str, value: str) -> None:
    body = json.dumps(
        {
            "source": "dashboard-test",
            "events": [
                {
                    "id": deal,
                    "stage": "customer",
                    "occurred_at": _iso(datetime.now(timezone.utc)),
                    "email": email,
                    "value": value,
                    "currency": "EUR",
                }
            ],
        }
    ).encode()
    headers = {"Content-Type": "application/json", "X-Closedloop-Signature": sign(CRM_SECRET, body)}
    answer = http.post("/v1/webhooks/crm", content=body, headers=headers)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text


def _lead(http: httpx.Client, visitor: str, email: str) -> None:
    """A visit from the newsletter (an Email touch) and a form on the same visit: the lead."""
    now = datetime.now(timezone.utc)
    events = [
        {
            "type": "page_view",
            "event_id": f"pv-{visitor}",
            "visitor_id": visitor,
            "url": f"{SITE}/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=december",
            "occurred_at": _iso(now - timedelta(minutes=2)),
        },
        {
            "type": "identify",
            "event_id": f"form-{visitor}",
            "visitor_id": visitor,
            "email": email,
            "form_id": "demo-request",
            "occurred_at": _iso(now - timedelta(minutes=1)),
        },
    ]
    answer = http.post("/v1/events", json=events, headers=WRITE_KEY)
    assert answer.status_code == 200 and answer.json()["accepted"] == 2, answer.text


def _shows(channel: str, revenue: str) -> str:
    """A condition for the page: the live table has ``channel``'s row with ``revenue`` in its last cell."""
    return (
        "Array.from(document.querySelectorAll('#live-table tbody tr')).some(row => {"
        " const cells = row.querySelectorAll('td');"
        f" return cells.length > 1 && cells[0].textContent.trim() === {json.dumps(channel)}"
        f" && cells[cells.length - 1].textContent.trim() === {json.dumps(revenue)}; }})"
    )


def test_a_sale_sent_through_the_collector_shows_in_the_live_panel_within_5_seconds(
    kafka_bootstrap, unique_name, tmp_path
):
    settings = worker_settings(kafka_bootstrap, unique_name, tmp_path / "data")
    create_all_topics(settings)
    collector = collector_settings(
        tmp_path / "collector", bootstrap=kafka_bootstrap, prefix=unique_name, lead_id_key=KEY
    )
    dashboard = DashboardSettings(
        dashboard_counters_url=settings.web_url,
        dashboard_live_interval_seconds=0.2,
        dashboard_live_max_seconds=60.0,
    )
    page_errors: list[str] = []
    with (
        chromium_browser() as browser,
        running_worker(settings, tmp_path),
        serving(create_collector(collector)) as collector_url,
        serving(create_dashboard(dashboard, client_factory=_no_clickhouse)) as dashboard_url,
        httpx.Client(base_url=collector_url, timeout=10) as http,
    ):
        page: Any = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.goto(f"{dashboard_url}/live?window=today&model=last_touch")
        # A first sale warms the worker up (partitions assigned, tables recovered): no bound on it but 90 s.
        _won_deal(http, "won-warm", "warm@example.com", "1")
        page.wait_for_function(_shows("(none)", "1.00"), timeout=90_000)

        sent = time.monotonic()
        _lead(http, "v-ann", "ann@example.com")
        _won_deal(http, "won-ann", "ann@example.com", "250")
        page.wait_for_function(_shows("Email", "250.00"), timeout=5_000, polling=50)
        elapsed = time.monotonic() - sent
        assert elapsed < 5, f"the sale took {elapsed:.2f} s to reach the live panel"
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
        assert page.locator("#live-chart svg").count() == 1
    assert page_errors == []
