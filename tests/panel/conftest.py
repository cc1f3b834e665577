"""A panel over a real configuration folder and SQLite file in tmp_path, driven in-process.

The app runs in the test's own event loop through httpx's ASGI transport (no sockets): the
store's writer task and the app share that loop, as they do in the server.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest_asyncio

from pbx.config.holder import ConfigHolder
from pbx.config.load import load_config
from pbx.config.problems import ConfigError
from pbx.panel.accounts import PanelStore
from pbx.panel.app import PanelDeps, build_panel_app
from pbx.panel.passwords import hash_password
from pbx.panel.saving import ReloadOutcome, TenantSaver
from pbx.panel.signin import SignInThrottle
from pbx.panel.tenant_files import TenantWriter
from pbx.store import Store

SERVER = """\
# the server (comments must survive panel saves of the tenant files)
[sip]
listen = ["udp:127.0.0.1:5060"]
[storage]
data_dir = "data"
[[trunks]]
name = "carrier"
address = "127.0.0.2:5080"
"""

ACME = """\
# Tenant acme: kept in git by its admin.
[tenant]
domain = "acme.example"
default = true

[limits]
max_users = 3                    # billed on this
recording_users = 1
international_calls = false

[[numbers]]
number = "0312345678"

[[users]]
extension = "1001"
password = "acme-1001-secret"    # the desk phone
name = "佐藤"
caller_id = "0312345678"
"""

BETA = """\
[tenant]
domain = "beta.example"

[limits]
max_users = 5

[[numbers]]
number = "0698765432"

[[users]]
extension = "2001"
password = "beta-2001-secret"
name = "山田"
"""

PASSWORD = "correct horse battery"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Panel:
    root: Path
    config_path: Path
    holder: ConfigHolder
    store: Store
    accounts: PanelStore
    clock: FakeClock
    app: object
    reloads: list[int] = field(default_factory=list)

    def tenant_file(self, tenant: str) -> Path:
        return self.root / "tenants" / f"{tenant}.toml"

    def client(self, address: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))  # type: ignore[arg-type]
        return httpx.AsyncClient(transport=transport, base_url="http://panel.test")


@pytest_asyncio.fixture
async def panel(tmp_path: Path) -> AsyncIterator[Panel]:
    (tmp_path / "tenants").mkdir()
    (tmp_path / "pbx.toml").write_text(SERVER, encoding="utf-8")
    (tmp_path / "tenants" / "acme.toml").write_text(ACME, encoding="utf-8")
    (tmp_path / "tenants" / "beta.toml").write_text(BETA, encoding="utf-8")
    config_path = tmp_path / "pbx.toml"
    holder = ConfigHolder(load_config(config_path))
    store = await Store.open(tmp_path / "data" / "pbx.sqlite3")
    accounts = PanelStore(store)
    clock = FakeClock()
    hashed = hash_password(PASSWORD)
    await accounts.create_account("op", hashed, "operator", None, clock())
    await accounts.create_account("acme-admin", hashed, "tenant_admin", "acme", clock())
    await accounts.create_account("beta-admin", hashed, "tenant_admin", "beta", clock())
    reloads: list[int] = []

    async def reload() -> ReloadOutcome:
        try:
            new = holder.reload(config_path)
        except ConfigError as exc:
            return ReloadOutcome(False, holder.current.version, tuple(map(str, exc.problems)))
        reloads.append(new.version)
        return ReloadOutcome(True, new.version)

    saver = TenantSaver(config_path, TenantWriter(tmp_path / "data" / "history"), reload)
    deps = PanelDeps(
        current=lambda: holder.current,
        accounts=accounts,
        saver=saver,
        throttle=SignInThrottle(),
        wall_clock=clock,
    )
    app = build_panel_app(deps)
    try:
        yield Panel(tmp_path, config_path, holder, store, accounts, clock, app, reloads)
    finally:
        await store.close()


_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')


def hidden_fields(page: str) -> dict[str, str]:
    """The hidden inputs of a page (the last value wins for repeated names)."""
    return {name: html.unescape(value) for name, value in _HIDDEN.findall(page)}


async def sign_in(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    page = await client.get("/login")
    token = hidden_fields(page.text)["csrf"]
    return await client.post("/login", data={"csrf": token, "name": name, "password": password})


async def form_tokens(client: httpx.AsyncClient, path: str) -> dict[str, str]:
    page = await client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    return hidden_fields(page.text)
