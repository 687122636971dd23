"""The dashboard's HTML: one layout (navigation, the pickers as a GET form, so the URL holds the view), tables with
their CSV link, chart placeholders that ``static/charts.js`` fills, and the message page for bad parameters."""

from __future__ import annotations

import json
from html import escape
from itertools import count

from dashboard.views import MODELS, View
from sinks.reports import ReportResult, to_cells

PAGES = (("/", "Overview"), ("/channels", "Channels"), ("/funnel", "Funnel"), ("/paths", "Paths & content"))
_ids = count()


def nav(path: str, view: View | None) -> str:
    query = f"?{view.query()}" if view else ""
    links = [
        f'<a href="{href}{query}"{" aria-current=page" if href == path else ""}>{label}</a>' for href, label in PAGES
    ]
    live = f'<a href="/live"{" aria-current=page" if path == "/live" else ""}>Live</a>'
    return f'<nav><span class="brand">closedloop</span>{"".join(links)}{live}</nav>'


def pickers(path: str, view: View, channels: list[str], campaigns: list[str]) -> str:
    def options(values, chosen: str, empty: str) -> str:
        items = [f'<option value="">{escape(empty)}</option>'] if empty else []
        items += [
            f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>' for v in values
        ]
        return "".join(items)

    channel_values = sorted(set(channels) | ({view.channel} if view.channel else set()))
    campaign_values = sorted(set(campaigns) | ({view.campaign} if view.campaign else set()))
    return (
        f'<form class="pickers" method="get" action="{path}">'
        f'<label>From <input type="date" name="from" value="{view.date_from}"></label>'
        f'<label>To <input type="date" name="to" value="{view.date_to}"></label>'
        f'<label>Model <select name="model">{options(MODELS, view.model, "")}</select></label>'
        f'<label>Channel <select name="channel">{options(channel_values, view.channel, "all")}</select></label>'
        f'<label>Campaign <select name="campaign">{options(campaign_values, view.campaign, "all")}</select></label>'
        '<button type="submit">Show</button></form>'
    )


def layout(title: str, path: str, body: str, view: View | None = None, controls: str = "") -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · closedloop</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/dashboard.css">'
        '<script src="/static/charts.js" defer></script>'
        f"</head><body>{nav(path, view)}<main><h1>{escape(title)}</h1>{controls}{body}</main></body></html>"
    )


def table(key: str, title: str, result: ReportResult, view: View, command: str, note: str = "") -> str:
    """A report table as the CLI prints it (``to_cells``), with its CSV download and the command that prints it."""
    names, numeric, rows = to_cells(result)
    head = "".join(f"<th{' class=num' if n else ''}>{escape(c)}</th>" for c, n in zip(names, numeric, strict=True))
    if rows:
        body = "".join(
            "<tr>"
            + "".join(f"<td{' class=num' if n else ''}>{escape(v)}</td>" for v, n in zip(row, numeric, strict=True))
            + "</tr>"
            for row in rows
        )
    else:
        body = f'<tr><td colspan="{max(len(names), 1)}" class="muted">no rows for this view</td></tr>'
    note_html = f'<p class="muted">{escape(note)}</p>' if note else ""
    return (
        f'<section class="report" id="{escape(key)}"><header><h2>{escape(title)}</h2>'
        f'<a class="csv" href="/csv/{escape(key)}?{escape(view.query())}" download>CSV</a></header>{note_html}'
        f'<div class="scroll"><table data-table="{escape(key)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
        f'<p class="command"><code>{escape(command)}</code></p></section>'
    )


def chart(title: str, option: dict, height: int = 320) -> str:
    """A chart placeholder and its ECharts option as JSON (``<`` escaped, so no text ends the script element)."""
    ident = f"chart-{next(_ids)}"
    data = json.dumps(option, separators=(",", ":")).replace("<", "\\u003c")
    return (
        f'<figure class="chart-box"><figcaption>{escape(title)}</figcaption>'
        f'<div class="chart" data-option="{ident}" style="height:{height}px"></div>'
        f'<script type="application/json" id="{ident}">{data}</script></figure>'
    )


def message_page(status: int, what: str, where: str, how: str, path: str = "/") -> str:
    body = (
        f'<section class="message" data-status="{status}"><p><strong>What:</strong> {escape(what)}</p>'
        f"<p><strong>Where:</strong> {escape(where)}</p><p><strong>How to fix it:</strong> {escape(how)}</p>"
        f'<p><a href="{escape(path)}">Open this page with the default view</a></p></section>'
    )
    return layout("This view cannot be shown", path, body)
