"""The panel in-process: tenant isolation, CSRF, escaping, sign-in throttle, audit, saving rules.

The browser tests (tests/browser/) walk the manual's steps in Chromium; these check each rule
directly, one request at a time, against a real SQLite file and real tenant files.
"""

from __future__ import annotations

import re

import pytest

from pbx.config.model import Extension
from pbx.panel.tenant_files import file_digest
from tests.panel.conftest import Panel, form_tokens, hidden_fields, sign_in

pytestmark = pytest.mark.asyncio

OTHER_TENANT_PATHS = [
    "/t/beta/",
    "/t/beta/usage",
    "/t/beta/numbers",
    "/t/beta/users",
    "/t/beta/users/new",
    "/t/beta/users/2001",
    "/t/beta/users/2001/delete",
    "/t/beta/versions",
    "/t/beta/api/users",
    "/t/beta/api/users?q=2001",
    "/t/acme/../beta/users",
    "/t/%62eta/users",
    "/t/BETA/users",
    "/t/nosuch/users",
]
OPERATOR_PATHS = ["/operator/tenants", "/operator/pool", "/operator/accounts", "/operator/audit"]


async def test_a_tenant_admin_gets_404_for_every_page_form_and_api_of_another_tenant(
    panel: Panel,
) -> None:
    before = panel.tenant_file("beta").read_bytes()
    async with panel.client() as client:
        assert (await sign_in(client, "acme-admin")).status_code == 303
        own = await form_tokens(client, "/t/acme/usage")
        for path in OTHER_TENANT_PATHS + OPERATOR_PATHS:
            response = await client.get(path)
            assert response.status_code == 404, path
            assert "山田" not in response.text
            assert "beta.example" not in response.text
            posted = await client.post(path, data={"csrf": own["csrf"], "max_users": "9"})
            assert posted.status_code in (404, 405), path
    assert panel.tenant_file("beta").read_bytes() == before
    assert panel.reloads == []


async def test_an_operator_sees_every_tenant(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "op")
        page = await client.get("/operator/tenants")
        assert page.status_code == 200
        assert "acme.example" in page.text
        assert "beta.example" in page.text
        assert (await client.get("/t/beta/users")).status_code == 200
        assert "山田" in (await client.get("/t/beta/users")).text


async def test_pages_need_a_session(panel: Panel) -> None:
    async with panel.client() as client:
        response = await client.get("/t/acme/users")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")
        assert (await client.post("/t/acme/usage", data={"max_users": "9"})).status_code == 403


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(panel: Panel) -> None:
    before = panel.tenant_file("acme").read_bytes()
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/usage")
        form = {"digest": tokens["digest"], "max_users": "9", "recording_users": "1"}
        assert (await client.post("/t/acme/usage", data=form)).status_code == 403
        wrong = {**form, "csrf": "x" * len(tokens["csrf"])}
        assert (await client.post("/t/acme/usage", data=wrong)).status_code == 403
        # The token of another session does not do either.
        async with panel.client() as other:
            await sign_in(other, "acme-admin")
            theirs = await form_tokens(other, "/t/acme/usage")
        stolen = {**form, "csrf": theirs["csrf"]}
        assert (await client.post("/t/acme/usage", data=stolen)).status_code == 403
        # The sign-in form has its own token, bound to a cookie.
        async with panel.client() as fresh:
            bare = await fresh.post("/login", data={"name": "op", "password": "x"})
            assert bare.status_code == 403
    assert panel.tenant_file("acme").read_bytes() == before
    assert panel.reloads == []


async def test_a_user_name_with_markup_is_shown_escaped(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/users/new")
        response = await client.post(
            "/t/acme/users/new",
            data={
                **tokens,
                "extension": "1002",
                "name": "<script>alert(1)</script>",
                "department": '"><img src=x onerror=alert(2)>',
            },
        )
        assert response.status_code == 200, response.text
        listing = (await client.get("/t/acme/users")).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    assert "<script>alert(1)" not in listing
    assert "<img src=x" not in listing
    assert 'name = "<script>alert(1)</script>"' in panel.tenant_file("acme").read_text()


async def test_sign_in_is_slowed_then_locked_and_a_right_password_does_not_pass_a_lock(
    panel: Panel,
) -> None:
    async with panel.client() as client:
        statuses = []
        for _ in range(3):
            statuses.append((await sign_in(client, "acme-admin", "wrong password")).status_code)
        assert statuses == [401, 401, 401]
        slowed = await sign_in(client, "acme-admin", "wrong password")
        assert slowed.status_code == 429
        assert "秒待って" in slowed.text
        # Wrong guesses spaced out past each wait still lock the account.
        for _ in range(20):
            panel.clock.now += 61
            await sign_in(client, "acme-admin", "wrong password")
        locked = await sign_in(client, "acme-admin")
        assert locked.status_code == 429
        assert "ロックされています" in locked.text
        assert "pbx_session" not in client.cookies
        panel.clock.now += 16 * 60
        assert (await sign_in(client, "acme-admin")).status_code == 303
        assert "pbx_session" in client.cookies


async def test_sessions_expire_when_idle(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        assert (await client.get("/t/acme/users")).status_code == 200
        panel.clock.now += 31 * 60
        assert (await client.get("/t/acme/users")).status_code == 303


async def test_session_cookie_is_http_only_and_same_site(panel: Panel) -> None:
    async with panel.client() as client:
        response = await sign_in(client, "acme-admin")
    cookie = response.headers["set-cookie"]
    assert "pbx_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie


async def test_every_change_is_audited_with_who_which_tenant_and_what(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/usage")
        response = await client.post(
            "/t/acme/usage",
            data={**tokens, "max_users": "4", "recording_users": "1"},
        )
        assert response.status_code == 303
        tokens = await form_tokens(client, "/t/acme/users/new")
        await client.post("/t/acme/users/new", data={**tokens, "extension": "1003"})
    entries = await panel.accounts.audit_log(tenant="acme")
    actions = [(e.actor, e.tenant, e.action, e.target) for e in entries]
    assert ("acme-admin", "acme", "set_limits", "limits") in actions
    assert ("acme-admin", "acme", "add_user", "1003") in actions
    limits = next(e for e in entries if e.action == "set_limits")
    diff = "\n".join(limits.detail["diff"])  # type: ignore[arg-type]
    assert "-max_users = 3" in diff
    assert "+max_users = 4" in diff
    added = next(e for e in entries if e.action == "add_user")
    added_diff = "\n".join(added.detail["diff"])  # type: ignore[arg-type]
    assert "password_ha1_md5 = ***" in added_diff
    # Operators read it in the panel.
    async with panel.client() as client:
        await sign_in(client, "op")
        page = (await client.get("/operator/audit")).text
    assert "set_limits" in page
    assert "acme-admin" in page


async def test_a_save_that_fails_validation_changes_nothing_and_names_the_field(
    panel: Panel,
) -> None:
    before = panel.tenant_file("acme").read_bytes()
    version = panel.holder.current.version
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/users/1001")
        response = await client.post(
            "/t/acme/users/1001",
            data={**tokens, "extension": "1001", "forward_busy": "1099", "password": ""},
        )
    assert response.status_code == 400
    assert "1099" in response.text
    assert "保存できませんでした" in response.text
    assert panel.tenant_file("acme").read_bytes() == before
    assert panel.holder.current.version == version


async def test_a_stale_save_is_refused_and_the_newer_change_is_kept(panel: Panel) -> None:
    async with panel.client() as first, panel.client() as second:
        await sign_in(first, "acme-admin")
        await sign_in(second, "op")
        old_form = await form_tokens(first, "/t/acme/usage")
        newer = await form_tokens(second, "/t/acme/usage")
        saved = await second.post(
            "/t/acme/usage", data={**newer, "max_users": "5", "recording_users": "1"}
        )
        assert saved.status_code == 303
        after_second = panel.tenant_file("acme").read_bytes()
        version = panel.holder.current.version
        stale = await first.post(
            "/t/acme/usage", data={**old_form, "max_users": "3", "recording_users": "0"}
        )
    assert stale.status_code == 400
    assert "他の管理者" in stale.text
    # The page now shows what is in force (5), not the refused input (3).
    assert 'name="max_users" value="5"' in stale.text
    assert panel.tenant_file("acme").read_bytes() == after_second
    assert panel.holder.current.version == version
    assert panel.holder.current.tenants["acme"].limits.max_users == 5  # type: ignore[index]


async def test_a_hand_edit_while_the_form_is_open_counts_as_stale(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/usage")
        path = panel.tenant_file("acme")
        hand_edited = path.read_text() + "# edited by hand\n"
        path.write_text(hand_edited)
        response = await client.post(
            "/t/acme/usage", data={**tokens, "max_users": "7", "recording_users": "1"}
        )
    assert response.status_code == 400
    assert path.read_text() == hand_edited
    assert panel.reloads == []


async def test_max_users_and_recording_seats_are_enforced_on_the_page(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        for ext in ("1002", "1003"):
            tokens = await form_tokens(client, "/t/acme/users/new")
            ok = await client.post("/t/acme/users/new", data={**tokens, "extension": ext})
            assert ok.status_code == 200, ok.text
        page = await client.get("/t/acme/users/new")
        assert "最大ご利用内線ユーザーID数(3)に達しているため" in page.text
        tokens = hidden_fields(page.text)
        refused = await client.post("/t/acme/users/new", data={**tokens, "extension": "1004"})
        assert refused.status_code == 400
        # 1001 has no recording yet: one seat. Turn it on for 1002, then 1003 is refused.
        tokens = await form_tokens(client, "/t/acme/users/1002")
        on = await client.post(
            "/t/acme/users/1002", data={**tokens, "extension": "1002", "recording": "on"}
        )
        assert on.status_code == 303, on.text
        page = await client.get("/t/acme/users/1003")
        assert "通話録音利用ユーザー数(1)に達しているため" in page.text
        assert re.search(r'name="recording"[^>]*disabled', page.text)
        tokens = hidden_fields(page.text)
        forced = await client.post(
            "/t/acme/users/1003", data={**tokens, "extension": "1003", "recording": "on"}
        )
        assert forced.status_code == 400
    users = panel.holder.current.tenants["acme"].users  # type: ignore[index]
    assert sorted(users) == ["1001", "1002", "1003"]
    assert [u.extension for u in users.values() if u.recording] == ["1002"]


async def test_sloppy_input_is_normalised_and_the_file_keeps_its_comments(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/users/new")
        response = await client.post(
            "/t/acme/users/new",
            data={
                **tokens,
                "extension": "１００２",
                "caller_id": "03-1234-5678",
                "forward_no_answer": "０９０－１２３４－５６７８",
            },
        )
        assert response.status_code == 200, response.text
        password = hidden_password(response.text)
    text = panel.tenant_file("acme").read_text()
    assert "# Tenant acme: kept in git by its admin." in text
    assert "# the desk phone" in text
    assert "max_users = 3                    # billed on this" in text
    user = panel.holder.current.tenants["acme"].users["1002"]  # type: ignore[index]
    assert user.caller_id == "0312345678"
    assert user.forward.no_answer == "09012345678"
    assert len(password) >= 12
    assert password not in text  # only the HA1 hashes are written


async def test_english_switch(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        assert "内線ユーザー一覧" in (await client.get("/t/acme/users")).text
        switched = await client.get("/lang/en?next=/t/acme/users")
        assert switched.headers["location"] == "/t/acme/users"
        assert "Extension users" in (await client.get("/t/acme/users")).text
        offsite = await client.get("/lang/ja?next=//evil.example/")
        assert offsite.headers["location"] == "/"


def hidden_password(page: str) -> str:
    start = page.index('id="shown-password">') + len('id="shown-password">')
    return page[start : page.index("<", start)]


async def test_users_list_searches_sorts_and_pages(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "op")
        page = await client.get("/t/acme/users?q=佐藤")
        assert "1001" in page.text
        page = await client.get("/t/acme/users?q=nobody")
        assert "<tbody>" not in page.text
        page = await client.get("/t/acme/users?q=１００１")  # full-width digits
        assert "佐藤" in page.text.split("<tbody>")[1]
        page = await client.get("/t/acme/users?sort=name&dir=desc&page=99")
        assert "1 / 1" in page.text
        api = (await client.get("/t/acme/api/users?q=1001")).json()
        assert api["total"] == 1
        assert api["users"][0]["name"] == "佐藤"


async def test_numbers_come_from_the_pool_and_a_used_number_cannot_be_released(
    panel: Panel,
) -> None:
    await panel.accounts.add_pool_number("0311112222", "", panel.clock())
    await panel.accounts.add_pool_number("0698765432", "", panel.clock())  # beta's
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        page = await client.get("/t/acme/numbers")
        assert "0311112222" in page.text
        assert "0698765432" not in page.text
        tokens = hidden_fields(page.text)
        taken = await client.post("/t/acme/numbers", data={**tokens, "take": "0311112222"})
        assert taken.status_code == 303
        tokens = await form_tokens(client, "/t/acme/numbers")
        theirs = await client.post("/t/acme/numbers", data={**tokens, "take": "0698765432"})
        assert theirs.status_code == 400
        used = await client.post("/t/acme/numbers", data={**tokens, "release": "0312345678"})
        assert used.status_code == 400
        assert "内線 1001 の発信時通知番号" in used.text
    numbers = panel.holder.current.tenants["acme"].numbers  # type: ignore[index]
    assert numbers == ("0312345678", "0311112222")


async def test_previous_versions_are_kept_and_can_be_restored(panel: Panel) -> None:
    original = panel.tenant_file("acme").read_bytes()
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/usage")
        await client.post(
            "/t/acme/usage", data={**tokens, "max_users": "9", "recording_users": "1"}
        )
        page = await client.get("/t/acme/versions")
        tokens = hidden_fields(page.text)
        assert tokens["version"]
        restored = await client.post("/t/acme/versions", data=tokens)
        assert restored.status_code == 303
    assert panel.tenant_file("acme").read_bytes() == original
    assert file_digest(original) == file_digest(panel.tenant_file("acme").read_bytes())


async def test_an_operator_creates_and_removes_a_tenant(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "op")
        tokens = {"csrf": (await form_tokens(client, "/operator/tenants"))["csrf"]}
        bad = await client.post(
            "/operator/tenants", data={**tokens, "tenant_id": "../etc", "domain": "x.example"}
        )
        assert bad.status_code == 400
        taken = await client.post(
            "/operator/tenants", data={**tokens, "tenant_id": "gamma", "domain": "acme.example"}
        )
        assert taken.status_code == 400  # the loader: the domain is acme's
        assert not panel.tenant_file("gamma").exists()
        created = await client.post(
            "/operator/tenants", data={**tokens, "tenant_id": "gamma", "domain": "gamma.example"}
        )
        assert created.status_code == 303
        assert panel.holder.current.tenants["gamma"].domain == "gamma.example"  # type: ignore[index]
        assert (await client.get("/t/gamma/usage")).status_code == 200
        removed = await client.post("/operator/tenants", data={**tokens, "remove": "gamma"})
        assert removed.status_code == 303
    assert not panel.tenant_file("gamma").exists()
    assert "gamma" not in panel.holder.current.tenants
    actions = [e.action for e in await panel.accounts.audit_log(tenant="gamma")]
    assert actions == ["remove_tenant", "create_tenant"]


async def test_a_pool_number_a_tenant_uses_cannot_be_removed(panel: Panel) -> None:
    await panel.accounts.add_pool_number("0312345678", "acme's", panel.clock())
    async with panel.client() as client:
        await sign_in(client, "op")
        tokens = {"csrf": (await form_tokens(client, "/operator/pool"))["csrf"]}
        refused = await client.post("/operator/pool", data={**tokens, "remove": "0312345678"})
        assert refused.status_code == 400
        added = await client.post(
            "/operator/pool", data={**tokens, "number": "０３-９９９９-００００"}
        )
        assert added.status_code == 303
    numbers = [p.number for p in await panel.accounts.pool_numbers()]
    assert sorted(numbers) == ["0312345678", "0399990000"]


async def test_a_taken_extension_is_refused_in_the_pages_language(panel: Panel) -> None:
    before = panel.tenant_file("acme").read_bytes()
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/users/new")
        taken = await client.post("/t/acme/users/new", data={**tokens, "extension": "1001"})
        assert taken.status_code == 400
        assert "この内線番号はすでに使われています" in taken.text
        await client.get("/lang/en")
        tokens = await form_tokens(client, "/t/acme/users/new")
        taken = await client.post("/t/acme/users/new", data={**tokens, "extension": "1001"})
        assert "This extension is already taken" in taken.text
    assert panel.tenant_file("acme").read_bytes() == before


async def test_a_new_extension_gets_a_new_password(panel: Panel) -> None:
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/users/1001")
        form = {**tokens, "extension": "1005", "name": "佐藤", "caller_id": "0312345678"}
        moved = await client.post("/t/acme/users/1001", data=form)
        assert moved.status_code == 200, moved.text
        assert 'id="shown-extension">1005<' in moved.text
    users = panel.holder.current.tenants["acme"].users  # type: ignore[index]
    assert sorted(users) == ["1005"]
    assert users[Extension("1005")].name == "佐藤"
