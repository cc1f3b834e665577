"""What ``pbx run`` hands the panel's live status: one tenant's bindings and calls, as values.

The call engine's cores are stood in for by plain objects with the attributes read.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pbx.call.core import CallState, LegState
from pbx.config.load import load_config
from pbx.config.model import Extension, TenantId
from pbx.panel.status import ActiveLeg
from pbx.registrar import Binding, Registrations
from pbx.routing.model import Caller, ContactId, DialOut, ForkId, LiveFork, RingExtension
from pbx.server import PbxServer
from pbx.sip.message import SipUri
from tests.integration.harness import write_config


def _leg(fork_id: str, label: str, state: LegState) -> Any:
    return SimpleNamespace(fork_id=ForkId(fork_id), label=label, state=state)


def _ring(fork_id: str, tenant: str, ext: str) -> LiveFork:
    return LiveFork(
        RingExtension(
            ForkId(fork_id), TenantId(tenant), Extension(ext), (ContactId("c"),), Caller("x")
        )
    )


def test_the_panel_gets_only_the_tenants_calls_and_never_another_tenants_extensions(
    tmp_path: Path,
) -> None:
    server = PbxServer(tmp_path / "pbx.toml", load_config(write_config(tmp_path)))
    forks = {
        "f1": _ring("f1", "acme", "1002"),
        "f2": _ring("f2", "beta", "2001"),
        "f3": LiveFork(DialOut(ForkId("f3"), "carrier", "0312345678", None)),
    }
    progress = SimpleNamespace(live_fork=lambda fork_id: forks.get(fork_id))
    ringing = SimpleNamespace(
        id="c1",
        tenant=TenantId("acme"),
        state=CallState.RINGING,
        caller="1001",
        called="0698765432",
        started_at=100.0,
        answered_at=None,
        answered_by=None,
        progress=progress,
        lines=[(TenantId("acme"), Extension("1001"))],
        legs=[
            _leg("f1", "1002", LegState.PROCEEDING),
            _leg("f2", "2001", LegState.CALLING),
            _leg("f3", "0312345678", LegState.CALLING),
        ],
    )
    answered_elsewhere = SimpleNamespace(
        id="c2",
        tenant=TenantId("acme"),
        state=CallState.ANSWERED,
        caller="1003",
        called="0698765432",
        started_at=90.0,
        answered_at=95.0,
        answered_by="2001",
        progress=None,
        lines=[(TenantId("acme"), Extension("1003")), (TenantId("beta"), Extension("2001"))],
        legs=[],
    )
    other = SimpleNamespace(
        id="c3", tenant=TenantId("beta"), state=CallState.RINGING, legs=[], lines=[]
    )
    ended = SimpleNamespace(id="c4", tenant=TenantId("acme"), state=CallState.ENDED)
    cores = {c.id: c for c in (ringing, answered_elsewhere, other, ended)}
    server.engine = SimpleNamespace(calls=cores)  # type: ignore[assignment]

    calls = {c.id: c for c in server.panel_calls(TenantId("acme"))}
    assert sorted(calls) == ["c1", "c2"]
    assert calls["c1"].legs == (
        ActiveLeg("1002", "proceeding"),
        ActiveLeg("0312345678", "calling"),
    )
    assert calls["c1"].lines == ("1001",)
    assert calls["c2"].answered_by is None  # beta's extension is not acme's business
    assert calls["c2"].lines == ("1003",)


def test_the_panel_gets_only_the_tenants_bindings(tmp_path: Path) -> None:
    server = PbxServer(tmp_path / "pbx.toml", load_config(write_config(tmp_path)))

    def binding(tenant: str, ext: str) -> Binding:
        return Binding(
            TenantId(tenant),
            Extension(ext),
            SipUri("sip", "192.0.2.1", ext),
            "192.0.2.1",
            5060,
            "UDP",
            None,
            ext,
            1,
            0.0,
            1e12,
        )

    mine, theirs = binding("acme", "1001"), binding("beta", "2001")
    registrations = Registrations([mine, theirs])
    registrations.mark_reachable(mine.key, False)
    registrations.mark_reachable(theirs.key, False)
    server.service = SimpleNamespace(registrations=registrations)  # type: ignore[assignment]
    seen = server.panel_bindings(TenantId("acme"))
    assert seen.bindings == (mine,)
    assert seen.unreachable == frozenset({mine.key})
