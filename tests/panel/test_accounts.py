"""The panel's records on a real SQLite file: accounts, sessions, the audit log, the number pool,
and the store's migration 2 with its ``write``/``fetch``."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pbx.config.model import Extension, TenantId
from pbx.panel.accounts import (
    Account,
    AccountExists,
    AuditEntry,
    Json,
    PanelStore,
    PoolNumber,
    account_name_problem,
    token_hash,
)
from pbx.registrar import Binding
from pbx.sip.message import SipUri
from pbx.store import _MIGRATIONS, DATABASE_NAME, SCHEMA_VERSION, CallRecord, Store

NOW = 1_764_000_000.0
IDLE = 30 * 60.0
MAX = 12 * 3600.0
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"  # stored as given; never verified here


def raw_rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Read with a separate connection: what is really committed on disk."""
    with sqlite3.connect(path) as db:
        return list(db.execute(sql, params))


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / DATABASE_NAME)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def panel(store: Store) -> PanelStore:
    return PanelStore(store)


async def operator(panel: PanelStore, name: str = "root") -> Account:
    return await panel.create_account(name, HASH, "operator", None, NOW)


async def admin(panel: PanelStore, name: str, tenant: str = "acme") -> Account:
    return await panel.create_account(name, HASH, "tenant_admin", tenant, NOW)


def binding(ext: str = "1001") -> Binding:
    return Binding(
        tenant=TenantId("acme"),
        extension=Extension(ext),
        uri=SipUri("sip", "192.168.1.10", ext, port=5060),
        source_host="198.51.100.7",
        source_port=40123,
        transport="UDP",
        connection_id=None,
        call_id="reg-1@phone",
        cseq=1,
        registered_at=NOW,
        expires_at=NOW + 600,
    )


# -- the store: migration 2, write and fetch ----------------------------------------------------


@pytest.mark.asyncio
async def test_a_schema_1_database_is_upgraded_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    with sqlite3.connect(path) as db:
        db.executescript(_MIGRATIONS[0])
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (1)")
        db.execute("INSERT INTO bans VALUES ('203.0.113.5', ?)", (NOW + 600,))
    store = await Store.open(path)
    try:
        assert await store.load_bans(NOW) == [("203.0.113.5", NOW + 600)]
        assert await PanelStore(store).accounts() == []
    finally:
        await store.close()
    assert raw_rows(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    tables = {r[0] for r in raw_rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"panel_accounts", "panel_sessions", "panel_audit", "number_pool"} <= tables


@pytest.mark.asyncio
async def test_write_returns_its_rowcount_and_fetch_reads_rows(store: Store) -> None:
    sql = "INSERT INTO number_pool (number, note, added_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
    assert await store.write(sql, ("0312345678", "", NOW)) == 1
    assert await store.write(sql, ("0312345678", "", NOW)) == 0
    assert await store.fetch("SELECT number, added_at FROM number_pool") == [("0312345678", NOW)]
    assert await store.write("DELETE FROM number_pool") == 1


@pytest.mark.asyncio
async def test_writes_queued_together_share_one_commit(store: Store) -> None:
    commits = store.stats.commits
    first = store.write("INSERT INTO number_pool VALUES ('0311111111', '', 0)")
    second = store.write("UPDATE number_pool SET note = 'x' WHERE number = '0311111111'")
    assert list(await asyncio.gather(first, second)) == [1, 1]
    assert store.stats.commits == commits + 1


@pytest.mark.asyncio
async def test_a_taken_name_does_not_fail_the_registrations_it_commits_with(
    store: Store, panel: PanelStore
) -> None:
    await operator(panel)
    results = await asyncio.gather(
        store.save_binding(binding("1001")),
        panel.create_account("ROOT", HASH, "operator", None, NOW),
        store.save_binding(binding("1002")),
        return_exceptions=True,
    )
    assert isinstance(results[1], AccountExists)
    assert results[0] is None
    assert results[2] is None
    assert store.stats.failed_commits == 0
    assert sorted(b.extension for b in await store.load_bindings(NOW)) == ["1001", "1002"]


@pytest.mark.asyncio
async def test_open_without_recovery_leaves_calls_in_progress_open(tmp_path: Path) -> None:
    server = await Store.open(tmp_path / DATABASE_NAME)
    try:
        record = CallRecord("c1", "acme", NOW, "09011112222", "0312345678")
        await server.record_call(record)
        tool = await Store.open(tmp_path / DATABASE_NAME, recover_calls=False)
        await tool.close()
        assert tool.recovered_calls == 0
        still = await server.call("c1")
        assert still is not None
        assert still.is_open
    finally:
        await server.close()


# -- accounts -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_created_account_is_found_by_name_without_case(panel: PanelStore) -> None:
    created = await operator(panel, "Root")
    assert created == Account(created.id, "Root", "operator", None, NOW, False)
    assert await panel.find_account("root") == (created, HASH)
    assert await panel.find_account("ROOT") == (created, HASH)
    assert await panel.find_account("nobody") is None
    assert await panel.account(created.id) == created
    assert await panel.account(created.id + 1) is None


@pytest.mark.asyncio
async def test_a_taken_name_in_any_case_raises_account_exists(panel: PanelStore) -> None:
    await admin(panel, "sato")
    with pytest.raises(AccountExists, match="'SATO'"):
        await panel.create_account("SATO", HASH, "operator", None, NOW)
    assert [a.name for a in await panel.accounts()] == ["sato"]


@pytest.mark.parametrize(
    ("name", "role", "tenant", "message"),
    [
        ("", "operator", None, "account name"),
        ("-dash", "operator", None, "account name"),
        ("佐藤", "operator", None, "account name"),
        ("a" * 65, "operator", None, "account name"),
        ("ok", "operator", "acme", "an operator has none"),
        ("ok", "tenant_admin", None, "needs a tenant"),
        ("ok", "tenant_admin", "", "needs a tenant"),
        ("ok", "superuser", None, "unknown role"),
    ],
)
@pytest.mark.asyncio
async def test_invalid_accounts_are_refused_before_any_write(
    store: Store, panel: PanelStore, name: str, role: str, tenant: str | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await panel.create_account(name, HASH, role, tenant, NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="password hash"):
        await panel.create_account("ok", "", "operator", None, NOW)
    assert store.stats.failed_commits == 0
    assert await panel.accounts() == []


@pytest.mark.parametrize("name", ["root", "a", "yamada.taro+panel@example.jp", "A_1-b"])
def test_acceptable_account_names(name: str) -> None:
    assert account_name_problem(name) is None


@pytest.mark.asyncio
async def test_accounts_are_listed_by_name_or_by_tenant(panel: PanelStore) -> None:
    await admin(panel, "zeta", "beta")
    await admin(panel, "beta-admin", "beta")
    await admin(panel, "acme-admin", "acme")
    await operator(panel)
    assert [a.name for a in await panel.accounts()] == ["acme-admin", "beta-admin", "root", "zeta"]
    assert [a.name for a in await panel.accounts("beta")] == ["beta-admin", "zeta"]
    assert await panel.accounts("gamma") == []


@pytest.mark.asyncio
async def test_password_hash_is_replaced(panel: PanelStore) -> None:
    account = await operator(panel)
    assert await panel.set_password_hash(account.id, "$argon2id$new")
    assert await panel.find_account("root") == (account, "$argon2id$new")
    assert not await panel.set_password_hash(account.id + 1, "$argon2id$new")


@pytest.mark.asyncio
async def test_delete_account_ends_its_sessions(panel: PanelStore) -> None:
    account, other = await operator(panel), await admin(panel, "sato")
    token, _ = await panel.new_session(account, NOW, IDLE, MAX)
    kept, _ = await panel.new_session(other, NOW, IDLE, MAX)
    assert await panel.delete_account(account.id)
    assert not await panel.delete_account(account.id)
    assert await panel.find_account("root") is None
    assert await panel.session(token, NOW + 1, IDLE) is None
    assert await panel.session(kept, NOW + 1, IDLE) is not None


@pytest.mark.asyncio
async def test_delete_tenant_accounts_takes_only_that_tenants_admins(
    store: Store, panel: PanelStore
) -> None:
    root, sato, suzuki = (
        await operator(panel),
        await admin(panel, "sato"),
        await admin(panel, "suzuki"),
    )
    beta = await admin(panel, "yamada", "beta")
    tokens = [(await panel.new_session(a, NOW, IDLE, MAX))[0] for a in (root, sato, suzuki, beta)]
    assert await panel.delete_tenant_accounts("acme") == 2
    assert [a.name for a in await panel.accounts()] == ["root", "yamada"]
    alive = [await panel.session(t, NOW + 1, IDLE) is not None for t in tokens]
    assert alive == [True, False, False, True]
    assert await panel.delete_tenant_accounts("acme") == 0


@pytest.mark.asyncio
async def test_a_disabled_account_has_no_session(panel: PanelStore) -> None:
    account = await admin(panel, "sato")
    token, _ = await panel.new_session(account, NOW, IDLE, MAX)
    assert await panel.set_disabled(account.id, True)
    assert await panel.session(token, NOW + 1, IDLE) is None
    found = await panel.find_account("sato")
    assert found is not None
    assert found[0].disabled
    assert await panel.set_disabled(account.id, False)
    enabled = await panel.account(account.id)
    assert enabled is not None
    assert not enabled.disabled
    assert not await panel.set_disabled(account.id + 1, True)


# -- sessions -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_new_session_stores_only_the_tokens_hash(
    tmp_path: Path, store: Store, panel: PanelStore
) -> None:
    account = await operator(panel)
    token, session = await panel.new_session(account, NOW, IDLE, MAX)
    assert len(token) == 43  # 32 bytes, URL-safe base64 without padding
    assert session.token_hash == hashlib.sha256(token.encode()).hexdigest() == token_hash(token)
    assert (session.account, session.created_at, session.last_seen_at) == (account, NOW, NOW)
    assert session.expires_at == NOW + MAX
    assert len(session.csrf_token) == 43
    assert session.csrf_token != token
    rows = raw_rows(tmp_path / DATABASE_NAME, "SELECT * FROM panel_sessions")
    assert rows == [(session.token_hash, account.id, session.csrf_token, NOW, NOW, NOW + MAX)]
    assert token not in repr(rows)
    assert await panel.session(token, NOW, IDLE) == session
    other, again = await panel.new_session(account, NOW, IDLE, MAX)
    assert other != token
    assert again.csrf_token != session.csrf_token


@pytest.mark.asyncio
async def test_session_is_refreshed_at_most_once_a_minute(
    tmp_path: Path, panel: PanelStore
) -> None:
    token, session = await panel.new_session(await operator(panel), NOW, IDLE, MAX)

    def last_seen() -> object:
        return raw_rows(tmp_path / DATABASE_NAME, "SELECT last_seen_at FROM panel_sessions")[0][0]

    seen = await panel.session(token, NOW + 59, IDLE)
    assert seen is not None
    assert seen.last_seen_at == NOW
    assert last_seen() == NOW
    seen = await panel.session(token, NOW + 60, IDLE)
    assert seen is not None
    assert seen.last_seen_at == NOW + 60
    assert last_seen() == NOW + 60
    assert seen.csrf_token == session.csrf_token


@pytest.mark.parametrize(
    ("idle_for", "alive"), [(IDLE - 1, True), (IDLE, False), (IDLE + 3600, False)]
)
@pytest.mark.asyncio
async def test_session_ends_after_idle_seconds(
    tmp_path: Path, panel: PanelStore, idle_for: float, alive: bool
) -> None:
    token, _ = await panel.new_session(await operator(panel), NOW, IDLE, MAX)
    assert (await panel.session(token, NOW + idle_for, IDLE) is not None) is alive
    left = raw_rows(tmp_path / DATABASE_NAME, "SELECT count(*) FROM panel_sessions")
    assert left == [(1 if alive else 0,)]


@pytest.mark.asyncio
async def test_session_ends_at_its_absolute_end_however_busy(panel: PanelStore) -> None:
    token, _ = await panel.new_session(await operator(panel), NOW, IDLE, MAX)
    now = NOW
    while now + 600 < NOW + MAX:
        now += 600
        assert await panel.session(token, now, IDLE) is not None
    assert await panel.session(token, NOW + MAX - 0.5, IDLE) is not None
    assert await panel.session(token, NOW + MAX, IDLE) is None
    assert await panel.session(token, NOW + MAX - 1, IDLE) is None  # deleted


@pytest.mark.asyncio
async def test_unknown_tokens_have_no_session(panel: PanelStore) -> None:
    await panel.new_session(await operator(panel), NOW, IDLE, MAX)
    assert await panel.session("", NOW, IDLE) is None
    assert await panel.session("forged-token", NOW, IDLE) is None


@pytest.mark.asyncio
async def test_sign_out_ends_one_session_or_all_of_an_account(panel: PanelStore) -> None:
    root, sato = await operator(panel), await admin(panel, "sato")
    a, _ = await panel.new_session(root, NOW, IDLE, MAX)
    b, _ = await panel.new_session(root, NOW, IDLE, MAX)
    c, _ = await panel.new_session(sato, NOW, IDLE, MAX)
    assert await panel.end_session(a)
    assert not await panel.end_session(a)
    assert await panel.session(a, NOW, IDLE) is None
    assert await panel.session(b, NOW, IDLE) is not None
    assert await panel.end_sessions_of(root.id) == 1
    assert await panel.session(b, NOW, IDLE) is None
    assert await panel.session(c, NOW, IDLE) is not None


@pytest.mark.asyncio
async def test_a_new_session_deletes_expired_ones(tmp_path: Path, panel: PanelStore) -> None:
    root = await operator(panel)
    await panel.new_session(root, NOW, IDLE, MAX)  # idle by NOW + IDLE
    await panel.new_session(root, NOW + IDLE - 10, IDLE, MAX)  # still alive then
    await panel.new_session(root, NOW + IDLE, IDLE, MAX)
    rows = raw_rows(tmp_path / DATABASE_NAME, "SELECT created_at FROM panel_sessions ORDER BY 1")
    assert rows == [(NOW + IDLE - 10,), (NOW + IDLE,)]


# -- the audit log --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_audit_log_is_newest_first_by_tenant_and_pages_back(panel: PanelStore) -> None:
    for i in range(6):
        tenant = "acme" if i % 2 == 0 else "beta"
        await panel.audit(
            "sato", "tenant_admin", tenant, "user_saved", f"10{i:02}", {"i": i}, NOW + i
        )
    await panel.audit("root", "operator", None, "pool_add", "0312345678", {}, NOW + 6)
    everything = await panel.audit_log()
    assert [e.target for e in everything] == [
        "0312345678",
        "1005",
        "1004",
        "1003",
        "1002",
        "1001",
        "1000",
    ]
    acme = await panel.audit_log(tenant="acme")
    assert [e.target for e in acme] == ["1004", "1002", "1000"]
    first_page = await panel.audit_log(limit=3)
    second_page = await panel.audit_log(limit=3, before_id=first_page[-1].id)
    assert [e.target for e in first_page + second_page] == [e.target for e in everything[:6]]
    older_acme = await panel.audit_log(tenant="acme", before_id=acme[0].id)
    assert [e.target for e in older_acme] == ["1002", "1000"]
    assert await panel.audit_log(limit=0) == []


@pytest.mark.asyncio
async def test_audit_entry_keeps_its_detail(panel: PanelStore) -> None:
    detail: dict[str, Json] = {"name": ["佐藤", "鈴木"], "recording": True, "n": 3, "note": None}
    await panel.audit("root", "operator", "acme", "user_saved", "1001", detail, NOW)
    [entry] = await panel.audit_log()
    expected = AuditEntry(entry.id, NOW, "root", "operator", "acme", "user_saved", "1001", detail)
    assert entry == expected


@pytest.mark.asyncio
async def test_entries_with_the_same_instant_page_by_id(panel: PanelStore) -> None:
    for i in range(5):
        await panel.audit("root", "operator", None, "a", str(i), {}, NOW)
    page = await panel.audit_log(limit=2)
    rest = await panel.audit_log(before_id=page[-1].id)
    assert [e.target for e in page + rest] == ["4", "3", "2", "1", "0"]


# -- the number pool ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pool_numbers_are_added_once_and_removed(panel: PanelStore) -> None:
    assert await panel.add_pool_number("0612345678", "大阪", NOW)
    assert await panel.add_pool_number("0312345678", "", NOW + 1)
    assert not await panel.add_pool_number("0312345678", "again", NOW + 2)
    assert await panel.pool_numbers() == [
        PoolNumber("0312345678", "", NOW + 1),
        PoolNumber("0612345678", "大阪", NOW),
    ]
    assert await panel.remove_pool_number("0312345678")
    assert not await panel.remove_pool_number("0312345678")
    assert [p.number for p in await panel.pool_numbers()] == ["0612345678"]
    with pytest.raises(ValueError, match="empty"):
        await panel.add_pool_number("", "", NOW)
