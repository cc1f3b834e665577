"""``LiveLines``: the routing core's view of the lines during a call, over fake ports."""

from __future__ import annotations

from pbx.call.core import Peer, Reach
from pbx.call.lines import LiveLines
from pbx.config.model import Extension, TenantConfig, TenantId
from pbx.registrar import Binding, Presence
from pbx.routing.model import ContactId, LineKey
from pbx.sip.message import SipUri
from tests.routing.builders import tenant

ACME = tenant("acme")
WALL = 1_700_000_000.0


def binding(host: str, transport: str = "UDP", connection: str | None = None) -> Binding:
    return Binding(
        tenant=TenantId("acme"),
        extension=Extension("1001"),
        uri=SipUri("sip", host, "1001", port=5062),
        source_host="198.51.100.7",
        source_port=40000,
        transport=transport,
        connection_id=connection,
        call_id="reg@phone",
        cseq=1,
        registered_at=WALL - 10,
        expires_at=WALL + 3600,
    )


class Directory:
    def __init__(self, *bindings: Binding) -> None:
        self.bindings = bindings
        self.asked: list[tuple[TenantId, Extension, float]] = []

    def presence(self, tenant: TenantConfig, extension: Extension, wall: float) -> Presence:
        self.asked.append((tenant.id, extension, wall))
        return Presence(tenant.id, extension, self.bindings)


def view(directory: Directory, calls: dict[LineKey, int] | None = None) -> LiveLines:
    return LiveLines(directory, ACME, WALL, calls or {}, lambda conn: conn == "open")


def test_contacts_of_an_extension_are_looked_up_at_the_events_time_and_noted_for_reach() -> None:
    udp = binding("192.0.2.10")
    directory = Directory(udp)
    lines = view(directory)
    (contact,) = lines.contacts(TenantId("acme"), Extension("1001"))
    assert contact == ContactId(udp.contact_key)
    assert directory.asked == [("acme", "1001", WALL)]
    # UDP: requests go to where the phone registered from (symmetric, NAT).
    assert lines.reach == {contact: Reach(udp.uri, Peer(("198.51.100.7", 40000), False))}


def test_another_tenants_extension_has_no_contacts_and_is_not_looked_up() -> None:
    directory = Directory(binding("192.0.2.10"))
    assert view(directory).contacts(TenantId("other"), Extension("1001")) == ()
    assert directory.asked == []


def test_a_tcp_contact_is_reached_over_its_connection_while_it_is_open() -> None:
    lines = view(Directory())
    assert lines.peer_of(binding("192.0.2.10", "TCP", "open")) == Peer(
        ("198.51.100.7", 40000), True
    )
    # The connection is gone: a new connection to the Contact address.
    assert lines.peer_of(binding("[2001:db8::1]", "TCP", "closed")) == Peer(
        ("2001:db8::1", 5062), True
    )


def test_calls_of_reads_the_engines_counts() -> None:
    lines = view(Directory(), {(TenantId("acme"), Extension("1001")): 2})
    assert lines.calls_of(TenantId("acme"), Extension("1001")) == 2
    assert lines.calls_of(TenantId("acme"), Extension("1002")) == 0
