"""The stream-jobs worker SIGKILLed in the middle of a stream and restarted: its tables (visitors, contacts,
leads) come back from their changelogs, the records it had read but not committed are processed again, and the
credits it ends with equal those of a reference run of the same stream that was never interrupted (exact, per
conversion, model and touch). The worker harness is ``tests/test_worker.py``'s.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from harness import wait_for
from test_worker import (
    SITE,
    Worker,
    _is_idle,
    as_records,
    at,
    create_all_topics,
    crm,
    final_credits,
    identify,
    page_view,
    read_all,
    running_worker,
    send,
    wait_idle,
    worker_settings,
)

from schemas.events import Envelope

pytestmark = [pytest.mark.faults, pytest.mark.kafka]


def generated_stream(visitors: int = 400, seed: int = 7) -> list[Envelope]:
    """A deterministic mix: visitors over several channels, a third identify (some two devices per email),
    CRM stages by email and by contact id only."""
    import random

    rng = random.Random(seed)
    landings = [
        f"{SITE}/?utm_source=google&utm_medium=cpc&utm_campaign=c{{n}}",
        f"{SITE}/?utm_source=newsletter&utm_medium=email",
        f"{SITE}/?utm_source=facebook&utm_medium=paid_social",
        f"{SITE}/pricing",
        f"{SITE}/blog",
    ]
    referrers = [None, "https://www.google.com/", "https://www.linkedin.com/", "https://news.example.org/a"]
    out: list[Envelope] = []
    crm_events: list[Envelope] = []
    for v in range(visitors):
        visitor = f"v{v}"
        start = at(rng.uniform(0, 20))
        for p in range(4):
            when = start + timedelta(hours=p * rng.choice([0.1, 2, 30]))
            url = rng.choice(landings).format(n=rng.randrange(3))
            out.append(page_view(f"pv-{v}-{p}", visitor, when, url, rng.choice(referrers)))
        if v % 3 == 0:
            email = f"lead{v // 6}@example.com"  # visitors 6k and 6k+3 share an email: two devices
            out.append(identify(f"id-{v}", visitor, start + timedelta(hours=3), email))
            if v % 6 == 0:
                contact = f"c{v}"
                crm_events.append(crm(f"mql-{v}", start + timedelta(days=1), "mql", email=email, contact=contact))
                crm_events.append(crm(f"opp-{v}", start + timedelta(days=2), "opportunity", contact=contact))
                if v % 12 == 0:
                    crm_events.append(
                        crm(f"won-{v}", start + timedelta(days=5), "customer", email=email, value=f"{1000 + v}.50")
                    )
    rng.shuffle(crm_events)
    return out + crm_events


def test_restart_after_sigkill_recovers_tables_and_ends_with_the_same_credits(kafka_bootstrap, unique_name, tmp_path):
    stream = generated_stream()
    reference = worker_settings(kafka_bootstrap, f"{unique_name}_ref", tmp_path / "ref")
    create_all_topics(reference)
    with running_worker(reference, tmp_path) as worker:
        send(reference, as_records(reference, stream))
        wait_idle(reference, worker=worker, timeout=180)
    expected = final_credits(reference)
    assert len({k[0] for k in expected}) > 50

    settings = worker_settings(kafka_bootstrap, f"{unique_name}_kill", tmp_path / "kill")
    create_all_topics(settings)
    worker = Worker(settings, tmp_path / "killed-worker.log").start()
    try:
        send(settings, as_records(settings, stream))
        wait_for(
            lambda: read_all(settings, settings.topics.conversions),
            120,
            lambda: f"the first conversions:\n{worker.log_tail()}",
            interval=0.2,
        )
        worker.kill()  # SIGKILL by PID, in the middle of the stream
        assert not _is_idle(settings), "the worker finished before it was killed: make the stream longer"
    finally:
        worker.kill()
    with running_worker(settings, tmp_path) as restarted:
        wait_idle(settings, worker=restarted, timeout=180)
        assert final_credits(settings) == expected
