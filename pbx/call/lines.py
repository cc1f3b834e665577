"""The routing core's view of the lines during a call (``LineLookup``), over the engine's ports.

Pure: who is registered comes from the ``LineDirectory`` (the registrar), how many calls each
line is on from the engine's counts, whether a TCP connection is still open from a predicate;
``wall`` is the clock reading of the event. Only the extensions a decision asks about are looked
up, and the view notes how to reach each contact it names, for the forks the decision starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pbx.call.core import Peer, Reach
from pbx.call.ports import LineDirectory
from pbx.config.model import Extension, TenantConfig, TenantId
from pbx.registrar import Binding
from pbx.routing.model import ContactId, LineKey
from pbx.sip.edge import first_hop
from pbx.sip.message import SipUri


class LiveLines:
    """``LineLookup`` for one routing question of a call in ``tenant``."""

    __slots__ = ("connection_alive", "directory", "line_calls", "reach", "tenant", "wall")

    def __init__(
        self,
        directory: LineDirectory,
        tenant: TenantConfig,
        wall: float,
        line_calls: Mapping[LineKey, int],
        connection_alive: Callable[[str | None], bool],
    ) -> None:
        self.directory = directory
        self.tenant = tenant
        self.wall = wall
        self.line_calls = line_calls
        self.connection_alive = connection_alive
        self.reach: dict[ContactId, Reach] = {}

    def contacts(self, tenant: TenantId, extension: Extension) -> tuple[ContactId, ...]:
        if tenant != self.tenant.id:
            return ()
        presence = self.directory.presence(self.tenant, extension, self.wall)
        ids = []
        for binding in presence.contacts:
            contact = ContactId(binding.contact_key)
            self.reach[contact] = Reach(binding.uri, self.peer_of(binding), binding.path)
            ids.append(contact)
        return tuple(ids)

    def calls_of(self, tenant: TenantId, extension: Extension) -> int:
        return self.line_calls.get((tenant, extension), 0)

    def peer_of(self, binding: Binding) -> Peer:
        """Where requests to a registered contact go: its source address (symmetric, NAT), over
        its TCP connection while that is open; a TCP contact whose connection is gone is
        reached by a new connection to its Contact address. A binding registered through an
        edge (issue #20) is reached through the first hop of its Path."""
        if binding.path:
            address, reliable = first_hop(binding.path)
            return Peer(address, reliable)
        if binding.transport == "TLS":  # never a new connection toward a phone (issue #18)
            return Peer(binding.source, True, True)
        if binding.transport != "TCP":
            return Peer(binding.source, False)
        uri = binding.uri
        if self.connection_alive(binding.connection_id) or not isinstance(uri, SipUri):
            return Peer(binding.source, True)
        return Peer((uri.host.strip("[]"), uri.port or 5060), True)
