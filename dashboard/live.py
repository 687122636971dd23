"""The live page's data: the worker's counters (``GET /counters/?window=...``, the JSON ``closedloop watch`` reads)
as one server-sent event per poll: conversions per channel and stage, and revenue, under one model."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from schemas.events import STAGES

LIVE_MODELS = ("last_touch", "first_touch")  # the models the worker counts
WINDOWS = ("1m", "1h", "today")


def snapshot(counters: dict[str, Any] | None, model: str, error: str | None = None) -> dict[str, Any]:
    """Rows per channel (a count per stage, the revenue as a 2-place string) and the chart's option."""
    by_channel: dict[str, dict[str, Any]] = {}
    for row in (counters or {}).get("rows", []):
        if row.get("model") != model:
            continue
        entry = by_channel.setdefault(row["channel"], {"channel": row["channel"], "revenue": Decimal(0)})
        entry[row["stage"]] = entry.get(row["stage"], 0) + int(row["conversions"])
        entry["revenue"] += Decimal(str(row.get("revenue") or 0))
    rows = sorted(by_channel.values(), key=lambda r: (-r["revenue"], r["channel"]))
    for row in rows:
        row["revenue"] = f"{row['revenue']:.2f}"
    stages = [s for s in STAGES if any(s in r for r in rows)] or ["lead", "customer"]
    if error:
        message = error
    elif counters is None:
        message = "waiting for the worker's counters"
    else:
        message = (
            f"{counters.get('window', '?')} window from {str(counters.get('window_start', ''))[:19]}Z, by "
            f"{counters.get('time', 'processing')} time · {model} · dead letters: {counters.get('dead_letters', 0)}"
        )
    chart_rows = list(reversed(rows))
    option = {
        "tooltip": {"trigger": "axis", "axisPointer": {"type": "shadow"}},
        "legend": {"type": "scroll", "top": 0},
        "grid": {"left": 8, "right": 24, "top": 32, "bottom": 8, "containLabel": True},
        "xAxis": {"type": "value", "minInterval": 1},
        "yAxis": {"type": "category", "data": [r["channel"] for r in chart_rows]},
        "series": [
            {"type": "bar", "name": stage, "stack": "stages", "data": [r.get(stage, 0) for r in chart_rows]}
            for stage in stages
        ],
        "animation": False,
    }
    return {"rows": rows, "stages": stages, "message": message, "error": bool(error), "option": option}


def event(data: dict[str, Any]) -> str:
    return f"event: counters\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
