"""端末設定 (phone setup): what a softphone, desk phone or app needs to register as a user, as a
pure function of the configuration and the host name the admin reached the panel on.

Where the server's address comes from (docs/design.md, "Live status and phone setup"):

1. a ``[sip] listen`` entry on a specific address: that address;
2. a wildcard listen (``0.0.0.0`` / ``::``): ``[sip] advertise`` when set (it is the address the
   server already writes into Via, Contact and SDP, so it is the one phones can reach);
3. otherwise the host name in the panel's own URL: the admin reached the server by that name, so
   a phone on the same network most likely can too. The page says which of the three it used.

Each listen entry gives one (transport, port) pair a phone may use; UDP is listed first (what
most phones use by default).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pbx.config.model import ConfigSnapshot, ListenSpec, SipSettings, TenantConfig, UserConfig

HostSource = Literal["listen", "advertise", "panel"]
_WILDCARDS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One way to reach the server's SIP side."""

    transport: str  # "UDP" / "TCP"
    host: str  # literal address or host name, without brackets
    port: int
    source: HostSource

    @property
    def hostport(self) -> str:
        """``host:port`` as written in a SIP URI (IPv6 in brackets)."""
        return f"{_uri_host(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class PhoneSetup:
    """The values one user's phone needs (the password apart: see ``password_stored``)."""

    extension: str
    name: str
    domain: str  # the tenant's SIP domain: also the digest realm
    username: str  # the SIP user (the From/To user): the extension
    auth_id: str  # the digest user name: the extension too
    endpoints: tuple[Endpoint, ...]
    default_tenant: bool  # phones may put the server's address as domain instead
    password_stored: bool  # a clear-text password is in the tenant file (else HA1 only)

    @property
    def primary(self) -> Endpoint | None:
        return self.endpoints[0] if self.endpoints else None

    def baresip_account(self) -> str:
        """A line of baresip's ``accounts`` file (without the password: baresip asks for it)."""
        first = self.primary
        line = f"<sip:{self.username}@{self.domain}>;auth_user={self.auth_id}"
        if first is not None:
            line += f';outbound="sip:{first.hostport};transport={first.transport.lower()}"'
        return line


def server_host(sip: SipSettings, listen_host: str, panel_host: str) -> tuple[str, HostSource]:
    """The address a phone should use for a listen entry on ``listen_host`` (module doc)."""
    if listen_host not in _WILDCARDS:
        return listen_host, "listen"
    if sip.advertise:
        return sip.advertise, "advertise"
    return _strip_brackets(panel_host), "panel"


def phone_setup(
    snapshot: ConfigSnapshot,
    tenant: TenantConfig,
    user: UserConfig,
    panel_host: str,
    listening: Sequence[ListenSpec] | None = None,
) -> PhoneSetup:
    """The phone setup of ``user`` of ``tenant`` (``panel_host``: the Host of the panel request,
    without port; ``listening``: the addresses the server really bound, when it runs, which
    differ from ``[sip] listen`` for port 0)."""
    sip = snapshot.server.sip
    specs = sip.listen if listening is None else listening
    endpoints: list[Endpoint] = []
    for spec in sorted(specs, key=lambda s: (s.transport.lower() != "udp", s.port)):
        host, source = server_host(sip, spec.host, panel_host)
        endpoint = Endpoint(spec.transport.upper(), host, spec.port, source)
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    return PhoneSetup(
        extension=user.extension,
        name=user.name or "",
        domain=tenant.domain,
        username=user.extension,
        auth_id=user.extension,
        endpoints=tuple(endpoints),
        default_tenant=snapshot.default_tenant == tenant.id,
        password_stored=user.password is not None,
    )


def _uri_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host
