"""The status page at /gui in headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium): it renders every zone of a running global with its status, updates
itself when a zone dies, and never shows secret data."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster, b64, wait_for

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager must not phone home
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # this machine's network is closed
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


_READ_ROWS = """
return Array.from(document.querySelectorAll('#zones tr')).map(
    tr => [tr.dataset.zone, Array.from(tr.cells).map(td => td.textContent)]);
"""


def _rows(driver: object) -> dict[str, dict[str, str]]:
    """The table as rendered, read in one script call (the page redraws every 2 s)."""
    rows = driver.execute_script(_READ_ROWS)  # type: ignore[attr-defined]
    return {
        zone: {"status": cells[1], "lag": cells[2], "all": " ".join(cells)} for zone, cells in rows
    }


def test_status_page_shows_every_zone_and_follows_changes(
    cluster: Cluster, browser: object
) -> None:
    g = cluster.start_global("--keepalive-interval", "3s", "--keepalive-timeout", "2s")
    cluster.start_zone("zone-a")
    b = cluster.start_zone("zone-b")
    cluster.start_zone("zone-c")
    marker = "page-marker-value-7f3a"
    g.put(
        "/global-secrets/page-secret",
        {"type": "GlobalSecret", "name": "page-secret", "data": b64(marker)},
    )
    cluster.kdsctl("wait", "synced", "--timeout", "10s")

    # Without a token the page asks for one and shows no zone.
    browser.get(f"{g.api_url}/gui")  # type: ignore[attr-defined]
    assert browser.title == "kds-sync: zones"  # type: ignore[attr-defined]
    wait_for(
        lambda: browser.find_element("id", "login").is_displayed(),  # type: ignore[attr-defined]
        10,
        "the token form",
    )
    assert _rows(browser) == {}
    # It says where the token is, ends the "Loading", and does not claim global is unreachable.
    summary = browser.find_element("id", "summary").text  # type: ignore[attr-defined]
    assert "A token is needed" in summary and "DATA_DIR/read-only-token" in summary, summary
    assert "Loading" not in summary
    assert not browser.find_element("id", "problem").is_displayed()  # type: ignore[attr-defined]
    # A wrong token is refused; the read-only token, typed into the form, is enough.
    field = browser.find_element("id", "token")  # type: ignore[attr-defined]
    field.send_keys("wrong-token")
    field.submit()
    wait_for(
        lambda: "token was refused" in browser.find_element("id", "summary").text,  # type: ignore[attr-defined]
        10,
        "the refusal",
    )
    field.clear()
    field.send_keys(g.read_only_token)
    field.submit()
    rows = wait_for(
        lambda: (
            len(r := _rows(browser)) == 3 and all(v["status"] == "Online" for v in r.values()) and r
        ),
        10,
        "three Online zones on the page",
    )
    assert sorted(rows) == ["zone-a", "zone-b", "zone-c"]
    assert all(v["lag"] == "0" for v in rows.values())
    summary = browser.find_element("id", "summary").text  # type: ignore[attr-defined]
    assert summary.startswith("3 of 3 zones online")

    # No reload from here on: the page refreshes itself.
    b.signal(signal.SIGKILL)
    wait_for(
        lambda: _rows(browser)["zone-b"]["status"] == "Offline", 15, "zone-b Offline on the page"
    )
    g.put("/global-secrets/after", {"type": "GlobalSecret", "name": "after", "data": b64(marker)})
    wait_for(lambda: _rows(browser)["zone-b"]["lag"] == "1", 10, "zone-b lag on the page")
    assert _rows(browser)["zone-a"]["status"] == "Online"
    assert "2 of 3 zones online" in browser.find_element("id", "summary").text  # type: ignore[attr-defined]

    html = browser.page_source  # type: ignore[attr-defined]
    assert marker not in html and b64(marker) not in html

    # A fresh tab given the token in the address fragment (never sent to the server).
    browser.switch_to.new_window("tab")  # type: ignore[attr-defined]
    browser.get(f"{g.api_url}/gui#token={g.read_only_token}")  # type: ignore[attr-defined]
    wait_for(lambda: len(_rows(browser)) == 3, 10, "zones from the fragment's token")
    assert g.read_only_token not in browser.current_url  # type: ignore[attr-defined]
    assert g.read_only_token not in g.log_text()


OUTPUT = Path(
    os.environ.get("KDS_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output")
)


def _screenshot(driver: object, name: str) -> None:
    """Save the page as it is now to test-output/status-page/NAME.png (KDS_TEST_OUTPUT)."""
    out = OUTPUT / "status-page"
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # type: ignore[attr-defined]
    height = _js(driver, "return document.documentElement.scrollHeight")
    metrics["height"] = max(600, min(int(height), 4000))  # type: ignore[call-overload]
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # type: ignore[attr-defined]
    assert driver.save_screenshot(str(out / f"{name}.png"))  # type: ignore[attr-defined]


def _js(driver: object, script: str) -> object:
    return driver.execute_script(script)  # type: ignore[attr-defined]


def _go(driver: object, fragment: str, view: str) -> None:
    _js(driver, f"location.hash = {fragment!r}")
    wait_for(
        lambda: (
            _js(driver, "return document.body.dataset.rendered") == view
            and _js(driver, "return document.body.dataset.view") == view
        ),
        10,
        f"the {view} view",
    )


def test_status_page_views_history_charts_and_resources(cluster: Cluster, browser: object) -> None:
    """Each view in Chromium, with a screenshot: the zones with the propagation-latency
    chart; one zone's lag chart, connection timeline, events and conflicts; the resources
    and which zones hold each or keep their own copy. Nothing is rendered as HTML."""
    g = cluster.start_global("--keepalive-interval", "3s", "--keepalive-timeout", "2s")
    a = cluster.start_zone("zone-a")
    b = cluster.start_zone("zone-b")
    marker = "page-marker-value-93c1"
    b.put("/global-secrets/clash", {"type": "GlobalSecret", "name": "clash", "data": b64("z")})
    g.put("/global-secrets/clash", {"type": "GlobalSecret", "name": "clash", "data": b64(marker)})
    for i in range(3):
        g.put(
            f"/meshes/default/secrets/s{i}",
            {"type": "Secret", "name": f"s{i}", "data": b64(marker)},
        )
    cluster.kdsctl("wait", "synced", "--timeout", "10s")
    wait_for(lambda: g.zone_sync("zone-b")["conflictCount"] == 1, what="zone-b's conflict")
    a.signal(signal.SIGKILL)
    a.proc.wait()  # type: ignore[union-attr]
    wait_for(lambda: g.zone_sync("zone-a")["status"] == "Offline", 15, "zone-a Offline")
    g.put("/meshes/default/secrets/late", {"type": "Secret", "name": "late", "data": b64("x")})
    a.start()
    wait_for(lambda: g.zone_sync("zone-a")["status"] == "Online", 15, "zone-a Online again")
    cluster.kdsctl("wait", "synced", "--timeout", "10s")

    browser.get(f"{g.api_url}/gui#token={g.read_only_token}")  # type: ignore[attr-defined]
    wait_for(lambda: len(_rows(browser)) == 2, 10, "two zones on the page")
    _go(browser, "", "zones")
    bars = wait_for(
        lambda: (
            (
                b := _js(
                    browser,
                    "return Array.from(document.querySelectorAll('#latency-svg rect'))"
                    ".map(r => Number(r.dataset.count))",
                )
            )
            and sum(b) > 0  # type: ignore[arg-type]
            and b
        ),
        10,
        "the latency chart",
    )
    assert len(bars) == 15  # type: ignore[arg-type]  # 14 bounds and "more"
    _screenshot(browser, "zones")

    _go(browser, "#zone=zone-a", "zone")
    wait_for(
        lambda: (
            _js(browser, "return document.querySelectorAll('#timeline-svg rect.offline').length")
            and _js(browser, "return document.querySelectorAll('#lag-svg circle.sample').length")
        ),
        10,
        "zone-a's timeline with an outage and its lag samples",
    )
    types = _js(
        browser,
        "return Array.from(document.querySelectorAll('#events tr')).map(t => t.dataset.type)",
    )
    assert types[:3] == ["connected", "disconnected", "connected"], types  # newest first
    title = browser.find_element("id", "zone-title").text  # type: ignore[attr-defined]
    assert title == "Zone zone-a: Online"
    _screenshot(browser, "zone-a")

    _go(browser, "#zone=zone-b", "zone")
    wait_for(
        lambda: "GlobalSecret:clash" in browser.find_element("id", "conflicts").text,  # type: ignore[attr-defined]
        10,
        "zone-b's conflict listed",
    )
    events = browser.find_element("id", "events").text  # type: ignore[attr-defined]
    assert "conflicts: 1 now; started GlobalSecret:clash" in events
    assert browser.find_element("id", "conflicts-title").text == "Conflicts (1)"  # type: ignore[attr-defined]
    zone_bars = wait_for(
        lambda: _js(
            browser,
            "return Array.from(document.querySelectorAll('#zone-latency-svg rect'))"
            ".map(r => Number(r.dataset.count))",
        ),
        10,
        "zone-b's latency chart",
    )
    assert len(zone_bars) == 15 and sum(zone_bars) >= 1  # type: ignore[arg-type]
    _screenshot(browser, "zone-b")

    _go(browser, "#resources", "resources")
    rows = _js(
        browser,
        "return Object.fromEntries(Array.from(document.querySelectorAll('#resources tr')).map("
        "tr => [tr.dataset.key, Object.fromEntries(Array.from(tr.querySelectorAll('td[data-field]'))"
        ".map(td => [td.dataset.field, td.textContent]))]))",
    )
    assert rows["GlobalSecret:clash"] == {"held": "zone-a", "own": "zone-b", "pending": "\u2013"}  # type: ignore[index]
    assert rows["Secret:default/late"]["held"] == "zone-a, zone-b"  # type: ignore[index]
    assert set(rows) >= {"Mesh:default", "Secret:default/s0", "Secret:default/s2"}  # type: ignore[arg-type]
    _screenshot(browser, "resources")

    # Names, counts and times only; the page's own script is its only script, and nothing
    # the API said became an element.
    html = browser.page_source  # type: ignore[attr-defined]
    assert marker not in html and b64(marker) not in html
    assert (
        _js(browser, "return document.querySelectorAll('script, img, iframe, object').length") == 1
    )
    assert (OUTPUT / "status-page" / "zone-b.png").stat().st_size > 10_000


HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1">'


def _canned(path: str, now: float) -> object:
    """A global's status API with an hour of one zone's history, holding hostile text
    wherever a zone's words reach the page."""

    def ts(ago: float) -> str:
        return (
            dt.datetime.fromtimestamp(now - ago, dt.UTC).isoformat(timespec="milliseconds")[:-6]
            + "Z"
        )

    zone = {
        "name": "zone-x",
        "status": "Online",
        "instanceId": HOSTILE,
        "connectedAt": ts(600),
        "disconnectedAt": None,
        "disconnectReason": None,
        "lastUpdateAt": ts(3),
        "zoneVersion": HOSTILE,
        "storeBackend": "sqlite",
        "globalRevision": 420,
        "ackedRevision": 417,
        "lagRevisions": 3,
        "lagSeconds": 1.5,
        "totalUpdates": 400,
        "totalErrors": 2,
        "conflictCount": 2,
        "conflicts": ["Secret:default/db-password", HOSTILE],
        "lastError": {"message": HOSTILE, "time": ts(900)},
        "lastSyncMode": "resume",
        "connections": 3,
    }
    if path == "/zones/_overview":
        return {"total": 1, "items": [{"type": "ZoneOverview", "name": "zone-x", "kdsSync": zone}],
                "next": None, "globalRevision": 420}  # fmt: skip
    if path.startswith("/zones/zone-x/events"):
        lag = [
            {"time": ts(3600 - 30 * i), "revisions": (i * 7) % 23 if 40 <= i < 70 else i % 3,
             "seconds": 0.5 * (i % 5)}
            for i in range(120)
        ]  # fmt: skip
        events = [
            {"time": ts(3000), "type": "connected", "instance": "zone-x-1", "version": "0.1.0",
             "mode": "snapshot"},
            {"time": ts(2400), "type": "disconnected", "reason": HOSTILE},
            {"time": ts(2300), "type": "token-refused", "code": "PERMISSION_DENIED",
             "reason": "zone token t1 has been revoked", "more": 4},
            {"time": ts(1500), "type": "connected", "instance": HOSTILE, "version": HOSTILE,
             "mode": "resume"},
            {"time": ts(1200), "type": "conflicts", "count": 2, "started": [HOSTILE],
             "startedCount": 2, "ended": [], "endedCount": 0},
            {"time": ts(900), "type": "disconnected", "reason": "connection lost"},
            {"time": ts(600), "type": "connected", "instance": "zone-x-3", "version": "0.1.0",
             "mode": "resume"},
            {"time": ts(60), "type": HOSTILE},
        ]  # fmt: skip
        return {"name": "zone-x", "events": events, "lag": lag}
    if path == "/zones/_propagation":
        counts = [0, 1, 5, 20, 60, 80, 85, 86, 86, 86, 86, 86, 86, 86]
        return {"buckets": [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                            10, 30],
                "total": {"counts": counts, "count": 87, "sum": 4.2}, "zones": {}}  # fmt: skip
    if path == "/zones/_resources":
        return {"globalRevision": 420, "zones": ["zone-x"], "total": 1, "truncated": False,
                "items": [{"type": "Secret", "mesh": "default", "name": "db-password",
                           "origin": "global", "revision": 12,
                           "zones": {"held": [], "ownCopy": [HOSTILE], "pending": []}}]}  # fmt: skip
    return None


@pytest.fixture
def canned_global() -> Iterator[str]:
    page = (Path(__file__).resolve().parents[2] / "globalcp" / "status.html").read_bytes()
    csp = (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'"
    )

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/gui":
                body, kind = page, "text/html"
            else:
                answer = _canned(self.path, time.time())
                if answer is None:
                    self.send_error(404)
                    return
                body, kind = json.dumps(answer).encode(), "application/json"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Security-Policy", csp)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_status_page_draws_an_hour_of_history_and_shows_hostile_text_as_text(
    canned_global: str, browser: object
) -> None:
    """A zone's hour (three connections, a refused token, conflicts, lag rising and falling)
    drawn from canned API answers, with a zone's hostile text in every place it can reach:
    it shows as text and never becomes an element."""
    browser.get(f"{canned_global}/gui#token=t&zone=zone-x")  # type: ignore[attr-defined]
    wait_for(lambda: _js(browser, "return document.body.dataset.rendered") == "zone", 10, "zone")
    wait_for(
        lambda: (
            _js(browser, "return document.querySelectorAll('#lag-svg circle.sample').length") == 121
        ),  # the 120 samples and now
        10,
        "the lag chart",
    )
    spans = _js(
        browser,
        "return Array.from(document.querySelectorAll('#timeline-svg rect')).map(r => r.classList[0])",
    )
    assert spans == ["unknown", "online", "offline", "online", "offline", "online"], spans
    text = browser.find_element("id", "view-zone").text  # type: ignore[attr-defined]
    assert HOSTILE in text and "token refused (PERMISSION_DENIED)" in text
    assert "conflicts: 2 now; started " + HOSTILE + " (+1 more)" in text
    _screenshot(browser, "zone-history")
    for fragment, view in (("", "zones"), ("#resources", "resources")):
        _go(browser, fragment, view)
        assert HOSTILE in browser.find_element("id", f"view-{view}").text  # type: ignore[attr-defined]
    _screenshot(browser, "resources-hostile")
    _go(browser, "", "zones")
    wait_for(
        lambda: _js(browser, "return document.querySelectorAll('#latency-svg rect').length") == 15,
        10,
        "the latency chart",
    )
    _screenshot(browser, "zones-latency")
    assert _js(browser, "return document.body.dataset.pwned") is None
    assert _js(browser, "return document.querySelectorAll('img').length") == 0
