"""A Grafana dashboard (JSON, for the ClickHouse data source plugin ``grafana-clickhouse-datasource``) with the web
dashboard's panels, each panel's SQL made from the report's own SQL file (``sinks/reports/*.sql``): the report
parameters become Grafana's time range (``$__fromTime``, ``$__toTime``) and its ``model`` variable, or the
constants the web dashboard uses. So Grafana runs the same text as ``closedloop report``.

``python -m dashboard.grafana`` prints it; ``deploy/grafana/dashboards/closedloop.json`` is its output (a test holds
the two together and runs every panel's SQL against ClickHouse).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from dashboard.views import RULE_MODELS
from sinks.reports import REPORTS, load_sql

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
PARAMETER = re.compile(r"\{(\w+):([A-Za-z0-9(), ]+)\}")
# Grafana's side of each report parameter: its time range and the model variable.
GRAFANA_VALUES = {
    "from": "toDate($__fromTime)",
    "to": "toDate($__toTime)",
    "model": "'${model}'",
}


@dataclass(frozen=True)
class Panel:
    title: str
    report: str
    kind: str  # Grafana panel type
    constants: dict[str, str] = field(default_factory=dict)  # report parameter -> SQL literal
    width: int = 24
    height: int = 8
    format: int = 1  # the plugin's result format: 1 table, 0 time series


PANELS = (
    Panel("The period: leads, customers, revenue, spend, ROAS, CAC", "overview", "stat", {"daily": "0"}, height=5),
    Panel("Day by day", "trend", "timeseries", {"daily": "1"}, format=0),
    Panel("Channels under ${model}", "channels", "table", {"by_campaign": "0", "exact": "1"}),
    Panel("Revenue per channel under ${model}", "channels", "barchart", {"by_campaign": "0", "exact": "1"}, 12),
    Panel("Customer revenue under every model", "compare-models", "table", width=12),
    Panel("Funnel by channel under ${model}", "funnel", "table", width=12),
    Panel("Lead quality by channel under ${model}", "quality", "table", {"by_campaign": "0"}, width=12),
    Panel(
        "Paths to customer",
        "ideal-path",
        "table",
        {
            "stage": "'customer'",
            "by": "'channel'",
            "order": "'common'",
            "min_conversions": "1",
            "lookback_days": "90",
            "limit": "20",
        },
        width=12,
    ),
    Panel("Landing pages under ${model}", "landing-pages", "table", {"by_channel": "1", "limit": "50"}, width=12),
    Panel("Payback by cohort", "payback", "table"),
)


def panel_sql(panel: Panel) -> str:
    """The report's SQL with each parameter replaced by Grafana's value or the panel's constant."""
    spec = REPORTS[panel.report]
    missing = set(spec.params) - set(GRAFANA_VALUES) - set(panel.constants)
    if missing:
        raise ValueError(f"panel {panel.title!r} gives no value for {', '.join(sorted(missing))}")

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return panel.constants.get(name) or GRAFANA_VALUES[name]

    return PARAMETER.sub(value, load_sql(panel.report))


def dashboard_json() -> dict[str, Any]:
    panels, x, y, row_height = [], 0, 0, 0
    for number, panel in enumerate(PANELS, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        panels.append(
            {
                "id": number,
                "type": panel.kind,
                "title": panel.title,
                "datasource": DATASOURCE,
                "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
                "targets": [
                    {
                        "refId": "A",
                        "datasource": DATASOURCE,
                        "editorType": "sql",
                        "queryType": "table" if panel.format == 1 else "timeseries",
                        "format": panel.format,
                        "rawSql": panel_sql(panel),
                    }
                ],
                "description": f"closedloop report {panel.report} (sinks/reports/{REPORTS[panel.report].file})",
            }
        )
        x, row_height = x + panel.width, max(row_height, panel.height)
    return {
        "uid": "closedloop",
        "title": "closedloop: the loop at a glance",
        "tags": ["closedloop", "marketing"],
        "schemaVersion": 39,
        "editable": True,
        "time": {"from": "now-30d", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "ClickHouse",
                    "type": "datasource",
                    "query": "grafana-clickhouse-datasource",
                },
                {
                    "name": "model",
                    "label": "Model",
                    "type": "custom",
                    "query": ",".join(RULE_MODELS),
                    "current": {"text": "linear", "value": "linear"},
                    "options": [{"text": m, "value": m, "selected": m == "linear"} for m in RULE_MODELS],
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard_json(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")
