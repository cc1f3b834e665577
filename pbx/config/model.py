"""The configuration snapshot: immutable, versioned values built by ``pbx.config.load``.

Keys follow the admin contract of docs/design.md (DESIGN section 5). Everything here is plain,
frozen data: the routing core and the call engine read it, nothing writes it. A reload builds a
new snapshot and swaps it in with one assignment (``ConfigHolder.current``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from types import MappingProxyType
from typing import Literal, NewType, TypeVar

from pbx.config.problems import ConfigProblem
from pbx.numbers import AFTER_HOURS_TARGET

Extension = NewType("Extension", str)  # exactly 4 half-width digits, 0000-8999
PhoneNumber = NewType("PhoneNumber", str)  # national form, half-width digits ("0312345678")
TenantId = NewType("TenantId", str)  # the tenant file's stem ("acme" for tenants/acme.toml)

DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun", "holiday"]
WEEKDAYS: tuple[DayName, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

ForwardCallerId = Literal["original", "user"]

__all__ = ["AFTER_HOURS_TARGET"]  # re-exported for config users


K = TypeVar("K")
V = TypeVar("V")


def _frozen_map(items: Mapping[K, V] | None = None) -> Mapping[K, V]:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """One ``[sip] listen`` entry: ``udp:0.0.0.0:5060``, ``tcp:[::1]:5060``, ``tls:[::]:5061``."""

    transport: Literal["udp", "tcp", "tls"]
    host: str  # literal IP address, without brackets
    port: int


@dataclass(frozen=True, slots=True)
class SipSettings:
    listen: tuple[ListenSpec, ...]
    advertise: str | None = None  # address written into Via/Contact/Record-Route/SDP
    # TCP connection limits (pbx.sip.transport.TcpLimits).
    tcp_max_connections: int = 10_000
    tcp_max_connections_per_source: int = 200
    tcp_idle_seconds: int = 600  # a connection with no traffic this long is closed
    tcp_message_seconds: int = 32  # a started message must be complete within this (64*T1)
    # SIP over TLS (issue #18): PEM files for ``tls:`` listeners, absolute; both or neither.
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    tls_handshake_seconds: int = 10  # a client that has not finished its handshake is dropped
    # issue #20 (edge): the IP addresses of SIP edges (Kamailio) in front of this node. A request
    # from one of them is taken as from the phone or carrier named by the edge's Via received/
    # rport (pbx.sip.edge); a REGISTER's Path is stored and used as the binding's route set.
    edge: frozenset[str] = frozenset()
    # issue 16 (session timers, RFC 4028): the interval we use (and the most we grant a caller),
    # and our Min-SE (the smallest Session-Expires we accept; a smaller one gets 422). The RFC's
    # floor is 90 s: a value below it is refused unless allow_below_rfc_minimum (tests/labs only).
    session_expires: int = 1800
    min_se: int = 90
    allow_below_rfc_minimum: bool = False


# Keep-alive OPTIONS to registered contacts, every this many seconds (0 = off). On by default:
# a vanished phone must count as offline (docs/design.md 3, "Keep-alive checks").
DEFAULT_QUALIFY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class AuthSettings:
    # MD5 only by default, as Asterisk and FreeSWITCH: baresip 1.0 (Debian 12) gives up when any
    # challenge of a 401 is not MD5, and SIPp/pyVoIP compute MD5 only. SHA-256 is turned on in
    # [auth] algorithms, or per tenant with [tenant] auth_algorithms (docs/design.md 3).
    algorithms: tuple[Literal["MD5", "SHA-256"], ...] = ("MD5",)
    nonce_seconds: int = 300  # how long a digest nonce is accepted; older ones get stale=true
    # issue #20: a file whose bytes key the nonces, shared by the nodes behind one edge so a
    # nonce one node issued is accepted by the others; None: a random key per process.
    nonce_secret_file: Path | None = None


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    min_expires: int = 60
    max_expires: int = 3600
    max_contacts: int = 5
    default_expires: int = 3600


@dataclass(frozen=True, slots=True)
class CallSettings:
    no_answer_seconds: int = 20
    max_ring_seconds: int = 60
    max_calls_per_user: int = 1
    max_forward_hops: int = 5
    drain_seconds: int = 30  # on SIGTERM: how long calls in progress may go on before BYE


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    ban_after_failures: int = 10
    ban_window_seconds: int = 600
    ban_seconds: int = 600
    max_requests_per_second: int = 50
    # harden: trunk addresses are never banned, but not unlimited either (issue 17, item 6).
    trunk_max_requests_per_second: int = 2000


@dataclass(frozen=True, slots=True)
class MediaSettings:
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    inactivity_seconds: int = 60
    # issue #20 (rtpengine): "builtin" relays RTP in this process; "rtpengine" hands the media
    # of every call to rtpengine over its ng control protocol at ``rtpengine`` (udp:HOST:PORT).
    engine: Literal["builtin", "rtpengine"] = "builtin"
    rtpengine: tuple[str, int] = ("127.0.0.1", 2223)
    # rtpengine's --recording-dir, on this machine: its pcaps become the calls' WAVs (10.7).
    rtpengine_recording_dir: Path | None = None
    # issue #21: the built-in relay hands latched calls' packets to nftables (pbx.media.kernel).
    kernel_forwarding: bool = False


@dataclass(frozen=True, slots=True)
class AdminSettings:
    host: str = "127.0.0.1"
    port: int = 8088


@dataclass(frozen=True, slots=True)
class PanelSettings:
    """The web control panel (``[panel]``): where it listens, its TLS files, sessions, history."""

    host: str = "127.0.0.1"
    port: int = 8089
    tls_certificate: Path | None = None  # PEM, absolute; set together with tls_key or not at all
    tls_key: Path | None = None  # PEM, absolute
    session_idle_minutes: int = 30  # a session unused this long ends
    session_max_hours: int = 12  # a session ends this long after sign-in, used or not
    history_versions: int = 50  # previous versions of a tenant file kept for rollback


@dataclass(frozen=True, slots=True)
class StorageSettings:
    data_dir: Path  # absolute (resolved against the folder of pbx.toml)
    # issue #20: "postgresql://..." keeps the shared state in PostgreSQL; None: SQLite in data_dir
    database: str | None = None
    # issue #20: this node's name in the shared store; None: a generated one kept in
    # data_dir (pbx.node.node_identity)
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Trunk:
    """A carrier trunk: outbound calls go to host:port; calls from host (any port) are its."""

    name: str
    host: str  # literal IP address
    port: int


@dataclass(frozen=True, slots=True)
class ServerConfig:
    path: Path  # the pbx.toml this came from
    sip: SipSettings
    auth: AuthSettings
    registrar: RegistrarSettings
    calls: CallSettings
    security: SecuritySettings
    media: MediaSettings
    admin: AdminSettings
    storage: StorageSettings
    trunks: tuple[Trunk, ...] = ()
    panel: PanelSettings = field(default_factory=PanelSettings)


@dataclass(frozen=True, slots=True)
class Forwarding:
    """Forward destinations: an extension of the same tenant or an external number, or None."""

    busy: str | None = None
    no_answer: str | None = None
    offline: str | None = None


@dataclass(frozen=True, slots=True)
class UserConfig:
    extension: Extension
    password: str | None = None  # clear text, or None when only HA1 hashes are given
    password_ha1_md5: str | None = None  # hex of MD5(ext:realm:password)
    password_ha1_sha256: str | None = None  # hex of SHA-256(ext:realm:password)
    name: str | None = None
    department: str | None = None
    caller_id: PhoneNumber | None = None  # one of the tenant's numbers
    recording: bool = False
    forward: Forwarding = field(default_factory=Forwarding)


@dataclass(frozen=True, slots=True)
class IncomingRule:
    """One inbound rule of a number: targets ring in parallel within [start, end] on ``days``."""

    position: int  # 1-based index among the tenant file's [[incoming]] entries
    number: PhoneNumber
    targets: tuple[str, ...]  # extensions, external numbers, or just ("009608",)
    days: frozenset[DayName]
    start: time  # inclusive, whole seconds
    end: time  # inclusive, whole seconds ("19:59" means 19:59:59)


@dataclass(frozen=True, slots=True)
class TenantLimits:
    max_users: int
    recording_users: int = 0
    international_calls: bool = False


@dataclass(frozen=True, slots=True)
class TenantConfig:
    id: TenantId
    path: Path
    domain: str  # SIP domain and digest realm, lower case
    timezone: str = "Asia/Tokyo"  # IANA zone name
    default: bool = False
    qualify_seconds: int = DEFAULT_QUALIFY_SECONDS
    # Digest algorithms offered to this tenant's phones, in offer order; () = [auth] algorithms.
    auth_algorithms: tuple[Literal["MD5", "SHA-256"], ...] = ()
    forward_caller_id: ForwardCallerId = "original"
    # issue #18: "require" refuses REGISTER/calls not over TLS (403) and media without SRTP (488).
    encryption: Literal["allow", "require"] = "allow"
    limits: TenantLimits = field(default_factory=lambda: TenantLimits(max_users=0))
    numbers: tuple[PhoneNumber, ...] = ()
    users: Mapping[Extension, UserConfig] = field(default_factory=_frozen_map)
    incoming: tuple[IncomingRule, ...] = ()

    def digest_algorithms(self, server: AuthSettings) -> tuple[Literal["MD5", "SHA-256"], ...]:
        """The digest algorithms offered to this tenant: its own list, else the server's."""
        return self.auth_algorithms or server.algorithms

    def rules_for(self, number: PhoneNumber) -> tuple[IncomingRule, ...]:
        return tuple(rule for rule in self.incoming if rule.number == number)


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Everything the server runs on, as one immutable value."""

    version: int  # sequence number: 1 for the first load, +1 per successful reload
    digest: str  # SHA-256 hex of the files' contents (names and bytes, in a stable order)
    server: ServerConfig
    tenants: Mapping[TenantId, TenantConfig]
    warnings: tuple[str, ...] = ()

    # Indexes derived from ``tenants`` by the loader.
    tenant_by_number: Mapping[PhoneNumber, TenantId] = field(default_factory=_frozen_map)
    tenant_by_domain: Mapping[str, TenantId] = field(default_factory=_frozen_map)
    default_tenant: TenantId | None = None  # marked default, or the only tenant
    # The warnings as structured values (file, entity, field, message), same order as ``warnings``.
    warning_details: tuple[ConfigProblem, ...] = ()

    def tenant_for_number(self, number: str) -> TenantConfig | None:
        tid = self.tenant_by_number.get(PhoneNumber(number))
        return self.tenants[tid] if tid is not None else None

    def tenant_for_domain(self, domain: str) -> TenantConfig | None:
        """The tenant whose domain this is; else the default tenant (server address, etc.)."""
        tid = self.tenant_by_domain.get(domain.lower(), self.default_tenant)
        return self.tenants[tid] if tid is not None else None

    def trunk_for_host(self, host: str) -> Trunk | None:
        for trunk in self.server.trunks:
            if trunk.host == host:
                return trunk
        return None
