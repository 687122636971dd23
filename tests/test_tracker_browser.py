"""Headless Chromium runs the tracker on a landing page served by the test; the events reach the broker.

The page (one port) and the collector (another port, in-process uvicorn) are different origins, as on a real
site: the beacons are cross-origin, allowed by CORS for the page's origin only.
"""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn
from collector_support import collector_settings, create_source_topics, read_topic
from harness import free_port, wait_for

from collector.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-sync",
    "--disable-component-update",
]


def _pages(collector: str) -> dict[str, bytes]:
    tag = f'<script async src="{collector}/tracker.js" data-key="demo-write-key"></script>'
    return {
        "/": f"<!doctype html><html><head><title>Landing</title>{tag}</head><body>"
        f'<a id="next" href="/demo">Book a demo</a></body></html>'.encode(),
        "/demo": f"<!doctype html><html><head><title>Demo</title>{tag}</head><body>"
        '<form data-closedloop="demo-request" action="/thanks" method="post">'
        '<input name="name" value=""><input type="email" name="work_email">'
        '<input type="password" name="secret" value="x"><button id="send" type="submit">Send</button>'
        "</form></body></html>".encode(),
        "/thanks": b"<!doctype html><html><head><title>Thanks</title></head><body>Thanks</body></html>",
    }


@pytest.fixture
def site(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Iterator[tuple[str, object]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    page_port, collector_port = free_port(), free_port()
    site_origin, collector_origin = f"http://127.0.0.1:{page_port}", f"http://127.0.0.1:{collector_port}"
    settings = collector_settings(
        tmp_path, bootstrap=kafka_bootstrap, prefix=unique_name, allowed_origins=[site_origin]
    )
    create_source_topics(kafka_bootstrap, settings)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=collector_port, log_level="warning", lifespan="on")
    )
    collector_thread = threading.Thread(target=server.run, daemon=True)
    collector_thread.start()
    pages = _pages(collector_origin)

    class Handler(BaseHTTPRequestHandler):
        def _send(self) -> None:
            body = pages.get(self.path.split("?")[0])
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body or b"not found")

        def do_GET(self) -> None:
            self._send()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", page_port), Handler)
    page_thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    page_thread.start()
    wait_for(lambda: server.started, 15, "the collector to start", interval=0.02)
    try:
        yield site_origin, settings
    finally:
        httpd.shutdown()
        httpd.server_close()
        server.should_exit = True
        collector_thread.join(timeout=15)


def test_visit_browse_submit_then_return(site) -> None:
    from playwright.sync_api import sync_playwright

    site_origin, settings = site
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{site_origin}/?utm_source=linkedin&utm_medium=social&utm_campaign=spring")
            page.wait_for_function("window.closedloop && window.closedloop.loaded")
            visitor = page.evaluate("window.closedloop.visitorId()")
            page.click("#next")
            page.wait_for_url(f"{site_origin}/demo")
            page.wait_for_function("window.closedloop && window.closedloop.loaded")
            page.fill("input[name=name]", "Ann")
            page.fill("input[type=email]", "  Ann@Acme.TEST ")
            page.click("#send")
            page.wait_for_url(f"{site_origin}/thanks")
            assert page.title() == "Thanks"  # the form went through

            events = read_topic(settings.kafka_servers, settings.topics.events, 3)
            assert len(events) == 3
            assert {key for key, _ in events} == {visitor}
            views = [value["event"] for _, value in events if value["event"]["type"] == "page_view"]
            identify = [value["event"] for _, value in events if value["event"]["type"] == "identify"]
            assert [v["path"] for v in views] == ["/", "/demo"]
            assert {v["visitor_id"] for v in views} == {visitor}
            assert (views[0]["utm_source"], views[0]["utm_medium"], views[0]["utm_campaign"]) == (
                "linkedin",
                "social",
                "spring",
            )
            assert views[0]["title"] == "Landing" and views[0]["referrer"] is None
            assert views[1]["referrer"] == f"{site_origin}/?utm_source=linkedin&utm_medium=social&utm_campaign=spring"
            assert views[0]["session_id"] == views[1]["session_id"]
            assert views[0]["user_agent"] and views[0]["screen"]
            assert len(identify) == 1
            assert (identify[0]["visitor_id"], identify[0]["email"], identify[0]["form_id"]) == (
                visitor,
                "ann@acme.test",
                "demo-request",
            )
            assert identify[0]["fields"] == {"name": "Ann"}  # the password never leaves the page
            assert {value["site_id"] for _, value in events} == {"demo"}

            # A second visit in the same browser keeps the visitor id.
            again = context.new_page()
            again.goto(f"{site_origin}/")
            again.wait_for_function("window.closedloop && window.closedloop.loaded")
            assert again.evaluate("window.closedloop.visitorId()") == visitor
            events = read_topic(settings.kafka_servers, settings.topics.events, 4)
            assert len(events) == 4
            assert {key for key, _ in events} == {visitor}
        finally:
            browser.close()
