"""``closedloop report``: the channel reports of ``sinks/reports/*.sql`` as a table, CSV or JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import click

from closedloop.commands._clickhouse_cli import (
    FORMATS,
    clickhouse_errors_readable,
    errors,
    print_text_or_table,
    sink_settings,
)
from schemas.events import STAGES
from schemas.outputs import DATA_DRIVEN_MODELS, AttributionModel

MODELS = [m.value for m in AttributionModel]


def _period(function):
    today = datetime.now(timezone.utc).date()
    function = click.option(
        "--to",
        "date_to",
        type=click.DateTime(["%Y-%m-%d"]),
        default=str(today),
        show_default="today (UTC)",
        help="Last day, inclusive.",
    )(function)
    function = click.option(
        "--from",
        "date_from",
        type=click.DateTime(["%Y-%m-%d"]),
        default=str(today - timedelta(days=29)),
        show_default="30 days ago",
        help="First day, inclusive (YYYY-MM-DD).",
    )(function)
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)(function)


def _run(fmt: str, *reports: tuple[str, str, dict]) -> None:
    """Run and print each ``(report, title, parameters)``; when every one is empty, say so on stderr and name
    the period that holds data (the default period, the last 30 days, is often not the demo's)."""
    from sinks.client import connect
    from sinks.reports import data_period, no_data_message, render, run_report

    empty = True
    documents: dict[str, object] = {}  # JSON of several reports: one object keyed by report, one document
    with clickhouse_errors_readable():
        client = connect(sink_settings())
        try:
            for name, title, params in reports:
                params = {k: v.date() if isinstance(v, datetime) else v for k, v in params.items()}
                result = run_report(client, name, **params)
                empty = empty and not result.rows
                if fmt == "json" and len(reports) > 1:
                    documents[name] = json.loads(render(result, fmt, title=title))
                else:
                    print_text_or_table(render(result, fmt, title=title))
            if documents:
                print_text_or_table(json.dumps(documents, indent=2))
            if empty:
                date_from, date_to = params["date_from"], params["date_to"]
                errors.print(
                    no_data_message(date_from, date_to, data_period(client)),
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
        finally:
            client.close()


def _dates(date_from: datetime, date_to: datetime) -> dict:
    return {"date_from": date_from, "date_to": date_to}


def _span(date_from: datetime, date_to: datetime) -> str:
    return f"{date_from:%Y-%m-%d} .. {date_to:%Y-%m-%d}"


@click.group("report")
def command() -> None:
    """Which channels bring leads, customers and revenue, at what cost."""


@command.command("channels")
@click.option(
    "--model",
    type=click.Choice(MODELS + list(DATA_DRIVEN_MODELS)),
    default="linear",
    show_default=True,
    help="A rule-based model, or a data-driven one as `closedloop attribute` computed it for exactly this period.",
)
@click.option("--by", "by", type=click.Choice(["channel", "campaign"]), default="channel", show_default=True)
@click.option(
    "--source",
    type=click.Choice(["raw", "rollup"]),
    default="raw",
    show_default=True,
    help="raw: exact (FINAL, newest versions); rollup: the materialized roll-ups, fast, sums not replay-exact.",
)
@_period
def channels(model: str, by: str, source: str, date_from: datetime, date_to: datetime, fmt: str) -> None:
    """Per channel: visitors, credited leads/MQLs/SQLs/customers/lost, revenue, spend, CPL, CAC, ROAS, rates.

    Stage counts and revenue are credited under MODEL (sums of credit shares); --model first_touch gives the
    plain counts by first touch. Visitors are distinct visitors with a touch on the channel in the period.
    """
    _run(
        fmt,
        (
            "channels" if source == "raw" else "channels-rollup",
            f"channels · {model} · {_span(date_from, date_to)}",
            {"model": model, "by_campaign": by == "campaign", "date_from": date_from, "date_to": date_to},
        ),
    )


@command.command("overview")
@click.option("--daily", is_flag=True, help="One row per day of the period (the dashboard's trend).")
@_period
def overview(daily: bool, date_from: datetime, date_to: datetime, fmt: str) -> None:
    """The period's leads, customers, revenue, spend, ROAS and CAC: plain counts, no model (every model's credits
    add up to them); the dashboard's overview shows the same figures."""
    name, title = ("trend", "day by day") if daily else ("overview", "overview")
    _run(fmt, (name, f"{title} · {_span(date_from, date_to)}", _dates(date_from, date_to)))


@command.command("quality")
@click.option("--model", type=click.Choice(MODELS), default="first_touch", show_default=True)
@click.option("--by", "by", type=click.Choice(["channel", "campaign"]), default="channel", show_default=True)
@_period
def quality(model: str, by: str, date_from: datetime, date_to: datetime, fmt: str) -> None:
    """Lead quality per channel: of the leads that arrived in the period, the shares that reached MQL, SQL and
    customer or were lost, the top lost reasons, the average deal value and the median sales cycle in days.

    Leads are credited under MODEL (first_touch: the channel that first brought each lead); each lead's outcome
    counts with the channel's credit for it.
    """
    _run(
        fmt,
        (
            "quality",
            f"lead quality · {model} · {_span(date_from, date_to)}",
            {"model": model, "by_campaign": by == "campaign", **_dates(date_from, date_to)},
        ),
    )


@command.command("ready-leads")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True, help="Rows at most.")
@_period
def ready_leads(limit: int, date_from: datetime, date_to: datetime, fmt: str) -> None:
    """Sales-ready leads of the period (by when they became ready), newest first: the reason (threshold or the
    hand-raiser rule), the score and each rule's points, the first touch, the channels of the touches, the newest
    pages and the forms (docs/SCORING.md). One row per lead and readiness cycle."""
    _run(
        fmt,
        (
            "ready-leads",
            f"sales-ready leads · {_span(date_from, date_to)}",
            {"limit": limit, **_dates(date_from, date_to)},
        ),
    )


@command.command("funnel")
@click.option("--model", type=click.Choice(MODELS), default="first_touch", show_default=True)
@_period
def funnel(model: str, date_from: datetime, date_to: datetime, fmt: str) -> None:
    """Stage to stage by channel (credited under MODEL; first_touch = plain counts by first touch)."""
    _run(
        fmt,
        ("funnel", f"funnel · {model} · {_span(date_from, date_to)}", {"model": model, **_dates(date_from, date_to)}),
    )


@command.command("paths")
@click.option("--stage", default="customer", show_default=True, help="Conversions whose journeys are counted.")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option(
    "--pages", type=click.IntRange(1, 50), default=5, show_default=True, help="Page views kept before the form."
)
@_period
def paths(stage: str, limit: int, pages: int, date_from: datetime, date_to: datetime, fmt: str) -> None:
    """The most common channel paths of converting leads, then the page sequences before the form."""
    _run(
        fmt,
        (
            "paths",
            f"channel paths to {stage} · {_span(date_from, date_to)}",
            {"stage": stage, "limit": limit, **_dates(date_from, date_to)},
        ),
        (
            "page-paths",
            f"pages before the form · {_span(date_from, date_to)}",
            {"pages": pages, "limit": limit, **_dates(date_from, date_to)},
        ),
    )


@command.command("time-to-convert")
@_period
def time_to_convert(date_from: datetime, date_to: datetime, fmt: str) -> None:
    """Median days from first touch to lead and from lead to customer, by first-touch channel."""
    _run(fmt, ("time-to-convert", f"time to convert · {_span(date_from, date_to)}", _dates(date_from, date_to)))


@command.command("compare-models")
@_period
def compare_models(date_from: datetime, date_to: datetime, fmt: str) -> None:
    """Customer revenue per channel under every attribution model, side by side; the data-driven ones (markov_1-3,
    shapley) as `closedloop attribute --stage customer` last computed them for exactly this period (else 0.00)."""
    _run(fmt, ("compare-models", f"revenue by model · {_span(date_from, date_to)}", _dates(date_from, date_to)))


@command.command("data-driven")
@click.option("--stage", type=click.Choice(list(STAGES)), default="customer", show_default=True)
@_period
def data_driven(stage: str, date_from: datetime, date_to: datetime, fmt: str) -> None:
    """Markov (orders 1-3) and Shapley credits per channel with 95% bootstrap intervals, as `closedloop attribute`
    last computed them for exactly this stage and period."""
    _run(
        fmt,
        (
            "data-driven",
            f"data-driven · {stage} · {_span(date_from, date_to)}",
            {"stage": stage, **_dates(date_from, date_to)},
        ),
    )


@command.command("landing-pages")
@click.option("--model", type=click.Choice(MODELS), default="linear", show_default=True)
@click.option("--by", "by", type=click.Choice(["channel", "page"]), default="channel", show_default=True)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@_period
def landing_pages(model: str, by: str, limit: int, date_from: datetime, date_to: datetime, fmt: str) -> None:
    """Per landing page (and channel): sessions that started there, and the leads, customers and revenue they led
    to, credited under MODEL, with the rates per session.

    A touch is a session start, so sessions count the touches that landed on the page; --by page adds up the
    channels.
    """
    _run(
        fmt,
        (
            "landing-pages",
            f"landing pages · {model} · {_span(date_from, date_to)}",
            {"model": model, "by_channel": by == "channel", "limit": limit, **_dates(date_from, date_to)},
        ),
    )


@command.command("ideal-path")
@click.option("--stage", type=click.Choice(list(STAGES)), default="customer", show_default=True)
@click.option(
    "--by",
    "by",
    type=click.Choice(["channel", "landing-page"]),
    default="channel",
    show_default=True,
    help="What a step of a path is: the touch's channel or its landing page.",
)
@click.option(
    "--order",
    type=click.Choice(["common", "fastest"]),
    default="common",
    show_default=True,
    help="common: most conversions first; fastest: lowest median days to convert first.",
)
@click.option(
    "--min-conversions",
    type=click.IntRange(1, 1_000_000),
    default=1,
    show_default=True,
    help="With --order fastest: paths with fewer conversions go last.",
)
@click.option("--lookback-days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@_period
def ideal_path(
    stage: str,
    by: str,
    order: str,
    min_conversions: int,
    lookback_days: int,
    limit: int,
    date_from: datetime,
    date_to: datetime,
    fmt: str,
) -> None:
    """The paths of the period's journeys to STAGE, converting and not side by side: journeys, conversions,
    conversion rate and median days from the first touch to the conversion (docs/ATTRIBUTION.md, "Journeys")."""
    _run(
        fmt,
        (
            "ideal-path",
            f"paths to {stage} · by {by} · {order} · {_span(date_from, date_to)}",
            {
                "stage": stage,
                "by": by.replace("-", "_"),
                "order": order,
                "min_conversions": min_conversions,
                "lookback_days": lookback_days,
                "limit": limit,
                **_dates(date_from, date_to),
            },
        ),
    )


@command.command("payback")
@click.option(
    "--from",
    "date_from",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m"]),
    default=f"{datetime.now(timezone.utc).year - 1}-{datetime.now(timezone.utc).month:02d}",
    show_default="the same month last year",
    help="First cohort month (YYYY-MM or a day in it).",
)
@click.option(
    "--to",
    "date_to",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m"]),
    default=f"{datetime.now(timezone.utc):%Y-%m}",
    show_default="this month",
    help="Last cohort month (YYYY-MM or a day in it).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def payback(date_from: datetime, date_to: datetime, fmt: str) -> None:
    """Cohort CAC and payback: per month of first touch and channel, the spend against the cumulative revenue of
    the customers first touched then, and the month in which it paid back (payback_months, 0 = the same month)."""
    _run(
        fmt,
        ("payback", f"payback by cohort · {date_from:%Y-%m} .. {date_to:%Y-%m}", _dates(date_from, date_to)),
    )


@command.command("accounts")
@click.option(
    "--by",
    "by",
    type=click.Choice(["account", "channel"]),
    default="account",
    show_default=True,
    help="account: one row per account; channel: account-level attribution of opportunities and revenue.",
)
@click.option("--lookback-days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@_period
def accounts(by: str, lookback_days: int, limit: int, date_from: datetime, date_to: datetime, fmt: str) -> None:
    """B2B accounts: leads grouped by their email's domain (free-mail domains left out; the table
    free_mail_domains lists them). --by account: people, touches, channels, first opportunity and win, revenue,
    buying-committee size. --by channel: each account's first opportunity and first win credited linearly over the
    touches of all its people."""
    if by == "account":
        report = ("accounts", f"accounts · {_span(date_from, date_to)}", {"limit": limit, **_dates(date_from, date_to)})
    else:
        report = (
            "account-channels",
            f"accounts by channel · linear · {_span(date_from, date_to)}",
            {"lookback_days": lookback_days, **_dates(date_from, date_to)},
        )
    _run(fmt, report)


@command.command("content")
@click.option("--stage", type=click.Choice(list(STAGES)), default="customer", show_default=True)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="PATTERN",
    help="A page group, e.g. '/blog/*' ('*': any characters); repeat for more. Other pages are their own group.",
)
@click.option("--lookback-days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@_period
def content(
    stage: str,
    groups: tuple[str, ...],
    lookback_days: int,
    limit: int,
    date_from: datetime,
    date_to: datetime,
    fmt: str,
) -> None:
    """Which pages made them decide: per page or page group, the converting and the non-converting journeys that
    viewed it, the lift (how much likelier it is in a converting journey) and page-level linear credits."""
    _run(
        fmt,
        (
            "content",
            f"content influence on {stage} · {_span(date_from, date_to)}",
            {
                "stage": stage,
                "groups": list(groups),
                "lookback_days": lookback_days,
                "limit": limit,
                **_dates(date_from, date_to),
            },
        ),
    )


@command.command("ads-feedback")
@_period
def ads_feedback(date_from: datetime, date_to: datetime, fmt: str) -> None:
    """The ad platforms' audit trail (docs/ADS.md): conversions exported (closedloop export ads) or sent to Meta's
    and LinkedIn's APIs (closedloop deliver) in the period, per platform, route, action, stage, status, currency."""
    _run(fmt, ("ads-feedback", f"fed back to ad platforms · {_span(date_from, date_to)}", _dates(date_from, date_to)))
