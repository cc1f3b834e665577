"""Small builders for ConfigSnapshot values, so routing tests don't depend on the loader."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, time
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

from pbx.config.model import (
    AdminSettings,
    AuthSettings,
    CallSettings,
    ConfigSnapshot,
    DayName,
    Extension,
    ForwardCallerId,
    Forwarding,
    IncomingRule,
    MediaSettings,
    PhoneNumber,
    RegistrarSettings,
    SecuritySettings,
    ServerConfig,
    SipSettings,
    StorageSettings,
    TenantConfig,
    TenantId,
    TenantLimits,
    Trunk,
    UserConfig,
)
from pbx.routing import (
    ContactId,
    Decision,
    DialOut,
    FromExtension,
    FromTrunk,
    LineState,
    PlayAnnouncement,
    RingExtension,
)

EVERY_DAY: tuple[DayName, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WORKDAYS: tuple[DayName, ...] = ("mon", "tue", "wed", "thu", "fri")
TOKYO = ZoneInfo("Asia/Tokyo")
NUMBER = "0312345678"


def clock(text: str) -> time:
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.append(0)
    return time(parts[0], parts[1], parts[2])


def user(
    extension: str,
    *,
    caller_id: str | None = NUMBER,
    recording: bool = False,
    busy: str | None = None,
    no_answer: str | None = None,
    offline: str | None = None,
    name: str | None = None,
) -> UserConfig:
    return UserConfig(
        extension=Extension(extension),
        password="secret",
        name=name,
        caller_id=PhoneNumber(caller_id) if caller_id else None,
        recording=recording,
        forward=Forwarding(busy=busy, no_answer=no_answer, offline=offline),
    )


def rule(
    position: int,
    targets: str,
    start: str,
    end: str,
    days: Iterable[DayName] = EVERY_DAY,
    number: str = NUMBER,
) -> IncomingRule:
    return IncomingRule(
        position=position,
        number=PhoneNumber(number),
        targets=tuple(t.strip() for t in targets.split(",")),
        days=frozenset(days),
        start=clock(start),
        end=clock(end),
    )


def manual_rules(number: str = NUMBER, days: Iterable[DayName] = EVERY_DAY) -> list[IncomingRule]:
    """The control-panel manual's example schedule."""
    days = tuple(days)
    return [
        rule(1, "1001,1002", "8:00:00", "19:59:59", days, number),
        rule(2, "1003", "20:00:00", "23:59:59", days, number),
        rule(3, "009608", "0:00:00", "7:59:59", days, number),
    ]


def tenant(
    tenant_id: str = "acme",
    *,
    numbers: Iterable[str] = (NUMBER,),
    users: Iterable[UserConfig] = (),
    incoming: Iterable[IncomingRule] = (),
    timezone: str = "Asia/Tokyo",
    international_calls: bool = False,
    forward_caller_id: ForwardCallerId = "original",
    domain: str | None = None,
) -> TenantConfig:
    return TenantConfig(
        id=TenantId(tenant_id),
        path=Path(f"/etc/pbx/tenants/{tenant_id}.toml"),
        domain=domain or f"{tenant_id}.example",
        timezone=timezone,
        forward_caller_id=forward_caller_id,
        limits=TenantLimits(
            max_users=50, recording_users=10, international_calls=international_calls
        ),
        numbers=tuple(PhoneNumber(n) for n in numbers),
        users=MappingProxyType({u.extension: u for u in users}),
        incoming=tuple(incoming),
    )


def snapshot(*tenants: TenantConfig, calls: CallSettings | None = None) -> ConfigSnapshot:
    server = ServerConfig(
        path=Path("/etc/pbx/pbx.toml"),
        sip=SipSettings(listen=()),
        auth=AuthSettings(),
        registrar=RegistrarSettings(),
        calls=calls or CallSettings(),
        security=SecuritySettings(),
        media=MediaSettings(),
        admin=AdminSettings(),
        storage=StorageSettings(data_dir=Path("/var/lib/pbx")),
        trunks=(Trunk(name="carrier", host="127.0.0.2", port=5080),),
    )
    return ConfigSnapshot(
        version=1,
        digest="0" * 64,
        server=server,
        tenants=MappingProxyType({t.id: t for t in tenants}),
        tenant_by_number=MappingProxyType({n: t.id for t in tenants for n in t.numbers}),
        tenant_by_domain=MappingProxyType({t.domain: t.id for t in tenants}),
        default_tenant=tenants[0].id if len(tenants) == 1 else None,
    )


def lines(
    registered: Mapping[str, int] | Iterable[str] = (),
    busy: Iterable[str] = (),
    tenant_id: str = "acme",
) -> LineState:
    """Registered extensions ("1001" or "acme/1001"), each with N contacts "1001-a", "1001-b"."""
    counts = registered if isinstance(registered, Mapping) else dict.fromkeys(registered, 1)

    def key(text: str) -> tuple[TenantId, Extension]:
        tid, _, ext = text.rpartition("/")
        return TenantId(tid or tenant_id), Extension(ext)

    contacts = {
        key(name): tuple(ContactId(f"{name}-{'abcdefgh'[i]}") for i in range(n))
        for name, n in counts.items()
    }
    return LineState(registered=contacts, calls={key(name): 1 for name in busy})


def tokyo(text: str) -> datetime:
    """A Tokyo wall-clock instant, e.g. tokyo("2026-11-27 18:05:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=TOKYO)


def from_trunk(caller: str = "09011112222") -> FromTrunk:
    return FromTrunk(trunk="carrier", caller=caller)


def from_ext(extension: str, tenant_id: str = "acme") -> FromExtension:
    return FromExtension(tenant=TenantId(tenant_id), extension=Extension(extension))


def forks(decision: Decision) -> tuple[str, ...]:
    """A compact view of the forks a decision starts."""
    out: list[str] = []
    for fork in decision.start:
        if isinstance(fork, RingExtension):
            out.append(fork.extension)
        elif isinstance(fork, DialOut):
            out.append(f"out:{fork.number}")
        elif isinstance(fork, PlayAnnouncement):
            out.append("009608")
    return tuple(out)
