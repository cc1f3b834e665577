"""着信設定 in real Chromium: the manual's example schedule entered through the page, read back
from the SVG timeline by time, the test call at the boundary seconds, an overlap refused with
the overlap shown, and the midnight split in one click. The server runs as a subprocess on
loopback; the page is the only way in.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.harness import REPO, RunningServer, running_server, write_config

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ADMIN_PASSWORD = "acme admin pass 2026"
ACME = """\
# Tenant acme: inbound rules entered through the control panel.
[tenant]
domain = "acme.example"
default = true

[limits]
max_users = 5

[[numbers]]
number = "0312345678"

[[numbers]]
number = "0612345678"

[[users]]
extension = "1001"
password = "acme-1001-secret"
name = "佐藤"

[[users]]
extension = "1002"
password = "acme-1002-secret"
name = "鈴木"

[[users]]
extension = "1003"
password = "acme-1003-secret"
name = "高橋"
"""
PAGE = "/t/acme/incoming/0312345678"
WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("inbound")
    config = write_config(root, tenants={"acme": ACME})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pbx",
            "panel",
            "add-admin",
            "acme-admin",
            "--tenant",
            "acme",
            "--config",
            str(config),
        ],
        input=ADMIN_PASSWORD + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with running_server(config) as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RunningServer, browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base(server)}/login")
    page.fill("input[name=name]", "acme-admin")
    page.fill("input[name=password]", ADMIN_PASSWORD)
    page.get_by_role("button", name="ログイン").click()
    expect(page.locator("header .who")).to_contain_text("acme-admin")
    try:
        yield page
    finally:
        context.close()


def base(server: RunningServer) -> str:
    return f"http://{server.panel[0]}:{server.panel[1]}"


def fill_rule(page: Page, targets: str, start: str, end: str, days: tuple[str, ...]) -> None:
    form = page.locator("#rule-form")
    form.locator("input[name=targets]").fill(targets)
    for day in (*WEEK, "holiday"):
        box = form.locator(f"input[name=days][value={day}]")
        if day in days:
            box.check()
        else:
            box.uncheck()
    form.locator("input[name=start]").fill(start)
    form.locator("input[name=end]").fill(end)
    form.get_by_role("button", name="保存").click()


def shapes(page: Page, kind: str, day: str) -> list[tuple[int, int, str]]:
    found = page.locator(f"#timeline svg rect.{kind}[data-day={day}]")
    out = [
        (
            int(found.nth(i).get_attribute("data-start") or "-1"),
            int(found.nth(i).get_attribute("data-end") or "-1"),
            found.nth(i).get_attribute("data-targets") or "",
        )
        for i in range(found.count())
    ]
    return sorted(out)


def test_the_manuals_example_schedule_through_the_page(server: RunningServer, admin: Page) -> None:
    admin.goto(f"{base(server)}/t/acme/")
    admin.locator("main").get_by_role("link", name="着信設定").click()
    admin.get_by_role("link", name="0312345678").click()
    expect(admin.locator("h1")).to_contain_text("0312345678")
    # Before any rule: the whole week is a gap (calls refused).
    assert shapes(admin, "gap", "mon") == [(0, 86399, "")]

    # The manual's example, typed as the manual writes it.
    for targets, start, end in (
        ("1001,1002", "8:00", "19:59"),
        ("1003", "20:00", "23:59"),
        ("009608", "0:00", "7:59"),
    ):
        fill_rule(admin, targets, start, end, WEEK)
        expect(admin.locator(".flash")).to_contain_text("保存しました")

    for day in WEEK:
        assert shapes(admin, "band", day) == [
            (0, 28799, "009608"),
            (28800, 71999, "1001,1002"),
            (72000, 86399, "1003"),
        ], day
        assert shapes(admin, "gap", day) == []
    labels = admin.locator("#timeline svg text.label[data-day=mon]")
    expect(labels).to_have_text(["009608 時間外ガイダンス", "1001, 1002", "1003"])
    expect(admin.locator("#incoming-rules tr[data-rule]")).to_have_count(3)
    # The picture is drawn: a band has a real size on screen.
    box = admin.locator("#timeline svg rect.band[data-day=mon][data-start='28800']").bounding_box()
    assert box is not None
    assert box["width"] > 100

    # この時刻にかかってきたら: the boundary seconds (2026-04-07 is a Tuesday).
    for at, rings, hears in (
        ("07:59:59", "009608", "announcement"),
        ("08:00:00", "1001+1002", "ringing"),
        ("19:59:59", "1001+1002", "ringing"),
        ("20:00:00", "1003", "ringing"),
    ):
        test = admin.locator("#test-call form")
        test.locator("input[name=date]").fill("2026-04-07")
        test.locator("input[name=time]").fill(at)
        test.get_by_role("button", name="確認する").click()
        first = admin.locator("#test-steps tr.test-step").first
        expect(first.locator("td.rings")).to_have_text(rings)
        expect(first.locator("td.hears")).to_have_attribute("data-hears", hears)
    expect(admin.locator("#test-result ol.trace")).to_contain_text("Tue 20:00:00")

    # An overlapping rule is refused, the overlap drawn in red and named by the second.
    fill_rule(admin, "1003", "19:00", "20:30", ("mon",))
    expect(admin.locator(".errors")).to_contain_text(
        "月 19:00:00–19:59:59 が着信設定1と重なっています"
    )
    expect(admin.locator(".errors")).to_contain_text(
        "月 20:00:00–20:30:59 が着信設定2と重なっています"
    )
    assert shapes(admin, "overlap", "mon") == [(68400, 71999, ""), (72000, 73859, "")]
    assert shapes(admin, "overlap", "tue") == []
    red = admin.locator("#timeline svg rect.overlap").first
    assert red.get_attribute("fill") == "#d32f2f"
    expect(admin.locator("#incoming-rules tr[data-rule]")).to_have_count(3)

    # The midnight rule on the other number: 18:00-9:00 comes back with the split, one click.
    admin.goto(f"{base(server)}/t/acme/incoming/0612345678")
    fill_rule(admin, "009608", "18:00", "9:00", WEEK)
    expect(admin.locator("#rule-form")).to_contain_text("日をまたいでいます")
    expect(admin.locator("#split-offer li")).to_have_text(
        ["18:00:00〜23:59:59", "0:00:00〜8:59:59"]
    )
    admin.locator("#split-offer").get_by_role("button", name="分けて保存").click()
    expect(admin.locator(".flash")).to_contain_text("保存しました")
    assert shapes(admin, "band", "sun") == [(0, 32399, "009608"), (64800, 86399, "009608")]
    assert shapes(admin, "gap", "sun") == [(32400, 64799, "")]

    tenant_file = server.config.parent / "tenants" / "acme.toml"
    data = tomllib.loads(tenant_file.read_text(encoding="utf-8"))
    assert [(r["number"], r["targets"], r["start"], r["end"]) for r in data["incoming"]] == [
        ("0312345678", "1001,1002", "8:00:00", "19:59:59"),
        ("0312345678", "1003", "20:00:00", "23:59:59"),
        ("0312345678", "009608", "0:00:00", "7:59:59"),
        ("0612345678", "009608", "18:00:00", "23:59:59"),
        ("0612345678", "009608", "0:00:00", "8:59:59"),
    ]
    # The running server took it: pbx simulate's routing answers from the reloaded config.
    status, body = server.admin_request("GET", "/status")
    assert status == 200, body
