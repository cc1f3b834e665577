"""Live status and phone setup routes in-process: tenant isolation (pages, API, event stream),
the event stream's bounds (updates on change only, session end, sign-out, caps, client gone,
shutdown) and the audited, CSRF-checked password actions.

The event stream is driven through the ASGI interface directly (httpx's ASGI transport reads a
whole body before returning): the test plays the server, feeding the request and later the
client's disconnect. The stream's interval sleep is a ``Ticker`` the test advances one step at
a time, moving the fake clock with it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from pbx.config.model import Extension, TenantId
from pbx.panel.app import SESSION_COOKIE, build_panel_app
from pbx.panel.status import ActiveCall, ActiveLeg, TenantBindings
from pbx.panel.streams import StatusStreams
from pbx.registrar import Binding
from pbx.sip.message import SipUri
from tests.panel.conftest import Panel, form_tokens, sign_in

pytestmark = pytest.mark.asyncio


class Ticker:
    """The stream's sleep: it waits until the test lets one interval pass (``tick``)."""

    def __init__(self, panel: Panel) -> None:
        self.panel = panel
        self.released = asyncio.Queue[None]()
        self.entered = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.entered.set()
        await self.released.get()
        self.panel.clock.now += seconds


@dataclass
class Live:
    """What the server would give the panel: bindings and calls, changed by the test."""

    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    calls: dict[str, list[ActiveCall]] = field(default_factory=dict)

    def of(self, tenant: TenantId) -> TenantBindings:
        return TenantBindings(tuple(self.bindings.get(tenant, ())))

    def calls_of(self, tenant: TenantId) -> list[ActiveCall]:
        return list(self.calls.get(tenant, ()))

    def register(self, tenant: str, ext: str, now: float, expires: float = 600) -> None:
        self.bindings.setdefault(tenant, []).append(
            Binding(
                tenant=TenantId(tenant),
                extension=Extension(ext),
                uri=SipUri("sip", "192.0.2.7", ext, port=5060),
                source_host="192.0.2.7",
                source_port=5060,
                transport="UDP",
                connection_id=None,
                call_id=f"{tenant}-{ext}",
                cseq=1,
                registered_at=now,
                expires_at=now + expires,
                user_agent="Zoiper rv2.10",
            )
        )


@dataclass
class LivePanel:
    panel: Panel
    app: Any
    live: Live
    ticker: Ticker
    streams: StatusStreams


@pytest_asyncio.fixture
async def live_panel(panel: Panel) -> AsyncIterator[LivePanel]:
    live = Live()
    ticker = Ticker(panel)
    streams = StatusStreams(sleep=ticker.sleep)
    deps = replace(
        panel.app.state.panel.deps,  # type: ignore[attr-defined]
        bindings=live.of,
        calls_in_progress=live.calls_of,
        status_streams=streams,
    )
    panel.app = build_panel_app(deps)
    yield LivePanel(panel, panel.app, live, ticker, streams)


class Stream:
    """One event-stream request played through ASGI."""

    def __init__(self, app: Any, path: str, cookie: str) -> None:
        path, _, query = path.partition("?")
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"panel.test"), (b"cookie", cookie.encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("panel.test", 80),
        }
        self.gone = asyncio.Event()
        self.sent = False
        self.messages: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(app(self.scope, self.receive, self.send))

    async def receive(self) -> dict[str, Any]:
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.arrived.set()

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"]) if self.messages else 0

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    def events(self) -> list[tuple[str, Any]]:
        """Every complete event so far, as (name, data); comments as ("comment", text)."""
        text = b"".join(m.get("body", b"") for m in self.messages[1:]).decode()
        found: list[tuple[str, Any]] = []
        for block in text.split("\n\n"):
            if not block:
                continue
            if block.startswith(":"):
                found.append(("comment", block[1:].strip()))
                continue
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            if "event" in fields:
                found.append((fields["event"], json.loads(fields["data"])))
        return found

    async def wait_events(self, count: int) -> list[tuple[str, Any]]:
        async with asyncio.timeout(5):
            while len(self.events()) < count and not self.task.done():
                self.arrived.clear()
                await self.arrived.wait()
        return self.events()

    async def disconnect(self) -> None:
        self.gone.set()
        async with asyncio.timeout(5):
            await self.task


async def tick(lp: LivePanel, stream: Stream) -> None:
    """Let one interval pass and wait until the stream sleeps again (or has ended)."""
    await _sleeping_or_done(lp, stream)
    lp.ticker.entered.clear()
    lp.ticker.released.put_nowait(None)
    await _sleeping_or_done(lp, stream)


async def _sleeping_or_done(lp: LivePanel, stream: Stream) -> None:
    entered = asyncio.ensure_future(lp.ticker.entered.wait())
    try:
        async with asyncio.timeout(5):
            await asyncio.wait({entered, stream.task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        entered.cancel()


async def signed_in_cookie(lp: LivePanel, name: str = "acme-admin") -> tuple[Any, str]:
    client = lp.panel.client()
    assert (await sign_in(client, name)).status_code == 303
    return client, f"{SESSION_COOKIE}={client.cookies[SESSION_COOKIE]}"


def online_of(html: str, ext: str) -> bool:
    marker = f'id="status-{ext}" data-online="'
    start = html.index(marker) + len(marker)
    return html[start : start + 4] == "true"


# --- tenant isolation -----------------------------------------------------------------------

OTHER_TENANT = [
    "/t/beta/status",
    "/t/beta/api/status",
    "/t/beta/api/status/events",
    "/t/beta/phones/2001",
    "/t/acme/phones/2001",  # beta's user under acme's path
    "/t/acme/phones/..%2F..%2Fbeta%2Fphones%2F2001",
    "/t/nosuch/api/status/events",
]


async def test_another_tenants_status_api_stream_and_phone_pages_are_404(
    live_panel: LivePanel,
) -> None:
    live_panel.live.register("beta", "2001", live_panel.panel.clock())
    async with live_panel.panel.client() as client:
        await sign_in(client, "acme-admin")
        own = await form_tokens(client, "/t/acme/phones/1001")
        for path in OTHER_TENANT:
            response = await client.get(path)
            assert response.status_code == 404, path
            for leaked in ("Zoiper", "192.0.2.7", "山田", "beta.example"):
                assert leaked not in response.text, (path, leaked)
            posted = await client.post(path, data={"csrf": own["csrf"], "action": "show"})
            assert posted.status_code in (404, 405), path
            assert "beta-2001-secret" not in posted.text
        assert (await client.get("/t/beta/api/status")).json() == {"error": "Not Found"}
    assert live_panel.streams.active == 0
    assert await live_panel.panel.accounts.audit_log() == []


async def test_status_needs_a_session(live_panel: LivePanel) -> None:
    async with live_panel.panel.client() as client:
        for path in ("/t/acme/status", "/t/acme/api/status", "/t/acme/api/status/events"):
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login")


# --- the page and the API -----------------------------------------------------------------------


async def test_the_page_is_complete_without_javascript_and_the_api_gives_the_same_view(
    live_panel: LivePanel,
) -> None:
    now = live_panel.panel.clock()
    live_panel.live.register("acme", "1001", now)
    live_panel.live.register("beta", "2001", now)
    live_panel.live.calls["acme"] = [
        ActiveCall(
            "c1",
            "0698765432",
            "0312345678",
            "ringing",
            now - 3,
            legs=(ActiveLeg("1001", "proceeding"),),
        )
    ]
    async with live_panel.panel.client() as client:
        await sign_in(client, "acme-admin")
        page = await client.get("/t/acme/status")
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert 'id="status-1001" data-online="true"' in page.text
        assert "Zoiper rv2.10" in page.text
        assert "192.0.2.7:5060 UDP" in page.text
        assert "呼出中" in page.text
        assert "0698765432" in page.text
        assert '<script src="/static/status.js" defer></script>' in page.text
        assert 'data-stream="/t/acme/api/status/events?q=&amp;page=1"' in page.text
        api = (await client.get("/t/acme/api/status")).json()
        assert api["tenant"] == "acme"
        assert [(u["extension"], u["online"]) for u in api["users"]] == [("1001", True)]
        assert api["users"][0]["activity"] == "ringing"
        assert api["calls"][0]["caller"] == "0698765432"
        script = await client.get("/static/status.js")
        assert script.status_code == 200
        assert "EventSource" in script.text


# --- the event stream -----------------------------------------------------------------------


async def test_the_stream_sends_the_view_then_only_changes_and_frees_its_slot_on_disconnect(
    live_panel: LivePanel,
) -> None:
    lp = live_panel
    client, cookie = await signed_in_cookie(lp)
    tasks_before = asyncio.all_tasks()
    stream = Stream(lp.app, "/t/acme/api/status/events", cookie)
    first = await stream.wait_events(1)
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-store"
    assert first[0][0] == "status"
    assert online_of(first[0][1]["html"], "1001") is False
    assert lp.streams.active == 1

    await tick(lp, stream)  # nothing changed: nothing sent
    assert len(stream.events()) == 1

    lp.live.register("acme", "1001", lp.panel.clock(), expires=60)
    await tick(lp, stream)
    events = stream.events()
    assert len(events) == 2
    assert online_of(events[1][1]["html"], "1001") is True
    assert events[1][1]["online"] == 1

    # The registration runs out (no unregister): offline at the next interval past its expiry.
    for _ in range(30):
        await tick(lp, stream)
    events = stream.events()
    assert [name for name, _ in events].count("status") == 3
    assert online_of(events[-1][1]["html"], "1001") is False
    assert ("comment", "keep-alive") in events  # quiet for 15 s: a comment, not an update

    with capture_logs() as logs:
        await stream.disconnect()
    assert lp.streams.active == 0
    closed = [e for e in logs if e["event"] == "panel_status_stream_closed"]
    assert [e["reason"] for e in closed] == ["client_gone"]
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() if not t.done()} - tasks_before == set()
    await client.aclose()


async def test_the_stream_ends_when_the_session_would_go_idle(live_panel: LivePanel) -> None:
    lp = live_panel
    deps = replace(lp.app.state.panel.deps, session_idle_seconds=10.0)
    lp.app = build_panel_app(deps)
    client, cookie = await signed_in_cookie(lp)
    stream = Stream(lp.app, "/t/acme/api/status/events", cookie)
    await stream.wait_events(1)
    for _ in range(5):  # 2 s each: the stream never counts as activity
        await tick(lp, stream)
    async with asyncio.timeout(5):
        await stream.task
    assert stream.events()[-1] == ("end", {"reason": "session"})
    assert lp.streams.active == 0
    await client.aclose()


async def test_the_stream_ends_at_the_next_interval_after_signing_out(
    live_panel: LivePanel,
) -> None:
    lp = live_panel
    client, cookie = await signed_in_cookie(lp)
    stream = Stream(lp.app, "/t/acme/api/status/events", cookie)
    await stream.wait_events(1)
    tokens = await form_tokens(client, "/t/acme/status")
    assert (await client.post("/logout", data={"csrf": tokens["csrf"]})).status_code == 303
    await tick(lp, stream)
    async with asyncio.timeout(5):
        await stream.task
    assert stream.events()[-1] == ("end", {"reason": "session"})
    assert lp.streams.active == 0
    await client.aclose()


async def test_streams_are_capped_per_account_and_end_when_the_panel_closes(
    live_panel: LivePanel,
) -> None:
    lp = live_panel
    client, cookie = await signed_in_cookie(lp)
    streams = [Stream(lp.app, "/t/acme/api/status/events", cookie) for _ in range(3)]
    for stream in streams:
        await stream.wait_events(1)
    refused = await client.get("/t/acme/api/status/events")
    assert refused.status_code == 429
    assert lp.streams.active == 3
    # Another account still gets one.
    op_client, op_cookie = await signed_in_cookie(lp, "op")
    other = Stream(lp.app, "/t/acme/api/status/events", op_cookie)
    await other.wait_events(1)
    assert lp.streams.active == 4

    lp.streams.close()  # what PanelRunner.close does first
    everyone = [*streams, other]
    for _ in everyone:  # each is in its interval sleep: let them all wake
        lp.ticker.released.put_nowait(None)
    async with asyncio.timeout(5):
        await asyncio.gather(*(stream.task for stream in everyone))
    for stream in everyone:
        assert stream.events()[-1] == ("end", {"reason": "closing"})
    assert lp.streams.active == 0
    assert (await client.get("/t/acme/api/status/events")).status_code == 429
    await client.aclose()
    await op_client.aclose()


async def test_a_client_gone_before_the_first_event_frees_its_slot(live_panel: LivePanel) -> None:
    lp = live_panel
    client, cookie = await signed_in_cookie(lp)
    stream = Stream(lp.app, "/t/acme/api/status/events", cookie)
    stream.gone.set()
    async with asyncio.timeout(5):
        await stream.task
    assert lp.streams.active == 0
    await client.aclose()


# --- phone setup ----------------------------------------------------------------------------


async def test_the_phone_page_shows_the_values_and_never_the_password_unasked(
    live_panel: LivePanel,
) -> None:
    async with live_panel.panel.client() as client:
        await sign_in(client, "acme-admin")
        page = await client.get("/t/acme/phones/1001")
        assert page.status_code == 200
        for text in ("127.0.0.1", "5060", "UDP", "acme.example", "SIP Server", "Auth ID"):
            assert text in page.text, text
        assert "acme-1001-secret" not in page.text
        assert "パスワードを表示" in page.text


async def test_showing_a_stored_password_needs_csrf_is_audited_and_not_cached(
    live_panel: LivePanel,
) -> None:
    panel = live_panel.panel
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/phones/1001")
        refused = await client.post("/t/acme/phones/1001", data={"action": "show"})
        assert refused.status_code == 403
        assert "acme-1001-secret" not in refused.text
        assert await panel.accounts.audit_log() == []
        shown = await client.post(
            "/t/acme/phones/1001", data={"csrf": tokens["csrf"], "action": "show"}
        )
        assert shown.status_code == 200
        assert shown.headers["cache-control"] == "no-store"
        assert 'id="phone-password-value">acme-1001-secret<' in shown.text
    (entry,) = await panel.accounts.audit_log()
    assert (entry.actor, entry.tenant, entry.action, entry.target) == (
        "acme-admin",
        "acme",
        "show_sip_password",
        "1001",
    )
    assert "secret" not in json.dumps(entry.detail)


async def test_a_new_password_is_saved_as_hashes_shown_once_and_audited(
    live_panel: LivePanel,
) -> None:
    panel = live_panel.panel
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/phones/1001")
        issued = await client.post(
            "/t/acme/phones/1001",
            data={"csrf": tokens["csrf"], "digest": tokens["digest"], "action": "reissue"},
        )
        assert issued.status_code == 200
        assert issued.headers["cache-control"] == "no-store"
        assert 'id="phone-issued"' in issued.text
        marker = 'id="phone-password-value">'
        start = issued.text.index(marker) + len(marker)
        password = issued.text[start : issued.text.index("<", start)]
        assert len(password) == 16
        text = panel.tenant_file("acme").read_text(encoding="utf-8")
        assert password not in text
        assert "acme-1001-secret" not in text
        assert "password_ha1_md5" in text
        user = panel.holder.current.tenants[TenantId("acme")].users[Extension("1001")]
        assert user.password is None
        assert user.name == "佐藤"  # the rest of the user kept
        # Only hashes now: the page says so, and "show" is refused with the reason.
        again = await client.get("/t/acme/phones/1001")
        assert password not in again.text
        assert "パスワードを表示" not in again.text
        tokens = await form_tokens(client, "/t/acme/phones/1001")
        show = await client.post(
            "/t/acme/phones/1001", data={"csrf": tokens["csrf"], "action": "show"}
        )
        assert show.status_code == 400
        assert "ハッシュでのみ保存" in show.text
    (entry,) = await panel.accounts.audit_log()
    assert (entry.action, entry.target) == ("reissue_sip_password", "1001")
    assert password not in json.dumps(entry.detail)


async def test_a_reissue_from_a_stale_page_changes_nothing(live_panel: LivePanel) -> None:
    panel = live_panel.panel
    before = panel.tenant_file("acme").read_bytes()
    async with panel.client() as client:
        await sign_in(client, "acme-admin")
        tokens = await form_tokens(client, "/t/acme/phones/1001")
        stale = await client.post(
            "/t/acme/phones/1001",
            data={"csrf": tokens["csrf"], "digest": "0" * 64, "action": "reissue"},
        )
        assert stale.status_code == 400
        assert 'id="phone-issued"' not in stale.text
    assert panel.tenant_file("acme").read_bytes() == before
