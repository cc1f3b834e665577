"""The relay's kernel fast path, pure half: which flows nftables forwards, and the scripts that
make it so (issue #21; docs/design.md 9.15).

Pure: no processes, no sockets, no clock. ``pbx.media.kernel`` runs the scripts with ``nft``
and reads the counters back.

A *flow* is one direction of a call's RTP: what the latched source sends
to our ``port`` leaves from our ``out_port`` (the other leg's port of the same kind) to
``dest``, with ``local`` (our address) as its source. Each relay port receives from one latched
source, so a flow is keyed by its ``port`` in every set and map of the table:

- ``flows``: ``source address . source port . port`` of every flow, with a packet counter;
- ``daddr_of``, ``dport_of``, ``sport_of``: the new destination and source port, by ``port``;
- ``saddr_of``: our address, by ``out_port``.

The table's ``prerouting`` chain, at ``raw`` priority (before connection tracking), takes a
packet of a flow, exempts it from tracking (``notrack``), marks it (``MARK``) and rewrites its
destination address and both ports. Its source address is rewritten after routing: in
``input`` for a party on this host, in ``postrouting`` for one on another host (rewriting it
before routing would make the kernel drop the packet as a martian). A packet whose source
does not match (a stray sender, a party that moved) is not touched and reaches the relay's
socket, so the latching rules stay in user space.

A flow may also be *copied* (``Flow.copy``: the call is recorded, and the recorder needs every
packet): the ``copies`` set holds its key too, and ``prerouting`` first duplicates the packet
(``dup``) to its own destination, marked ``COPY_MARK``. The copy comes back into ``prerouting``
through the loopback device; there its source port is set to its destination port (our port:
which call it belongs to) and its destination port to the *copies port*, and it goes on,
untouched by the forwarding rule, to the one socket that reads every copy
(``pbx.media.kernel``): the recorders' packets of all calls, read in batches, never sent again
(the kernel forwarded them). Nothing else reaches that port: an unmarked packet to it is dropped.

``FlowTable`` keeps what the relay wants forwarded and what the kernel holds, and turns the
difference into one ``nft -f`` script (an nft script is one transaction: all or nothing).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

Address = tuple[str, int]

# The packet mark of forwarded packets: how the input and postrouting chains tell them apart.
MARK = 0x50420000
# The mark of a copied flow's copies (``Flow.copy``).
COPY_MARK = MARK | 1
TABLE_PREFIX = "pbx_relay_"
# Keys per ``get element`` command: nft 1.0.6 (Debian 12) crashes with a segmentation fault on
# one of 200 keys; several commands of this many in one run are fine.
GET_CHUNK = 64


@dataclass(frozen=True, slots=True)
class Flow:
    """One direction of a relayed channel, forwarded by the kernel (module docstring)."""

    source: Address  # the party's latched source
    port: int  # our port it sends to
    out_port: int  # our port the packets leave from
    dest: Address  # the other party
    local: str  # our address, the packets' new source
    copy: bool = False  # a copy of each packet also goes to the copies port (module docstring)

    @property
    def key(self) -> tuple[str, int, int]:
        """The ``flows`` set's key: source address, source port, our port."""
        return (self.source[0], self.source[1], self.port)


def table_name(pid: int) -> str:
    """The table of the node with process id ``pid``."""
    return f"{TABLE_PREFIX}{pid}"


def table_script(table: str, copies_port: int) -> str:
    """Create the table afresh (an older one of the same name is replaced); copies of copied
    flows go to ``copies_port`` (module docstring)."""
    mark, copy = f"0x{MARK:08x}", f"0x{COPY_MARK:08x}"
    return f"""add table ip {table}
delete table ip {table}
table ip {table} {{
  set flows {{ type ipv4_addr . inet_service . inet_service; counter; }}
  set copies {{ type ipv4_addr . inet_service . inet_service; }}
  map daddr_of {{ type inet_service : ipv4_addr; }}
  map dport_of {{ type inet_service : inet_service; }}
  map sport_of {{ type inet_service : inet_service; }}
  map saddr_of {{ type inet_service : ipv4_addr; }}
  chain prerouting {{
    type filter hook prerouting priority raw; policy accept;
    meta mark {copy} udp sport set udp dport udp dport set {copies_port} accept
    udp dport {copies_port} drop
    ip saddr . udp sport . udp dport @copies meta mark set {copy} dup to ip daddr
    ip saddr . udp sport . udp dport @flows notrack meta mark set {mark} \
ip daddr set udp dport map @daddr_of udp sport set udp dport map @sport_of \
udp dport set udp dport map @dport_of
  }}
  chain input {{
    type filter hook input priority raw; policy accept;
    meta mark {mark} ip saddr set udp sport map @saddr_of
  }}
  chain postrouting {{
    type filter hook postrouting priority srcnat; policy accept;
    meta mark {mark} ip saddr set udp sport map @saddr_of
  }}
}}
"""


def stale_tables(listing: str, alive: set[int]) -> list[str]:
    """The relay tables in ``nft -j list tables`` output whose process is not in ``alive``."""
    stale = []
    for item in _items(listing):
        table = item.get("table")
        if not isinstance(table, dict) or table.get("family") != "ip":
            continue
        name = str(table.get("name", ""))
        suffix = name.removeprefix(TABLE_PREFIX)
        if name != suffix and suffix.isdigit() and int(suffix) not in alive:
            stale.append(name)
    return stale


def parse_counters(listing: str) -> dict[tuple[str, int, int], int]:
    """Packets per flow key, from ``nft -j list set ip TABLE flows``."""
    counts: dict[tuple[str, int, int], int] = {}
    for item in _items(listing):
        found = item.get("set")
        if not isinstance(found, dict):
            continue
        for element in found.get("elem", ()):
            inner = element.get("elem") if isinstance(element, dict) else None
            if not isinstance(inner, dict):
                continue  # an element without a counter: not ours
            value = inner.get("val")
            concat = value.get("concat") if isinstance(value, dict) else None
            counter = inner.get("counter")
            if not (isinstance(concat, list) and len(concat) == 3 and isinstance(counter, dict)):
                continue
            address, sport, port = concat
            counts[(str(address), int(sport), int(port))] = int(counter.get("packets", 0))
    return counts


def _items(listing: str) -> list[dict[str, Any]]:
    try:
        document = json.loads(listing)
    except ValueError:
        return []
    items = document.get("nftables") if isinstance(document, dict) else None
    return [item for item in items or () if isinstance(item, dict)]


class FlowTable:
    """What the relay wants the kernel to forward, what the kernel holds, and their counters.

    ``want`` records a port's wish (a flow, or None); ``changes`` gives the batch that makes
    the kernel match, ``applied`` records that it ran, ``lost`` that the kernel's contents are
    unknown (a failed batch: the adapter flushes the table and everything is added again).
    ``count`` turns a counter listing into the packets each installed flow forwarded since the
    last listing.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        self.wanted: dict[int, Flow] = {}
        self.installed: dict[int, Flow] = {}
        self._counted: dict[int, int] = {}  # packets of each installed flow at the last listing
        self._listed: set[int] = set()  # installed flows some listing has shown

    def want(self, port: int, flow: Flow | None) -> None:
        """The kernel should forward ``flow`` for ``port`` (None: nothing)."""
        if flow is None:
            self.wanted.pop(port, None)
        else:
            self.wanted[port] = flow

    @property
    def pending(self) -> bool:
        """Whether the kernel differs from what is wanted."""
        return self.wanted != self.installed

    def changes(self) -> tuple[list[Flow], list[Flow]]:
        """The flows to remove and to add so that the kernel holds what is wanted."""
        removed = [flow for port, flow in self.installed.items() if self.wanted.get(port) != flow]
        added = [flow for port, flow in self.wanted.items() if self.installed.get(port) != flow]
        return removed, added

    def script(self, removed: list[Flow], added: list[Flow]) -> str:
        """One nft run: the counters of the flows about to go (printed, for
        ``parse_element_counters``), then one transaction of the removals and the additions."""
        t = self.table
        lines = []
        for start in range(0, len(removed), GET_CHUNK):
            chunk = removed[start : start + GET_CHUNK]
            keys = ", ".join(f"{a} . {s} . {p}" for a, s, p in (flow.key for flow in chunk))
            lines.append(f"get element ip {t} flows {{ {keys} }}")
        for verb, flows in (("delete", removed), ("add", added)):
            for flow in flows:
                for name, key, value in _elements(flow):
                    element = key if verb == "delete" else f"{key}{value}"
                    lines.append(f"{verb} element ip {t} {name} {{ {element} }}")
        return "".join(line + "\n" for line in lines)

    def flush_script(self) -> str:
        """Empty every set and map of the table (after a failed batch)."""
        t = self.table
        return "".join(
            f"flush {kind} ip {t} {name}\n"
            for kind, name in (
                ("set", "flows"),
                ("set", "copies"),
                ("map", "daddr_of"),
                ("map", "dport_of"),
                ("map", "sport_of"),
                ("map", "saddr_of"),
            )
        )

    def applied(self, removed: list[Flow], added: list[Flow]) -> None:
        """The batch of ``changes`` ran: the kernel holds the added flows, with new counters."""
        for flow in removed:
            if self.installed.get(flow.port) == flow:
                del self.installed[flow.port]
                self._counted.pop(flow.port, None)
                self._listed.discard(flow.port)
        for flow in added:
            self.installed[flow.port] = flow
            self._counted[flow.port] = 0
            self._listed.discard(flow.port)

    def lost(self) -> None:
        """The table was flushed: nothing is installed."""
        self.installed.clear()
        self._counted.clear()
        self._listed.clear()

    def count(
        self, counts: dict[tuple[str, int, int], int], *, silence: bool = True
    ) -> tuple[dict[int, int], list[int]]:
        """What each installed flow forwarded since the last listing, by port (a flow the
        listing does not show, or shows for another source, is left out), and the ports of
        the flows that forwarded nothing since a listing before this one: silent ones.
        ``silence=False`` (the counters read just before a removal, which may show other
        flows too) finds none and leaves the next periodic listing to judge silence."""
        moved: dict[int, int] = {}
        silent: list[int] = []
        for port, flow in self.installed.items():
            packets = counts.get(flow.key)
            if packets is None:
                continue
            delta = max(0, packets - self._counted[port])
            self._counted[port] = packets
            moved[port] = delta
            if not silence:
                continue
            if delta == 0 and port in self._listed:
                silent.append(port)
            self._listed.add(port)
        return moved, silent


def _elements(flow: Flow) -> list[tuple[str, str, str]]:
    """A flow's element in each set and map: (name, key, " : value" or "")."""
    address, sport, port = flow.key
    key = f"{address} . {sport} . {port}"
    copies = [("copies", key, "")] if flow.copy else []
    return [
        ("flows", key, ""),
        *copies,
        ("daddr_of", str(port), f" : {flow.dest[0]}"),
        ("dport_of", str(port), f" : {flow.dest[1]}"),
        ("sport_of", str(port), f" : {flow.out_port}"),
        ("saddr_of", str(flow.out_port), f" : {flow.local}"),
    ]


_ELEMENT = re.compile(r"(\d+\.\d+\.\d+\.\d+) \. (\d+) \. (\d+) counter packets (\d+)")


def parse_element_counters(text: str) -> dict[tuple[str, int, int], int]:
    """Packets per flow key, from what ``get element ip TABLE flows { ... }`` prints (text:
    nft 1.0.6 prints it as text even with ``-j``; it may print more elements than asked)."""
    return {
        (address, int(sport), int(port)): int(packets)
        for address, sport, port, packets in _ELEMENT.findall(text)
    }
