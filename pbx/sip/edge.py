"""Requests that came through a SIP edge (Kamailio, issue #20): their real source and Path.

Pure. A node behind an edge receives every request from the edge's address. The edge is
trusted (``[sip] edge`` lists its IP addresses) to say where the request really came from; we
read that from what every RFC 3261 proxy already writes, not from a home-made header:

- the edge adds its own Via on top, and stamps the Via below it (the phone's or the carrier's)
  with ``received`` and ``rport`` (RFC 3261 18.2.1, RFC 3581; Kamailio does with
  ``force_rport()``). That second Via's ``received``/``rport`` (its sent-by when absent) is the
  real source: what bans, rate limits, trunk recognition and a binding's source use;
- a REGISTER carries the ``Path`` the edge added (RFC 3327): it is stored with the binding and
  sent as the ``Route`` set of every request to that binding, to the first Path hop, so calls
  to a phone go out through the edge that holds its NAT binding.

A request from any other address is taken as it came: its packet source, no Path honoured
(a phone could otherwise route our requests anywhere by writing a Path).
"""

from __future__ import annotations

from collections.abc import Set

from pbx.errors import RemoteProtocolError
from pbx.sip.message import Address, SipRequest, SipUri
from pbx.sip.parse import parse_name_addr


def from_edge(sender: Address, edges: Set[str]) -> bool:
    """Whether ``sender`` is one of the configured edges."""
    return bool(edges) and sender[0] in edges


def request_origin(request: SipRequest, sender: Address, edges: Set[str]) -> Address:
    """Where ``request`` really came from: the edge's account of it when ``sender`` is an edge
    and the request carries the edge's Via over its sender's, else ``sender`` itself."""
    if not from_edge(sender, edges) or len(request.via) < 2:
        return sender
    below = request.via[1]
    host = below.received or below.host
    port = below.rport or below.port or 5060
    return (host.strip("[]"), port)


def path_of(request: SipRequest, sender: Address, edges: Set[str]) -> tuple[str, ...]:
    """The Path values of a REGISTER that came from an edge, in order; () otherwise."""
    if not from_edge(sender, edges):
        return ()
    return tuple(value.strip() for value in request.header_values("Path") if value.strip())


def first_hop(path: tuple[str, ...]) -> tuple[Address, bool]:
    """Where a request routed by ``path`` goes (its first URI's host and port) and whether over
    a reliable transport (``transport=tcp``/``tls`` in that URI)."""
    if not path:
        raise ValueError("an empty path has no first hop")
    try:
        uri = parse_name_addr(path[0]).uri
    except RemoteProtocolError:
        uri = None
    if not isinstance(uri, SipUri):
        raise RemoteProtocolError(f"Path {path[0]!r} is not a SIP URI", 400)
    transport = (uri.param("transport") or "udp").lower()
    return (uri.host.strip("[]"), uri.port or 5060), transport in ("tcp", "tls")


def path_echo(request: SipRequest, path: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The Path headers of a REGISTER's 200 OK: the stored path, when the phone said
    ``Supported: path`` (RFC 3327 5.3); none otherwise (the path is stored all the same)."""
    supported = {value.strip().lower() for value in request.header_values("Supported")}
    if not path or "path" not in supported:
        return ()
    return tuple(("Path", hop) for hop in path)
