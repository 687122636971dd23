"""The data-driven models on a schedule, run by the sink (docs/ATTRIBUTION.md, "Data-driven models").

Every ``CLOSEDLOOP_ATTRIBUTE_EVERY_HOURS`` the sink makes sure each configured model and stage has a run for the
trailing period (the last ``CLOSEDLOOP_ATTRIBUTE_DAYS`` whole UTC days, ending yesterday) that is younger than the
interval, reading what ``data_driven_credits`` already holds, so a restart does not run again what was run, and a
manual ``closedloop attribute`` of the same period counts. Each run happens in a child process: the models are
CPU-bound Python and must not hold the sink's GIL while it inserts.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from schemas.outputs import DATA_DRIVEN_MODELS
from sinks.settings import SinkSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduledRun:
    model: str  # markov_1 .. markov_3, shapley
    stage: str
    date_from: date
    date_to: date

    @property
    def job_model(self) -> tuple[str, int]:
        """(model, order) as ``data_driven_job.run`` takes them."""
        kind, _, order = self.model.partition("_")
        return kind, int(order or 1)


def parse_models(text: str) -> tuple[str, ...]:
    """``markov_1,shapley`` -> the names, each checked."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in DATA_DRIVEN_MODELS]
    if unknown:
        raise ValueError(
            f"unknown data-driven model(s) {', '.join(unknown)}; choose from {', '.join(DATA_DRIVEN_MODELS)}"
        )
    return names


def trailing_period(now: datetime, days: int) -> tuple[date, date]:
    """The last ``days`` whole UTC days before ``now``'s day."""
    last = now.astimezone(timezone.utc).date() - timedelta(days=1)
    return last - timedelta(days=days - 1), last


def due_runs(
    now: datetime,
    every: timedelta,
    days: int,
    models: tuple[str, ...],
    stages: tuple[str, ...],
    newest: dict[tuple[str, str, date, date], datetime],
) -> list[ScheduledRun]:
    """The runs to make now: a (model, stage) whose newest run of the trailing period is missing or older than
    ``every``. ``newest`` maps (model, stage, period_from, period_to) to that run's computed_at."""
    date_from, date_to = trailing_period(now, days)
    due = []
    for model in models:
        for stage in stages:
            computed_at = newest.get((model, stage, date_from, date_to))
            if computed_at is None or now - computed_at >= every:
                due.append(ScheduledRun(model, stage, date_from, date_to))
    return due


def newest_runs(client) -> dict[tuple[str, str, date, date], datetime]:
    """(model, stage, period_from, period_to) -> the newest computed_at, for every run the table holds."""
    rows = client.query(
        "SELECT toString(model), toString(stage), period_from, period_to, max(computed_at) FROM data_driven_credits "
        "GROUP BY model, stage, period_from, period_to"
    ).result_rows
    return {(m, s, f, t): at.replace(tzinfo=timezone.utc) for m, s, f, t, at in rows}


def _run_in_child(settings_json: str, run: dict[str, Any], log_config: dict[str, Any] | None) -> None:
    import logging.config

    from sinks.client import connect
    from sinks.data_driven_job import run as run_job

    if log_config:
        logging.config.dictConfig(log_config)
    settings = SinkSettings.model_validate_json(settings_json)
    client = connect(settings, query_timeout=settings.clickhouse_query_timeout)
    try:
        result = run_job(client, run["model"], order=run["order"], stage=run["stage"], **run["period"])
    finally:
        client.close()
    log.info(
        "attribute: %s of %s stored (%d journeys, %d converting)",
        result.name,
        run["stage"],
        result.attribution.journeys,
        result.attribution.conversions,
        extra={"model": result.name, "stage": run["stage"], "journeys": result.attribution.journeys},
    )


class AttributionSchedule:
    """A thread of the sink process that starts the due runs, one child process at a time, until ``stop()``."""

    def __init__(self, settings: SinkSettings, log_config: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.every = timedelta(hours=settings.attribute_every_hours)
        self.models = parse_models(settings.attribute_models)
        self.stages = tuple(s.strip() for s in settings.attribute_stages.split(",") if s.strip())
        self.log_config = log_config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="attribution-schedule", daemon=True)
        self.completed: list[ScheduledRun] = []  # what ran and stored its rows, oldest first (tests read it)
        self.failed: list[ScheduledRun] = []

    def start(self) -> AttributionSchedule:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        # Look again at least every 10 minutes, so a day change starts the new period's runs soon after midnight.
        pause = min(self.every.total_seconds(), 600.0)
        # Not at once: a sink started for a moment (a test, a restart loop) should not start a run each time.
        self._stop.wait(self.settings.attribute_first_delay_seconds)
        while not self._stop.is_set():
            try:
                self.run_due(datetime.now(timezone.utc))
            except Exception:
                log.warning(
                    "attribute schedule: could not check or start the due runs; trying again later", exc_info=True
                )
            self._stop.wait(pause)

    def run_due(self, now: datetime) -> list[ScheduledRun]:
        from sinks.client import connect

        client = connect(self.settings)
        try:
            if client.query("EXISTS TABLE data_driven_credits").result_rows != [(1,)]:
                log.warning("attribute schedule: data_driven_credits is missing; run `closedloop migrate`")
                return []
            due = due_runs(now, self.every, self.settings.attribute_days, self.models, self.stages, newest_runs(client))
        finally:
            client.close()
        for run in due:
            if self._stop.is_set():
                break
            self._start_child(run)
        return due

    def _start_child(self, run: ScheduledRun) -> None:
        model, order = run.job_model
        spec = {
            "model": model,
            "order": order,
            "stage": run.stage,
            "period": {"date_from": run.date_from, "date_to": run.date_to},
        }
        child = multiprocessing.get_context("spawn").Process(
            target=_run_in_child,
            args=(self.settings.model_dump_json(), spec, self.log_config),
            name=f"attribute-{run.model}-{run.stage}",
            daemon=True,
        )
        child.start()
        # A run of a million journeys takes minutes (bench/data_driven.md); waiting in slices keeps stop() prompt.
        while child.is_alive() and not self._stop.wait(0.5):
            pass
        if child.is_alive():
            child.terminate()
            child.join(10)
            return
        (self.completed if child.exitcode == 0 else self.failed).append(run)
        if child.exitcode != 0:
            log.warning("attribute schedule: %s of %s failed (exit %s)", run.model, run.stage, child.exitcode)
