"""``closedloop erase`` against the running pipeline (collector, worker, sink as processes; the real broker and
ClickHouse endpoint): a person is erased while other traffic flows, and then no trace of the address is left in
ClickHouse (every String column of every table) nor in the worker's state (the newest record of every key of its
tables' changelogs, which is what a restarted worker recovers), before and after a worker restart."""

from __future__ import annotations

import json
import threading
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from test_worker import send, topic_records

from deploy.daemons import free_port
from schemas import serde
from schemas.events import CrmStatusChange, Envelope
from schemas.identity import lead_id_for
from schemas.settings import DEV_LEAD_ID_KEY
from simulator.demo_harness import (
    PipelinePorts,
    PipelineProcesses,
    pipeline_environment,
    wait_group_active,
    wait_until_drained,
)
from simulator.senders import DEMO_CRM_SECRET, DEMO_WRITE_KEY
from stream_jobs.runtime.topology import CONTACTS_TABLE, LEADS_TABLE, VISITORS_TABLE, changelog_topic

pytestmark = [pytest.mark.e2e, pytest.mark.kafka, pytest.mark.clickhouse]

ANN, BOB = "Ann.Erase@Example.test", "bob.keep@example.test"
SITE = "https://shop.example.test"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _post(url: str, body: dict | list, headers: dict[str, str]) -> dict:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _web(collector: str, events: list[dict]) -> None:
    answer = _post(f"{collector}/v1/events", events, {"X-Closedloop-Key": DEMO_WRITE_KEY})
    assert answer["accepted"] == len(events), answer


def _generic_crm(collector: str, events: list[dict]) -> None:
    from collector.webhooks.generic import sign

    body = json.dumps({"source": "odoo", "events": events}).encode()
    request = urllib.request.Request(
        f"{collector}/v1/webhooks/crm",
        data=body,
        headers={"Content-Type": "application/json", "X-Closedloop-Signature": sign(DEMO_CRM_SECRET, body)},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read())["accepted"] == len(events)


def _person(collector: str, email: str, visitors: tuple[str, str], contact: str) -> None:
    """Two devices, a form on each, CRM stages through the generic webhook (one by contact id only)."""
    when = lambda minutes: (NOW - timedelta(days=2) + timedelta(minutes=minutes)).isoformat()  # noqa: E731
    laptop, phone = visitors
    _web(
        collector,
        [
            {
                "type": "page_view",
                "visitor_id": laptop,
                "url": f"{SITE}/?utm_source=google&utm_medium=cpc",
                "occurred_at": when(0),
            },
            {"type": "page_view", "visitor_id": phone, "url": f"{SITE}/blog", "occurred_at": when(5)},
            {"type": "identify", "visitor_id": laptop, "email": email, "form_id": "demo", "occurred_at": when(10)},
            {"type": "identify", "visitor_id": phone, "email": email.upper(), "occurred_at": when(20)},
            # A site that puts the address in a URL (a GET form): stored in events.url and its JSON.
            {"type": "page_view", "visitor_id": laptop, "url": f"{SITE}/thanks?email={email}", "occurred_at": when(11)},
        ],
    )
    _generic_crm(
        collector,
        [
            {"id": f"{contact}-mql", "stage": "mql", "occurred_at": when(60), "email": email, "contact_id": contact},
            {"id": f"{contact}-sql", "stage": "sql", "occurred_at": when(120), "contact_id": contact},
            {
                "id": f"{contact}-won",
                "stage": "customer",
                "occurred_at": when(180),
                "email": email,
                "value": "900.00",
                "currency": "EUR",
            },
        ],
    )


def _traces_in_clickhouse(client, needle: str) -> dict[str, int]:
    """'table.column' -> rows holding ``needle`` (any case), over every String column of every table."""
    columns = client.query(
        "SELECT c.table, c.name FROM system.columns AS c INNER JOIN system.tables AS t "
        "ON t.database = c.database AND t.name = c.table WHERE c.database = currentDatabase() "
        "AND t.engine NOT IN ('View', 'MaterializedView') AND c.type LIKE '%String%' "
        "AND c.type NOT LIKE '%AggregateFunction%'"
    ).result_rows
    found = {}
    for table, column in columns:
        count = client.query(
            f"SELECT count() FROM `{table}` WHERE positionCaseInsensitive(toString(`{column}`), {{n:String}}) > 0",
            parameters={"n": needle},
        ).result_rows[0][0]
        if count:
            found[f"{table}.{column}"] = count
    return found


def _worker_state(settings, app_id: str) -> dict[str, dict[bytes, bytes]]:
    """table -> key -> newest value, of the worker's changelogs: what a restarted worker recovers."""
    state = {}
    for table in (VISITORS_TABLE, CONTACTS_TABLE, LEADS_TABLE):
        newest: dict[bytes, bytes] = {}
        for record in topic_records(settings, changelog_topic(app_id, table)):
            if record.value is None:
                newest.pop(record.key, None)
            else:
                newest[record.key] = record.value
        state[table] = newest
    return state


def _state_traces(state: dict[str, dict[bytes, bytes]], *needles: str) -> list[str]:
    return [
        f"{table}: {key!r}"
        for table, values in state.items()
        for key, value in values.items()
        if any(n.lower().encode() in (key + value).lower() for n in needles)
    ]


def test_erase_mid_stream_leaves_no_trace_in_clickhouse_or_the_worker_state(
    pipeline_settings, unique_name, tmp_path, monkeypatch
):
    from closedloop.commands.erase import command
    from sinks.client import connect
    from sinks.migrate import migrate_up
    from sinks.settings import SinkSettings

    sink_group = f"{unique_name}-sink"
    sink_settings = SinkSettings(
        data_dir=pipeline_settings.data_dir,
        kafka_bootstrap_servers=pipeline_settings.kafka_servers,
        clickhouse_url=pipeline_settings.clickhouse,
        topic_prefix=pipeline_settings.topic_prefix,
        sink_consumer_group=sink_group,
    )
    migrate_up(sink_settings)
    client = connect(sink_settings)
    worker_group = f"{pipeline_settings.topic_prefix}-worker"
    ports = PipelinePorts(collector=free_port(), worker_web=free_port())
    extra = {"CLOSEDLOOP_SINK_CONSUMER_GROUP": sink_group, "CLOSEDLOOP_SINK_BATCH_SECONDS": "0.3"}
    processes = PipelineProcesses(pipeline_settings, ports, extra_env=extra, die_with_parent=True)
    key = DEV_LEAD_ID_KEY.encode()  # the pipeline's processes run with the default key, as the command does
    ann, bob = lead_id_for(ANN, key), lead_id_for(BOB, key)
    stop_traffic = threading.Event()
    try:
        processes.start()
        wait_group_active(pipeline_settings.kafka_servers, worker_group, alive=processes.check_alive)
        wait_group_active(pipeline_settings.kafka_servers, sink_group, alive=processes.check_alive)
        collector = processes.collector_url
        _person(collector, ANN, ("ann-laptop", "ann-phone"), "c-ann")
        _person(collector, BOB, ("bob-laptop", "bob-phone"), "c-bob")
        # A CRM record published before ids became lead ids: its crm_object_id is the address.
        old = CrmStatusChange(
            occurred_at=NOW - timedelta(days=1), crm="generic", crm_object_id=ANN, email=ANN, stage="opportunity"
        )
        send(
            pipeline_settings,
            [
                (
                    pipeline_settings.topics.crm,
                    old.lead_key,
                    serde.dumps(Envelope(event_id="generic:old:1", site_id="crm:old", received_at=NOW, event=old)),
                )
            ],
        )
        drain = wait_until_drained(
            pipeline_settings, worker_group, sink_group, client, timeout=180, alive=processes.check_alive
        )
        assert drain.complete, drain
        assert client.query(
            "SELECT count() FROM leads FINAL WHERE lead_id = {l:String}", parameters={"l": ann}
        ).result_rows == [(1,)]
        assert "events.crm_object_id" in _traces_in_clickhouse(client, ANN)  # the old record's row

        def traffic() -> None:  # other visitors keep browsing while the person is erased
            n = 0
            while not stop_traffic.is_set():
                _web(collector, [{"type": "page_view", "visitor_id": f"other-{n % 7}", "url": f"{SITE}/p{n}"}])
                n += 1
                stop_traffic.wait(0.05)

        browsing = threading.Thread(target=traffic, daemon=True)
        browsing.start()
        for name, value in pipeline_environment(pipeline_settings, ports, extra).items():
            if name.startswith("CLOSEDLOOP_"):
                monkeypatch.setenv(name, value)
        result = CliRunner().invoke(command, ["--email", " ann.erase@EXAMPLE.test ", "--json", "--wait", "90"])
        stop_traffic.set()
        browsing.join(timeout=30)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["lead_id"] == ann and report["complete"] and report["remaining"] == {}
        removed = report["removed"]
        assert removed["ClickHouse leads"] == 1
        assert removed["worker leads table"] == 1
        assert removed["worker visitors table"] == 2  # both devices unlinked
        assert removed["worker contacts table"] == 1  # generic:c-ann no longer maps to the lead
        assert removed[f"Kafka {pipeline_settings.topics.leads} (tombstone)"] == 1
        assert removed[f"Kafka {pipeline_settings.topics.erased_leads} (deliver drops what was queued)"] == 1
        assert any(place.startswith("ClickHouse events.") for place in removed), removed

        drain = wait_until_drained(
            pipeline_settings, worker_group, sink_group, client, timeout=180, alive=processes.check_alive
        )
        assert drain.complete, drain
        assert _traces_in_clickhouse(client, ANN) == {}
        assert "leads.email" in _traces_in_clickhouse(client, BOB)  # the other person is untouched
        state = _worker_state(pipeline_settings, worker_group)
        assert _state_traces(state, ANN, ann) == []
        assert _state_traces(state, bob), "the worker's state should still know the other lead"

        # A restarted worker recovers its tables from the changelogs: the lead does not come back, and the
        # person's cookie browses anonymously from now on.
        processes.stop()
        processes.start()
        wait_group_active(pipeline_settings.kafka_servers, worker_group, alive=processes.check_alive)
        _web(
            collector,
            [
                {
                    "type": "page_view",
                    "visitor_id": "ann-laptop",
                    "url": f"{SITE}/?utm_source=news",
                    "occurred_at": NOW.isoformat(),
                }
            ],
        )
        drain = wait_until_drained(
            pipeline_settings, worker_group, sink_group, client, timeout=180, alive=processes.check_alive
        )
        assert drain.complete, drain
        newest = client.query(
            "SELECT lead_id FROM touches FINAL WHERE visitor_id = 'ann-laptop' ORDER BY occurred_at DESC LIMIT 1"
        ).result_rows
        assert newest == [("",)]
        assert _traces_in_clickhouse(client, ANN) == {}
        assert _state_traces(_worker_state(pipeline_settings, worker_group), ANN, ann) == []
        for_ann = [
            r for r in topic_records(pipeline_settings, pipeline_settings.topics.lead_events) if r.key == ann.encode()
        ]
        assert json.loads(for_ann[-1].value)["kind"] == "erase"  # nothing about the lead after the erasure
    finally:
        stop_traffic.set()
        processes.stop()
        client.close()
