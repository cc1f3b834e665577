"""登録状況 / 通話中 (live status) as a pure view model: who is online, on which devices, and the
tenant's calls in progress, at a moment passed in.

Pure: the tenant's configuration, its bindings (``pbx.registrar.Binding``, read by the server
from the registrar), its calls in progress (``ActiveCall`` values the server makes from the call
engine) and ``now`` (POSIX seconds) go in; a ``StatusView`` comes out. No clock, asyncio or
database here; the panel's event stream (``pbx.panel.live``) asks again every interval and sends
the page an update only when the view changed.

Decisions:

- **Online is the registrar's own rule** (``pbx.registrar.online_contacts``, DESIGN.md 3
  "offline"): a user is online while one of its bindings is unexpired at ``now`` and, with the
  tenant's keep-alive checks on, still answers them. So the page shows what routing would do with
  a call at that moment, expiry included: a phone that vanished without unregistering turns
  offline when its registration runs out, with no event needed.
- **A view holds no per-second values** (registration and expiry times are wall-clock times in
  the tenant's zone, calls show when they started, not for how long): two views of an unchanged
  state are equal, so an open page is sent nothing until something happens.
"""

from __future__ import annotations

import math
import unicodedata
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from pbx.config.model import Extension, TenantConfig, TenantId
from pbx.registrar import Binding, BindingKey, online_contacts

STATUS_PER_PAGE = 50
CallActivity = Literal["talking", "ringing"]


# --- what goes in (made by the server from the registrar and the call engine) -------------------


@dataclass(frozen=True, slots=True)
class TenantBindings:
    """A tenant's bindings as the registrar holds them, and those unreachable (they stopped
    answering keep-alive checks, or their TCP connection closed): routing skips those too."""

    bindings: tuple[Binding, ...] = ()
    unreachable: frozenset[BindingKey] = frozenset()


@dataclass(frozen=True, slots=True)
class ActiveLeg:
    """One outgoing INVITE of a call: who it rings and how far it got."""

    to: str  # an extension of the tenant, or an external number
    state: str  # "calling", "proceeding", "answered", "ended" (pbx.call.core.LegState)


@dataclass(frozen=True, slots=True)
class ActiveCall:
    """A call in progress, as the call engine sees it."""

    id: str
    caller: str  # the calling extension, or the number the carrier sent
    called: str  # the number or extension dialled
    state: str  # "ringing" or "answered" (pbx.call.core.CallState)
    started_at: float  # POSIX seconds
    answered_at: float | None = None
    answered_by: str | None = None
    lines: tuple[str, ...] = ()  # the tenant's extensions this call holds (caller, answerer)
    legs: tuple[ActiveLeg, ...] = ()


def no_bindings(tenant: TenantId) -> TenantBindings:
    """The default when the panel runs without a registrar (its own tests, ``pbx panel``)."""
    return TenantBindings()


def no_calls(tenant: TenantId) -> Sequence[ActiveCall]:
    """The default when the panel runs without a call engine."""
    return ()


# --- what comes out -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One registered device (binding) of a user."""

    user_agent: str
    address: str  # where its REGISTER came from, host:port ([v6]:port)
    transport: str  # "UDP" / "TCP" / "TLS"
    contact: str
    registered_at: str  # local time of the last REGISTER
    expires_at: str  # local time the registration runs out unless renewed
    reachable: bool  # False: keep-alive checks on and it stopped answering
    encrypted: bool = False  # registered over TLS (issue #18): its signalling is encrypted


@dataclass(frozen=True, slots=True)
class UserRow:
    extension: str
    name: str
    department: str
    online: bool
    devices: tuple[DeviceRow, ...]
    activity: CallActivity | None  # on a call, or being rung, right now


@dataclass(frozen=True, slots=True)
class CallRow:
    id: str
    caller: str
    called: str
    state: str  # "ringing" / "answered"
    started_at: str  # local time
    answered_at: str  # local time, "" while ringing
    answered_by: str
    ringing: tuple[str, ...]  # who is being rung now


@dataclass(frozen=True, slots=True)
class StatusView:
    tenant: str
    users: tuple[UserRow, ...]  # the page asked for
    calls: tuple[CallRow, ...]  # every call in progress of the tenant, oldest first
    online: int  # users online, over the whole tenant (not only this page)
    total: int  # users in the tenant
    matching: int  # users the query matches
    query: str
    page: int
    pages: int


def build_status(
    tenant: TenantConfig,
    registered: TenantBindings,
    calls: Iterable[ActiveCall],
    now: float,
    *,
    query: str = "",
    page: int = 1,
    per_page: int = STATUS_PER_PAGE,
) -> StatusView:
    """The status of ``tenant`` at ``now``: users (filtered by ``query``, one page), calls."""
    zone = _zone(tenant.timezone)
    by_extension: dict[str, list[Binding]] = {}
    for binding in registered.bindings:
        if binding.tenant == tenant.id and binding.extension in tenant.users:
            by_extension.setdefault(binding.extension, []).append(binding)
    online_users = {
        ext
        for ext, bindings in by_extension.items()
        if online_contacts(bindings, now, unreachable=registered.unreachable)
    }

    mine = sorted(
        (c for c in calls if c.state in ("ringing", "answered")), key=lambda c: c.started_at
    )
    activity = _activity(tenant, mine)

    users = sorted(tenant.users.values(), key=lambda u: u.extension)
    needle = _fold(query)
    if needle:
        users = [
            u
            for u in users
            if needle in u.extension
            or needle in _fold(u.name or "")
            or needle in _fold(u.department or "")
        ]
    pages = max(1, math.ceil(len(users) / per_page))
    page = min(max(1, page), pages)
    shown = users[(page - 1) * per_page : page * per_page]
    rows = tuple(
        UserRow(
            extension=u.extension,
            name=u.name or "",
            department=u.department or "",
            online=u.extension in online_users,
            devices=tuple(
                _device(b, zone, reachable=b.key not in registered.unreachable)
                for b in sorted(by_extension.get(u.extension, ()), key=lambda b: b.registered_at)
                if b.is_active(now)
            ),
            activity=activity.get(u.extension),
        )
        for u in shown
    )
    return StatusView(
        tenant=tenant.id,
        users=rows,
        calls=tuple(_call_row(c, zone) for c in mine),
        online=len(online_users),
        total=len(tenant.users),
        matching=len(users),
        query=query,
        page=page,
        pages=pages,
    )


def status_json(view: StatusView) -> dict[str, Any]:
    """The view as plain JSON data (``GET /t/{tenant}/api/status``)."""
    return asdict(view)


def parse_page(text: str | None) -> int:
    """A page number from a query string: 1 unless it is a small positive whole number."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 6:
        return 1
    return max(1, int(text))


# --- helpers ------------------------------------------------------------------------------------


def _activity(tenant: TenantConfig, calls: Sequence[ActiveCall]) -> Mapping[str, CallActivity]:
    """Who is talking (a line held by an answered call, or the caller of a ringing one) and who
    is being rung; talking wins over ringing."""
    found: dict[str, CallActivity] = {}
    for call in calls:
        for leg in call.legs:
            if leg.state in ("calling", "proceeding") and Extension(leg.to) in tenant.users:
                found.setdefault(leg.to, "ringing")
    for call in calls:
        for ext in call.lines:
            if Extension(ext) in tenant.users:
                found[ext] = "talking"
    return found


def _device(binding: Binding, zone: zoneinfo.ZoneInfo, *, reachable: bool) -> DeviceRow:
    host = binding.source_host
    address = f"[{host}]:{binding.source_port}" if ":" in host else f"{host}:{binding.source_port}"
    return DeviceRow(
        user_agent=binding.user_agent or "",
        address=address,
        transport=binding.transport,
        contact=binding.contact,
        registered_at=_local(binding.registered_at, zone),
        expires_at=_local(binding.expires_at, zone),
        reachable=reachable,
        encrypted=binding.transport == "TLS",
    )


def _call_row(call: ActiveCall, zone: zoneinfo.ZoneInfo) -> CallRow:
    return CallRow(
        id=call.id,
        caller=call.caller,
        called=call.called,
        state=call.state,
        started_at=_local(call.started_at, zone),
        answered_at=_local(call.answered_at, zone) if call.answered_at is not None else "",
        answered_by=call.answered_by or "",
        ringing=tuple(
            sorted({leg.to for leg in call.legs if leg.state in ("calling", "proceeding")})
        ),
    )


def _local(at: float, zone: zoneinfo.ZoneInfo) -> str:
    return datetime.fromtimestamp(at, zone).strftime("%Y-%m-%d %H:%M:%S")


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")  # the loader refuses unknown zones; never fail a page


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()
