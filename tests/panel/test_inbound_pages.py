"""着信設定 pages in-process: the rules of a number saved through the tenant file, overlaps and
the midnight split refused with what to do, the test call, tenant isolation, CSRF and audit."""

from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.panel.conftest import Panel, form_tokens, hidden_fields, sign_in

pytestmark = pytest.mark.asyncio

ACME_WITH_USERS = """\
# Tenant acme: kept in git by its admin.
[tenant]
domain = "acme.example"
default = true

[limits]
max_users = 5                    # billed on this
recording_users = 1

[[numbers]]
number = "0312345678"

[[users]]
extension = "1001"
password = "acme-1001-secret"
name = "佐藤"

[[users]]
extension = "1002"
password = "acme-1002-secret"

[[users]]
extension = "1003"
password = "acme-1003-secret"
"""
PAGE = "/t/acme/incoming/0312345678"
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
SVG = re.compile(r"<svg .*?</svg>", re.S)


@pytest.fixture
def acme(panel: Panel) -> Panel:
    panel.tenant_file("acme").write_text(ACME_WITH_USERS, encoding="utf-8")
    panel.holder.reload(panel.config_path)
    return panel


def timeline(page: str) -> ET.Element:
    found = SVG.search(page)
    assert found is not None
    return ET.fromstring(found.group(0))


def shapes(svg: ET.Element, kind: str, day: str) -> list[tuple[int, int, str]]:
    out = []
    for element in svg.iter("{http://www.w3.org/2000/svg}rect"):
        if kind in element.get("class", "").split() and element.get("data-day") == day:
            out.append(
                (
                    int(element.get("data-start", "-1")),
                    int(element.get("data-end", "-1")),
                    element.get("data-targets", ""),
                )
            )
    return sorted(out)


async def add_rule(
    client: httpx.AsyncClient, targets: str, start: str, end: str, days: list[str] | None = None
) -> httpx.Response:
    tokens = await form_tokens(client, PAGE)
    data = {
        "csrf": tokens["csrf"],
        "digest": tokens["digest"],
        "index": "",
        "targets": targets,
        "days": ALL_DAYS if days is None else days,
        "start": start,
        "end": end,
    }
    return await client.post(PAGE, data=data)


async def test_the_manuals_example_schedule_is_saved_and_drawn(acme: Panel) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        for targets, start, end in (
            ("1001,1002", "8:00", "19:59"),
            ("1003", "20:00:00", "23:59"),
            ("009608", "0:00", "07:59:59"),
        ):
            response = await add_rule(client, targets, start, end)
            assert response.status_code == 303, response.text
            assert response.headers["location"].startswith(PAGE + "?msg=saved")
        page = (await client.get(PAGE)).text
    rules = tomllib.loads(acme.tenant_file("acme").read_text(encoding="utf-8"))["incoming"]
    assert [(r["targets"], r["start"], r["end"]) for r in rules] == [
        ("1001,1002", "8:00:00", "19:59:59"),
        ("1003", "20:00:00", "23:59:59"),
        ("009608", "0:00:00", "7:59:59"),
    ]
    assert acme.tenant_file("acme").read_text(encoding="utf-8").startswith("# Tenant acme")
    svg = timeline(page)
    for day in ALL_DAYS:
        assert shapes(svg, "band", day) == [
            (0, 28799, "009608"),
            (28800, 71999, "1001,1002"),
            (72000, 86399, "1003"),
        ]
        assert shapes(svg, "gap", day) == []
    assert shapes(svg, "band", "holiday") == []
    assert "1001, 1002" in page
    assert "009608 時間外ガイダンス" in page


async def test_an_overlapping_rule_is_refused_with_the_seconds_shown(acme: Panel) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        assert (await add_rule(client, "1001,1002", "8:00", "19:59")).status_code == 303
        before = acme.tenant_file("acme").read_bytes()
        response = await add_rule(client, "1003", "19:00", "23:59:59", ["mon"])
    assert response.status_code == 400
    assert "月 19:00:00–19:59:59 が着信設定1と重なっています" in response.text
    svg = timeline(response.text)
    assert shapes(svg, "overlap", "mon") == [(68400, 71999, "")]
    assert shapes(svg, "overlap", "tue") == []
    assert acme.tenant_file("acme").read_bytes() == before
    # The form keeps what was typed.
    assert 'name="targets" value="1003"' in response.text


async def test_the_midnight_rule_is_offered_as_a_split_and_one_click_saves_it(
    acme: Panel,
) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        before = acme.tenant_file("acme").read_bytes()
        offered = await add_rule(client, "009608", "18:00", "9:00")
        assert offered.status_code == 400
        assert acme.tenant_file("acme").read_bytes() == before
        assert "日をまたいでいます" in offered.text
        parts = re.findall(r'<li class="mono split-part">([^<]*)</li>', offered.text)
        assert parts == ["18:00:00〜23:59:59", "0:00:00〜8:59:59"]
        split_form = offered.text[offered.text.index('id="split-offer"') :]
        fields = hidden_fields(split_form[: split_form.index("</form>")])
        assert fields["split"] == "1"
        data: dict[str, str | list[str]] = {**fields, "days": ALL_DAYS}
        # Without the CSRF token the split is refused and nothing changes.
        refused = await client.post(PAGE, data={**data, "csrf": "forged"})
        assert refused.status_code == 403
        assert acme.tenant_file("acme").read_bytes() == before
        saved = await client.post(PAGE, data=data)
        assert saved.status_code == 303
    rules = tomllib.loads(acme.tenant_file("acme").read_text(encoding="utf-8"))["incoming"]
    assert [(r["start"], r["end"]) for r in rules] == [
        ("18:00:00", "23:59:59"),
        ("0:00:00", "8:59:59"),
    ]
    entries = await acme.accounts.audit_log(tenant="acme")
    split = next(e for e in entries if e.action == "split_incoming")
    assert split.actor == "acme-admin"
    assert '+start = "18:00:00"' in "\n".join(split.detail["diff"])  # type: ignore[arg-type]


async def test_edit_and_delete_a_rule_are_saved_and_audited(acme: Panel) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        await add_rule(client, "1001", "8:00", "19:59")
        await add_rule(client, "1003", "20:00", "23:59")
        edit_page = await client.get(PAGE + "?edit=2")
        assert 'name="index" value="2"' in edit_page.text
        assert "band editing" in edit_page.text
        tokens = hidden_fields(edit_page.text)
        response = await client.post(
            PAGE,
            data={
                "csrf": tokens["csrf"],
                "digest": tokens["digest"],
                "index": "2",
                "targets": "",
                "pick": ["1002", "1003"],
                "days": ["mon", "holiday"],
                "start": "20:00",
                "end": "23:59:59",
            },
        )
        assert response.status_code == 303, response.text
        page = (await client.get(PAGE)).text
        svg = timeline(page)
        assert shapes(svg, "band", "holiday") == [(72000, 86399, "1002,1003")]
        assert shapes(svg, "gap", "holiday") == [(0, 71999, "")]
        tokens = await form_tokens(client, PAGE)
        deleted = await client.post(
            PAGE, data={"csrf": tokens["csrf"], "digest": tokens["digest"], "delete": "1"}
        )
        assert deleted.status_code == 303
    rules = tomllib.loads(acme.tenant_file("acme").read_text(encoding="utf-8"))["incoming"]
    assert [(r["targets"], r["days"]) for r in rules] == [("1002,1003", ["mon", "holiday"])]
    actions = [e.action for e in await acme.accounts.audit_log(tenant="acme")]
    assert {"add_incoming", "edit_incoming", "delete_incoming"} <= set(actions)


async def test_bad_input_names_the_field_in_the_pages_language(acme: Panel) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        response = await add_rule(client, "1001,abc", "25:00", "8:00", [])
        assert response.status_code == 400
        assert "着信先「abc」は使えません" in response.text
        assert "曜日を1つ以上選んでください" in response.text
        assert "時:分 または 時:分:秒" in response.text
        await client.get("/lang/en?next=/")
        response = await add_rule(client, "1001", "8:00", "8:60")
        assert response.status_code == 400
        assert "Enter the time as H:MM or H:MM:SS" in response.text


async def test_a_target_the_loader_refuses_is_shown_on_the_field(acme: Panel) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        before = acme.tenant_file("acme").read_bytes()
        response = await add_rule(client, "1009", "8:00", "19:59")
    assert response.status_code == 400
    assert "1009" in response.text
    assert acme.tenant_file("acme").read_bytes() == before


async def test_a_stale_form_is_refused(acme: Panel) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, PAGE)
        await add_rule(client, "1001", "8:00", "19:59")
        response = await client.post(
            PAGE,
            data={**tokens, "targets": "1003", "days": ALL_DAYS, "start": "20:00", "end": "23:59"},
        )
    assert response.status_code == 400
    assert "他の管理者" in response.text
    rules = tomllib.loads(acme.tenant_file("acme").read_text(encoding="utf-8"))["incoming"]
    assert len(rules) == 1


@pytest.mark.parametrize(
    ("at", "rings", "hears"),
    [
        ("07:59:59", "009608", "announcement"),
        ("8:00:00", "1001,1002", "ringing"),
        ("19:59:59", "1001,1002", "ringing"),
        ("20:00", "1003", "ringing"),
    ],
)
async def test_the_test_call_shows_the_routing_cores_decision(
    acme: Panel, at: str, rings: str, hears: str
) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        for targets, start, end in (
            ("1001,1002", "8:00", "19:59"),
            ("1003", "20:00", "23:59"),
            ("009608", "0:00", "7:59"),
        ):
            await add_rule(client, targets, start, end)
        page = await client.get(PAGE, params={"date": "2026-04-07", "time": at})
    assert page.status_code == 200
    first = re.search(
        r'data-rings="([^"]*)"[^>]*>[^<]*</td>\s*<td class="hears" data-hears="(\w+)"', page.text
    )
    assert first is not None
    assert (first.group(1), first.group(2)) == (rings, hears)
    assert "Tue" in page.text  # the core's trace names the local day


async def test_the_test_call_follows_busy_and_no_answer_forwards(acme: Panel) -> None:
    text = ACME_WITH_USERS.replace(
        'password = "acme-1002-secret"',
        'password = "acme-1002-secret"\nforward = { no_answer = "1003" }',
    ) + (
        '\n[[incoming]]\nnumber = "0312345678"\ntargets = "1001,1002"\n'
        'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
        'start = "0:00"\nend = "23:59:59"\n'
    )
    acme.tenant_file("acme").write_text(text, encoding="utf-8")
    acme.holder.reload(acme.config_path)
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        page = await client.get(
            PAGE, params={"date": "2026-04-07", "time": "10:00", "busy": "1001"}
        )
        bad = await client.get(PAGE, params={"date": "2026-13-01", "time": "10:00", "offline": "x"})
    steps = re.findall(r'data-rings="([^"]*)"', page.text)
    assert steps[0] == "1002"  # 1001 busy without a forward: dropped
    assert "1003" in steps[1]  # after 20 s, 1002's no-answer forward
    assert "20秒後" in page.text
    assert bad.status_code == 200
    assert "年-月-日" in bad.text
    assert "内線番号（0000〜8999）をカンマ" in bad.text


async def test_another_tenants_admin_gets_404_and_a_foreign_number_too(acme: Panel) -> None:
    before = acme.tenant_file("acme").read_bytes()
    async with acme.client() as client:
        await sign_in(client, "beta-admin")
        own = await form_tokens(client, "/t/beta/incoming/0698765432")
        for path in (
            "/t/acme/incoming",
            PAGE,
            PAGE + "?edit=1",
            PAGE + "?date=2026-04-07&time=8:00",
            "/t/beta/incoming/0312345678",
            "/t/beta/incoming/..%2f..%2facme",
        ):
            assert (await client.get(path)).status_code == 404, path
            data = {**own, "targets": "2001", "days": ["mon"], "start": "0:00", "end": "1:00"}
            posted = await client.post(path, data=data)
            assert posted.status_code in (404, 405), path
    assert acme.tenant_file("acme").read_bytes() == before
    assert acme.reloads == [] or all(v for v in acme.reloads)


async def test_the_numbers_list_links_each_number(acme: Panel) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        page = await client.get("/t/acme/incoming")
        menu = await client.get("/t/acme/")
    assert f'href="{PAGE}"' in page.text
    assert 'href="/t/acme/incoming"' in menu.text


async def test_the_page_needs_no_script_or_inline_style_and_deletes_need_the_token(
    acme: Panel,
) -> None:
    async with acme.client() as client:
        await sign_in(client, "acme-admin")
        await add_rule(client, "1001", "8:00", "19:59")
        page = await client.get(PAGE + "?edit=1&date=2026-04-07&time=9:00")
        before = acme.tenant_file("acme").read_bytes()
        tokens = hidden_fields(page.text)
        forged = await client.post(
            PAGE, data={"csrf": "forged", "digest": tokens["digest"], "delete": "1"}
        )
    assert forged.status_code == 403
    assert acme.tenant_file("acme").read_bytes() == before
    assert "<script" not in page.text
    assert " style=" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_an_operator_sees_and_edits_any_tenants_rules(acme: Panel) -> None:
    async with acme.client() as client:
        await sign_in(client, "op")
        assert (await client.get("/t/beta/incoming/0698765432")).status_code == 200
        assert (await add_rule(client, "1001", "8:00", "19:59")).status_code == 303
    entries = await acme.accounts.audit_log(tenant="acme")
    assert [(e.actor, e.action, e.target) for e in entries][:1] == [
        ("op", "add_incoming", "0312345678")
    ]
