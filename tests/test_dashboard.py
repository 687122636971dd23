"""The dashboard without ClickHouse: who may read it, readable pages for bad parameters, the live stream, and the
chart bundle it serves (built from the committed lock file, no CDN)."""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from closedloop.commands.dashboard import command as dashboard_command
from dashboard.access import DashboardAccessError, check_binding, is_loopback
from dashboard.app import create_app
from dashboard.settings import DashboardSettings
from dashboard.views import BadParameter, parse_view

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token-for-tests"


def _no_clickhouse():
    raise AssertionError("this request must not reach ClickHouse")


def _app(token: str | None = None, fetch=None, **settings) -> TestClient:
    return TestClient(
        create_app(
            DashboardSettings(dashboard_token=token, **settings), client_factory=_no_clickhouse, fetch_counters=fetch
        )
    )


# -- access ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_addresses_need_no_token(host):
    assert is_loopback(host)
    check_binding(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "dashboard.example.com"])
def test_any_other_address_is_refused_without_a_token(host):
    assert not is_loopback(host)
    with pytest.raises(DashboardAccessError, match="CLOSEDLOOP_DASHBOARD_TOKEN"):
        check_binding(host, None)
    check_binding(host, TOKEN)


def test_the_command_refuses_to_start_on_a_public_address_without_a_token(monkeypatch):
    monkeypatch.delenv("CLOSEDLOOP_DASHBOARD_TOKEN", raising=False)
    result = CliRunner().invoke(dashboard_command, ["--host", "0.0.0.0", "--port", "8080"])
    assert result.exit_code == 1
    assert "not a loopback address" in result.output and "CLOSEDLOOP_DASHBOARD_TOKEN" in result.output


def test_with_a_token_every_request_without_it_gets_401():
    client = _app(TOKEN)
    for path in ("/", "/channels", "/csv/channels", "/live", "/live/stream", "/static/charts.js", "/nowhere"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic realm=")
        assert TOKEN not in response.text
    assert client.get("/live", headers={"Authorization": "Bearer wrong"}).status_code == 401
    wrong = base64.b64encode(b"marketing:wrong").decode()
    assert client.get("/live", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    assert client.get("/live", headers={"Authorization": "Basic !!notbase64"}).status_code == 401


def test_with_a_token_the_bearer_header_or_basic_auth_opens_it():
    client = _app(TOKEN)
    assert client.get("/live", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert client.get("/static/dashboard.css", headers={"Authorization": f"Basic {basic}"}).status_code == 200


# -- bad parameters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "what", "where"),
    [
        ("from=2024-02-30", "'2024-02-30' is not a date", "the URL parameter 'from'"),
        ("to=yesterday", "'yesterday' is not a date", "the URL parameter 'to'"),
        ("from=2024-03-01&to=2024-02-01", "ends before it", "'from' and 'to'"),
        ("from=2010-01-01&to=2024-01-01", "longer than", "'from' and 'to'"),
        ("model=magic", "unknown attribution model 'magic'", "the URL parameter 'model'"),
    ],
)
@pytest.mark.parametrize("path", ["/", "/channels", "/funnel", "/paths", "/csv/channels"])
def test_a_bad_parameter_gives_a_readable_400_page(path, query, what, where):
    response = _app().get(f"{path}?{query}")
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    text = html.unescape(response.text)
    assert "<strong>What:</strong>" in text and what in text
    assert "<strong>Where:</strong>" in text and where in text
    assert "<strong>How to fix it:</strong>" in text


def test_the_model_message_lists_the_models():
    text = _app().get("/channels?model=magic").text
    for model in ("first_touch", "linear", "w_shaped", "markov_1", "shapley"):
        assert model in text


def test_unknown_addresses_and_tables_are_readable_404s():
    client = _app()
    response = client.get("/no/such/page")
    assert response.status_code == 404 and "nothing at /no/such/page" in response.text
    response = client.get("/csv/nonsense")
    assert response.status_code == 404 and "use one of: overview" in response.text


def test_live_page_parameters_are_checked():
    client = _app()
    assert client.get("/live?window=5m").status_code == 400
    response = client.get("/live?model=linear")
    assert response.status_code == 400 and "last_touch, first_touch" in response.text


def test_the_view_defaults_and_previous_period():
    view = parse_view({}, today=date(2024, 3, 31))
    assert (view.date_from, view.date_to, view.model) == (date(2024, 3, 2), date(2024, 3, 31), "linear")
    previous = view.previous()
    assert (previous.date_from, previous.date_to) == (date(2024, 2, 1), date(2024, 3, 1))  # 30 days, leap February
    assert parse_view({"model": "markov_2"}).rule_model == "first_touch"
    assert "channel=Paid+Search" in parse_view({"channel": "Paid Search"}).query()
    with pytest.raises(BadParameter) as error:
        parse_view({"from": "13/01/2024"})
    assert "YYYY-MM-DD" in str(error.value)


# -- live ----------------------------------------------------------------------------------------------------------


def _counters(revenue: str) -> dict:
    return {
        "window": "1h",
        "window_start": "2024-04-01T10:00:00+00:00",
        "time": "processing",
        "dead_letters": 2,
        "rows": [
            {"model": "last_touch", "channel": "Email", "stage": "lead", "conversions": 3, "revenue": "0"},
            {"model": "last_touch", "channel": "Email", "stage": "customer", "conversions": 1, "revenue": revenue},
            {"model": "last_touch", "channel": "Paid Search", "stage": "lead", "conversions": 5, "revenue": "0"},
            {"model": "first_touch", "channel": "Referral", "stage": "lead", "conversions": 8, "revenue": "0"},
        ],
    }


def _events(text: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"^data: (.*)$", text, flags=re.M)]


def test_the_live_stream_sends_each_poll_of_the_counters_as_an_event():
    polls: list[str] = []

    async def fetch(window: str) -> dict:
        polls.append(window)
        return _counters(f"{100 * len(polls)}.50")

    client = _app(fetch=fetch, dashboard_live_interval_seconds=0.2, dashboard_live_max_seconds=0.6)
    response = client.get("/live/stream?window=1h&model=last_touch")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert len(events) == 3 and polls == ["1h", "1h", "1h"]  # bounded: the stream ends, the browser reconnects
    first = events[0]
    assert first["rows"] == [
        {"channel": "Email", "revenue": "100.50", "lead": 3, "customer": 1},
        {"channel": "Paid Search", "revenue": "0.00", "lead": 5},
    ]
    assert first["stages"] == ["lead", "customer"]
    assert "dead letters: 2" in first["message"] and not first["error"]
    assert [e["rows"][0]["revenue"] for e in events] == ["100.50", "200.50", "300.50"]
    assert first["option"]["yAxis"]["data"] == ["Paid Search", "Email"]


def test_the_live_stream_says_when_the_worker_cannot_be_read():
    async def fetch(window: str) -> dict:
        raise OSError("connection refused")

    client = _app(fetch=fetch, dashboard_live_interval_seconds=0.2, dashboard_live_max_seconds=0.2)
    (event,) = _events(client.get("/live/stream").text)
    assert event["error"] and "connection refused" in event["message"] and "closedloop worker" in event["message"]
    assert event["rows"] == []


# -- the chart bundle ----------------------------------------------------------------------------------------------


def test_the_chart_bundle_is_served_from_the_package_and_built_from_a_lock_file():
    client = _app()
    bundle = client.get("/static/charts.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    assert b"echarts" in bundle.content.lower()
    page = client.get("/live").text
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page) + re.findall(r'<link[^>]*href="([^"]+)"', page)
    assert scripts and all(src.startswith(("/static/", "data:")) for src in scripts)  # nothing from a CDN
    frontend = ROOT / "dashboard" / "frontend"
    package = json.loads((frontend / "package.json").read_text())
    lock = json.loads((frontend / "package-lock.json").read_text())
    for name, version in package["devDependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned exactly"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert "../static/charts.js" in package["scripts"]["build"]
