"""Load and validate ``pbx.toml`` and ``tenants/*.toml`` into an immutable ``ConfigSnapshot``.

The admin contract is docs/design.md section 5; the rules come from the control-panel manual
(section 2) and the decisions of section 3. Loading checks everything and either returns a
snapshot or raises one ``ConfigError`` that lists every problem found, each naming its file,
its entity in the admin's terms ("user 1001", "incoming rule #2 (number 0312345678)",
"[calls]"), the field and what is wrong. Nothing here touches sockets or the event loop.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
import tomllib
import unicodedata
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

from pbx.config.cycles import simple_cycles
from pbx.config.model import (
    WEEKDAYS,
    AdminSettings,
    AuthSettings,
    CallSettings,
    ConfigSnapshot,
    DayName,
    Extension,
    ForwardCallerId,
    Forwarding,
    IncomingRule,
    ListenSpec,
    MediaSettings,
    PanelSettings,
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
from pbx.config.problems import ConfigError, ConfigProblem
from pbx.numbers import AFTER_HOURS_TARGET, NumberKind, classify_number, normalize_number

__all__ = ["ConfigError", "ConfigProblem", "load_config"]

DAY_KINDS: tuple[DayName, ...] = (*WEEKDAYS, "holiday")
SECONDS_PER_DAY = 86_400
LAST_SECOND = SECONDS_PER_DAY - 1

_EXTENSION = re.compile(r"[0-8][0-9]{3}")
_DID = re.compile(r"0[1-9][0-9]{8,9}")
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
_HEX = re.compile(r"[0-9a-fA-F]+")
_DOMAIN_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_FORWARD_KINDS = ("busy", "no_answer", "offline")
_HA1_FIELDS = {"password_ha1_md5": ("MD5", 32), "password_ha1_sha256": ("SHA-256", 64)}
_ALGORITHMS: tuple[Literal["MD5", "SHA-256"], ...] = ("MD5", "SHA-256")
# At most this many forwarding cycles are listed per tenant.
_MAX_CYCLES_REPORTED = 50


# How an entry of an array of tables is named when it has no better name yet.
_ENTRY_NAMES = {
    "numbers": "number",
    "users": "user",
    "incoming": "incoming rule",
    "trunks": "trunk",
}


# --------------------------------------------------------------------------------------------
# Problem collection and typed reading of TOML tables


class _Sink:
    """Collects errors and warnings across every file of one load."""

    def __init__(self) -> None:
        self.errors: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []

    def error(self, file: str, entity: str, field_name: str, message: str) -> None:
        self.errors.append(ConfigProblem(file, entity, field_name, message))

    def warn(self, file: str, entity: str, field_name: str, message: str) -> None:
        self.warnings.append(ConfigProblem(file, entity, field_name, message, "warning"))


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


def _show(value: object) -> str:
    """A value as the admin wrote it (strings quoted)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Reader:
    """Reads one TOML table of one file, reporting unknown keys and wrong types to the sink."""

    def __init__(
        self,
        sink: _Sink,
        file: str,
        entity: str,
        table: Mapping[str, Any],
        known: Iterable[str],
        prefix: str = "",
    ) -> None:
        self.sink = sink
        self.file = file
        self.entity = entity
        self.table = table
        self.prefix = prefix
        known_keys = list(known)
        for key in table:
            if key not in known_keys:
                close = difflib.get_close_matches(key, known_keys, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                allowed = ", ".join(known_keys)
                self.sink.error(
                    file, entity, prefix + key, f"unknown key{hint}; known keys: {allowed}"
                )

    def name(self, key: str) -> str:
        return self.prefix + key

    def error(self, key: str, message: str) -> None:
        self.sink.error(self.file, self.entity, self.name(key), message)

    def warn(self, key: str, message: str) -> None:
        self.sink.warn(self.file, self.entity, self.name(key), message)

    def _wrong_type(self, key: str, expected: str, value: object) -> None:
        self.error(key, f"must be {expected}, not {_type_name(value)} {_show(value)}")

    def has(self, key: str) -> bool:
        return key in self.table

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.table.get(key)
        if value is None:
            if required:
                self.error(key, "is required")
            return None
        if not isinstance(value, str):
            self._wrong_type(key, "a string", value)
            return None
        return value

    def text(self, key: str, *, required: bool = False) -> str | None:
        """A machine-read string (number, time, day): full-width forms folded with a warning."""
        value = self.string(key, required=required)
        if value is None:
            return None
        return self.fold(key, value)

    def fold(self, key: str, value: str) -> str:
        folded = unicodedata.normalize("NFKC", value)
        if folded != value:
            self.warn(key, f"full-width characters normalised: {_show(value)} -> {_show(folded)}")
        return folded.strip()

    def integer(
        self, key: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong_type(key, "an integer", value)
            return default
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"{minimum}-{maximum}"
            self.error(key, f"must be {bound}, not {value}")
            return default
        return value

    def required_integer(self, key: str, *, minimum: int = 0) -> int | None:
        if key not in self.table:
            self.error(key, "is required")
            return None
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong_type(key, "an integer", value)
            return None
        if value < minimum:
            self.error(key, f"must be at least {minimum}, not {value}")
            return None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self._wrong_type(key, "true or false", value)
            return default
        return value

    def strings(self, key: str) -> list[str] | None:
        """An array of strings (a single string is taken as a one-element array)."""
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self._wrong_type(key, "an array of strings", value)
            return None
        return list(value)

    def table_(self, key: str) -> Mapping[str, Any]:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            self._wrong_type(key, f"a table ([{self.name(key)}])", value)
            return {}
        return value

    def tables(self, key: str) -> list[Mapping[str, Any] | None]:
        """An array of tables; entries that are not tables are reported and come back as None."""
        value = self.table.get(key, [])
        if not isinstance(value, list):
            self._wrong_type(key, f"an array of tables ([[{self.name(key)}]])", value)
            return []
        result: list[Mapping[str, Any] | None] = []
        for position, item in enumerate(value, start=1):
            if isinstance(item, dict):
                result.append(item)
            else:
                self.sink.error(
                    self.file,
                    f"{_ENTRY_NAMES.get(key, key)} #{position}",
                    "",
                    f"must be a table, not {_type_name(item)} {_show(item)}",
                )
                result.append(None)
        return result


# --------------------------------------------------------------------------------------------
# Addresses


def _parse_ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _split_host_port(
    text: str, default_port: int | None = None, *, allow_any_port: bool = False
) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (a literal IP address); raises ValueError with a reason.

    ``allow_any_port``: port 0 is accepted (a listener on any free port, as tests use).
    """
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("missing ']' after the IPv6 address")
        if rest and not rest.startswith(":"):
            raise ValueError("expected ':' and a port after ']'")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:5060")
    else:
        host, port_text = text, None
    try:
        host = _parse_ip(host)
    except ValueError:
        raise ValueError(f"{_show(host)} is not an IP address") from None
    if port_text is None or port_text == "":
        if default_port is None:
            raise ValueError("a port is required (host:port)")
        return host, default_port
    lowest = 0 if allow_any_port else 1
    if not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise ValueError(f"{_show(port_text)} is not a port number ({lowest}-65535)")
    return host, int(port_text)


def _valid_domain(domain: str) -> bool:
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        pass
    else:
        return True
    labels = domain.split(".")
    return len(domain) <= 253 and all(_DOMAIN_LABEL.fullmatch(label) for label in labels)


# --------------------------------------------------------------------------------------------
# pbx.toml


_SERVER_KEYS = (
    "tenants_dir",
    "sip",
    "auth",
    "registrar",
    "calls",
    "security",
    "media",
    "admin",
    "panel",
    "storage",
    "trunks",
)


_SIP_DEFAULTS = SipSettings(listen=())


def _load_server(
    sink: _Sink, file: str, data: Mapping[str, Any], base: Path, path: Path
) -> tuple[ServerConfig, str]:
    top = _Reader(sink, file, "", data, _SERVER_KEYS)
    tenants_dir = top.string("tenants_dir") or "tenants"

    # [sip]
    sip = _Reader(
        sink,
        file,
        "[sip]",
        top.table_("sip"),
        (
            "listen",
            "advertise",
            "tcp_max_connections",
            "tcp_max_connections_per_source",
            "tcp_idle_seconds",
            "tcp_message_seconds",
        ),
    )
    listen: list[ListenSpec] = []
    entries = sip.strings("listen")
    if entries is None:
        entries = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"] if not sip.has("listen") else []
    elif not entries:
        sip.error("listen", 'needs at least one address, e.g. "udp:0.0.0.0:5060"')
    seen: set[tuple[str, str, int]] = set()
    for entry in entries:
        transport, sep, address = sip.fold("listen", entry).partition(":")
        transport = transport.lower()
        if not sep or transport not in ("udp", "tcp"):
            sip.error(
                "listen",
                f'{_show(entry)} must be "udp:HOST:PORT" or "tcp:HOST:PORT" '
                '(e.g. "udp:0.0.0.0:5060", "tcp:[::]:5060")',
            )
            continue
        try:
            host, port = _split_host_port(address, default_port=5060, allow_any_port=True)
        except ValueError as exc:
            sip.error("listen", f"{_show(entry)}: {exc}")
            continue
        key = (transport, host, port)
        if key in seen:
            sip.error("listen", f"{_show(entry)} is listed twice")
            continue
        seen.add(key)
        listen.append(ListenSpec(cast(Literal["udp", "tcp"], transport), host, port))
    advertise = sip.text("advertise")
    if advertise is not None:
        bare = (
            advertise[1:-1] if advertise.startswith("[") and advertise.endswith("]") else advertise
        )
        if not _valid_domain(bare.lower()):
            sip.error("advertise", f"{_show(advertise)} is not an IP address or host name")
            advertise = None
        else:
            advertise = bare

    # [auth]
    auth_reader = _Reader(sink, file, "[auth]", top.table_("auth"), ("algorithms", "nonce_seconds"))
    algorithms: list[Literal["MD5", "SHA-256"]] = []
    names = auth_reader.strings("algorithms")
    for name in names if names is not None else list(_ALGORITHMS):
        canonical = next((a for a in _ALGORITHMS if a.lower() == name.strip().lower()), None)
        if canonical is None:
            auth_reader.error("algorithms", f'{_show(name)} is not one of "MD5", "SHA-256"')
        elif canonical in algorithms:
            auth_reader.error("algorithms", f"{_show(name)} is listed twice")
        else:
            algorithms.append(canonical)
    if names is not None and not names:
        auth_reader.error("algorithms", 'needs at least one algorithm ("MD5", "SHA-256")')
    nonce_seconds = auth_reader.integer(
        "nonce_seconds", AuthSettings().nonce_seconds, minimum=1, maximum=86400
    )
    auth = AuthSettings(tuple(algorithms) if algorithms else _ALGORITHMS, nonce_seconds)

    # [registrar]
    reg = _Reader(
        sink,
        file,
        "[registrar]",
        top.table_("registrar"),
        ("min_expires", "max_expires", "max_contacts", "default_expires"),
    )
    defaults = RegistrarSettings()
    registrar = RegistrarSettings(
        min_expires=reg.integer("min_expires", defaults.min_expires, minimum=1),
        max_expires=reg.integer("max_expires", defaults.max_expires, minimum=1),
        max_contacts=reg.integer("max_contacts", defaults.max_contacts, minimum=1),
        default_expires=reg.integer("default_expires", defaults.default_expires, minimum=1),
    )
    if registrar.min_expires > registrar.max_expires:
        reg.error(
            "min_expires",
            f"{registrar.min_expires} is more than max_expires ({registrar.max_expires})",
        )
    elif not registrar.min_expires <= registrar.default_expires <= registrar.max_expires:
        reg.error(
            "default_expires",
            f"{registrar.default_expires} is outside min_expires-max_expires "
            f"({registrar.min_expires}-{registrar.max_expires})",
        )

    # [calls]
    calls_reader = _Reader(
        sink,
        file,
        "[calls]",
        top.table_("calls"),
        (
            "no_answer_seconds",
            "max_ring_seconds",
            "max_calls_per_user",
            "max_forward_hops",
            "drain_seconds",
        ),
    )
    cd = CallSettings()
    calls = CallSettings(
        no_answer_seconds=calls_reader.integer(
            "no_answer_seconds", cd.no_answer_seconds, minimum=1
        ),
        max_ring_seconds=calls_reader.integer("max_ring_seconds", cd.max_ring_seconds, minimum=1),
        max_calls_per_user=calls_reader.integer(
            "max_calls_per_user", cd.max_calls_per_user, minimum=1
        ),
        max_forward_hops=calls_reader.integer("max_forward_hops", cd.max_forward_hops, minimum=1),
        drain_seconds=calls_reader.integer("drain_seconds", cd.drain_seconds, minimum=0),
    )
    if calls.no_answer_seconds >= calls.max_ring_seconds:
        calls_reader.warn(
            "no_answer_seconds",
            f"{calls.no_answer_seconds} is not less than max_ring_seconds "
            f"({calls.max_ring_seconds}): no-answer forwarding can never happen",
        )

    # [security]
    sec = _Reader(
        sink,
        file,
        "[security]",
        top.table_("security"),
        ("ban_after_failures", "ban_window_seconds", "ban_seconds", "max_requests_per_second"),
    )
    sd = SecuritySettings()
    security = SecuritySettings(
        ban_after_failures=sec.integer("ban_after_failures", sd.ban_after_failures, minimum=1),
        ban_window_seconds=sec.integer("ban_window_seconds", sd.ban_window_seconds, minimum=1),
        ban_seconds=sec.integer("ban_seconds", sd.ban_seconds, minimum=1),
        max_requests_per_second=sec.integer(
            "max_requests_per_second", sd.max_requests_per_second, minimum=1
        ),
    )

    # [media]
    med = _Reader(sink, file, "[media]", top.table_("media"), ("rtp_ports", "inactivity_seconds"))
    md = MediaSettings()
    port_min, port_max = md.rtp_port_min, md.rtp_port_max
    ports = med.text("rtp_ports")
    if ports is not None:
        match = re.fullmatch(r"([0-9]+)\s*-\s*([0-9]+)", ports)
        if match is None:
            med.error("rtp_ports", f'{_show(ports)} must be a range "LOW-HIGH", e.g. "20000-29999"')
        else:
            low, high = int(match[1]), int(match[2])
            if not 1024 <= low < high <= 65535:
                med.error(
                    "rtp_ports",
                    f"{_show(ports)} must satisfy 1024 <= LOW < HIGH <= 65535",
                )
            else:
                port_min, port_max = low, high
    media = MediaSettings(
        rtp_port_min=port_min,
        rtp_port_max=port_max,
        inactivity_seconds=med.integer("inactivity_seconds", md.inactivity_seconds, minimum=1),
    )

    # [admin]
    adm = _Reader(sink, file, "[admin]", top.table_("admin"), ("listen",))
    admin = AdminSettings()
    admin_listen = adm.text("listen")
    if admin_listen is not None:
        try:
            host, port = _split_host_port(admin_listen, allow_any_port=True)
        except ValueError as exc:
            adm.error("listen", f"{_show(admin_listen)}: {exc}")
        else:
            admin = AdminSettings(host, port)
            if not ipaddress.ip_address(host).is_loopback:
                adm.warn(
                    "listen",
                    f"{_show(admin_listen)} is not a loopback address: "
                    "anyone who can reach it can reload the server",
                )

    panel = _load_panel(sink, file, top.table_("panel"), base, admin)

    # [storage]
    sto = _Reader(sink, file, "[storage]", top.table_("storage"), ("data_dir",))
    data_dir_text = sto.string("data_dir")
    if data_dir_text == "":
        sto.error("data_dir", "must not be empty")
        data_dir_text = None
    data_dir = (base / (data_dir_text or "../data")).resolve()
    storage = StorageSettings(data_dir)

    # [[trunks]]
    trunks: list[Trunk] = []
    trunk_names: dict[str, int] = {}
    trunk_hosts: dict[str, str] = {}
    for position, trunk_table in enumerate(top.tables("trunks"), start=1):
        if trunk_table is None:
            continue
        label = f"trunk #{position}"
        raw_name = trunk_table.get("name")
        if isinstance(raw_name, str) and raw_name:
            label = f"trunk {raw_name}"
        tr = _Reader(sink, file, label, trunk_table, ("name", "address"))
        trunk_name = tr.string("name", required=True)
        trunk_address = tr.text("address", required=True)
        if trunk_name is not None:
            if not trunk_name:
                tr.error("name", "must not be empty")
            elif trunk_name in trunk_names:
                tr.error(
                    "name",
                    f"{_show(trunk_name)} is also the name of trunk #{trunk_names[trunk_name]}",
                )
            trunk_names.setdefault(trunk_name, position)
        if trunk_name and trunk_address is not None:
            try:
                host, port = _split_host_port(trunk_address, default_port=5060)
            except ValueError as exc:
                tr.error("address", f"{_show(trunk_address)}: {exc}")
                continue
            if host in trunk_hosts:
                tr.error(
                    "address",
                    f"{host} is also the address of trunk {trunk_hosts[host]}: "
                    "trunks are told apart by source IP address",
                )
                continue
            trunk_hosts[host] = trunk_name
            trunks.append(Trunk(trunk_name, host, port))

    server = ServerConfig(
        path=path,
        sip=SipSettings(
            tuple(listen),
            advertise,
            tcp_max_connections=sip.integer(
                "tcp_max_connections", _SIP_DEFAULTS.tcp_max_connections, minimum=1
            ),
            tcp_max_connections_per_source=sip.integer(
                "tcp_max_connections_per_source",
                _SIP_DEFAULTS.tcp_max_connections_per_source,
                minimum=1,
            ),
            tcp_idle_seconds=sip.integer(
                "tcp_idle_seconds", _SIP_DEFAULTS.tcp_idle_seconds, minimum=1
            ),
            tcp_message_seconds=sip.integer(
                "tcp_message_seconds", _SIP_DEFAULTS.tcp_message_seconds, minimum=1
            ),
        ),
        auth=auth,
        registrar=registrar,
        calls=calls,
        security=security,
        media=media,
        admin=admin,
        storage=storage,
        trunks=tuple(trunks),
        panel=panel,
    )
    return server, tenants_dir


_PANEL_KEYS = (
    "listen",
    "tls_certificate",
    "tls_key",
    "session_idle_minutes",
    "session_max_hours",
    "history_versions",
)


def _load_panel(
    sink: _Sink, file: str, table: Mapping[str, Any], base: Path, admin: AdminSettings
) -> PanelSettings:
    """``[panel]``: the web control panel's listener, TLS files, sessions and history."""
    pan = _Reader(sink, file, "[panel]", table, _PANEL_KEYS)
    defaults = PanelSettings()
    host, port = defaults.host, defaults.port
    listen = pan.text("listen")
    if listen is not None:
        try:
            host, port = _split_host_port(listen, allow_any_port=True)
        except ValueError as exc:
            pan.error("listen", f"{_show(listen)}: {exc}")
            host, port = defaults.host, defaults.port
            listen = None
    # Two listeners on one port fail at start-up; say so at check time instead.
    if port and port == admin.port and _same_or_wildcard(host, admin.host):
        pan.error(
            "listen",
            f"{_show(listen or f'{host}:{port}')} is also the address of [admin] listen: "
            "the panel needs a port of its own",
        )

    paths: dict[str, Path] = {}
    for key in ("tls_certificate", "tls_key"):
        text = pan.string(key)
        if text == "":
            pan.error(key, "must not be empty")
        elif text is not None:
            resolved = (base / text).resolve()
            if resolved.is_file():
                paths[key] = resolved
            else:
                pan.error(key, f"{_show(text)}: there is no file at {resolved}")
    for key, other in (("tls_certificate", "tls_key"), ("tls_key", "tls_certificate")):
        if pan.has(key) and not pan.has(other):
            pan.error(other, f"is required when {key} is set (give both or neither)")
    certificate, key_file = paths.get("tls_certificate"), paths.get("tls_key")
    if certificate is None or key_file is None:
        certificate = key_file = None
    if listen is not None and certificate is None and not ipaddress.ip_address(host).is_loopback:
        pan.warn(
            "listen",
            f"{_show(listen)} is not a loopback address and [panel] has no TLS: "
            "passwords and sessions would cross the network in clear text",
        )

    idle = pan.integer("session_idle_minutes", defaults.session_idle_minutes, minimum=1)
    longest = pan.integer("session_max_hours", defaults.session_max_hours, minimum=1)
    if idle >= longest * 60:
        pan.warn(
            "session_idle_minutes",
            f"{idle} minutes is not less than session_max_hours ({longest * 60} minutes): "
            "sessions never end for being idle",
        )
    return PanelSettings(
        host=host,
        port=port,
        tls_certificate=certificate,
        tls_key=key_file,
        session_idle_minutes=idle,
        session_max_hours=longest,
        history_versions=pan.integer("history_versions", defaults.history_versions, minimum=0),
    )


def _same_or_wildcard(one: str, other: str) -> bool:
    """Whether listeners on these two addresses (same port) would collide."""
    return one == other or any(ipaddress.ip_address(h).is_unspecified for h in (one, other))


# --------------------------------------------------------------------------------------------
# tenants/*.toml


_TENANT_TOP_KEYS = ("tenant", "limits", "numbers", "users", "incoming")
_TENANT_KEYS = ("domain", "timezone", "default", "qualify_seconds", "forward_caller_id")
_LIMIT_KEYS = ("max_users", "recording_users", "international_calls")
_USER_KEYS = (
    "extension",
    "password",
    "password_ha1_md5",
    "password_ha1_sha256",
    "name",
    "department",
    "caller_id",
    "recording",
    "forward",
)
_INCOMING_KEYS = ("number", "targets", "days", "start", "end")


@dataclass(slots=True)
class _UserDraft:
    position: int
    entity: str
    extension: Extension | None
    reader: _Reader
    config: UserConfig | None = None
    forward_raw: dict[str, tuple[str, _Reader]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Window:
    """The when of one incoming rule (kept for overlap/gap checks even if its targets are bad)."""

    entity: str
    number: PhoneNumber
    days: frozenset[DayName]
    start: int  # seconds since midnight, inclusive
    end: int


def _parse_time(text: str, *, is_end: bool) -> int:
    """Seconds since midnight; an end without seconds means :59. Raises ValueError."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError('must be a time "H:MM[:SS]" or "HH:MM[:SS]", e.g. "8:00" or "19:59:59"')
    hours, minutes = int(match[1]), int(match[2])
    seconds = (59 if is_end else 0) if match[3] is None else int(match[3])
    if hours > 23 or minutes > 59 or seconds > 59:
        hint = ' (the last second of a day is "23:59:59")' if hours >= 24 else ""
        raise ValueError(f"is not a time of day{hint}")
    return hours * 3600 + minutes * 60 + seconds


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _as_time(seconds: int) -> time:
    return time(seconds // 3600, seconds % 3600 // 60, seconds % 60)


def _day_list(days: Iterable[DayName]) -> str:
    """Days in week order, consecutive weekdays compacted: "mon-fri", "sat-sun", "holiday"."""
    chosen = set(days)
    parts: list[str] = []
    run: list[DayName] = []
    for day in WEEKDAYS:
        if day in chosen:
            run.append(day)
            continue
        if run:
            parts.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
    if run:
        parts.append(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}")
    if "holiday" in chosen:
        parts.append("holiday")
    return ", ".join(parts)


def _gaps(windows: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The seconds of a day that none of the inclusive windows covers."""
    result: list[tuple[int, int]] = []
    cursor = 0
    for start, end in sorted(windows):
        if start > cursor:
            result.append((cursor, start - 1))
        cursor = max(cursor, end + 1)
    if cursor <= LAST_SECOND:
        result.append((cursor, LAST_SECOND))
    return tuple(result)


def _describe_gaps(by_day: Mapping[DayName, tuple[tuple[int, int], ...]]) -> str:
    """E.g. "sat-sun all day, mon-fri 20:00:00-23:59:59" (all-day gaps first)."""
    groups: dict[tuple[tuple[int, int], ...], list[DayName]] = {}
    for day in DAY_KINDS:
        spans = by_day.get(day)
        if spans:
            groups.setdefault(spans, []).append(day)
    whole = ((0, LAST_SECOND),)
    ordered = sorted(
        groups.items(), key=lambda item: (item[0] != whole, DAY_KINDS.index(item[1][0]))
    )
    parts = []
    for spans, days in ordered:
        if spans == whole:
            parts.append(f"{_day_list(days)} all day")
        else:
            ranges = " and ".join(f"{_clock(a)}-{_clock(b)}" for a, b in spans)
            parts.append(f"{_day_list(days)} {ranges}")
    return ", ".join(parts)


class _TenantLoader:
    """Validates one tenant file; the result feeds the cross-tenant checks."""

    def __init__(
        self, sink: _Sink, file: str, tenant_id: TenantId, path: Path, server: ServerConfig
    ) -> None:
        self.sink = sink
        self.file = file
        self.id = tenant_id
        self.path = path
        self.server = server
        self.entity = f"tenant {tenant_id}"
        self.international = False
        self.numbers: list[PhoneNumber] = []
        self.users: dict[Extension, _UserDraft] = {}  # valid, unique extensions
        self.drafts: list[_UserDraft] = []  # every [[users]] table, valid or not

    def load(self, data: Mapping[str, Any]) -> TenantConfig:
        top = _Reader(self.sink, self.file, "", data, _TENANT_TOP_KEYS)
        ten = _Reader(self.sink, self.file, self.entity, top.table_("tenant"), _TENANT_KEYS)
        domain = self._domain(ten)
        timezone = ten.text("timezone") or "Asia/Tokyo"
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            ten.error("timezone", f'{_show(timezone)} is not a time zone name (e.g. "Asia/Tokyo")')
            timezone = "Asia/Tokyo"
        default = ten.boolean("default", False)
        qualify = ten.integer("qualify_seconds", 0, minimum=0)
        fcid = ten.text("forward_caller_id") or "original"
        if fcid not in ("original", "user"):
            ten.error("forward_caller_id", f'{_show(fcid)} must be "original" or "user"')
            fcid = "original"

        lim = _Reader(
            self.sink, self.file, self.entity, top.table_("limits"), _LIMIT_KEYS, "limits."
        )
        max_users = lim.required_integer("max_users")
        recording_users = lim.integer("recording_users", 0, minimum=0)
        self.international = lim.boolean("international_calls", False)
        limits = TenantLimits(
            max_users=max_users if max_users is not None else 0,
            recording_users=recording_users,
            international_calls=self.international,
        )

        self._numbers(top)
        self._users(top)
        self._check_limits(lim, max_users, recording_users)
        self._forwards()
        self._cycles()
        rules = self._incoming(top)

        users = {ext: draft.config for ext, draft in self.users.items() if draft.config is not None}
        return TenantConfig(
            id=self.id,
            path=self.path,
            domain=domain,
            timezone=timezone,
            default=default,
            qualify_seconds=qualify,
            forward_caller_id=cast(ForwardCallerId, fcid),
            limits=limits,
            numbers=tuple(self.numbers),
            users=MappingProxyType(users),
            incoming=tuple(rules),
        )

    # -- [tenant] ---------------------------------------------------------------------------

    def _domain(self, ten: _Reader) -> str:
        domain = ten.text("domain", required=True)
        if domain is None:
            return ""
        lowered = domain.lower().rstrip(".")
        if not _valid_domain(lowered):
            ten.error("domain", f"{_show(domain)} is not a domain name")
            return ""
        return lowered

    # -- [[numbers]] -------------------------------------------------------------------------

    def _number(self, reader: _Reader, key: str, raw: str) -> PhoneNumber | None:
        """A DID written by the admin: folded, ``+81`` to ``0``, must be a national number."""
        digits = normalize_number(reader.fold(key, raw))
        if not _DID.fullmatch(digits):
            reader.error(
                key,
                f"{_show(raw)} is not a phone number (0 followed by 9 or 10 digits, "
                'e.g. "0312345678")',
            )
            return None
        return PhoneNumber(digits)

    def _numbers(self, top: _Reader) -> None:
        seen: dict[PhoneNumber, int] = {}
        for position, entry in enumerate(top.tables("numbers"), start=1):
            if entry is None:
                continue
            raw = entry.get("number")
            label = (
                f"number {normalize_number(raw)}" if isinstance(raw, str) else f"number #{position}"
            )
            reader = _Reader(self.sink, self.file, label, entry, ("number",))
            text = reader.string("number", required=True)
            if text is None:
                continue
            number = self._number(reader, "number", text)
            if number is None:
                continue
            if number in seen:
                reader.error(
                    "number", f"{number} is listed twice (also [[numbers]] #{seen[number]})"
                )
                continue
            seen[number] = position
            self.numbers.append(number)
        if not self.numbers:
            self.sink.warn(
                self.file, self.entity, "numbers", "the tenant has no phone numbers ([[numbers]])"
            )

    # -- [[users]] ---------------------------------------------------------------------------

    def _users(self, top: _Reader) -> None:
        entries = top.tables("users")
        self.user_count = sum(1 for entry in entries if entry is not None)
        first_position: dict[Extension, int] = {}
        for position, entry in enumerate(entries, start=1):
            if entry is None:
                continue
            raw = entry.get("extension")
            shown = unicodedata.normalize("NFKC", raw).strip() if isinstance(raw, str) else ""
            label = f"user {shown}" if shown else f"user #{position}"
            reader = _Reader(self.sink, self.file, label, entry, _USER_KEYS)
            extension = self._extension(reader)
            if extension is not None and extension in first_position:
                reader.entity = f"user {extension} (#{position})"
                reader.error(
                    "extension",
                    f"duplicate extension {extension}: already used by user "
                    f"#{first_position[extension]}",
                )
                extension = None
            draft = _UserDraft(position, reader.entity, extension, reader)
            draft.config = self._user(reader, draft, extension)
            self.drafts.append(draft)
            if extension is not None:
                first_position[extension] = position
                self.users[extension] = draft

    def _extension(self, reader: _Reader) -> Extension | None:
        raw = reader.table.get("extension")
        if isinstance(raw, int) and not isinstance(raw, bool):
            reader.error(
                "extension",
                f'must be a string of 4 digits in quotes, e.g. "{raw:04d}" (not the integer {raw})',
            )
            return None
        text = reader.text("extension", required=True)
        if text is None:
            return None
        if not _EXTENSION.fullmatch(text):
            reader.error(
                "extension",
                f"{_show(text)} must be exactly 4 half-width digits, 0000-8999",
            )
            return None
        return Extension(text)

    def _user(
        self, reader: _Reader, draft: _UserDraft, extension: Extension | None
    ) -> UserConfig | None:
        password = reader.string("password")
        if password == "":
            reader.error("password", "must not be empty")
            password = None
        hashes: dict[str, str | None] = {}
        for key, (algorithm, length) in _HA1_FIELDS.items():
            value = reader.string(key)
            if value is not None and (len(value) != length or not _HEX.fullmatch(value)):
                reader.error(
                    key,
                    f"must be {length} hexadecimal digits (the {algorithm} HA1 "
                    f"of extension:realm:password), got {len(value)} characters",
                )
                value = None
            hashes[key] = value.lower() if value is not None else None
        has_hash = any(value is not None for value in hashes.values())
        credential_keys = ("password", *_HA1_FIELDS)
        if password is None and not has_hash:
            if not any(reader.has(key) for key in credential_keys):
                reader.error(
                    "password",
                    "a credential is required: password, or password_ha1_md5 / password_ha1_sha256",
                )
        elif password is not None and has_hash:
            reader.error(
                "password",
                "give either password or the password_ha1_* hashes, not both (they could disagree)",
            )
        elif has_hash:
            usable = [
                algorithm
                for key, (algorithm, _) in _HA1_FIELDS.items()
                if hashes[key] is not None and algorithm in self.server.auth.algorithms
            ]
            offered = ", ".join(self.server.auth.algorithms)
            if not usable:
                reader.error(
                    "password_ha1_md5" if hashes["password_ha1_md5"] else "password_ha1_sha256",
                    f"no hash for an algorithm the server offers ([auth] algorithms: {offered}): "
                    "this user could never authenticate",
                )
            elif len(usable) < len(self.server.auth.algorithms):
                missing = [a for a in self.server.auth.algorithms if a not in usable]
                reader.warn(
                    "password_ha1_md5" if hashes["password_ha1_md5"] else "password_ha1_sha256",
                    f"no hash for {', '.join(missing)}: phones choosing it cannot authenticate",
                )

        name = reader.string("name")
        department = reader.string("department")
        caller_id = None
        raw_cid = reader.string("caller_id")
        if raw_cid:
            number = normalize_number(reader.fold("caller_id", raw_cid))
            if number not in self.numbers:
                have = ", ".join(self.numbers) or "none"
                reader.error(
                    "caller_id",
                    f"{_show(raw_cid)} is not one of the numbers of tenant {self.id} ({have})",
                )
            else:
                caller_id = PhoneNumber(number)
        recording = reader.boolean("recording", False)

        forward = reader.table_("forward")
        fw = _Reader(self.sink, self.file, reader.entity, forward, _FORWARD_KINDS, "forward.")
        for kind in _FORWARD_KINDS:
            target = fw.string(kind)
            if target:
                draft.forward_raw[kind] = (target, fw)

        if extension is None:
            return None
        return UserConfig(
            extension=extension,
            password=password,
            password_ha1_md5=hashes["password_ha1_md5"],
            password_ha1_sha256=hashes["password_ha1_sha256"],
            name=name,
            department=department,
            caller_id=caller_id,
            recording=recording,
            forward=Forwarding(),  # filled in by _forwards once every extension is known
        )

    def _check_limits(self, lim: _Reader, max_users: int | None, recording_users: int) -> None:
        if max_users is not None and self.user_count > max_users:
            lim.error(
                "max_users",
                f"{self.user_count} users are configured but max_users is {max_users}",
            )
        recorders = [d for d in self.users.values() if d.config is not None and d.config.recording]
        if not recorders:
            return
        if recording_users == 0:
            for draft in recorders:
                draft.reader.error(
                    "recording",
                    f"recording is ON but tenant {self.id} has recording_users = 0 "
                    "([limits] recording_users)",
                )
        elif len(recorders) > recording_users:
            names = ", ".join(str(d.extension) for d in recorders)
            lim.error(
                "recording_users",
                f"{len(recorders)} users have recording ON ({names}) but recording_users "
                f"is {recording_users}",
            )

    # -- forwarding ----------------------------------------------------------------------------

    def _target_problem(self, target: str, *, allow_announcement: bool) -> str | None:
        """Why an extension/external target is unacceptable, or None when it is fine."""
        classified = classify_number(target)
        kind = classified.kind
        if kind is NumberKind.EXTENSION and Extension(classified.digits) in self.users:
            return None
        if kind is NumberKind.ANNOUNCEMENT:
            if allow_announcement:
                return None
            return (
                f"{_show(target)} (the after-hours announcement) is only an incoming-rule "
                "target, not a forward target"
            )
        if kind is NumberKind.INTERNATIONAL and not self.international:
            return (
                f"{_show(target)} is an international number but international_calls is off "
                f"for tenant {self.id}"
            )
        if kind in (NumberKind.DOMESTIC, NumberKind.SERVICE, NumberKind.INTERNATIONAL):
            return None
        return (
            f"{_show(target)} is not an extension of tenant {self.id} nor a valid external number"
        )

    def _forwards(self) -> None:
        for draft in self.drafts:
            targets: dict[str, str] = {}
            for kind, (raw, reader) in draft.forward_raw.items():
                target = reader.fold(kind, raw)
                problem = self._target_problem(target, allow_announcement=False)
                if problem is not None:
                    reader.error(kind, problem)
                    continue
                targets[kind] = classify_number(target).digits
            if draft.config is not None and targets:
                draft.config = replace(
                    draft.config,
                    forward=Forwarding(
                        busy=targets.get("busy"),
                        no_answer=targets.get("no_answer"),
                        offline=targets.get("offline"),
                    ),
                )

    def _cycles(self) -> None:
        """Forwarding cycles between extensions, any mix of busy/no_answer/offline edges."""
        edges: dict[Extension, dict[Extension, list[str]]] = {}
        for ext, draft in self.users.items():
            if draft.config is None:
                continue
            fwd = draft.config.forward
            for kind in _FORWARD_KINDS:
                target = getattr(fwd, kind)
                if target is not None and Extension(target) in self.users:
                    edges.setdefault(ext, {}).setdefault(Extension(target), []).append(kind)
        graph: dict[str, list[str]] = {ext: list(targets) for ext, targets in edges.items()}
        cycles, complete = simple_cycles(graph, limit=_MAX_CYCLES_REPORTED)
        for found in cycles:
            cycle = tuple(Extension(ext) for ext in found)
            steps = []
            for here, there in zip(cycle, (*cycle[1:], cycle[0]), strict=True):
                steps.append(f"{here} {'/'.join(edges[here][there])} -> {there}")
            first = self.users[cycle[0]]
            kinds = edges[cycle[0]][cycle[1] if len(cycle) > 1 else cycle[0]]
            self.sink.error(
                self.file,
                first.entity,
                f"forward.{kinds[0]}",
                f"forwarding cycle: {', '.join(steps)}",
            )
        if not complete:
            self.sink.error(
                self.file,
                self.entity,
                "forward",
                f"more forwarding cycles than the {_MAX_CYCLES_REPORTED} listed",
            )

    # -- [[incoming]] ----------------------------------------------------------------------------

    def _incoming(self, top: _Reader) -> list[IncomingRule]:
        windows: dict[PhoneNumber, list[_Window]] = {}
        rules: list[IncomingRule] = []
        for position, entry in enumerate(top.tables("incoming"), start=1):
            if entry is None:
                continue
            raw_number = entry.get("number")
            label = f"incoming rule #{position}"
            if isinstance(raw_number, str):
                label += f" (number {normalize_number(raw_number)})"
            reader = _Reader(self.sink, self.file, label, entry, _INCOMING_KEYS)
            rule, window = self._rule(reader, position)
            if rule is not None:
                rules.append(rule)
            if window is not None:
                windows.setdefault(window.number, []).append(window)
        for number, found in windows.items():
            self._overlaps(found)
            self._coverage(number, found)
        for number in self.numbers:
            if number not in windows:
                self.sink.warn(
                    self.file,
                    f"number {number}",
                    "incoming",
                    "no incoming rule: every call to this number is refused (480)",
                )
        return rules

    def _rule(self, reader: _Reader, position: int) -> tuple[IncomingRule | None, _Window | None]:
        ok = True
        number: PhoneNumber | None = None
        raw_number = reader.string("number", required=True)
        if raw_number is not None:
            number = self._number(reader, "number", raw_number)
            if number is not None and number not in self.numbers:
                have = ", ".join(self.numbers) or "none"
                reader.error(
                    "number",
                    f"{number} is not one of the numbers of tenant {self.id} ({have})",
                )
                number = None
        ok = number is not None

        targets = self._targets(reader)
        ok = ok and targets is not None

        days: set[DayName] = set()
        names = reader.strings("days")
        if names is None:
            if not reader.has("days"):
                reader.error(
                    "days", 'is required, e.g. ["mon", "tue", "wed", "thu", "fri"] or "holiday"'
                )
            ok = False
        else:
            if not names:
                reader.error("days", "needs at least one day")
                ok = False
            for raw in names:
                name = reader.fold("days", raw).lower()
                if name in DAY_KINDS:
                    days.add(name)
                else:
                    close = difflib.get_close_matches(name, DAY_KINDS, n=1)
                    hint = f' (did you mean "{close[0]}"?)' if close else ""
                    reader.error(
                        "days",
                        f"unknown day {_show(raw)}{hint}; days are mon, tue, wed, thu, fri, "
                        "sat, sun, holiday",
                    )
                    ok = False

        bounds: dict[str, int] = {}
        for key in ("start", "end"):
            value = reader.table.get(key)
            if isinstance(value, time) and value.tzinfo is None and not value.microsecond:
                bounds[key] = value.hour * 3600 + value.minute * 60 + value.second
                continue
            text = reader.text(key, required=True)
            if text is None:
                ok = False
                continue
            try:
                bounds[key] = _parse_time(text, is_end=key == "end")
            except ValueError as exc:
                reader.error(key, f"{_show(text)} {exc}")
                ok = False
        if "start" in bounds and "end" in bounds and bounds["start"] > bounds["end"]:
            start, end = bounds["start"], bounds["end"]
            reader.error(
                "end",
                f"the window {_clock(start)}-{_clock(end)} crosses midnight: write it as two "
                f"rules, {_clock(start)}-23:59:59 and 00:00:00-{_clock(end)}",
            )
            ok = False
            del bounds["end"]
        window = None
        if number is not None and days and "start" in bounds and "end" in bounds:
            window = _Window(reader.entity, number, frozenset(days), bounds["start"], bounds["end"])
        if not ok or number is None or targets is None or window is None:
            return None, window
        rule = IncomingRule(
            position=position,
            number=number,
            targets=targets,
            days=window.days,
            start=_as_time(window.start),
            end=_as_time(window.end),
        )
        return rule, window

    def _targets(self, reader: _Reader) -> tuple[str, ...] | None:
        value = reader.table.get("targets")
        if value is None:
            reader.error("targets", 'is required, e.g. "1001,1002" or "009608"')
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            pieces = [reader.fold("targets", item) for item in value]
        elif isinstance(value, str):
            text = reader.fold("targets", value)
            if "、" in text:
                reader.warn("targets", 'Japanese commas "、" read as ","')
                text = text.replace("、", ",")
            pieces = text.split(",")
        else:
            reader.error(
                "targets",
                f"must be a comma-separated string, not {_type_name(value)} {_show(value)}",
            )
            return None
        targets: list[str] = []
        ok = True
        for piece in (p.strip() for p in pieces):
            if not piece:
                reader.error("targets", f"{_show(value)} has an empty entry")
                ok = False
                continue
            problem = self._target_problem(piece, allow_announcement=True)
            if problem is not None:
                if classify_number(piece).kind is NumberKind.EXTENSION:
                    problem = f"unknown extension {piece}: not an extension of tenant {self.id}"
                reader.error("targets", problem)
                ok = False
                continue
            digits = classify_number(piece).digits
            if digits in targets:
                reader.warn("targets", f"{digits} is listed twice")
                continue
            targets.append(digits)
        others = [t for t in targets if t != AFTER_HOURS_TARGET]
        if AFTER_HOURS_TARGET in targets and others:
            reader.error(
                "targets",
                f"{AFTER_HOURS_TARGET} (the after-hours announcement) must be the only target "
                f"of its rule, not mixed with {', '.join(others)}",
            )
            ok = False
        if ok and not targets:
            reader.error("targets", "needs at least one target")
            ok = False
        return tuple(targets) if ok else None

    def _overlaps(self, windows: Sequence[_Window]) -> None:
        for index, later in enumerate(windows):
            for earlier in windows[:index]:
                shared = earlier.days & later.days
                low, high = max(earlier.start, later.start), min(earlier.end, later.end)
                if shared and low <= high:
                    self.sink.error(
                        self.file,
                        later.entity,
                        "start-end",
                        f"overlaps {earlier.entity} on {_day_list(shared)} "
                        f"{_clock(low)}-{_clock(high)}: windows of one number may not overlap",
                    )

    def _coverage(self, number: PhoneNumber, windows: Sequence[_Window]) -> None:
        has_holiday = any("holiday" in w.days for w in windows)
        kinds = DAY_KINDS if has_holiday else WEEKDAYS
        by_day: dict[DayName, tuple[tuple[int, int], ...]] = {}
        for day in kinds:
            spans = [(w.start, w.end) for w in windows if day in w.days]
            gaps = _gaps(spans)
            if gaps:
                by_day[day] = gaps
        if by_day:
            self.sink.warn(
                self.file,
                f"number {number}",
                "incoming",
                f"no rule covers {_describe_gaps(by_day)} (calls then are refused with 480)",
            )


# --------------------------------------------------------------------------------------------
# The whole load


def _read_toml(sink: _Sink, file: str, path: Path) -> tuple[bytes, dict[str, Any]] | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        sink.error(file, "", "", f"cannot read the file: {exc.strerror or exc}")
        return None
    try:
        return raw, tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        sink.error(file, "", "", f"is not UTF-8 text (byte {exc.start})")
    except tomllib.TOMLDecodeError as exc:
        sink.error(file, "", "", f"invalid TOML: {exc}")
    return None


def _relative_name(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, base)).as_posix()


def load_config(path: Path, *, version: int = 1) -> ConfigSnapshot:
    """Read ``pbx.toml`` and its tenant files into a snapshot, or raise ``ConfigError``."""
    sink = _Sink()
    path = Path(path)
    base = path.parent
    display = str(path)
    loaded = _read_toml(sink, display, path)
    if loaded is None:
        raise ConfigError(sink.errors)
    server_bytes, server_data = loaded
    server, tenants_dir_text = _load_server(sink, display, server_data, base, path)
    digest = hashlib.sha256()
    digest.update(f"{path.name}\0{len(server_bytes)}\0".encode())
    digest.update(server_bytes)

    tenants_dir = base / tenants_dir_text
    tenants: dict[TenantId, TenantConfig] = {}
    if not tenants_dir.is_dir():
        sink.error(display, "", "tenants_dir", f"{_show(str(tenants_dir))} is not a directory")
        files: list[Path] = []
    else:
        files = sorted(tenants_dir.glob("*.toml"))
        if not files:
            sink.warn(display, "", "tenants_dir", f"no tenant files (*.toml) in {tenants_dir}")
    for tenant_path in files:
        file = str(tenant_path)
        loaded = _read_toml(sink, file, tenant_path)
        if loaded is None:
            continue
        raw, data = loaded
        name = _relative_name(tenant_path, base)
        digest.update(f"{name}\0{len(raw)}\0".encode())
        digest.update(raw)
        tenant_id = TenantId(tenant_path.stem)
        loader = _TenantLoader(sink, file, tenant_id, tenant_path, server)
        tenants[tenant_id] = loader.load(data)

    by_number, by_domain, default = _index(sink, display, tenants)
    if sink.errors:
        raise ConfigError(sink.errors, sink.warnings)
    return ConfigSnapshot(
        version=version,
        digest=digest.hexdigest(),
        server=server,
        tenants=MappingProxyType(tenants),
        warnings=tuple(str(w) for w in sink.warnings),
        tenant_by_number=MappingProxyType(by_number),
        tenant_by_domain=MappingProxyType(by_domain),
        default_tenant=default,
        warning_details=tuple(sink.warnings),
    )


def _index(
    sink: _Sink, server_file: str, tenants: Mapping[TenantId, TenantConfig]
) -> tuple[dict[PhoneNumber, TenantId], dict[str, TenantId], TenantId | None]:
    """The cross-tenant indexes; a number or domain of two tenants, or two defaults, is an error."""
    by_number: dict[PhoneNumber, TenantId] = {}
    by_domain: dict[str, TenantId] = {}
    defaults: list[TenantId] = []
    for tid, tenant in tenants.items():
        file = str(tenant.path)
        for number in tenant.numbers:
            owner = by_number.setdefault(number, tid)
            if owner != tid:
                sink.error(
                    file,
                    f"number {number}",
                    "number",
                    f"{number} is also a number of tenant {owner} ({tenants[owner].path})",
                )
        if tenant.domain:
            owner = by_domain.setdefault(tenant.domain, tid)
            if owner != tid:
                sink.error(
                    file,
                    f"tenant {tid}",
                    "domain",
                    f"{_show(tenant.domain)} is also the domain of tenant {owner} "
                    f"({tenants[owner].path})",
                )
        if tenant.default:
            if defaults:
                sink.error(
                    file,
                    f"tenant {tid}",
                    "default",
                    f"tenant {defaults[0]} is marked default too: at most one tenant may be",
                )
            defaults.append(tid)
    default: TenantId | None = None
    if defaults:
        default = defaults[0]
    elif len(tenants) == 1:
        default = next(iter(tenants))
    elif tenants:
        sink.warn(
            server_file,
            "",
            "",
            "no tenant is marked default = true: requests to the server's address "
            "(not a tenant domain) are refused",
        )
    return by_number, by_domain, default
