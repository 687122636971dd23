"""The data-driven job against ClickHouse: scripted touches, links and conversions in, exact table rows out.

The paper example of tests/test_datadriven.py, as ClickHouse holds it (March 2024, stage customer):
  L1 (visitors v1 and v1b, two devices): A 03-01 on v1, B 03-02 on v1b; customer 03-03, 100.00
  L2 (v2): A 03-04, C 03-05; lead only (never a customer): null
  L3 (v3): B 03-06; customer 03-07, 50.00
  L4 (v4): C 03-08, B 03-09, B 03-10; customer 03-11, 70.00 (the repeat collapses)
  v5 (anonymous): A 03-12: null
Left out: v6 (anonymous) touching only in April; L7, a customer on 03-15 with no touch (counted as touchless);
L8, a customer on 02-20 (before the period) with a touch in March: it reached the stage before, so it is no
non-converting journey either; a touch of L4 on 03-12, after its conversion.
Expected: Markov order 1 shares A 3/11, B 6/11, C 2/11 (revenue 60, 120, 40); Shapley revenue A 50, B 135, C 35.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
from harness import unique

from schemas import serde
from schemas.outputs import Conversion, IdentityLink, Touch
from sinks.client import connect
from sinks.data_driven_job import run
from sinks.migrate import migrate_up
from sinks.reports import ReportError, channels, run_report
from sinks.rows import Provenance, RecordKind, insert, rows_for
from sinks.settings import SinkSettings

pytestmark = pytest.mark.clickhouse

FROM, TO = date(2024, 3, 1), date(2024, 3, 31)


def at(day: int, month: int = 3) -> datetime:
    return datetime(2024, month, day, 12, tzinfo=timezone.utc)


TOUCHES = [  # (touch id, visitor, day, month, channel)
    ("t1", "v1", 1, 3, "A"),
    ("t2", "v1b", 2, 3, "B"),
    ("t3", "v2", 4, 3, "A"),
    ("t4", "v2", 5, 3, "C"),
    ("t5", "v3", 6, 3, "B"),
    ("t6", "v4", 8, 3, "C"),
    ("t7", "v4", 9, 3, "B"),
    ("t8", "v4", 10, 3, "B"),
    ("t9", "v5", 12, 3, "A"),
    ("t10", "v6", 2, 4, "A"),
    ("t11", "v8", 5, 3, "C"),
    ("t12", "v4", 12, 3, "A"),
]
LINKS = [("v1", "L1"), ("v1b", "L1"), ("v2", "L2"), ("v3", "L3"), ("v4", "L4"), ("v8", "L8")]
CONVERSIONS = [  # (lead, stage, day, month, revenue)
    ("L1", "lead", 1, 3, None),
    ("L1", "customer", 3, 3, "100.00"),
    ("L2", "lead", 5, 3, None),
    ("L3", "customer", 7, 3, "50.00"),
    ("L4", "customer", 11, 3, "70.00"),
    ("L7", "customer", 15, 3, "9.00"),
    ("L8", "customer", 20, 2, "5.00"),
]


def _records() -> dict[RecordKind, list]:
    return {
        RecordKind.TOUCH: [
            Touch(
                touch_id=t,
                visitor_id=v,
                site_id="s",
                occurred_at=at(d, m),
                channel=c,
                source="x",
                medium="y",
                event_id=f"pv-{t}",
            )
            for t, v, d, m, c in TOUCHES
        ],
        RecordKind.IDENTITY_LINK: [
            IdentityLink(visitor_id=v, lead_id=lead, linked_at=at(1), event_id=f"id-{v}") for v, lead in LINKS
        ],
        RecordKind.CONVERSION: [
            Conversion(
                conversion_id=f"{lead}-{stage}",
                lead_id=lead,
                stage=stage,
                occurred_at=at(d, m),
                revenue=Decimal(revenue) if revenue else None,
                currency="EUR" if revenue else None,
                touch_count=0,
                event_id=f"ev-{lead}-{stage}",
            )
            for lead, stage, d, m, revenue in CONVERSIONS
        ],
    }


@pytest.fixture(scope="module")
def client(clickhouse_http_url):
    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('dd')}")
    migrate_up(settings)
    client = connect(settings)
    for _ in range(2):  # delivered twice: FINAL must see through it
        tables: dict[str, list] = {}
        for kind, records in _records().items():
            for offset, record in enumerate(records):
                for table, row in rows_for(kind, serde.dumps(record), Provenance("test", 0, offset)):
                    tables.setdefault(table, []).append(row)
        for table, rows in tables.items():
            insert(client, table, rows)
    yield client
    client.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
    client.close()


def test_markov_and_shapley_rows(client) -> None:
    markov = run(client, "markov", stage="customer", date_from=FROM, date_to=TO, bootstrap=0)
    assert markov.touchless_conversions == 1
    assert (markov.attribution.journeys, markov.attribution.conversions) == (5, 3)
    run(client, "shapley", stage="customer", date_from=FROM, date_to=TO, bootstrap=0)
    result = run_report(client, "data-driven", stage="customer", date_from=FROM, date_to=TO)
    rows = [(r["model"], r["channel"], r["share"], r["conversions"], r["revenue"]) for r in result.records()]
    assert rows == [
        ("markov_1", "B", round(6 / 11, 6), round(18 / 11, 4), Decimal("120.00")),
        ("markov_1", "A", round(3 / 11, 6), round(9 / 11, 4), Decimal("60.00")),
        ("markov_1", "C", round(2 / 11, 6), round(6 / 11, 4), Decimal("40.00")),
        ("shapley", "B", round(2 / 3, 6), 2.0, Decimal("135.00")),
        ("shapley", "A", round(1 / 6, 6), 0.5, Decimal("50.00")),
        ("shapley", "C", round(1 / 6, 6), 0.5, Decimal("35.00")),
    ]
    compare = run_report(client, "compare-models", date_from=FROM, date_to=TO)
    data_driven = ("markov_1", "markov_2", "markov_3", "shapley")
    assert {r["channel"]: tuple(r[m] for m in data_driven) for r in compare.records()} == {
        "B": (Decimal("120.00"), Decimal("0.00"), Decimal("0.00"), Decimal("135.00")),
        "A": (Decimal("60.00"), Decimal("0.00"), Decimal("0.00"), Decimal("50.00")),
        "C": (Decimal("40.00"), Decimal("0.00"), Decimal("0.00"), Decimal("35.00")),
    }


def test_the_channel_report_shows_a_data_driven_model_of_exactly_its_period(client) -> None:
    run(client, "markov", stage="customer", date_from=FROM, date_to=TO, bootstrap=0)
    rows = {r["channel"]: r for r in channels(client, "markov_1", FROM, TO).records()}
    # Markov order 1 of the paper example: 18/11, 9/11 and 6/11 customers; revenue 120, 60, 40; no lead run.
    assert {c: (round(float(r["customers"]), 4), r["revenue"], r["leads"]) for c, r in rows.items()} == {
        "B": (round(18 / 11, 4), Decimal("120.00"), 0),
        "A": (round(9 / 11, 4), Decimal("60.00"), 0),
        "C": (round(6 / 11, 4), Decimal("40.00"), 0),
    }
    assert [r["visitors"] for r in rows.values()] == [3, 4, 3]  # the visitors do not depend on the model
    with pytest.raises(
        ReportError,
        match=r"markov_1 has not been computed for 2024-03-01 \.\. 2024-03-30: run "
        r"`closedloop attribute --model markov --order 1 --stage customer --from 2024-03-01 "
        r"--to 2024-03-30`",
    ):
        channels(client, "markov_1", FROM, date(2024, 3, 30))
    with pytest.raises(
        ReportError, match=r"shapley has not been computed for .* `closedloop attribute --model shapley "
    ):
        channels(client, "shapley", date(2024, 3, 2), TO)


def test_the_sinks_schedule_runs_the_configured_models_once_per_interval(client, clickhouse_http_url) -> None:
    from sinks.attribution_schedule import AttributionSchedule, ScheduledRun

    settings = SinkSettings(
        clickhouse_url=f"{clickhouse_http_url}/{client.database}",
        attribute_days=31,
        attribute_models="markov_3,shapley",
        attribute_stages="lead",
    )
    schedule = AttributionSchedule(settings)
    now = datetime(2024, 4, 1, 3, tzinfo=timezone.utc)  # the trailing 31 days are March
    expected = [ScheduledRun("markov_3", "lead", FROM, TO), ScheduledRun("shapley", "lead", FROM, TO)]
    assert schedule.run_due(now) == expected
    assert (schedule.completed, schedule.failed) == (expected, [])
    rows = client.query(
        "SELECT toString(model), count() FROM data_driven_credits FINAL WHERE stage = 'lead' "
        "AND period_from = '2024-03-01' AND period_to = '2024-03-31' GROUP BY model ORDER BY model"
    ).result_rows
    # Stage lead: L1 (A) and L2 (A, C) convert; each model writes a row for each of the three channels.
    assert rows == [("markov_3", 3), ("shapley", 3)]
    assert schedule.run_due(now) == []  # the table says both ran within the interval
    assert schedule.completed == expected


def test_a_rerun_replaces_the_earlier_one(client) -> None:
    """A run without intervals, then one with: the report shows the second run's rows only, once each."""
    run(client, "markov", order=2, stage="customer", date_from=FROM, date_to=TO, bootstrap=0)
    again = run(client, "markov", order=2, stage="customer", date_from=FROM, date_to=TO, bootstrap=20, seed=3)
    result = run_report(client, "data-driven", stage="customer", date_from=FROM, date_to=TO)
    rows = [r for r in result.records() if r["model"] == "markov_2"]
    assert [(r["channel"], r["share"], r["revenue"]) for r in rows] == [
        ("B", 0.6, Decimal("132.00")),
        ("A", 0.2, Decimal("44.00")),
        ("C", 0.2, Decimal("44.00")),
    ]
    assert {r["bootstrap"] for r in rows} == {20}
    assert [(r["ci_low"], r["ci_high"]) for r in rows] == [
        (round(c.ci_low, 4), round(c.ci_high, 4))
        for c in sorted(again.attribution.credits, key=lambda c: (-c.conversions, c.channel))
    ]


def test_the_command_and_the_report_command(client, clickhouse_http_url) -> None:
    from click.testing import CliRunner

    from closedloop.cli import main

    env = {"CLOSEDLOOP_CLICKHOUSE_URL": f"{clickhouse_http_url}/{client.database}"}
    ran = CliRunner().invoke(
        main,
        ["attribute", "--model", "shapley", "--from", "2024-03-01", "--to", "2024-03-31", "--bootstrap", "0"],
        env=env,
    )
    assert ran.exit_code == 0, ran.output
    assert "5 journeys (3 converting), 1 converting without a touch left out" in ran.output
    shown = CliRunner().invoke(
        main, ["report", "compare-models", "--from", "2024-03-01", "--to", "2024-03-31", "--format", "csv"], env=env
    )
    assert shown.exit_code == 0, shown.output
    header = "channel,first_touch,last_touch,linear,time_decay,u_shaped,w_shaped,full_path,markov_1,markov_2,"
    assert shown.output.startswith(header + "markov_3,shapley\n"), shown.output
    assert ",135.00\n" in shown.output
    bad = CliRunner().invoke(main, ["attribute", "--model", "markov", "--from", "2024-03-05", "--to", "2024-03-01"])
    assert bad.exit_code == 2
    assert "--from 2024-03-05 is after --to 2024-03-01" in bad.output


def test_without_the_migration_the_job_says_what_to_run(clickhouse_http_url) -> None:
    from sinks.migrate import MigrationError

    settings = SinkSettings(clickhouse_url=f"{clickhouse_http_url}/{unique('ddnomig')}")
    server = connect(settings, database=None)
    server.command(f"CREATE DATABASE `{settings.clickhouse_database}`")
    server.close()
    bare = connect(settings)
    try:
        with pytest.raises(MigrationError, match=r"data_driven_credits does not exist .* `closedloop migrate`"):
            run(bare, "markov", stage="customer", date_from=FROM, date_to=TO)
    finally:
        bare.command(f"DROP DATABASE IF EXISTS `{settings.clickhouse_database}`")
        bare.close()
