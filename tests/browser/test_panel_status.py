"""登録状況 in real Chromium: a phone registering and unregistering changes its state on an open
page, without a reload, within a few seconds; the phone setup page shows the stored password on
request.

The server runs as a subprocess on loopback (tests/integration/harness.py); the phone is the
integration tests' raw UDP client (REGISTER with MD5 digest, then Expires: 0).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser.test_panel_walkthrough import add_operator, sign_in
from tests.integration.harness import RunningServer, running_server, stop_process, write_config
from tests.integration.sip_client import SipUdpClient

pytestmark = [pytest.mark.integration, pytest.mark.browser]

OPERATOR_PASSWORD = "operator pass 2026"
UPDATE_TIMEOUT_MS = 5000  # "within a few seconds": the stream's interval is 2 s


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(tmp_path)
    add_operator(config, "chief", OPERATOR_PASSWORD)
    with running_server(config) as running:
        yield running


def test_a_phone_going_online_and_offline_shows_on_the_open_page(
    server: RunningServer, browser: Browser
) -> None:
    base = f"http://{server.panel[0]}:{server.panel[1]}"
    page = browser.new_context().new_page()
    sign_in(page, base, "chief", OPERATOR_PASSWORD)
    page.goto(f"{base}/t/acme/status")
    row = page.locator("#status-1003")
    expect(row).to_have_attribute("data-online", "false")
    expect(row.locator(".state")).to_have_text("オフライン")
    # The script has the stream open once the first update has replaced the server's rendering.
    expect(page.locator("#live-status")).to_have_attribute("data-live", "on")
    page.evaluate("window.notReloaded = true")

    with SipUdpClient(server.udp, "1003", "secret1003", "acme.example") as phone:
        started = time.monotonic()
        assert phone.register(expires=600).status == 200
        expect(row).to_have_attribute("data-online", "true", timeout=UPDATE_TIMEOUT_MS)
        online_after = time.monotonic() - started
        expect(row.locator(".state")).to_have_text("オンライン")
        expect(row.locator(".devices")).to_contain_text(f"127.0.0.1:{phone.port} UDP")
        expect(page.locator("#status-summary")).to_contain_text("オンライン 1 / 4")

        started = time.monotonic()
        assert phone.register(expires=0).status == 200
        expect(row).to_have_attribute("data-online", "false", timeout=UPDATE_TIMEOUT_MS)
        offline_after = time.monotonic() - started
    expect(row.locator(".state")).to_have_text("オフライン")
    assert page.evaluate("window.notReloaded") is True
    print(f"online shown after {online_after:.2f} s, offline after {offline_after:.2f} s")

    # 端末設定: the values, and the stored password only when asked (the fixture's file holds it).
    page.locator("#status-1003").get_by_role("link", name="端末設定").click()
    expect(page.locator("#phone-server td.mono")).to_have_text(server.udp[0])
    expect(page.locator("#phone-port td.mono")).to_have_text(str(server.udp[1]))
    expect(page.locator("#phone-domain td.mono")).to_have_text("acme.example")
    expect(page.locator("#phone-password-value")).to_have_text("********")
    page.get_by_role("button", name="パスワードを表示").click()
    expect(page.locator("#phone-password-value")).to_have_text("secret1003")

    # A server stopping with the page open ends the stream at once (it does not wait for the
    # HTTP listener's graceful time-out), and the page says updates stopped.
    page.goto(f"{base}/t/acme/status")
    expect(page.locator("#live-status")).to_have_attribute("data-live", "on")
    started = time.monotonic()
    assert stop_process(server.process) == 0
    stopped_in = time.monotonic() - started
    closed = server.wait_for_events("panel_status_stream_closed", 2)
    # The first page's stream ended when the browser left it; this one when the server stopped.
    assert [e["reason"] for e in closed] == ["client_gone", "closing"]
    expect(page.locator("#live-status")).to_have_attribute("data-live", "stopped")
    print(f"server stopped in {stopped_in:.2f} s with a status page open")
