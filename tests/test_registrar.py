"""The registrar core (RFC 3261 10.3): each step as a table of request, bindings and instant."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import pytest

from pbx.config.model import (
    AdminSettings,
    AuthSettings,
    CallSettings,
    ConfigSnapshot,
    Extension,
    ListenSpec,
    MediaSettings,
    RegistrarSettings,
    SecuritySettings,
    ServerConfig,
    SipSettings,
    StorageSettings,
    TenantConfig,
    TenantId,
    TenantLimits,
    UserConfig,
)
from pbx.errors import RemoteProtocolError
from pbx.registrar import (
    Aor,
    Binding,
    RegisterResult,
    Registrations,
    Source,
    contact_key,
    ha1_lookup,
    online_contacts,
    presence,
    process_register,
    resolve_aor,
)
from pbx.sip.digest import compute_ha1
from pbx.sip.message import CallId, CSeq, NameAddress, SipRequest, SipUri, TelUri, Via
from pbx.sip.parse import parse_message

RFC4475 = Path(__file__).parent / "sip" / "data" / "rfc4475"
NOW = 1_764_000_000.0
ACME = TenantId("acme")
OTHER = TenantId("other")
E1001 = Extension("1001")
PHONE = Source("198.51.100.7", 40123, "UDP")


def make_config(
    *,
    registrar: RegistrarSettings | None = None,
    qualify: int = 0,
    default: bool = True,
) -> ConfigSnapshot:
    users = MappingProxyType(
        {
            Extension("1001"): UserConfig(Extension("1001"), password="pw1"),
            Extension("1002"): UserConfig(
                Extension("1002"),
                password_ha1_md5=compute_ha1("MD5", "1002", "acme.example", "pw2"),
            ),
            Extension("1003"): UserConfig(
                Extension("1003"),
                password_ha1_sha256=compute_ha1("SHA-256", "1003", "acme.example", "pw3"),
            ),
        }
    )
    acme = TenantConfig(
        id=ACME,
        path=Path("tenants/acme.toml"),
        domain="acme.example",
        default=default,
        qualify_seconds=qualify,
        limits=TenantLimits(max_users=10),
        users=users,
    )
    other = TenantConfig(
        id=OTHER,
        path=Path("tenants/other.toml"),
        domain="other.example",
        limits=TenantLimits(max_users=10),
        users=MappingProxyType({Extension("2001"): UserConfig(Extension("2001"), "pw")}),
    )
    server = ServerConfig(
        path=Path("pbx.toml"),
        sip=SipSettings(listen=(ListenSpec("udp", "127.0.0.1", 5060),)),
        auth=AuthSettings(),
        registrar=registrar or RegistrarSettings(min_expires=60, max_expires=3600, max_contacts=3),
        calls=CallSettings(),
        security=SecuritySettings(),
        media=MediaSettings(),
        admin=AdminSettings(),
        storage=StorageSettings(Path("/tmp/data")),
    )
    return ConfigSnapshot(
        version=1,
        digest="0" * 64,
        server=server,
        tenants=MappingProxyType({ACME: acme, OTHER: other}),
        tenant_by_domain=MappingProxyType({"acme.example": ACME, "other.example": OTHER}),
        default_tenant=ACME if default else None,
    )


CONFIG = make_config()
AOR = Aor(ACME, E1001, "acme.example")


def contact(
    host: str = "192.168.1.10",
    port: int | None = 5060,
    *,
    expires: int | str | None = None,
    params: tuple[tuple[str, str | None], ...] = (),
    uri_params: tuple[tuple[str, str | None], ...] = (),
    user: str = "1001",
) -> NameAddress:
    cparams = params + ((("expires", str(expires)),) if expires is not None else ())
    return NameAddress(SipUri("sip", host, user, port=port, params=uri_params), None, cparams)


def register(
    *contacts: NameAddress,
    expires: int | str | None = None,
    call_id: str = "call-1@phone",
    cseq: int = 1,
    star: bool = False,
    to: NameAddress | None = None,
    user_agent: str | None = "TestPhone/1.0",
) -> SipRequest:
    headers: list[tuple[str, str]] = []
    if expires is not None:
        headers.append(("Expires", str(expires)))
    if user_agent is not None:
        headers.append(("User-Agent", user_agent))
    aor = NameAddress(SipUri("sip", "acme.example", "1001"))
    return SipRequest(
        method="REGISTER",
        uri=SipUri("sip", "acme.example"),
        via=(Via("UDP", "192.168.1.10", 5060, (("branch", "z9hG4bKabc"),)),),
        from_=aor.with_tag("f1"),
        to=to or aor,
        call_id=CallId(call_id),
        cseq=CSeq(cseq, "REGISTER"),
        contact=contacts,
        contact_star=star,
        headers=tuple(headers),
    )


def run(
    request: SipRequest,
    bindings: tuple[Binding, ...] = (),
    *,
    now: float = NOW,
    config: ConfigSnapshot = CONFIG,
    source: Source = PHONE,
    user: str | None = "1001",
) -> RegisterResult:
    return process_register(
        request,
        AOR,
        bindings,
        config=config,
        source=source,
        now=now,
        authenticated_user=user,
    )


def expires_of(result: RegisterResult) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in result.contacts:
        value = c.param("expires")
        assert value is not None
        out[str(c.uri)] = int(value)
    return out


# --- resolving the AOR ----------------------------------------------------------------------


def test_aor_is_the_to_user_at_the_tenant_domain() -> None:
    assert resolve_aor(register(), CONFIG) == AOR
    assert str(AOR) == "sip:1001@acme.example"


def test_the_servers_address_in_to_lands_in_the_default_tenant() -> None:
    to = NameAddress(SipUri("sip", "127.0.0.1", "1001", port=5060))
    assert resolve_aor(register(to=to), CONFIG) == AOR


def test_other_tenant_domain() -> None:
    to = NameAddress(SipUri("sip", "other.example", "2001"))
    assert resolve_aor(register(to=to), CONFIG) == Aor(OTHER, Extension("2001"), "other.example")


def test_unknown_domain_without_default_tenant_is_404() -> None:
    to = NameAddress(SipUri("sip", "elsewhere.example", "1001"))
    with pytest.raises(RemoteProtocolError) as err:
        resolve_aor(register(to=to), make_config(default=False))
    assert err.value.status_hint == 404


@pytest.mark.parametrize(
    "to",
    [NameAddress(TelUri("+81312345678")), NameAddress(SipUri("sip", "acme.example"))],
    ids=["tel", "no-user"],
)
def test_to_must_be_a_sip_uri_with_a_user(to: NameAddress) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        resolve_aor(register(to=to), CONFIG)
    assert err.value.status_hint == 400


def test_rfc4475_unksm2_non_sip_to_is_400() -> None:
    request = parse_message((RFC4475 / "unksm2.dat").read_bytes())
    assert isinstance(request, SipRequest)
    with pytest.raises(RemoteProtocolError) as err:
        resolve_aor(request, CONFIG)
    assert err.value.status_hint == 400


# --- authorization (10.3 step 4) and the AOR's existence ---------------------------------


def test_another_users_credentials_are_forbidden() -> None:
    result = run(register(contact()), user="1002")
    assert result.status == 403
    assert not result.saved


def test_unknown_extension_is_404() -> None:
    aor = Aor(ACME, Extension("1999"), "acme.example")
    result = process_register(
        register(contact()), aor, (), config=CONFIG, source=PHONE, now=NOW,
        authenticated_user="1999",
    )  # fmt: skip
    assert result.status == 404


# --- adding bindings (10.3 steps 6-8) ------------------------------------------------------


def test_new_binding_keeps_where_the_register_really_came_from() -> None:
    source = Source("203.0.113.9", 61000, "tcp", connection_id="tcp-17")
    result = run(register(contact(), expires=600, cseq=5), source=source)
    assert result.status == 200
    (binding,) = result.saved
    assert binding.contact == "sip:1001@192.168.1.10:5060"
    assert binding.source == ("203.0.113.9", 61000)
    assert binding.transport == "TCP"
    assert binding.connection_id == "tcp-17"
    assert binding.call_id == "call-1@phone"
    assert binding.cseq == 5
    assert binding.registered_at == NOW
    assert binding.expires_at == NOW + 600
    assert binding.user_agent == "TestPhone/1.0"
    assert result.bindings == (binding,)
    assert expires_of(result) == {"sip:1001@192.168.1.10:5060": 600}
    assert dict(result.headers)["Date"].endswith("GMT")


def test_contact_expires_param_wins_over_expires_header() -> None:
    result = run(register(contact(expires=120), contact("10.0.0.2", expires=None), expires=900))
    assert expires_of(result) == {
        "sip:1001@192.168.1.10:5060": 120,
        "sip:1001@10.0.0.2:5060": 900,
    }


def test_without_any_expires_the_default_applies() -> None:
    assert expires_of(run(register(contact()))) == {"sip:1001@192.168.1.10:5060": 3600}


def test_malformed_expires_is_ignored() -> None:
    result = run(register(contact(expires="soon"), expires=300))
    assert expires_of(result) == {"sip:1001@192.168.1.10:5060": 300}


@pytest.mark.parametrize("expires", [1, 59])
def test_too_brief_interval_is_423_with_min_expires(expires: int) -> None:
    result = run(register(contact(), contact("10.0.0.2", expires=expires), expires=600))
    assert result.status == 423
    assert result.reason == "Interval Too Brief"
    assert dict(result.headers) == {"Min-Expires": "60"}
    assert not result.saved
    assert not result.removed


def test_min_expires_itself_is_accepted() -> None:
    assert expires_of(run(register(contact(), expires=60))) == {"sip:1001@192.168.1.10:5060": 60}


def test_long_interval_is_clamped_to_max_expires() -> None:
    result = run(register(contact(), expires=2**40))
    assert expires_of(result) == {"sip:1001@192.168.1.10:5060": 3600}
    assert result.saved[0].expires_at == NOW + 3600


def test_non_sip_contact_is_400() -> None:
    request = register(NameAddress(TelUri("+81312345678")), expires=600)
    assert run(request).status == 400


# --- refresh, Call-ID and CSeq (10.3 step 7) ----------------------------------------------


def registered(
    *contacts: NameAddress, call_id: str = "call-1@phone", cseq: int = 1, now: float = NOW
) -> tuple[Binding, ...]:
    result = run(register(*contacts, expires=600, call_id=call_id, cseq=cseq), now=now)
    assert result.status == 200
    return result.bindings


def test_refresh_with_higher_cseq_updates_the_binding() -> None:
    before = registered(contact())
    later = NOW + 300
    result = run(register(contact(), expires=600, cseq=2), before, now=later)
    assert result.status == 200
    (binding,) = result.saved
    assert binding.expires_at == later + 600
    assert binding.cseq == 2
    assert result.removed == ()  # the same key: an upsert, not a delete
    assert expires_of(result) == {"sip:1001@192.168.1.10:5060": 600}


def test_refresh_from_a_new_nat_mapping_moves_the_binding() -> None:
    before = registered(contact())
    moved = Source("198.51.100.7", 50000, "UDP")
    result = run(register(contact(), expires=600, cseq=2), before, source=moved)
    assert result.bindings[0].source == ("198.51.100.7", 50000)
    assert len(result.bindings) == 1


@pytest.mark.parametrize("cseq", [1, 0])
def test_same_call_id_with_cseq_not_higher_fails_with_500(cseq: int) -> None:
    before = registered(contact(), cseq=1)
    result = run(register(contact(), expires=900, cseq=cseq), before, now=NOW + 10)
    assert result.status == 500
    assert not result.saved
    assert not result.removed


def test_out_of_order_cseq_aborts_the_whole_request() -> None:
    before = registered(contact(), cseq=5)
    request = register(contact("10.0.0.2"), contact(), expires=600, cseq=4)
    result = run(request, before)
    assert result.status == 500
    assert not result.saved


def test_another_call_id_replaces_the_binding_whatever_its_cseq() -> None:
    before = registered(contact(), call_id="old@phone", cseq=100)
    result = run(register(contact(), expires=600, call_id="new@phone", cseq=1), before)
    assert result.status == 200
    assert result.saved[0].call_id == "new@phone"
    assert len(result.bindings) == 1


def test_uri_comparison_ignores_host_case_but_not_port_or_transport() -> None:
    a = SipUri("sip", "phone.example", "1001", port=5060)
    assert contact_key(a) == contact_key(SipUri("sip", "PHONE.example", "1001", port=5060))
    assert contact_key(a) != contact_key(SipUri("sip", "phone.example", "1001"))
    assert contact_key(a) != contact_key(
        SipUri("sip", "phone.example", "1001", port=5060, params=(("transport", "tcp"),))
    )
    assert contact_key(
        SipUri("sip", "h", "1001", params=(("transport", "UDP"), ("ob", None)))
    ) == contact_key(SipUri("sip", "h", "1001", params=(("transport", "udp"),)))


# --- removal ----------------------------------------------------------------------------------


def test_expires_zero_removes_that_binding() -> None:
    before = registered(contact(), contact("10.0.0.2"))
    result = run(register(contact(expires=0), cseq=2), before)
    assert result.status == 200
    assert [b.contact for b in result.removed] == ["sip:1001@192.168.1.10:5060"]
    assert list(expires_of(result)) == ["sip:1001@10.0.0.2:5060"]


def test_expires_header_zero_removes_unknown_contact_harmlessly() -> None:
    result = run(register(contact(), expires=0))
    assert result.status == 200
    assert result.contacts == ()
    assert result.saved == ()


def test_star_with_expires_zero_removes_everything() -> None:
    before = registered(contact(), contact("10.0.0.2"))
    result = run(register(star=True, expires=0, cseq=2), before)
    assert result.status == 200
    assert {b.contact for b in result.removed} == {
        "sip:1001@192.168.1.10:5060",
        "sip:1001@10.0.0.2:5060",
    }
    assert result.bindings == ()
    assert result.contacts == ()


@pytest.mark.parametrize("expires", [None, 60, "x"])
def test_star_without_expires_zero_is_400(expires: int | str | None) -> None:
    before = registered(contact())
    result = run(register(star=True, expires=expires, cseq=2), before)
    assert result.status == 400
    assert not result.removed


def test_star_with_other_contacts_is_400() -> None:
    assert run(register(contact(), star=True, expires=0)).status == 400


def test_star_with_same_call_id_and_old_cseq_fails() -> None:
    before = registered(contact(), cseq=3)
    assert run(register(star=True, expires=0, cseq=3), before).status == 500
    # Another Call-ID removes it whatever the CSeq.
    other = run(register(star=True, expires=0, cseq=1, call_id="other"), before)
    assert other.status == 200
    assert len(other.removed) == 1


# --- queries and listing ------------------------------------------------------------------


def test_register_without_contact_lists_bindings_with_remaining_expires() -> None:
    before = registered(contact(), contact("10.0.0.2", expires=100))
    result = run(register(cseq=9), before, now=NOW + 40)
    assert result.status == 200
    assert expires_of(result) == {
        "sip:1001@192.168.1.10:5060": 560,
        "sip:1001@10.0.0.2:5060": 60,
    }
    assert result.saved == ()


def test_expired_bindings_are_not_listed_and_are_reported_removed() -> None:
    before = registered(contact(), contact("10.0.0.2", expires=100))
    result = run(register(cseq=9), before, now=NOW + 100)
    assert list(expires_of(result)) == ["sip:1001@192.168.1.10:5060"]
    assert [b.contact for b in result.removed] == ["sip:1001@10.0.0.2:5060"]


def test_ok_lists_all_current_bindings() -> None:
    first = registered(contact(), call_id="desk")
    result = run(register(contact("10.0.0.2"), expires=300, call_id="app"), first, now=NOW + 10)
    assert expires_of(result) == {
        "sip:1001@192.168.1.10:5060": 590,
        "sip:1001@10.0.0.2:5060": 300,
    }


def test_max_contacts_drops_the_least_recently_refreshed() -> None:
    bindings: tuple[Binding, ...] = ()
    for i in range(3):
        result = run(
            register(contact(f"10.0.0.{i}"), expires=600, call_id=f"c{i}"),
            bindings,
            now=NOW + i,
        )
        bindings = result.bindings
    # Refresh the oldest, then add a fourth: the second-oldest goes.
    bindings = run(
        register(contact("10.0.0.0"), expires=600, call_id="c0", cseq=2), bindings, now=NOW + 5
    ).bindings
    result = run(register(contact("10.0.0.9"), expires=600, call_id="c9"), bindings, now=NOW + 6)
    assert [b.contact for b in result.removed] == ["sip:1001@10.0.0.1:5060"]
    assert {b.contact for b in result.bindings} == {
        "sip:1001@10.0.0.2:5060",
        "sip:1001@10.0.0.0:5060",
        "sip:1001@10.0.0.9:5060",
    }


def test_contact_params_stay_apart_from_the_uri() -> None:
    params = (("q", "0.7"), ("+sip.instance", '"<urn:uuid:1>"'), ("unknownparam", None))
    result = run(register(contact(params=params), expires=600))
    (binding,) = result.saved
    assert binding.contact == "sip:1001@192.168.1.10:5060"
    assert binding.q == 0.7
    assert result.contacts[0].params == (*params, ("expires", "600"))


def test_rfc4475_cparam01_unknownparam_is_a_contact_param() -> None:
    request = parse_message((RFC4475 / "cparam01.dat").read_bytes())
    assert isinstance(request, SipRequest)
    aor = resolve_aor(request, make_config())
    assert aor.extension == "watson"
    result = run_for(request, aor)
    (binding,) = result.saved
    assert binding.contact == "sip:+19725552222@gw1.example.net"
    assert not binding.uri.has_param("unknownparam")
    assert ("unknownparam", None) in result.contacts[0].params
    assert "unknownparam" not in str(result.contacts[0].uri)


def test_rfc4475_cparam02_unknownparam_stays_in_the_uri() -> None:
    request = parse_message((RFC4475 / "cparam02.dat").read_bytes())
    assert isinstance(request, SipRequest)
    aor = resolve_aor(request, make_config())
    result = run_for(request, aor)
    (binding,) = result.saved
    assert binding.contact == "sip:+19725552222@gw1.example.net;unknownparam"
    assert str(result.contacts[0]) == "<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600"


def test_rfc4475_regescrt_escaped_uri_header_is_returned_unchanged() -> None:
    request = parse_message((RFC4475 / "regescrt.dat").read_bytes())
    assert isinstance(request, SipRequest)
    result = run_for(request, resolve_aor(request, make_config()))
    assert result.status == 200
    assert result.saved[0].contact == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    assert str(result.contacts[0].uri) == result.saved[0].contact


def run_for(request: SipRequest, aor: Aor) -> RegisterResult:
    """Serve an RFC 4475 REGISTER for a user the test config has been given."""
    config = make_config()
    tenant = config.tenants[ACME]
    users = MappingProxyType({**tenant.users, aor.extension: UserConfig(aor.extension, "pw")})
    patched = TenantConfig(
        id=tenant.id, path=tenant.path, domain=tenant.domain, default=True,
        limits=tenant.limits, users=users,
    )  # fmt: skip
    config = ConfigSnapshot(
        version=1, digest="0" * 64, server=config.server,
        tenants=MappingProxyType({ACME: patched}), default_tenant=ACME,
    )  # fmt: skip
    return process_register(
        request, aor, (), config=config, source=PHONE, now=NOW, authenticated_user=None
    )


# --- credentials ------------------------------------------------------------------------------


def test_ha1_lookup_uses_password_or_stored_ha1_per_algorithm() -> None:
    lookup = ha1_lookup(CONFIG.tenants[ACME])
    realm = "acme.example"
    assert lookup("1001", realm, "MD5") == compute_ha1("MD5", "1001", realm, "pw1")
    assert lookup("1001", realm, "SHA-256") == compute_ha1("SHA-256", "1001", realm, "pw1")
    assert lookup("1002", realm, "MD5") == compute_ha1("MD5", "1002", realm, "pw2")
    assert lookup("1002", realm, "SHA-256") is None
    assert lookup("1003", realm, "SHA-256") == compute_ha1("SHA-256", "1003", realm, "pw3")
    assert lookup("1999", realm, "MD5") is None
    assert lookup("1001", "other.example", "MD5") is None


# --- presence -------------------------------------------------------------------------------


def test_presence_counts_unexpired_bindings() -> None:
    tenant = CONFIG.tenants[ACME]
    bindings = registered(contact(), contact("10.0.0.2", expires=100))
    assert presence(tenant, E1001, bindings, NOW + 99).online
    assert len(presence(tenant, E1001, bindings, NOW + 100).contacts) == 1
    assert not presence(tenant, E1001, bindings, NOW + 600).online
    assert not presence(tenant, Extension("1002"), bindings, NOW).online


def test_unreachable_contacts_are_not_rung_and_with_none_left_the_extension_is_offline() -> None:
    # Marks come from keep-alive checks (only while qualify is on: the service sees to it) and
    # from a closed TCP connection (always), so presence honours them whatever the setting.
    bindings = registered(contact(), contact("10.0.0.2"))
    first, second = bindings
    tenant = CONFIG.tenants[ACME]
    assert presence(tenant, E1001, bindings, NOW, {first.key}).contacts == (second,)
    assert not presence(tenant, E1001, bindings, NOW, {first.key, second.key}).online
    assert online_contacts(bindings, NOW) == bindings


def test_the_registrar_answers_reachable_contacts_offline_and_takes_transport_failures() -> None:
    regs = Registrations()
    regs.apply(run(register(contact(), contact("10.0.0.2"))))
    tenant = CONFIG.tenants[ACME]
    first, second = regs.bindings_of(ACME, E1001)
    assert regs.get(first.key) == first
    assert regs.get((ACME, E1001, "sip:nobody@nowhere")) is None
    assert regs.reachable_contacts(tenant, E1001, NOW) == (first, second)
    assert regs.contact_failed(first.key)  # e.g. a TCP connect refused
    assert not regs.contact_failed(first.key)  # already marked
    assert not regs.contact_failed((ACME, E1001, "sip:nobody@nowhere"))
    assert regs.reachable_contacts(tenant, E1001, NOW) == (second,)
    assert not regs.is_offline(tenant, E1001, NOW)
    regs.mark_reachable(second.key, False)
    assert regs.is_offline(tenant, E1001, NOW)
    assert regs.is_offline(tenant, Extension("1002"), NOW)
    # A REGISTER refresh proves the phone is there again.
    regs.apply(run(register(contact(), cseq=2), regs.bindings_of(ACME, E1001)))
    assert regs.reachable_contacts(tenant, E1001, NOW) == regs.bindings_of(ACME, E1001)[-1:]


def test_registrations_container_applies_results_and_expires() -> None:
    regs = Registrations()
    first = run(register(contact(), contact("10.0.0.2", expires=100), expires=600))
    regs.apply(first)
    assert len(regs) == 2
    second = run(register(contact(expires=0), cseq=2), regs.bindings_of(ACME, E1001))
    regs.apply(second)
    assert [b.contact for b in regs.bindings_of(ACME, E1001)] == ["sip:1001@10.0.0.2:5060"]
    regs.mark_reachable(regs.bindings_of(ACME, E1001)[0].key, False)
    qualified = make_config(qualify=30).tenants[ACME]
    assert not regs.presence(qualified, E1001, NOW).online
    gone = regs.expire(NOW + 100)
    assert [b.contact for b in gone] == ["sip:1001@10.0.0.2:5060"]
    assert len(regs) == 0
    assert regs.unreachable == set()


def test_tcp_bindings_are_found_by_connection_and_address_through_every_change() -> None:
    # A closed connection and a failed send find their bindings through an index (no scan of
    # every binding); the index must follow refreshes, moves, removals and expiry.
    regs = Registrations()
    regs.apply(run(register(contact(), call_id="udp")))  # UDP from PHONE: never a stream contact
    over_c1 = Source("10.0.0.9", 40000, "TCP", "c1")
    regs.apply(
        run(
            register(contact("10.0.0.2", 5070), contact("10.0.0.3", None), call_id="tcp"),
            regs.bindings_of(ACME, E1001),
            source=over_c1,
        )
    )
    udp, a, b = regs.bindings_of(ACME, E1001)
    assert (a.connection_id, b.connection_id) == ("c1", "c1")
    assert regs.on_connection("c1") == [a, b]
    assert regs.stream_contacts_at(("10.0.0.9", 40000)) == [a, b]
    assert regs.stream_contacts_at(("10.0.0.2", 5070)) == [a]
    assert regs.stream_contacts_at(("10.0.0.3", 5060)) == [b]  # no port: 5060
    assert regs.stream_contacts_at(udp.source) == []
    assert regs.on_connection("c2") == []
    # A refresh of one contact over a new connection moves it; the other stays on c1.
    over_c2 = Source("10.0.0.9", 40001, "TCP", "c2")
    refresh = register(contact("10.0.0.2", 5070), call_id="tcp", cseq=2)
    regs.apply(run(refresh, regs.bindings_of(ACME, E1001), source=over_c2))
    moved = regs.get(a.key)
    assert moved is not None
    assert moved.connection_id == "c2"
    assert regs.on_connection("c1") == [b]
    assert regs.on_connection("c2") == [moved]
    assert regs.stream_contacts_at(("10.0.0.9", 40000)) == [b]
    assert regs.stream_contacts_at(("10.0.0.9", 40001)) == [moved]
    assert regs.stream_contacts_at(("10.0.0.2", 5070)) == [moved]
    # Removed (its user deleted) and expired: gone from the index, which keeps nothing empty.
    regs.remove(b)
    assert regs.on_connection("c1") == []
    assert regs.stream_contacts_at(("10.0.0.3", 5060)) == []
    assert regs.expire(NOW + 10_000) == [udp, moved]
    assert regs.on_connection("c2") == []
    assert regs.stream_contacts_at(("10.0.0.2", 5070)) == []
    assert regs._by_connection == {}
    assert regs._by_stream_address == {}
