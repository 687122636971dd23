"""Simulation runs that continue each other: the cursor in the data directory, the progress bar, the truth file.

``{data_dir}/simulation/cursor.json`` remembers the seed, the epoch (day 0), the volume and the next day to
simulate, so that a second ``closedloop simulate`` (or ``closedloop demo``) on the same data directory sends the
*next* days, and nothing twice. The cursor only moves once a run has been sent to the end; an interrupted run is
sent again from its first day (every event keeps its id, CRM deliveries are deduplicated by the collector, and
the pipeline's outputs have stable ids, so a resend counts nothing twice).

The first run's epoch is ``days * RUNS_IN_THE_PAST`` days before today, so that the first runs all lie in the
past; a run never goes past today (it is cut short, or refused with a message, when it would).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from simulator.model import SimulatedDays, SimulationConfig
from simulator.senders import Endpoint, Sender, SendStats
from simulator.truth import write_truth

RUNS_IN_THE_PAST = 3


class SimulationError(Exception):
    """A run cannot be planned as asked (conflicting seed, no day left before today...)."""


@dataclass
class Cursor:
    """What the data directory remembers between runs."""

    seed: int
    epoch: str  # ISO date of day 0
    visitors_per_day: int
    next_day: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)

    def config(self, **overrides: Any) -> SimulationConfig:
        return SimulationConfig(
            seed=self.seed, epoch=date.fromisoformat(self.epoch), visitors_per_day=self.visitors_per_day, **overrides
        )


def simulation_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "simulation"


def cursor_path(data_dir: Path) -> Path:
    return simulation_dir(data_dir) / "cursor.json"


def load_cursor(data_dir: Path) -> Cursor | None:
    """The cursor of a data directory, or None before the first run; a damaged file is a clear error."""
    path = cursor_path(data_dir)
    if not path.exists():
        return None
    try:
        return Cursor(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise SimulationError(
            f"{path} is damaged ({exc}); delete it to start the simulation over "
            "(the pipeline's data then holds the old days too)"
        ) from None


def save_cursor(data_dir: Path, cursor: Cursor) -> None:
    path = cursor_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(asdict(cursor), indent=2), encoding="utf-8")
    partial.replace(path)


def plan_run(
    data_dir: Path,
    days: int,
    seed: int | None = None,
    visitors_per_day: int | None = None,
    epoch: date | None = None,
    today: date | None = None,
) -> tuple[Cursor, SimulatedDays]:
    """The next ``days`` days of the data directory's simulation (starting one if there is none)."""
    if days < 1:
        raise SimulationError(f"--days must be at least 1, not {days}")
    today = today or datetime.now(timezone.utc).date()
    cursor = load_cursor(data_dir)
    if cursor is None:
        epoch = epoch or date.fromordinal(today.toordinal() - days * RUNS_IN_THE_PAST)
        cursor = Cursor(
            seed=42 if seed is None else seed, epoch=epoch.isoformat(), visitors_per_day=visitors_per_day or 150
        )
    else:
        fixed = (
            ("--seed", seed, cursor.seed),
            ("--visitors-per-day", visitors_per_day, cursor.visitors_per_day),
            ("--start-date", epoch and epoch.isoformat(), cursor.epoch),
        )
        for name, asked, kept in fixed:
            if asked is not None and asked != kept:
                raise SimulationError(
                    f"{name} {asked} differs from the simulation already in {data_dir} ({kept}); leave it out to "
                    f"continue that simulation, or use another data directory (CLOSEDLOOP_DATA_DIR)"
                )
    last_day = today.toordinal() - date.fromisoformat(cursor.epoch).toordinal()  # today's index: not simulated
    end_day = min(cursor.next_day + days, last_day)
    if end_day <= cursor.next_day:
        raise SimulationError(
            f"the simulation in {data_dir} has reached today ({today}); there is no past day left to simulate. "
            "Use a fresh data directory to start again."
        )
    return cursor, SimulatedDays(cursor.config(), cursor.next_day, end_day)


def record_run(data_dir: Path, cursor: Cursor, run: SimulatedDays, stats: SendStats, truth: Path) -> None:
    """Move the cursor past a completely sent run."""
    cursor.next_day = run.end_day
    cursor.runs.append(
        {
            "first_day": run.first_day,
            "end_day": run.end_day,
            "start": run.start.isoformat(),
            "end": run.end.isoformat(),
            "truth": str(truth),
            "events": stats.events,
            "accepted": stats.accepted,
            "rejected": stats.rejected,
            "seconds": round(stats.seconds, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(),
        }
    )
    save_cursor(data_dir, cursor)


def totals(run: SimulatedDays) -> dict[str, int]:
    """How many events of each kind the run will send (for the progress bar)."""
    counts = {"page views": 0, "forms": 0, "CRM changes": 0, "spend rows": len(run.spend())}
    for day in range(run.first_day, run.end_day):
        web, crm = run.day_events(day)
        forms = sum(1 for event in web if hasattr(event, "email"))
        counts["forms"] += forms
        counts["page views"] += len(web) - forms
        counts["CRM changes"] += len(crm)
    return counts


def send_run(
    run: SimulatedDays, endpoint: Endpoint, console: Console | None = None, sender: Sender | None = None
) -> SendStats:
    """Send a run with a progress bar (when ``console`` is given); return the statistics.

    Pass your own ``sender`` to watch ``sender.stats.touch_sent_at`` while it runs (the demo's delay probe)."""
    sender = sender or Sender(endpoint)
    if console is None:
        return asyncio.run(sender.send(run))
    counts = totals(run)
    columns = (
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {kind: progress.add_task(kind, total=count, rate="") for kind, count in counts.items() if count}
        began = time.monotonic()

        def advance(kind: str, n: int) -> None:
            task = tasks.get(kind)
            if task is not None:
                done = progress.tasks[task].completed + n
                rate = done / max(time.monotonic() - began, 1e-6)
                progress.update(task, advance=n, rate=f"{rate:,.0f}/s")

        sender.progress = advance
        return asyncio.run(sender.send(run))


def check_collector(endpoint: Endpoint) -> None:
    """Raise SendError unless the collector answers /healthz (before any progress bar is drawn)."""
    import httpx

    from simulator.senders import SendError

    try:
        answer = httpx.get(f"{endpoint.collector_url.rstrip('/')}/healthz", timeout=5)
    except httpx.HTTPError as exc:
        raise SendError(
            f"the collector at {endpoint.collector_url} does not answer ({exc}); start it with "
            "`closedloop collector` (or `closedloop demo`), or pass --collector URL"
        ) from None
    if answer.status_code != 200:
        raise SendError(
            f"{endpoint.collector_url}/healthz answered {answer.status_code}: is it the closedloop collector?"
        )


def simulate(
    data_dir: Path,
    days: int,
    endpoint: Endpoint,
    console: Console | None = None,
    *,
    seed: int | None = None,
    visitors_per_day: int | None = None,
    epoch: date | None = None,
    today: date | None = None,
) -> tuple[SimulatedDays, SendStats, Path]:
    """Plan the next days, send them, write the truth and move the cursor. Returns (run, stats, truth file)."""
    cursor, run = plan_run(data_dir, days, seed, visitors_per_day, epoch, today)
    if console is not None:
        console.print(
            f"Simulating days {run.first_day}-{run.end_day - 1} of seed {cursor.seed} "
            f"({run.start.date()} to {run.end.date()}, {cursor.visitors_per_day} new visitors a weekday) "
            f"through {endpoint.collector_url}"
        )
    check_collector(endpoint)
    stats = send_run(run, endpoint, console)
    truth = write_truth(run, simulation_dir(data_dir) / f"truth-{run.first_day:04d}-{run.end_day:04d}.jsonl")
    record_run(data_dir, cursor, run, stats, truth)  # rejections are reported; resending would not fix them
    return run, stats, truth
