"""The live status view model (pbx.panel.status.build_status): pure, ``now`` passed in."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pbx.config.model import Extension, TenantConfig, TenantId, UserConfig
from pbx.panel.status import (
    ActiveCall,
    ActiveLeg,
    StatusView,
    TenantBindings,
    UserRow,
    build_status,
    parse_page,
    status_json,
)
from pbx.registrar import Binding
from pbx.sip.message import SipUri

NOW = datetime(2026, 4, 7, 10, 0, 0, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
ACME = TenantId("acme")


def tenant(*extensions: str, qualify: int = 0, users: dict[str, str] | None = None) -> TenantConfig:
    names = users or {}
    return TenantConfig(
        id=ACME,
        path=Path("acme.toml"),
        domain="acme.example",
        qualify_seconds=qualify,
        users={
            Extension(ext): UserConfig(Extension(ext), password="x" * 8, name=names.get(ext))
            for ext in extensions
        },
    )


def binding(
    ext: str,
    *,
    port: int = 5060,
    expires_at: float = NOW + 600,
    registered_at: float = NOW - 10,
    agent: str | None = "Linphone/5.2",
    transport: str = "UDP",
    host: str = "192.0.2.7",
    tenant_id: str = "acme",
) -> Binding:
    return Binding(
        tenant=TenantId(tenant_id),
        extension=Extension(ext),
        uri=SipUri("sip", host, ext, port=port),
        source_host=host,
        source_port=port,
        transport=transport,
        connection_id=None,
        call_id=f"{ext}-{port}",
        cseq=1,
        registered_at=registered_at,
        expires_at=expires_at,
        user_agent=agent,
    )


def row(view: StatusView, ext: str) -> UserRow:
    return next(u for u in view.users if u.extension == ext)


def test_a_user_is_online_until_the_second_its_registration_expires() -> None:
    acme = tenant("1001", "1002")
    registered = TenantBindings((binding("1001", expires_at=NOW + 30),))
    before = build_status(acme, registered, (), NOW + 29)
    at = build_status(acme, registered, (), NOW + 30)
    assert row(before, "1001").online is True
    assert before.online == 1
    assert row(before, "1002").online is False
    # Expired at its expiry second (the registrar's rule: expires_at > now), with its device gone.
    assert row(at, "1001").online is False
    assert row(at, "1001").devices == ()
    assert at.online == 0


def test_every_device_of_a_user_is_listed_with_agent_address_transport_and_expiry() -> None:
    acme = tenant("1001")
    registered = TenantBindings(
        (
            binding("1001", port=5062, agent="Yealink T46U", transport="TCP", registered_at=NOW),
            binding("1001", port=5060, agent=None, host="2001:db8::7", registered_at=NOW - 60),
            binding("1001", port=5070, expires_at=NOW - 1),  # expired: not shown
        )
    )
    view = build_status(acme, registered, (), NOW)
    devices = row(view, "1001").devices
    assert [d.address for d in devices] == ["[2001:db8::7]:5060", "192.0.2.7:5062"]
    assert devices[1].user_agent == "Yealink T46U"
    assert devices[1].transport == "TCP"
    assert devices[0].user_agent == ""
    assert devices[1].expires_at == "2026-04-07 10:10:00"  # Asia/Tokyo
    assert devices[1].registered_at == "2026-04-07 10:00:00"
    assert all(d.reachable for d in devices)


def test_with_keep_alive_checks_on_a_device_that_stopped_answering_does_not_count() -> None:
    alive, silent = binding("1001", port=5060), binding("1001", port=5062)
    registered = TenantBindings((alive, silent), frozenset({silent.key}))
    only_silent = TenantBindings((silent,), frozenset({silent.key}))
    assert row(build_status(tenant("1001", qualify=30), registered, (), NOW), "1001").online
    view = build_status(tenant("1001", qualify=30), only_silent, (), NOW)
    assert row(view, "1001").online is False
    assert row(view, "1001").devices[0].reachable is False
    # Marks count whatever qualify_seconds says (with checks off, only a closed TCP connection
    # makes one), as routing counts them.
    assert row(build_status(tenant("1001"), only_silent, (), NOW), "1001").online is False


def test_another_tenants_bindings_and_unknown_extensions_are_ignored() -> None:
    registered = TenantBindings(
        (binding("1001", tenant_id="beta"), binding("1999"), binding("1002"))
    )
    view = build_status(tenant("1001", "1002"), registered, (), NOW)
    assert [u.extension for u in view.users if u.online] == ["1002"]
    assert view.online == 1
    assert view.total == 2


def test_calls_in_progress_show_who_talks_and_who_is_rung() -> None:
    acme = tenant("1001", "1002", "1003", "1004")
    answered = ActiveCall(
        id="c1",
        caller="1001",
        called="1002",
        state="answered",
        started_at=NOW - 65,
        answered_at=NOW - 60,
        answered_by="1002",
        lines=("1001", "1002"),
        legs=(ActiveLeg("1002", "answered"),),
    )
    ringing = ActiveCall(
        id="c2",
        caller="0312345678",
        called="0612345678",
        state="ringing",
        started_at=NOW - 5,
        legs=(
            ActiveLeg("1003", "proceeding"),
            ActiveLeg("1003", "calling"),
            ActiveLeg("1004", "ended"),
        ),
    )
    ended = ActiveCall(id="c3", caller="1004", called="1001", state="ended", started_at=NOW)
    view = build_status(acme, TenantBindings(), (ringing, answered, ended), NOW)
    assert [c.id for c in view.calls] == ["c1", "c2"]  # oldest first; ended ones gone
    first, second = view.calls
    assert (first.state, first.answered_by, first.answered_at) == (
        "answered",
        "1002",
        "2026-04-07 09:59:00",
    )
    assert first.started_at == "2026-04-07 09:58:55"
    assert (second.state, second.ringing, second.answered_at) == ("ringing", ("1003",), "")
    activity = {u.extension: u.activity for u in view.users}
    assert activity == {"1001": "talking", "1002": "talking", "1003": "ringing", "1004": None}


def test_an_unchanged_state_gives_an_equal_view_a_second_later() -> None:
    acme = tenant("1001")
    registered = TenantBindings((binding("1001"),))
    calls = (ActiveCall("c1", "1001", "117", "answered", NOW - 5, NOW - 4, "117", ("1001",)),)
    assert build_status(acme, registered, calls, NOW) == build_status(
        acme, registered, calls, NOW + 1
    )


def test_users_are_filtered_and_paged_but_counted_over_the_tenant() -> None:
    exts = [f"{n:04d}" for n in range(1000, 1120)]
    acme = tenant(*exts, users={"1005": "佐藤", "1100": "鈴木"})
    registered = TenantBindings(tuple(binding(e) for e in exts[:3]))
    page2 = build_status(acme, registered, (), NOW, page=2)
    assert (page2.page, page2.pages, page2.matching) == (2, 3, 120)
    assert page2.users[0].extension == "1050"
    assert page2.online == 3
    assert build_status(acme, registered, (), NOW, page=99).page == 3
    found = build_status(acme, registered, (), NOW, query="佐藤")
    assert [u.extension for u in found.users] == ["1005"]
    assert build_status(acme, registered, (), NOW, query="１１００").users[0].name == "鈴木"
    assert status_json(found)["users"][0]["extension"] == "1005"


def test_page_numbers_from_a_query_string() -> None:
    assert [parse_page(t) for t in (None, "", "3", "-1", "x", "٣", "9999999")] == [
        1,
        1,
        3,
        1,
        1,
        1,
        1,
    ]
