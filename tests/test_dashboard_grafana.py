"""The Grafana dashboard (``deploy/grafana/dashboards/closedloop.json``) is what ``dashboard.grafana`` makes from the
report SQL, and each panel's SQL, with Grafana's macros filled in, gives the same rows as ``run_report``."""

from __future__ import annotations

import json
from pathlib import Path

import dashboard_support
import pytest
from test_reports_journeys import FROM, TO

from dashboard.app import read_only_client
from dashboard.grafana import PANELS, dashboard_json, render
from sinks.reports import REPORTS, run_report

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "deploy" / "grafana" / "dashboards" / "closedloop.json"
dashboard_settings = dashboard_support.dashboard_settings


def test_the_committed_json_is_the_generated_one():
    assert COMMITTED.read_text() == render(), (
        "run: python -m dashboard.grafana > deploy/grafana/dashboards/closedloop.json"
    )


def test_every_panel_reads_the_clickhouse_data_source_and_has_no_parameter_left():
    document = dashboard_json()
    assert len(document["panels"]) == len(PANELS)
    for panel in document["panels"]:
        (target,) = panel["targets"]
        assert target["datasource"]["type"] == "grafana-clickhouse-datasource"
        assert ":Date}" not in target["rawSql"] and ":String}" not in target["rawSql"]
        assert "$__fromTime" in target["rawSql"] and "$__toTime" in target["rawSql"]


def _filled(sql: str, model: str) -> str:
    """What the plugin sends for the period FROM .. TO and the model variable."""
    return (
        sql.replace("$__fromTime", f"toDateTime('{FROM} 00:00:00')")
        .replace("$__toTime", f"toDateTime('{TO} 23:59:59')")
        .replace("${model}", model)
    )


@pytest.mark.clickhouse
@pytest.mark.parametrize("model", ["first_touch", "w_shaped"])
def test_each_panels_sql_gives_the_reports_rows(dashboard_settings, model):
    client = read_only_client(dashboard_settings)
    try:
        for panel, document in zip(PANELS, dashboard_json()["panels"], strict=True):
            rows = client.query(_filled(document["targets"][0]["rawSql"], model)).result_rows
            params = {"date_from": FROM, "date_to": TO}
            if "model" in REPORTS[panel.report].params:
                params["model"] = model
            for name, literal in panel.constants.items():
                if name not in ("daily", "exact"):  # the report fixes these itself
                    params[name] = json.loads(literal.replace("'", '"'))
            expected = run_report(client, panel.report, **params)
            assert [tuple(r) for r in rows] == list(expected.rows), panel.title
    finally:
        client.close()
