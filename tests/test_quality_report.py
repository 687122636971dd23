"""``closedloop report quality``: lead quality per channel, against an independent computation in this file.

Scripted leads go through the stream worker's own rules (``stream_jobs.rules.lifecycle``: every emitted version of
every conversion and its credits, as the worker would emit them) into ClickHouse through the sink's row conversion;
the expected figures are computed below from the script alone, with exact fractions, for first_touch (the first
touch's channel takes the lead) and linear (equal shares of the touches up to the lead)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction
from statistics import median

import pytest
from harness import unique

from schemas import serde
from schemas.events import CrmStatusChange
from schemas.outputs import IdentityLink, Touch
from sinks.client import connect
from sinks.migrate import migrate_up
from sinks.reports import run_report
from sinks.rows import Provenance, RecordKind, insert, rows_for
from sinks.settings import SinkSettings
from stream_jobs.rules.lifecycle import apply_crm, apply_link, credits_for

pytestmark = pytest.mark.clickhouse


def at(day: int, month: int = 3) -> datetime:
    return datetime(2024, month, day, 12, tzinfo=timezone.utc)


# lead: (touches [(day, channel)], lead day (month, day), CRM changes [(day, stage, value, reason)])
LEADS = {
    "L1": ([(1, "Paid Search"), (4, "Email")], (3, 5), [(6, "mql", None, None), (8, "sql", None, None),
                                                      (20, "customer", "1000.00", None)]),
    "L2": ([(2, "Paid Search")], (3, 3), [(4, "mql", None, None), (10, "lost", None, "price")]),
    "L3": ([(2, "Organic Search")], (3, 3), [(5, "disqualified", None, "student")]),
    "L4": ([(6, "Organic Search"), (7, "Paid Search")], (3, 8), [(9, "sql", None, None),
                                                                (12, "customer", "500.00", None)]),
    "L5": ([(10, "Paid Search")], (3, 11), [(15, "lost", None, "price")]),
    "L6": ([(1, "Email")], (4, 2), [(5, "customer", "99.00", None)]),  # arrived after the period
    "L7": ([(12, "Paid Search")], (3, 13), [(14, "lost", None, "timing")]),
}  # fmt: skip


def _emitted() -> dict[RecordKind, list]:
    out: dict[RecordKind, list] = {RecordKind.CONVERSION: [], RecordKind.CREDIT: []}
    for lead, (touches, (month, day), changes) in LEADS.items():
        journey = [
            Touch(
                touch_id=f"{lead}-t{n}",
                visitor_id=f"v-{lead}",
                site_id="s",
                occurred_at=at(touch_day),
                channel=channel,
                source="src",
                medium="m",
                campaign=f"c-{channel}",
                event_id=f"{lead}-pv{n}",
            )
            for n, (touch_day, channel) in enumerate(touches)
        ]
        link = IdentityLink(visitor_id=f"v-{lead}", lead_id=lead, linked_at=at(day, month), event_id=f"{lead}-id")
        state, conversions = apply_link(None, link, journey)
        emitted = [(state, conversions)]
        for n, (change_day, stage, value, reason) in enumerate(changes):
            change = CrmStatusChange(
                crm="generic",
                crm_object_id=f"o-{lead}",
                crm_contact_id=f"c-{lead}",
                stage=stage,
                occurred_at=at(change_day, 4 if lead == "L6" else 3),
                deal_value=None if value is None else Decimal(value),
                currency=None if value is None else "EUR",
                reason=reason,
            )
            state, conversions = apply_crm(state, change, lead_id=lead, event_id=f"{lead}-crm{n}")
            emitted.append((state, conversions))
        for state_then, conversions in emitted:
            for conversion in conversions:
                out[RecordKind.CONVERSION].append(conversion)
                out[RecordKind.CREDIT].extend(credits_for(state_then, conversion))
    return out


def expected(model: str) -> dict[str, dict]:
    """The report's rows, from the script: each lead of March weighed by the channel's share of it."""
    weights: dict[str, dict[str, Fraction]] = {}
    for lead, (touches, (month, day), _) in LEADS.items():
        if month != 3:
            continue
        before = [channel for touch_day, channel in touches if touch_day <= day]
        shares = {before[0]: Fraction(1)} if model == "first_touch" else {}
        if model == "linear":
            for channel in before:
                shares[channel] = shares.get(channel, Fraction(0)) + Fraction(1, len(before))
        for channel, share in shares.items():
            weights.setdefault(channel, {})[lead] = share
    rows = {}
    for channel, leads in weights.items():
        total = sum(leads.values())

        def rate(*stages: str, leads=leads, total=total) -> float:
            hit = sum(w for lead, w in leads.items() if any(s == c[1] for c in LEADS[lead][2] for s in stages))
            return round(float(hit / total), 4)

        won = {lead: w for lead, w in leads.items() if any(c[1] == "customer" for c in LEADS[lead][2])}
        reasons: dict[str, Fraction] = {}
        for lead, w in leads.items():
            for _, _, _, reason in LEADS[lead][2]:
                if reason:
                    reasons[reason] = reasons.get(reason, Fraction(0)) + w
        deal = {lead: Fraction(next(c[2] for c in LEADS[lead][2] if c[1] == "customer")) for lead in won}
        cycles = [next(c[0] for c in LEADS[lead][2] if c[1] == "customer") - LEADS[lead][1][1] for lead in won]
        rows[channel] = {
            "leads": Decimal(total.numerator) / Decimal(total.denominator),
            "mql_rate": rate("mql"),
            "sql_rate": rate("sql"),
            "win_rate": rate("customer"),
            "lost_rate": rate("lost", "disqualified"),
            "top_lost_reasons": "; ".join(sorted(reasons, key=lambda r: -reasons[r])[:3]),
            "avg_deal_value": round(float(sum(w * deal[lead] for lead, w in won.items()) / sum(won.values())), 2)
            if won
            else None,
            "median_days_lead_to_customer": round(float(median(cycles)), 2) if cycles else None,
        }
    return rows


@pytest.fixture(scope="module")
def client(clickhouse_http_url):
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('quality')}")
    migrate_up(settings)
    client = connect(settings)
    tables: dict[str, list] = {}
    for kind, records in _emitted().items():
        for offset, record in enumerate(records):
            for table, row in rows_for(kind, serde.dumps(record), Provenance("test", 0, offset)):
                tables.setdefault(table, []).append(row)
    for table, rows in tables.items():
        insert(client, table, rows)
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
    client.close()


@pytest.mark.parametrize("model", ["first_touch", "linear"])
def test_quality_per_channel_equals_the_independent_computation(client, model) -> None:
    result = run_report(
        client, "quality", model=model, date_from=at(1).date(), date_to=at(31).date(), by_campaign=False
    )
    found = {r.pop("channel"): r for r in result.records()}
    for row in found.values():
        row["leads"] = Decimal(row["leads"]).normalize()
        for key in ("avg_deal_value", "median_days_lead_to_customer"):
            row[key] = None if row[key] is None else float(row[key])
    wanted = expected(model)
    for row in wanted.values():
        row["leads"] = row["leads"].normalize()
    assert set(found) == set(wanted)
    for channel, row in wanted.items():
        assert found[channel] == row, channel
    # what the comparison is made of, so that it cannot pass empty
    assert {"Paid Search", "Organic Search"} <= set(found)
    assert found["Paid Search"]["top_lost_reasons"] == "price; timing"


def test_the_reasons_reach_the_conversions_table(client) -> None:
    rows = client.query(
        "SELECT lead_id, stage, reason FROM conversions FINAL WHERE reason != '' ORDER BY lead_id"
    ).result_rows
    assert [tuple(r) for r in rows] == [
        ("L2", "lost", "price"),
        ("L3", "disqualified", "student"),
        ("L5", "lost", "price"),
        ("L7", "lost", "timing"),
    ]
