"""The dashboard shows exactly what ``closedloop report`` computes: its tables are ``to_cells`` of ``run_report``
for the same period and model, switching the model changes them, the CSV downloads are ``to_csv``, and its
ClickHouse client cannot write. Data: ``test_reports_journeys``' script (January and February 2024)."""

from __future__ import annotations

from datetime import date
from typing import Iterator

import dashboard_support
import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError
from dashboard_support import PERIOD, parse_page
from starlette.testclient import TestClient
from test_reports_journeys import FROM, TO

from dashboard.app import create_app, read_only_client
from dashboard.settings import DashboardSettings
from dashboard.tables import TABLES, run_table
from dashboard.views import parse_view
from sinks.reports import run_report, to_cells, to_csv

pytestmark = pytest.mark.clickhouse
dashboard_settings = dashboard_support.dashboard_settings  # the module's database of scripted journeys


@pytest.fixture(scope="module")
def app_client(dashboard_settings: DashboardSettings) -> Iterator[TestClient]:
    with TestClient(create_app(dashboard_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def reports(dashboard_settings: DashboardSettings):
    client = read_only_client(dashboard_settings)
    yield client
    client.close()


def _cells(result) -> dict:
    names, _, rows = to_cells(result)
    return {"head": names, "rows": rows}


def test_overview_figures_are_the_overview_report_worked_out_by_hand(app_client, reports):
    page = parse_page(app_client.get(f"/?{PERIOD}").text)
    expected = run_report(reports, "overview", date_from=FROM, date_to=TO)
    assert page.tables["overview"] == _cells(expected)
    # By hand: leads A, B, C, E, F; customers A 600, C 400, F 90 (B's is in March); spend 100+100+50+20+10.
    assert page.kpis == {
        "leads": "5",
        "customers": "3",
        "revenue": "1,090.00",
        "spend": "280.00",
        "roas": "3.8929",
        "cac": "93.33",
    }
    assert page.tables["trend"] == _cells(run_report(reports, "trend", date_from=FROM, date_to=TO))
    assert len(page.tables["trend"]["rows"]) == (TO - FROM).days + 1
    # The previous period: the 60 days before, 2023-11-02 .. 2023-12-31, where only C's first touch falls.
    previous = parse_view({"from": str(FROM), "to": str(TO)}).previous()
    assert (previous.date_from, previous.date_to) == (date(2023, 11, 2), date(2023, 12, 31))
    expected_previous = run_report(reports, "overview", date_from=previous.date_from, date_to=previous.date_to)
    assert page.tables["overview-previous"] == _cells(expected_previous)
    assert expected_previous.records()[0]["leads"] == 0


def test_the_overview_totals_are_the_channel_reports_totals(reports):
    total = run_report(reports, "overview", date_from=FROM, date_to=TO).records()[0]
    for model in ("first_touch", "linear", "w_shaped"):
        rows = run_report(reports, "channels", model=model, date_from=FROM, date_to=TO, by_campaign=False).records()
        assert sum(r["leads"] for r in rows) == total["leads"]
        assert sum(r["customers"] for r in rows) == total["customers"]
        assert sum(r["revenue"] for r in rows) == total["revenue"]
        assert sum(r["spend"] for r in rows) == total["spend"]


def test_channel_tables_equal_the_reports_and_follow_the_model(app_client, reports):
    shown = {}
    for model in ("first_touch", "last_touch"):
        page = parse_page(app_client.get(f"/channels?{PERIOD}&model={model}").text)
        expected = run_report(reports, "channels", model=model, date_from=FROM, date_to=TO, by_campaign=False)
        assert page.tables["channels"] == _cells(expected)
        assert page.tables["compare-models"] == _cells(
            run_report(reports, "compare-models", date_from=FROM, date_to=TO)
        )
        shown[model] = page.tables["channels"]
    assert shown["first_touch"] != shown["last_touch"]  # A: Paid Search first, Email last


def test_every_page_shows_its_tables_as_the_reports_give_them(app_client, reports):
    view = parse_view({"from": str(FROM), "to": str(TO), "model": "u_shaped"})
    for path, keys in {
        "/funnel": ["funnel", "quality"],
        "/paths": ["ideal-path", "landing-pages", "content", "payback", "accounts"],
    }.items():
        response = app_client.get(f"{path}?{view.query()}")
        assert response.status_code == 200, response.text
        page = parse_page(response.text)
        for key in keys:
            assert page.tables[key] == _cells(run_table(reports, key, view)), key


def test_every_csv_download_is_the_reports_csv(app_client, reports):
    view = parse_view({"from": str(FROM), "to": str(TO), "model": "time_decay"})
    for key in TABLES:
        response = app_client.get(f"/csv/{key}?{view.query()}")
        assert response.status_code == 200, (key, response.text)
        assert response.headers["content-type"].startswith("text/csv")
        assert response.text == to_csv(run_table(reports, key, view)), key
    direct = run_report(reports, "channels", model="time_decay", date_from=FROM, date_to=TO, by_campaign=False)
    assert app_client.get(f"/csv/channels?{view.query()}").text == to_csv(direct)


def test_a_channel_picked_narrows_every_table_to_it(app_client):
    page = parse_page(app_client.get(f"/channels?{PERIOD}&channel=Paid+Search").text)
    rows = page.tables["channels"]["rows"]
    assert [r[0] for r in rows] == ["Paid Search"]
    assert [r[0] for r in page.tables["compare-models"]["rows"]] == ["Paid Search"]


def test_a_data_driven_model_not_computed_says_which_command_computes_it(app_client):
    response = app_client.get(f"/channels?{PERIOD}&model=markov_1")
    assert response.status_code == 400
    assert "closedloop attribute --model markov --order 1" in response.text


def test_an_empty_period_names_the_period_that_has_data(app_client):
    text = app_client.get("/channels?from=2020-01-01&to=2020-01-31").text
    assert "No data from 2020-01-01 to 2020-01-31" in text and "2023-12-20" in text


def test_the_dashboards_client_cannot_write(dashboard_settings, reports):
    with pytest.raises(ClickHouseError, match="(?i)readonly"):
        reports.command("CREATE TABLE dashboard_was_here (x UInt8) ENGINE = Memory")
    with pytest.raises(ClickHouseError, match="(?i)readonly"):
        reports.command("INSERT INTO spend (date, channel, cost, currency) VALUES ('2024-01-01', 'x', 1, 'EUR')")


def test_the_pickers_list_the_channels_and_campaigns_the_channel_report_shows(app_client, reports):
    from dashboard.pages import choices

    view = parse_view({"from": str(FROM), "to": str(TO)})
    for model in ("first_touch", "linear", "last_touch"):
        rows = run_report(reports, "channels", model=model, date_from=FROM, date_to=TO, by_campaign=True).records()
        assert choices(reports, view) == (
            sorted({r["channel"] for r in rows}),
            sorted({r["campaign"] for r in rows if r["campaign"]}),
        ), model
    page = app_client.get(f"/?{PERIOD}").text
    for channel in choices(reports, view)[0]:
        assert f'<option value="{channel}">{channel}</option>' in page
