"""The manual's four steps in real Chromium, as an operator and a tenant admin would do them.

ご利用数決定 → 番号の決定 → 内線ユーザー作成 on a running server (subprocess, loopback), then
SIPp registers extension 1003 with the password the page showed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.harness import REPO, RunningServer, run_sipp, running_server, write_config

pytestmark = [pytest.mark.integration, pytest.mark.browser]

OPERATOR_PASSWORD = "operator pass 2026"
EMPTY_TENANT = """\
# Tenant acme, set up through the control panel.
[tenant]
domain = "acme.example"
default = true

[limits]
max_users = 1
"""


def add_operator(config: Path, name: str, password: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pbx", "panel", "add-operator", name, "--config", str(config)],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def sign_in(page: Page, base: str, name: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.get_by_role("button", name="ログイン").click()
    expect(page.locator("header .who")).to_contain_text(name)


def save(page: Page) -> None:
    page.locator("main form.card").get_by_role("button", name="保存").click()


def add_user(page: Page, base: str, fields: dict[str, str], *, recording: bool = False) -> str:
    page.goto(f"{base}/t/acme/users/new")
    for name, value in fields.items():
        if name == "caller_id":
            page.select_option("select[name=caller_id]", value)
        else:
            page.fill(f"input[name={name}]", value)
    if recording:
        page.check("input[name=recording]")
    save(page)
    expect(page.locator("#shown-extension")).to_have_text(fields["extension"])
    return page.locator("#shown-password").inner_text()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(tmp_path, tenants={"acme": EMPTY_TENANT})
    add_operator(config, "chief", OPERATOR_PASSWORD)
    with running_server(config) as running:
        yield running


def test_tenant_admin_sets_up_the_tenant_as_the_manual_describes(
    server: RunningServer, browser: Browser, tmp_path: Path
) -> None:
    base = f"http://{server.panel[0]}:{server.panel[1]}"
    tenant_file = tmp_path / "tenants" / "acme.toml"

    # The operator fills the number pool and creates the tenant's admin account.
    operator = browser.new_context().new_page()
    sign_in(operator, base, "chief", OPERATOR_PASSWORD)
    operator.goto(f"{base}/operator/pool")
    for number in ("03-1234-5678", "０６１２３４５６７８"):
        operator.fill("input[name=number]", number)
        operator.get_by_role("button", name="番号を追加").click()
    expect(operator.locator("#pool")).to_contain_text("0312345678")
    expect(operator.locator("#pool")).to_contain_text("0612345678")
    operator.goto(f"{base}/operator/accounts")
    operator.fill("input[name=name]", "acme-admin")
    operator.select_option("select[name=tenant]", "acme")
    operator.get_by_role("button", name="テナント管理者を作成").click()
    created = operator.locator("#account-created").inner_text()
    admin_password = re.search(r"パスワード: (\S+?)(\(|$)", created)
    assert admin_password is not None, created

    admin = browser.new_context().new_page()
    sign_in(admin, base, "acme-admin", admin_password.group(1))

    # 1. ご利用数変更
    admin.goto(f"{base}/t/acme/usage")
    admin.fill("input[name=max_users]", "3")
    admin.fill("input[name=recording_users]", "1")
    expect(admin.locator("input[name=international_calls]")).not_to_be_checked()
    save(admin)
    expect(admin.locator(".flash")).to_contain_text("保存しました")
    expect(admin.locator("#users-used")).to_contain_text("0 / 3")

    # 2. 番号の決定: two numbers from the pool.
    admin.goto(f"{base}/t/acme/numbers")
    for number in ("0312345678", "0612345678"):
        admin.locator("#free-numbers tr", has_text=number).get_by_role(
            "button", name="この番号を使う"
        ).click()
        expect(admin.locator("#my-numbers")).to_contain_text(number)

    # 3. 内線ユーザー: 1001-1003 with caller IDs and forwards; recording on for 1001.
    add_user(
        admin,
        base,
        {
            "extension": "1001",
            "name": "佐藤",
            "department": "営業",
            "caller_id": "0312345678",
            "forward_offline": "090-1234-5678",
        },
        recording=True,
    )
    add_user(
        admin,
        base,
        {"extension": "1002", "name": "鈴木", "caller_id": "0612345678", "forward_busy": "1001"},
    )
    password_1003 = add_user(
        admin,
        base,
        {
            "extension": "1003",
            "name": "高橋",
            "caller_id": "0312345678",
            "forward_no_answer": "1002",
        },
    )

    # The limits hold on the page: a fourth user, a second recording user.
    admin.goto(f"{base}/t/acme/users/new")
    expect(admin.locator(".errors")).to_contain_text("最大ご利用内線ユーザーID数(3)に達している")
    admin.fill("input[name=extension]", "1004")
    save(admin)
    expect(admin.locator(".errors")).to_be_visible()
    admin.goto(f"{base}/t/acme/users/1002")
    expect(admin.locator("input[name=recording]")).to_be_disabled()
    expect(admin.locator("#recording-why")).to_contain_text("通話録音利用ユーザー数(1)に達している")

    admin.goto(f"{base}/t/acme/users")
    rows = admin.locator("#users tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("佐藤")

    # The file on disk is the source of truth: changed, comments kept, and reloaded.
    text = tenant_file.read_text(encoding="utf-8")
    assert text.startswith("# Tenant acme, set up through the control panel.")
    data = tomllib.loads(text)
    assert data["limits"] == {"max_users": 3, "recording_users": 1, "international_calls": False}
    assert [n["number"] for n in data["numbers"]] == ["0312345678", "0612345678"]
    users = {u["extension"]: u for u in data["users"]}
    assert sorted(users) == ["1001", "1002", "1003"]
    assert users["1001"]["recording"] is True
    assert users["1001"]["forward"] == {"offline": "09012345678"}
    assert users["1003"]["forward"] == {"no_answer": "1002"}
    assert password_1003 not in text
    status, body = server.admin_request("GET", "/status")
    assert status == 200
    acme = next(t for t in body["tenants"] if t["id"] == "acme")
    assert acme["users"] == ["1001", "1002", "1003"]

    # The password the page showed lets a phone in.
    result = run_sipp(
        "register.xml",
        server.udp,
        extra=["-s", "1003", "-au", "1003", "-ap", password_1003],
        timeout=20,
        workdir=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    status, registrations = server.admin_request("GET", "/registrations")
    assert [r["extension"] for r in registrations] == ["1003"]

    # English is one click away, on the same page.
    admin.get_by_role("link", name="English").click()
    expect(admin.locator("h1")).to_have_text("Extension users")
