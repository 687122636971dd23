"""How fast the dashboard's pages load on the demo's data, in headless Chromium, beside their ceilings.

Usage: ``.venv/bin/python bench/dashboard.py [--days 60] [--period-days 30] [--rounds 5]``

Method (bench/dashboard.md has the figures):

1. A private ClickHouse endpoint (``deploy.stack``, as ``closedloop up`` runs it) in a temporary directory on a free
   loopback port. ``--days`` of the demo's simulation (seed 42, 150 new visitors a weekday) go through the
   collector's parsers and the worker's rules (``simulator.offline``) into it with the sink's own rows.
2. ``closedloop dashboard`` in its own process on a free loopback port over that database.
3. Debian's ``/usr/bin/chromium`` (never a downloaded browser; the flags of tests/test_dashboard_browser.py) driven by
   Playwright opens every page for the last ``--period-days`` days of the data (the dashboard's default view is
   the last 30 days). A load is timed from the navigation to every chart of the page drawn (``data-rendered``), in
   a fresh tab each time; the server's part is the navigation's request start -> response end, and the same page
   is also fetched by HTTP alone (httpx, no browser running beside the server), and loaded in a tab kept open for
   the whole run (a marketer clicking from page to page: the chart bundle comes from the browser's cache).
4. Ceilings, measured in the same rounds, page by page: the page's reports run directly (the page's own builder
   and picker query, ``dashboard.pages``, in this process: the SQL with no HTTP and no browser), each of its
   reports alone (which is the slowest), and the same page's HTML served as a static file (the browser's part:
   parsing, the chart bundle, drawing).
5. One warm-up round (not counted: ClickHouse's first reads of a part), then ``--rounds`` rounds; medians [min-max].

Bounded: at most 120 days, 20 rounds, 60 s per page load; everything on 127.0.0.1; the dashboard and ClickHouse
are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import (  # the repository root is on the path first when run as a script  # noqa: E402 - after the sys.path line above
    EmbeddedStack,
    free_port,
    others_busy,
    process_table,
    wait_for_quiet,
    wait_port,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [  # as tests/test_dashboard_browser.py
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-component-update",
]
# name: (path, extra query, the charts drawn on it)
PAGES = {
    "overview": ("/", "", 2),
    "channels": ("/channels", "&model=linear", 3),
    "channels w_shaped": ("/channels", "&model=w_shaped", 3),
    "funnel": ("/funnel", "&model=first_touch", 1),
    "paths": ("/paths", "", 1),
}
DEMO_EPOCH = date(2026, 9, 7)
TARGET_SECONDS = 1.0


def load_demo(clickhouse_url: str, days: int) -> dict[str, Any]:
    """The demo's first ``days`` days in a fresh database, as the pipeline would write them."""
    from simulator.model import SimulatedDays, SimulationConfig
    from simulator.offline import pipeline_records
    from sinks.client import connect
    from sinks.migrate import migrate_up
    from sinks.rows import MAX_PARTITIONS_PER_INSERT, Provenance, insert, rows_for, topic_kinds
    from sinks.settings import SinkSettings

    settings = SinkSettings(clickhouse_url=clickhouse_url)
    migrate_up(settings)
    started = time.monotonic()
    records = pipeline_records(SimulatedDays(SimulationConfig(seed=42, epoch=DEMO_EPOCH), 0, days))
    simulated = time.monotonic() - started
    kinds = topic_kinds(settings.topics)
    tables: dict[str, list] = {}
    for offset, (topic, _key, value) in enumerate(records):
        for table, row in rows_for(kinds[topic], value, Provenance(topic, 0, offset)):
            tables.setdefault(table, []).append(row)
    client = connect(settings)
    try:
        assert days <= 31 * MAX_PARTITIONS_PER_INSERT  # one insert per table stays within its partition limit
        for table, rows in tables.items():
            for start in range(0, len(rows), 100_000):
                insert(client, table, rows[start : start + 100_000])
        client.command("OPTIMIZE TABLE events FINAL")  # as the data would be after the background merges
    finally:
        client.close()
    return {
        "records": len(records),
        "rows": {table: len(rows) for table, rows in sorted(tables.items())},
        "simulated_s": simulated,
        "loaded_s": time.monotonic() - started - simulated,
    }


class _Static(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def static_server(folder: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    """Serve ``folder`` on a free loopback port (the pages' saved HTML and the dashboard's static files)."""
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), partial(_Static, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


def browser_load(browser: Any, url: str, charts: int) -> tuple[float, float]:
    """(seconds from navigation to every chart drawn, the navigation's request start -> response end) in a fresh
    tab."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        started = time.monotonic()
        response = page.goto(url, wait_until="load", timeout=60_000)
        if response is None or response.status != 200:
            raise RuntimeError(f"{url} answered {response and response.status}")
        page.wait_for_function(
            f"document.querySelectorAll('.chart[data-rendered]').length === {charts}", timeout=60_000
        )
        elapsed = time.monotonic() - started
        server = page.evaluate(
            "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return (n.responseEnd - n.requestStart) / 1000; })()"
        )
        return elapsed, float(server)
    finally:
        context.close()


def warm_load(page: Any, url: str, charts: int) -> float:
    """Seconds from navigation to every chart drawn in a tab that has shown dashboard pages before (a marketer
    clicking from page to page: the chart bundle comes from the browser's cache)."""
    started = time.monotonic()
    page.goto(url, wait_until="load", timeout=60_000)
    page.wait_for_function(f"document.querySelectorAll('.chart[data-rendered]').length === {charts}", timeout=60_000)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=60, help="simulated days of the demo in ClickHouse")
    parser.add_argument("--period-days", type=int, default=30, help="the view: the last N days of the data")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (after one warm-up round)")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="wait at most this long for load < 1.5")
    args = parser.parse_args()
    if not (1 <= args.days <= 120 and 1 <= args.period_days <= args.days and 1 <= args.rounds <= 20):
        parser.error("keep it bounded: 1 <= days <= 120, 1 <= period-days <= days, 1 <= rounds <= 20")
    if not Path(CHROMIUM).exists():
        sys.exit(f"Debian's chromium is not at {CHROMIUM}: apt-get install -y chromium")

    from playwright.sync_api import sync_playwright

    from dashboard import pages
    from dashboard.app import PAGE_BUILDERS, read_only_client
    from dashboard.settings import DashboardSettings
    from dashboard.tables import TABLES, run_table
    from dashboard.views import parse_view
    from deploy.daemons import start_detached

    date_to = DEMO_EPOCH + timedelta(days=args.days - 1)
    date_from = date_to - timedelta(days=args.period_days - 1)
    period = f"from={date_from}&to={date_to}"
    with tempfile.TemporaryDirectory(prefix="closedloop-bench-dashboard-") as tmp:
        stack = EmbeddedStack(Path(tmp) / "stack")
        dashboard = None
        try:
            stack.start("clickhouse")
            url = stack.clickhouse_url("bench_dashboard")
            print(f"loading {args.days} demo days ...", flush=True)
            loaded = load_demo(url, args.days)
            print(
                f"  {loaded['records']:,} records in {loaded['simulated_s']:.1f} s, inserted in "
                f"{loaded['loaded_s']:.1f} s: {loaded['rows']}",
                flush=True,
            )
            port = free_port()
            env = {**os.environ, "CLOSEDLOOP_CLICKHOUSE_URL": url, "CLOSEDLOOP_LOG_LEVEL": "warning"}
            env.pop("CLOSEDLOOP_DASHBOARD_TOKEN", None)
            closedloop = str(Path(sys.executable).parent / "closedloop")
            dashboard = start_detached(
                [closedloop, "dashboard", "--port", str(port)], Path(tmp) / "dashboard.log", env=env,
                die_with_parent=True,
            )  # fmt: skip
            wait_port(port, 60)
            base = f"http://127.0.0.1:{port}"
            settings = DashboardSettings(clickhouse_url=url)
            client = read_only_client(settings)
            # The static ceiling: each page's HTML as the dashboard answered it, with its static files.
            import httpx

            folder = Path(tmp) / "static-site"
            shutil.copytree(ROOT / "dashboard" / "static", folder / "static")
            for name, (path, extra, _) in PAGES.items():
                answer = httpx.get(f"{base}{path}?{period}{extra}", timeout=60)
                answer.raise_for_status()
                (folder / f"{name.replace(' ', '-')}.html").write_text(answer.text, encoding="utf-8")
            server, static_port = static_server(folder)
            results: dict[str, dict[str, list[float]]] = {name: {} for name in PAGES}
            slowest: dict[str, dict[str, list[float]]] = {name: {} for name in PAGES}
            state = wait_for_quiet(args.quiet_wait)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    warm_tab = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                    own = {os.getpid(), dashboard.pid, stack.clickhouse_pid}
                    before, began = process_table(), time.monotonic()
                    for round_ in range(args.rounds + 1):
                        for name, (path, extra, charts) in PAGES.items():
                            view = parse_view(dict(part.split("=", 1) for part in f"{period}{extra}".split("&")))
                            # the page's reports as the page runs them (its builder and the pickers' query)
                            started = time.monotonic()
                            picker = pages.EXECUTOR.submit(pages.choices, client, view)
                            PAGE_BUILDERS[path][1](client, view)
                            picker.result()
                            reports_s = time.monotonic() - started
                            # each of its reports alone
                            alone = {}
                            for key in _keys(path):
                                started = time.monotonic()
                                run_table(client, key, view)
                                alone[key] = time.monotonic() - started
                            # the page over HTTP with no browser beside it (what the server takes on its own)
                            started = time.monotonic()
                            httpx.get(f"{base}{path}?{period}{extra}", timeout=60).raise_for_status()
                            http_s = time.monotonic() - started
                            page_s, server_s = browser_load(browser, f"{base}{path}?{period}{extra}", charts)
                            static_url = f"http://127.0.0.1:{static_port}/{name.replace(' ', '-')}.html"
                            static_s, _ = browser_load(browser, static_url, charts)
                            warm_s = warm_load(warm_tab, f"{base}{path}?{period}{extra}", charts)
                            warm_static_s = warm_load(warm_tab, static_url, charts)
                            if round_ == 0:
                                continue  # the warm-up round
                            for what, value in (
                                ("page", page_s),
                                ("server", server_s),
                                ("http", http_s),
                                ("reports", reports_s),
                                ("static", static_s),
                                ("warm", warm_s),
                                ("warm static", warm_static_s),
                            ):
                                results[name].setdefault(what, []).append(value)
                            for key, value in alone.items():
                                slowest[name].setdefault(key, []).append(value)
                    busy = others_busy(before, process_table(), time.monotonic() - began, own)
                finally:
                    browser.close()
                    server.shutdown()
                    client.close()
            _print(args, loaded, state, busy, results, slowest, TABLES)
        finally:
            if dashboard is not None and dashboard.poll() is None:  # ours, by its PID
                dashboard.terminate()
                try:
                    dashboard.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    dashboard.kill()
                    dashboard.wait()
            stack.stop()


def _keys(path: str) -> list[str]:
    """The tables a page shows (dashboard.pages), for timing each report alone."""
    return {
        "/": ["overview", "overview-previous", "trend"],
        "/channels": ["channels", "compare-models"],
        "/funnel": ["funnel", "quality"],
        "/paths": ["ideal-path", "landing-pages", "content", "payback", "accounts"],
    }[path]


def _stat(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:,.0f} [{min(values) * 1000:,.0f}-{max(values) * 1000:,.0f}]"


def _print(args, loaded, state, busy, results, slowest, tables) -> None:
    print()
    print(f"{args.days} demo days ({loaded['records']:,} records), view = the last {args.period_days} days, "
          f"{args.rounds} rounds after a warm-up; {state}; during the rounds: {busy}")  # fmt: skip
    print()
    print(
        "| page | load, navigation -> charts drawn (ms) | of it the server (ms) | the page by HTTP, no browser (ms) "
        "| reports run directly (ms) | slowest report alone (ms) | static page, same HTML (ms) "
        "| warm tab: page (ms) | warm tab: static page (ms) | under 1 s (warm tab)? |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, figures in results.items():
        worst = max(slowest[name].items(), key=lambda item: statistics.median(item[1]))
        met = (
            ("yes" if statistics.median(figures["page"]) < TARGET_SECONDS else "**no**")
            + " ("
            + ("yes" if statistics.median(figures["warm"]) < TARGET_SECONDS else "**no**")
            + ")"
        )
        print(
            f"| {name} | {_stat(figures['page'])} | {_stat(figures['server'])} | {_stat(figures['http'])} | "
            f"{_stat(figures['reports'])} | "
            f"{worst[0]} ({tables[worst[0]].report}) {_stat(worst[1])} | {_stat(figures['static'])} | "
            f"{_stat(figures['warm'])} | {_stat(figures['warm static'])} | {met} |"
        )
    print()
    print("each report alone, median ms:")
    for name, reports in slowest.items():
        print(f"  {name}: " + ", ".join(f"{key} {statistics.median(v) * 1000:,.0f}" for key, v in reports.items()))


if __name__ == "__main__":
    main()
