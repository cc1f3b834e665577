"""通話履歴 end to end: real calls placed by SIPp through ``pbx run``, then the panel in Chromium.

Three calls from the carrier (SIPp on 127.0.0.2) to acme: one answered by 1001, who records, with
RTP both ways (SIPp's ``rtp_stream``); one to 1002, who lets it ring until the no-answer forward
(3 s here) takes it to 1001; one to the after-hours announcement (009608). The admin's history
lists them with their dispositions and forwards; the recorded call's page says its trace in words
and its ``<audio>`` element loads the WAV in Chromium (``readyState``, ``duration``); a Range
request returns 206; beta's admin gets 404 for the page and the file.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from loadtests.suite import scenario, write_audio
from tests.integration.harness import REPO, SIPP_DIR, free_port, running_server, write_config
from tests.integration.test_calls import (
    CARRIER_IP,
    PHONE_IP,
    Pbx,
    Sipps,
    closed_record,
    register,
    sipp_args,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp, pytest.mark.browser]

EVERY_DAY = 'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]'
RECORDED, FORWARDED, AFTER_HOURS = "0312345678", "0312340003", "0312340009"
ACME = f"""
[tenant]
domain = "acme.example"
default = true
qualify_seconds = 0  # scripted clients: no keep-alive OPTIONS (see harness.py)

[limits]
max_users = 10
recording_users = 1

[[numbers]]
number = "{RECORDED}"
[[numbers]]
number = "{FORWARDED}"
[[numbers]]
number = "{AFTER_HOURS}"

[[users]]
extension = "1001"
password = "secret1001"
caller_id = "{RECORDED}"
recording = true

[[users]]
extension = "1002"
password = "secret1002"
caller_id = "{RECORDED}"
forward = {{ no_answer = "1001" }}

[[incoming]]
number = "{RECORDED}"
targets = "1001"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

[[incoming]]
number = "{FORWARDED}"
targets = "1002"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"

[[incoming]]
number = "{AFTER_HOURS}"
targets = "009608"
{EVERY_DAY}
start = "0:00"
end = "23:59:59"
"""
BETA = """
[tenant]
domain = "beta.example"

[limits]
max_users = 1
"""
SERVER_EXTRA = """
[calls]
no_answer_seconds = 3

[security]
max_requests_per_second = 10000
"""
PASSWORD = "history admin password"
Records = dict[str, dict[str, Any]]  # closed call records by the number called


def add_account(config: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pbx", "panel", *args, "--config", str(config)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pbx, Records]]:
    """The server after the three calls, with their closed records by number called."""
    root = tmp_path_factory.mktemp("history")
    trunk_port = free_port(host=CARRIER_IP)
    config = write_config(
        root,
        tenants={"acme": ACME, "beta": BETA},
        server_extra=SERVER_EXTRA,
        trunk=f"{CARRIER_IP}:{trunk_port}",
    )
    add_account(config, "add-admin", "acme-admin", "--tenant", "acme")
    add_account(config, "add-admin", "beta-admin", "--tenant", "beta")
    audio = write_audio(root / "audio.al")
    with running_server(config) as server:
        ports = {ext: free_port(host=PHONE_IP) for ext in ("1001", "1002")}
        pbx = Pbx(server, root, trunk_port, ports)
        for ext, port in ports.items():
            register(server, ext, port, root)
        sipps = Sipps(root)
        try:
            # 1001 answers twice with RTP (the recorded call, then the forwarded one).
            phone = scenario("phone_media.xml", root, audio)
            args = sipp_args(
                phone, server.udp, local_ip=PHONE_IP, port=ports["1001"], service="1001"
            )
            args[args.index("-m") + 1] = "2"
            sipps.start("1001", args, bound=(PHONE_IP, ports["1001"]))
            # 1002 rings until the no-answer forward cancels it.
            ringing = sipp_args(
                SIPP_DIR / "phone_ring_cancelled.xml",
                server.udp,
                local_ip=PHONE_IP,
                port=ports["1002"],
                service="1002",
            )
            sipps.start("1002", ringing, bound=(PHONE_IP, ports["1002"]))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
                rtp.bind((CARRIER_IP, 0))  # the announcement's RTP lands here, unread
                announcement = sipp_args(
                    SIPP_DIR / "carrier_announcement.xml",
                    server.udp,
                    local_ip=CARRIER_IP,
                    port=free_port(host=CARRIER_IP),
                    service=AFTER_HOURS,
                    extra=["-set", "rtp_port", str(rtp.getsockname()[1])],
                )
                sipps.start("carrier 009608", announcement)
                for number in (RECORDED, FORWARDED):
                    carrier = scenario(
                        "carrier_media.xml", root, audio, {"[field0]": number}
                    ).rename(root / f"carrier-{number}.xml")
                    done = subprocess.run(
                        sipp_args(
                            carrier,
                            server.udp,
                            local_ip=CARRIER_IP,
                            port=free_port(host=CARRIER_IP),
                            service=number,
                            extra=["-d", "2000"],
                        ),
                        cwd=root,
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=False,
                    )
                    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
                sipps.wait_all()
        finally:
            sipps.close()
        records = {n: closed_record(pbx, n) for n in (RECORDED, FORWARDED, AFTER_HOURS)}
        yield pbx, records


def sign_in(context: BrowserContext, base: str, name: str) -> Page:
    page = context.new_page()
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.get_by_role("button", name="ログイン").click()
    expect(page.locator("header .who")).to_contain_text(name)
    return page


def http_get(
    url: str, cookie: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Cookie": cookie, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return (
                response.status,
                response.read(),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def test_the_history_shows_the_calls_and_the_recording_plays(
    calls: tuple[Pbx, Records],
    browser: Browser,
) -> None:
    pbx, records = calls
    recorded, forwarded, announced = records[RECORDED], records[FORWARDED], records[AFTER_HOURS]
    assert recorded["recording_path"] is not None
    assert Path(recorded["recording_path"]).stat().st_size > 44 + 8000  # some audio, not a header
    base = f"http://{pbx.server.panel[0]}:{pbx.server.panel[1]}"

    admin_context = browser.new_context()
    admin = sign_in(admin_context, base, "acme-admin")
    admin.get_by_role("link", name="通話履歴").click()
    rows = admin.locator("#history tbody tr")
    expect(rows).to_have_count(3)
    for record, disposition, answered_by in (
        (recorded, "応答", "1001"),
        (forwarded, "応答", "1001"),
        (announced, "応答", "009608"),
    ):
        row = admin.locator(f'#history tr[data-call="{record["id"]}"]')
        expect(row.locator(".disposition")).to_have_text(disposition)
        expect(row).to_contain_text(answered_by)
    expect(admin.locator(f'#history tr[data-call="{forwarded["id"]}"]')).to_contain_text(
        "1002 → 1001 (無応答時転送)"
    )

    # Filters: 1001 answered two of the calls; one went to the forwarded number.
    admin.fill("input[name=extension]", "1001")
    admin.get_by_role("button", name="絞り込み").click()
    expect(rows).to_have_count(2)
    admin.fill("input[name=extension]", "")
    admin.fill("input[name=number]", FORWARDED)
    admin.get_by_role("button", name="絞り込み").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-call", forwarded["id"])

    # The forwarded call's trace in words.
    admin.goto(f"{base}/t/acme/history/{forwarded['id']}")
    words = admin.locator("#trace-words")
    expect(words).to_contain_text("1002 を呼び出し(端末 1 台)、3 秒応答がなければ 1001 へ転送")
    expect(words).to_contain_text("1002 が 3 秒以内に応答しなかったため 1001 へ転送(無応答時転送)")
    expect(words).to_contain_text("1001 が応答(通話録音あり)")
    admin.goto(f"{base}/t/acme/history/{announced['id']}")
    expect(admin.locator("#trace-words")).to_contain_text("時間外ガイダンス(009608)を再生")

    # The recorded call: the player loads the WAV in Chromium.
    admin.goto(f"{base}/t/acme/history/{recorded['id']}")
    admin.wait_for_function(
        "() => { const a = document.querySelector('#recording audio');"
        " return a !== null && a.readyState >= 1 && a.duration > 0; }",
        timeout=15000,
    )
    duration = admin.evaluate("document.querySelector('#recording audio').duration")
    assert duration >= 1.0

    # A range request returns 206; beta's admin gets 404 for the page and the file.
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in admin_context.cookies())
    url = f"{base}/t/acme/history/{recorded['id']}/recording"
    status, body, headers = http_get(url, cookie, {"Range": "bytes=0-11"})
    assert status == 206
    assert body[:4] == b"RIFF"
    assert len(body) == 12
    assert headers["content-range"].startswith("bytes 0-11/")

    beta_context = browser.new_context()
    sign_in(beta_context, base, "beta-admin")
    beta_cookie = "; ".join(f"{c['name']}={c['value']}" for c in beta_context.cookies())
    for path in (
        url,
        f"{base}/t/acme/history/{recorded['id']}",
        f"{base}/t/beta/history/{recorded['id']}/recording",
    ):
        status, body, _ = http_get(path, beta_cookie, {"Range": "bytes=0-11"})
        assert status == 404, path
        assert b"RIFF" not in body
    admin_context.close()
    beta_context.close()
