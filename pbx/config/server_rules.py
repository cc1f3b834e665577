"""``pbx.toml``: the server's settings, checked section by section (DESIGN section 5).

``load_server`` turns the parsed TOML of pbx.toml into a ``ServerConfig``, reporting each problem
to the sink with its section and key ("[calls]", "max_ring_seconds"). It reads no files: paths
are resolved against pbx.toml's folder, and the files they name are checked by the builder.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from pbx.config.model import (
    AdminSettings,
    AuthSettings,
    CallSettings,
    ListenSpec,
    MediaSettings,
    PanelSettings,
    RegistrarSettings,
    SecuritySettings,
    ServerConfig,
    SipSettings,
    StorageSettings,
    Trunk,
)
from pbx.config.tables import AddressError, Sink, TableReader, split_host_port, valid_domain

ALGORITHMS: tuple[Literal["MD5", "SHA-256"], ...] = ("MD5", "SHA-256")


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

# issue #20: [storage] node, a node's name in the shared store's rows
NODE_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_SIP_DEFAULTS = SipSettings(listen=())


@dataclass(frozen=True, slots=True)
class NamedFile:
    """A file pbx.toml names that must exist (the panel's TLS certificate and key)."""

    file: str  # pbx.toml, as shown in problems
    entity: str
    field: str
    written: str  # as the admin wrote it
    path: Path  # resolved against the folder of pbx.toml


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What ``load_server`` made of pbx.toml."""

    config: ServerConfig
    tenants_dir: str  # as written, relative to the folder of pbx.toml
    named_files: tuple[NamedFile, ...]


def load_server(
    sink: Sink, file: str, data: Mapping[str, Any], base: Path, path: Path
) -> ServerSettings:
    """Check pbx.toml's tables and build its ``ServerConfig`` (files it names are not looked at)."""
    named: list[NamedFile] = []
    top = TableReader(sink, file, "", data, _SERVER_KEYS)
    tenants_dir = top.string("tenants_dir") or "tenants"

    # [sip]
    sip = TableReader(
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
            "tls_certificate",
            "tls_key",
            "tls_handshake_seconds",
            "edge",
            "session_expires",
            "min_se",
            "allow_below_rfc_minimum",
        ),
    )
    session_timers = _session_timer_settings(sip)  # issue 16
    listen: list[ListenSpec] = []
    entries = sip.strings("listen")
    if entries is None:
        entries = ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"] if not sip.has("listen") else []
    elif not entries:
        sip.error("listen", "sip.listen_empty")
    seen: set[tuple[str, str, int]] = set()
    for entry in entries:
        transport, sep, address = sip.fold("listen", entry).partition(":")
        transport = transport.lower()
        if not sep or transport not in ("udp", "tcp", "tls"):
            sip.error("listen", "sip.listen_transport", value=entry)
            continue
        try:
            host, port = split_host_port(address, default_port=5060, allow_any_port=True)
        except AddressError as exc:
            sip.error("listen", exc.code, value=entry, **exc.params)
            continue
        key = (transport, host, port)
        if key in seen:
            sip.error("listen", "sip.listen_duplicate", value=entry)
            continue
        seen.add(key)
        listen.append(ListenSpec(cast(Literal["udp", "tcp", "tls"], transport), host, port))
    sip_tls = _sip_tls_files(sip, base, named, any(s.transport == "tls" for s in listen))
    advertise = sip.text("advertise")
    if advertise is not None:
        bare = (
            advertise[1:-1] if advertise.startswith("[") and advertise.endswith("]") else advertise
        )
        if not valid_domain(bare.lower()):
            sip.error("advertise", "sip.advertise_invalid", value=advertise)
            advertise = None
        else:
            advertise = bare

    edge = _edge_addresses(sip)  # issue #20

    # [auth]
    auth_reader = TableReader(
        sink,
        file,
        "[auth]",
        top.table_("auth"),
        ("algorithms", "nonce_seconds", "nonce_secret_file"),
    )
    algorithms = read_algorithms(auth_reader, "algorithms")
    nonce_seconds = auth_reader.integer(
        "nonce_seconds", AuthSettings().nonce_seconds, minimum=1, maximum=86400
    )
    secret_file = auth_reader.string("nonce_secret_file")  # issue #20
    auth = AuthSettings(
        algorithms or AuthSettings().algorithms,
        nonce_seconds,
        nonce_secret_file=(base / secret_file) if secret_file else None,
    )

    # [registrar]
    reg = TableReader(
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
            "registrar.min_above_max",
            min_expires=registrar.min_expires,
            max_expires=registrar.max_expires,
        )
    elif not registrar.min_expires <= registrar.default_expires <= registrar.max_expires:
        reg.error(
            "default_expires",
            "registrar.default_outside",
            default_expires=registrar.default_expires,
            min_expires=registrar.min_expires,
            max_expires=registrar.max_expires,
        )

    # [calls]
    calls_reader = TableReader(
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
            "calls.no_answer_not_below_max_ring",
            no_answer=calls.no_answer_seconds,
            max_ring=calls.max_ring_seconds,
        )

    # [security]
    sec = TableReader(
        sink,
        file,
        "[security]",
        top.table_("security"),
        (
            "ban_after_failures",
            "ban_window_seconds",
            "ban_seconds",
            "max_requests_per_second",
            "trunk_max_requests_per_second",
        ),
    )
    sd = SecuritySettings()
    security = SecuritySettings(
        ban_after_failures=sec.integer("ban_after_failures", sd.ban_after_failures, minimum=1),
        ban_window_seconds=sec.integer("ban_window_seconds", sd.ban_window_seconds, minimum=1),
        ban_seconds=sec.integer("ban_seconds", sd.ban_seconds, minimum=1),
        max_requests_per_second=sec.integer(
            "max_requests_per_second", sd.max_requests_per_second, minimum=1
        ),
        trunk_max_requests_per_second=sec.integer(
            "trunk_max_requests_per_second", sd.trunk_max_requests_per_second, minimum=1
        ),
    )

    # [media]
    med = TableReader(
        sink,
        file,
        "[media]",
        top.table_("media"),
        (
            "rtp_ports",
            "inactivity_seconds",
            "engine",
            "rtpengine",
            "rtpengine_recording_dir",
            "kernel_forwarding",
        ),
    )
    md = MediaSettings()
    port_min, port_max = md.rtp_port_min, md.rtp_port_max
    ports = med.text("rtp_ports")
    if ports is not None:
        match = re.fullmatch(r"([0-9]+)\s*-\s*([0-9]+)", ports)
        if match is None:
            med.error("rtp_ports", "media.rtp_ports_format", value=ports)
        else:
            low, high = int(match[1]), int(match[2])
            if not 1024 <= low < high <= 65535:
                med.error("rtp_ports", "media.rtp_ports_range", value=ports)
            else:
                port_min, port_max = low, high
    media = MediaSettings(
        rtp_port_min=port_min,
        rtp_port_max=port_max,
        inactivity_seconds=med.integer("inactivity_seconds", md.inactivity_seconds, minimum=1),
        **_media_engine(med, base),  # issue #20
    )

    # [admin]
    adm = TableReader(sink, file, "[admin]", top.table_("admin"), ("listen",))
    admin = AdminSettings()
    admin_listen = adm.text("listen")
    if admin_listen is not None:
        try:
            host, port = split_host_port(admin_listen, allow_any_port=True)
        except AddressError as exc:
            adm.error("listen", exc.code, value=admin_listen, **exc.params)
        else:
            admin = AdminSettings(host, port)
            if not ipaddress.ip_address(host).is_loopback:
                adm.warn("listen", "admin.listen_public", value=admin_listen)

    panel = _load_panel(sink, file, top.table_("panel"), base, admin, named)

    # [storage]
    sto = TableReader(
        sink, file, "[storage]", top.table_("storage"), ("data_dir", "database", "node")
    )
    data_dir_text = sto.string("data_dir")
    if data_dir_text == "":
        sto.error("data_dir", "value.empty")
        data_dir_text = None
    data_dir = (base / (data_dir_text or "../data")).resolve()
    storage = StorageSettings(data_dir, _database_url(sto), _node_name(sto))

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
        tr = TableReader(sink, file, label, trunk_table, ("name", "address"))
        trunk_name = tr.string("name", required=True)
        trunk_address = tr.text("address", required=True)
        if trunk_name is not None:
            if not trunk_name:
                tr.error("name", "value.empty")
            elif trunk_name in trunk_names:
                tr.error(
                    "name",
                    "trunks.name_duplicate",
                    value=trunk_name,
                    position=trunk_names[trunk_name],
                )
            trunk_names.setdefault(trunk_name, position)
        if trunk_name and trunk_address is not None:
            try:
                host, port = split_host_port(trunk_address, default_port=5060)
            except AddressError as exc:
                tr.error("address", exc.code, value=trunk_address, **exc.params)
                continue
            if host in trunk_hosts:
                tr.error("address", "trunks.address_duplicate", host=host, other=trunk_hosts[host])
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
            tls_certificate=sip_tls[0],
            tls_key=sip_tls[1],
            edge=edge,
            tls_handshake_seconds=sip.integer(
                "tls_handshake_seconds",
                _SIP_DEFAULTS.tls_handshake_seconds,
                minimum=1,
                maximum=120,
            ),
            session_expires=session_timers[0],
            min_se=session_timers[1],
            allow_below_rfc_minimum=session_timers[2],
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
    return ServerSettings(server, tenants_dir, tuple(named))


def check_named_files(sink: Sink, named: Iterable[NamedFile], present: Container[Path]) -> None:
    """Report each file pbx.toml names that is not in ``present`` (the files that exist)."""
    for entry in named:
        if entry.path not in present:
            sink.error(
                entry.file,
                entry.entity,
                entry.field,
                "file.missing",
                value=entry.written,
                path=entry.path,
            )


def _sip_tls_files(
    sip: TableReader, base: Path, named: list[NamedFile], has_tls_listener: bool
) -> tuple[Path | None, Path | None]:
    """``[sip] tls_certificate`` / ``tls_key`` (issue #18): both or neither; required by a
    ``tls:`` listen entry. The files' contents are checked when the server loads them."""
    paths: dict[str, Path] = {}
    for key in ("tls_certificate", "tls_key"):
        text = sip.string(key)
        if text == "":
            sip.error(key, "value.empty")
        elif text is not None:
            paths[key] = (base / text).resolve()
            named.append(NamedFile(sip.file, "[sip]", key, text, paths[key]))
    for key, other in (("tls_certificate", "tls_key"), ("tls_key", "tls_certificate")):
        if sip.has(key) and not sip.has(other):
            sip.error(other, "panel.tls_pair", other=key)
    certificate, key_file = paths.get("tls_certificate"), paths.get("tls_key")
    if certificate is None or key_file is None:
        if has_tls_listener and not (sip.has("tls_certificate") or sip.has("tls_key")):
            sip.error("listen", "sip.tls_needs_certificate")
        return None, None
    return certificate, key_file


_PANEL_KEYS = (
    "listen",
    "tls_certificate",
    "tls_key",
    "session_idle_minutes",
    "session_max_hours",
    "history_versions",
)


def _load_panel(
    sink: Sink,
    file: str,
    table: Mapping[str, Any],
    base: Path,
    admin: AdminSettings,
    named: list[NamedFile],
) -> PanelSettings:
    """``[panel]``: the web control panel's listener, TLS files, sessions and history."""
    pan = TableReader(sink, file, "[panel]", table, _PANEL_KEYS)
    defaults = PanelSettings()
    host, port = defaults.host, defaults.port
    listen = pan.text("listen")
    if listen is not None:
        try:
            host, port = split_host_port(listen, allow_any_port=True)
        except AddressError as exc:
            pan.error("listen", exc.code, value=listen, **exc.params)
            host, port = defaults.host, defaults.port
            listen = None
    # Two listeners on one port fail at start-up; say so at check time instead.
    if port and port == admin.port and _same_or_wildcard(host, admin.host):
        pan.error("listen", "panel.listen_same_as_admin", value=listen or f"{host}:{port}")

    paths: dict[str, Path] = {}
    for key in ("tls_certificate", "tls_key"):
        text = pan.string(key)
        if text == "":
            pan.error(key, "value.empty")
        elif text is not None:
            paths[key] = (base / text).resolve()
            named.append(NamedFile(file, "[panel]", key, text, paths[key]))
    for key, other in (("tls_certificate", "tls_key"), ("tls_key", "tls_certificate")):
        if pan.has(key) and not pan.has(other):
            pan.error(other, "panel.tls_pair", other=key)
    certificate, key_file = paths.get("tls_certificate"), paths.get("tls_key")
    if certificate is None or key_file is None:
        certificate = key_file = None
    if listen is not None and certificate is None and not ipaddress.ip_address(host).is_loopback:
        pan.warn("listen", "panel.listen_public_without_tls", value=listen)

    idle = pan.integer("session_idle_minutes", defaults.session_idle_minutes, minimum=1)
    longest = pan.integer("session_max_hours", defaults.session_max_hours, minimum=1)
    if idle >= longest * 60:
        pan.warn(
            "session_idle_minutes",
            "panel.idle_not_below_max",
            idle=idle,
            max_minutes=longest * 60,
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


def read_algorithms(reader: TableReader, key: str) -> tuple[Literal["MD5", "SHA-256"], ...]:
    """A list of digest algorithms (``[auth] algorithms``, ``[tenant] auth_algorithms``): each
    "MD5" or "SHA-256" (any case), once, at least one. () when absent or wrong (reported)."""
    names = reader.strings(key)
    if names is None:
        return ()
    algorithms: list[Literal["MD5", "SHA-256"]] = []
    for name in names:
        canonical = next((a for a in ALGORITHMS if a.lower() == name.strip().lower()), None)
        if canonical is None:
            reader.error(key, "auth.algorithm_unknown", value=name)
        elif canonical in algorithms:
            reader.error(key, "auth.algorithm_duplicate", value=name)
        else:
            algorithms.append(canonical)
    if not names:
        reader.error(key, "auth.algorithms_empty")
    return tuple(algorithms)


def _database_url(sto: TableReader) -> str | None:
    """``[storage] database`` (issue #20): a PostgreSQL URL naming its database, or None."""
    text = sto.string("database")
    if text is None:
        return None
    if text == "":
        sto.error("database", "value.empty")
        return None
    url = urlsplit(text)
    if url.scheme not in ("postgresql", "postgres") or any(c.isspace() for c in text):
        sto.error("database", "storage.database_scheme", value=text)
        return None
    if url.path.strip("/") == "":
        sto.error("database", "storage.database_name", value=text)
        return None
    if url.password:
        sto.warn("database", "storage.database_password")
    return text


# -- issue #20: the SIP edge and the media engine ---------------------------------------------
def _edge_addresses(sip: TableReader) -> frozenset[str]:
    """``[sip] edge``: IP addresses (no port) of the SIP edges trusted to name a request's real
    source."""
    out: set[str] = set()
    for entry in sip.strings("edge") or []:
        try:
            out.add(str(ipaddress.ip_address(entry.strip().strip("[]"))))
        except ValueError:
            sip.error("edge", "sip.edge_invalid", value=entry)
    return frozenset(out)


def _media_engine(med: TableReader, base: Path) -> dict[str, Any]:
    """``[media] engine`` ("builtin" | "rtpengine"), ``[media] rtpengine`` (udp:HOST:PORT) and
    ``[media] rtpengine_recording_dir`` (relative to the config folder, like data_dir)."""
    out: dict[str, Any] = {}
    engine = med.text("engine")
    if engine is not None:
        if engine not in ("builtin", "rtpengine"):
            med.error("engine", "media.engine_unknown", value=engine)
        else:
            out["engine"] = engine
    control = med.text("rtpengine")
    if control is not None:
        kind, sep, address = control.partition(":")
        try:
            if not sep or kind.lower() != "udp":
                raise AddressError("media.rtpengine_format")
            out["rtpengine"] = split_host_port(address, default_port=2223)
        except AddressError:
            med.error("rtpengine", "media.rtpengine_format", value=control)
    kernel = med.boolean("kernel_forwarding", False)
    if kernel:
        if out.get("engine") == "rtpengine":
            med.warn("kernel_forwarding", "media.kernel_forwarding_rtpengine")
        out["kernel_forwarding"] = True
    recordings = med.text("rtpengine_recording_dir")
    if recordings == "":
        med.error("rtpengine_recording_dir", "value.empty")
    elif recordings is not None:
        out["rtpengine_recording_dir"] = (base / recordings).resolve()
    return out


def _node_name(sto: TableReader) -> str | None:
    """``[storage] node`` (issue #20): letters, digits, ``.``, ``_``, ``-``, ``:``; 1-64."""
    text = sto.string("node")
    if text is None:
        return None
    if not NODE_NAME.fullmatch(text):
        sto.error("node", "storage.node_name", value=text)
        return None
    return text


def _session_timer_settings(sip: TableReader) -> tuple[int, int, bool]:
    """``[sip] session_expires`` / ``min_se`` (issue 16, RFC 4028): at least 90 s each (the RFC's
    floor) unless ``allow_below_rfc_minimum`` (tests and labs); ``session_expires`` not below
    ``min_se``."""
    below = sip.boolean("allow_below_rfc_minimum", _SIP_DEFAULTS.allow_below_rfc_minimum)
    values: list[int] = []
    for key, default in (
        ("min_se", _SIP_DEFAULTS.min_se),
        ("session_expires", _SIP_DEFAULTS.session_expires),
    ):
        value = sip.integer(key, default, minimum=1, maximum=86400)
        if value < 90 and not below:
            sip.error(key, "sip.below_rfc_minimum", value=value)
            value = default
        values.append(value)
    min_se, expires = values
    if expires < min_se:
        sip.error(
            "session_expires", "sip.session_expires_below_min_se", value=expires, min_se=min_se
        )
        expires = max(_SIP_DEFAULTS.session_expires, min_se)
    return expires, min_se, below
