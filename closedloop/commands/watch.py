"""``closedloop watch``: a live terminal view of conversions per channel and stage, refreshed every second.

Reads the worker's counters JSON (``GET /counters/?window=...``, see ``stream_jobs.runtime.counters``): the current
window (1 minute by default) and today, last-touch channels (``--model first_touch`` for first touch). Windows are
by processing time (when the worker first counted a conversion, not when it happened), and the titles say so; a
re-attributed conversion shows under its newest channels.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import click

from schemas.events import STAGES


def fetch(base_url: str, window: str, timeout: float = 2.0) -> dict:
    """One counters snapshot from the worker's web server."""
    with urllib.request.urlopen(f"{base_url}/counters/?window={window}", timeout=timeout) as response:
        return json.loads(response.read())


def render(current: dict | None, today: dict | None, model: str, error: str | None = None):
    """The rich renderable: one table per window, channels as rows, stages as columns."""
    from rich.console import Group, RenderableType
    from rich.table import Table
    from rich.text import Text

    parts: list[RenderableType] = []
    for snapshot, title in ((current, "current window"), (today, "today")):
        if snapshot is None:
            continue
        rows = [row for row in snapshot["rows"] if row["model"] == model]
        table = Table(
            title=f"{title} ({snapshot['window']} from {snapshot['window_start'][:19]}Z, "
            f"by {snapshot.get('time', 'processing')} time) · {model}",
            title_justify="left",
            expand=False,
        )
        table.add_column("channel")
        for stage in STAGES:
            table.add_column(stage, justify="right")
        table.add_column("revenue", justify="right")
        channels = sorted({row["channel"] for row in rows})
        for channel in channels:
            counts = {row["stage"]: row for row in rows if row["channel"] == channel}
            revenue = sum(float(row["revenue"]) for row in counts.values())
            table.add_row(
                channel, *(f"{counts[s]['conversions']:,}" if s in counts else "·" for s in STAGES), f"{revenue:,.2f}"
            )
        if not channels:
            table.add_row("(no conversions yet)", *("·" for _ in STAGES), "0.00")
        parts.append(table)
    footer = f"dead letters: {(current or today or {}).get('dead_letters', 0)} · refreshed {time.strftime('%H:%M:%S')}"
    parts.append(Text(footer if error is None else f"{footer} · {error}", style="dim" if error is None else "red"))
    return Group(*parts)


@click.command("watch")
@click.option("--url", default=None, help="Worker web server, e.g. http://127.0.0.1:6066 (default from settings).")
@click.option(
    "--window",
    default="1m",
    show_default=True,
    type=click.Choice(["1m", "1h"]),
    help="The current window shown above today.",
)
@click.option("--model", default="last_touch", show_default=True, type=click.Choice(["last_touch", "first_touch"]))
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.1, 60), help="Seconds.")
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
def command(url: str | None, window: str, model: str, interval: float, once: bool) -> None:
    """Live counts of conversions per channel and stage (current window and today, by processing time)."""
    from rich.console import Console
    from rich.live import Live

    if url is None:
        from stream_jobs.settings import WorkerSettings

        url = WorkerSettings().web_url
    url = url.rstrip("/")
    console = Console()

    def snapshot():
        try:
            return render(fetch(url, window), fetch(url, "today"), model)
        except (urllib.error.URLError, OSError, ValueError) as error:
            return render(
                None, None, model, error=f"cannot read {url}/counters/: {error} (is `closedloop worker` running?)"
            )

    if once:
        console.print(snapshot())
        return
    with Live(snapshot(), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(snapshot())
        except KeyboardInterrupt:
            pass
