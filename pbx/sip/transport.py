"""UDP and TCP transports: the asyncio edge of the SIP stack (RFC 3261 section 18, RFC 5626 3.5.1).

Listeners come from ``[sip] listen`` (IPv4 and IPv6). Every received message is handed to one
callback as an ``Inbound`` value; nothing here parses beyond TCP framing. Responses and requests
leave through ``SipTransport.send``: over UDP from the socket the peer talks to, over TCP on the
peer's own connection when it still exists (phones behind NAT can only be reached that way).

TCP connections are bounded: a total cap and a per-source cap (extra connections are closed at
once), an idle time-out, and a time-out for completing a message once its first byte arrived.
Framing is ``pbx.sip.framing.StreamFramer``: at most 64 KiB is ever buffered per connection, and a
framing error closes the connection (RFC 4475 3.1.2.2/3.1.2.3).

Against exhaustion (issue 17, item 5): a connection that has sent no message yet is closed after
``silent_seconds`` (keep-alive pings do not count), and when the total cap is reached the oldest
connection not trusted yet (no request authenticated over it: ``trust``) is closed to make room,
so that a new phone can still connect while idle attackers hold the cap.

TLS (RFC 3261 section 26, issue #18) is a TCP listener with an ``ssl.SSLContext``: the same
connection class, caps, time-outs, framing and keep-alives, and ``Inbound.transport`` says "TLS".
The TLS listener accepts sockets itself and admits each connection (counted toward the total
and per-source caps, evictable while untrusted) *before* its handshake, which
``loop.connect_accepted_socket`` then runs with ``TlsSettings.handshake_seconds`` as its
time-out: half-open handshakes cannot exceed the caps. (``create_server(ssl=...)`` hands the
connection over only after the handshake and says nothing when one fails; ``start_tls`` on an
accepted transport reads the ClientHello in clear under uvloop, which restarts reading after
``connection_made``.) The server never opens a TLS connection itself: a phone is reached over
the connection it opened (``send`` to a TLS peer without one fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Literal, cast

import structlog

from pbx.errors import RemoteProtocolError
from pbx.immutable import immutable
from pbx.sip.framing import KEEPALIVE, StreamFramer
from pbx.sip.message import Address

log = structlog.get_logger("pbx.sip.transport")

TransportName = Literal["UDP", "TCP", "TLS"]
STREAM_TRANSPORTS: frozenset[str] = frozenset({"TCP", "TLS"})

# RFC 5626 3.5.1: a CRLFCRLF "ping" is answered with a single CRLF "pong".
PONG = b"\r\n"


@immutable
class Inbound:
    """One message as it arrived: raw bytes, who sent it, and over what."""

    data: bytes
    source: Address
    local: Address
    transport: TransportName
    connection_id: int | None = None  # TCP and TLS only


@immutable
class TcpLimits:
    max_connections: int = 10_000
    max_connections_per_source: int = 200
    idle_seconds: float = 600.0  # RFC 5626 keep-alives come every ~2 minutes
    message_seconds: float = 32.0  # a message started must be complete within this (64*T1)
    silent_seconds: float = 10.0  # a connection that has sent no message yet is closed then


@immutable
class ListenAddress:
    transport: TransportName
    host: str
    port: int


InboundHandler = Callable[[Inbound], None]

# A burst (or a short pause of the loop) must not overflow the kernel's datagram queue: every
# datagram lost there comes back as a retransmission storm.
UDP_RECEIVE_BUFFER = 8 * 1024 * 1024


def _grow_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for ``size`` bytes of receive buffer: past net.core.rmem_max when privileged."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass  # not privileged (CAP_NET_ADMIN): the kernel caps SO_RCVBUF at rmem_max
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport, local: Address) -> None:
        self.owner = owner
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        source = (str(addr[0]), int(str(addr[1])))
        self.owner.deliver(Inbound(data, source, self.local, "UDP"))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the peer is gone; transactions time out on their own.
        log.debug("udp_error", local=self.local, error=str(exc))


@immutable
class TlsSettings:
    """The server context of ``tls:`` listeners (``pbx.sip.tls.server_context``)."""

    context: ssl.SSLContext
    handshake_seconds: float = 10.0


class _TcpConnection(asyncio.Protocol):
    def __init__(
        self,
        owner: SipTransport,
        local: Address,
        kind: TransportName = "TCP",
        *,
        ours: bool = False,
    ) -> None:
        self.owner = owner
        self.local = local
        self.kind = kind
        self.id = next(owner._connection_ids)
        self.peer: Address = ("", 0)
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer()
        # Our own connection (to a trunk, to a phone over TCP) counts as spoken and trusted from
        # the start: it is admitted past the per-source limit and never evicted for a newcomer.
        self.spoke = ours  # has delivered a message (not only keep-alives)
        self.trusted = ours  # a request authenticated over it, or a trunk's, or ours
        self.admitted = False  # counted by the owner (TLS: before its handshake)
        self.socket: socket.socket | None = None  # TLS: the accepted socket, until handed over
        self._idle: asyncio.TimerHandle | None = None
        self._message_deadline: asyncio.TimerHandle | None = None

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1]))
        self.socket = None
        if self.admitted:  # TLS: counted when accepted, the handshake is done
            self._arm_idle()
            return
        if not self.owner._admit(self):
            log.warning("tcp_connection_refused", source=self.peer, reason="connection cap")
            self.transport.abort()
            return
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.spoke:
            self._arm_idle()  # keep-alive pings alone do not keep a silent connection open
        if self.owner.on_connection_activity is not None:
            # Anything from the phone (a CRLF ping or pong, a request) shows it is there.
            self.owner.on_connection_activity(self.id)
        try:
            frames = self.framer.feed(data)
        except RemoteProtocolError as exc:
            log.warning("tcp_framing_error", source=self.peer, error=str(exc)[:160])
            self.close()
            return
        for frame in frames:
            if frame is KEEPALIVE:
                self.write(PONG)
            else:
                assert isinstance(frame, bytes)
                if not self.spoke:
                    self.spoke = True
                    self._arm_idle()
                self.owner.deliver(Inbound(frame, self.peer, self.local, self.kind, self.id))
        self._arm_message_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._idle, self._message_deadline):
            if handle is not None:
                handle.cancel()
        self.owner._forget(self)

    # -- helpers
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        limits = self.owner.limits
        if self.spoke:
            self._idle = loop.call_later(limits.idle_seconds, self._timed_out, "idle")
        else:
            self._idle = loop.call_later(limits.silent_seconds, self._timed_out, "silent")

    def _arm_message_deadline(self) -> None:
        pending = self.framer.buffered > 0
        if pending and self._message_deadline is None:
            loop = asyncio.get_running_loop()
            self._message_deadline = loop.call_later(
                self.owner.limits.message_seconds, self._timed_out, "incomplete message"
            )
        elif not pending and self._message_deadline is not None:
            self._message_deadline.cancel()
            self._message_deadline = None

    def _timed_out(self, why: str) -> None:
        (log.debug if why == "silent" else log.info)(
            "tcp_connection_timed_out", source=self.peer, reason=why
        )
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        elif self.socket is not None:
            # Handshake in progress: the loop owns the socket; shutting it down makes the
            # handshake fail (the descriptor is closed by its transport).
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)


class SipTransport:
    """All SIP sockets of the server; ``deliver`` is called for every message received."""

    def __init__(
        self,
        handler: InboundHandler,
        limits: TcpLimits | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits or TcpLimits()
        self.tls = tls
        self.listening: list[ListenAddress] = []
        self._udp: dict[Address, _UdpProtocol] = {}
        self._servers: list[asyncio.Server] = []
        self._connections: dict[int, _TcpConnection] = {}
        # The untrusted ones, oldest first: the eviction order, without a scan past the trusted
        # (10,000 phones' connections ahead of an attacker's would make each newcomer cost a
        # pass over all of them).
        self._untrusted: dict[int, _TcpConnection] = {}
        self._by_peer: dict[Address, _TcpConnection] = {}
        self._per_source: dict[str, int] = {}
        # Connection ids are stored with registrations, which outlive the process: each process
        # starts at a random point of a 52-bit space, so an id left by an earlier run never names
        # a connection of this one (``connection_alive`` would otherwise say yes for it).
        self._connection_ids = itertools.count(1 + secrets.randbits(52))
        self._route_cache: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # TCP connects of ours in progress, by destination: the messages waiting for each. One
        # connection per destination: a burst to a trunk (or a phone) with none open waits
        # for the one being opened instead of opening one each, and leaves in order.
        self._connecting: dict[Address, list[bytes]] = {}
        self._accepting: list[tuple[socket.socket, asyncio.Task[None]]] = []
        # The connection cap in force: the configured one within the open-file budget.
        self.max_connections = self.limits.max_connections
        self.evicted = 0  # untrusted connections closed to make room for new ones
        # Told the id of every TCP connection that closes (bindings made over it go stale).
        self.on_connection_closed: Callable[[int], None] | None = None
        # Told the id of a TCP connection whenever bytes arrive on it (keep-alive checks).
        self.on_connection_activity: Callable[[int], None] | None = None
        # Told (soon after, never from inside ``send``) the destination of a message that could
        # not leave: a TCP connect refused or timed out, a write to a closing connection.
        self.on_send_failed: Callable[[Address], None] | None = None

    async def start(self, listens: Sequence[tuple[str, str, int]]) -> None:
        """Bind every ``(transport, host, port)``; port 0 picks a free port (tests)."""
        loop = asyncio.get_running_loop()
        for transport, host, port in listens:
            if transport.upper() == "UDP":
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                _grow_receive_buffer(sock, UDP_RECEIVE_BUFFER)
                sock.bind((host, port))
                local = (host, int(sock.getsockname()[1]))
                _, proto = await loop.create_datagram_endpoint(
                    lambda local=local: _UdpProtocol(self, local),  # type: ignore[misc]
                    sock=sock,
                )
                self._udp[local] = proto
                self.listening.append(ListenAddress("UDP", host, local[1]))
            else:
                if transport.upper() == "TLS":
                    if self.tls is None:
                        raise ValueError("a tls: listener needs TlsSettings")
                    self._listen_tls(host, port)
                    continue
                # The local address is known only once bound (port 0 in tests).
                local_box: list[Address] = [(host, port)]

                def accepted(box: list[Address] = local_box) -> _TcpConnection:
                    return _TcpConnection(self, box[0])

                server = await loop.create_server(
                    accepted,
                    host=host,
                    port=port,
                    reuse_address=True,
                    backlog=1024,
                )
                bound = int(server.sockets[0].getsockname()[1])
                local_box[0] = (host, bound)
                self._servers.append(server)
                self.listening.append(ListenAddress("TCP", host, bound))

    def _listen_tls(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
        local = (host, int(sock.getsockname()[1]))
        task = asyncio.get_running_loop().create_task(self._accept_tls(sock, local))
        self._accepting.append((sock, task))
        self.listening.append(ListenAddress("TLS", host, local[1]))

    async def _accept_tls(self, listener: socket.socket, local: Address) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors: let the others finish first
                log.warning("tls_accept_failed", error=str(exc))
                await asyncio.sleep(0.1)
                continue
            conn = _TcpConnection(self, local, "TLS")
            conn.peer = (str(peer[0]), int(peer[1]))
            if not self._admit(conn):
                log.warning("tcp_connection_refused", source=conn.peer, reason="connection cap")
                sock.close()
                continue
            conn.admitted = True
            conn.socket = sock
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = loop.create_task(self._handshake(conn, sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handshake(self, conn: _TcpConnection, sock: socket.socket) -> None:
        assert self.tls is not None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: conn,
                sock,
                ssl=self.tls.context,
                ssl_handshake_timeout=self.tls.handshake_seconds,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            log.debug("tls_handshake_failed", source=conn.peer, error=str(exc)[:160])
            conn.socket = None
            with contextlib.suppress(OSError):
                sock.close()  # a no-op when its transport closed it
            self._forget(conn)

    def deliver(self, packet: Inbound) -> None:
        self.handler(packet)

    # -- TCP bookkeeping
    def _admit(self, conn: _TcpConnection) -> bool:
        host = conn.peer[0]
        if (
            not conn.trusted
            and self._per_source.get(host, 0) >= self.limits.max_connections_per_source
        ):
            return False
        if len(self._connections) >= self.max_connections and not self._evict_one():
            return False
        self._connections[conn.id] = conn
        if not conn.trusted:
            self._untrusted[conn.id] = conn
        self._by_peer[conn.peer] = conn
        self._per_source[host] = self._per_source.get(host, 0) + 1
        return True

    def _forget(self, conn: _TcpConnection) -> None:
        if self._connections.pop(conn.id, None) is not None:
            self._untrusted.pop(conn.id, None)
            if self._by_peer.get(conn.peer) is conn:
                del self._by_peer[conn.peer]
            if self.on_connection_closed is not None:
                self.on_connection_closed(conn.id)
            host = conn.peer[0]
            left = self._per_source.get(host, 1) - 1
            if left:
                self._per_source[host] = left
            else:
                self._per_source.pop(host, None)

    def _evict_one(self) -> bool:
        """Close the oldest untrusted connection (dicts keep insertion order); False if every
        connection is trusted."""
        victim = next(iter(self._untrusted.values()), None)
        if victim is None:
            return False
        log.debug("tcp_connection_evicted", source=victim.peer, spoke=victim.spoke)
        self.evicted += 1
        self._forget(victim)
        victim.abort()
        return True

    def trust(self, connection_id: int) -> None:
        """A request authenticated over this connection: never evicted for a newcomer."""
        conn = self._connections.get(connection_id)
        if conn is not None:
            conn.trusted = True
            self._untrusted.pop(conn.id, None)

    def connection_alive(self, connection_id: int) -> bool:
        return connection_id in self._connections

    @property
    def tcp_connection_count(self) -> int:
        return len(self._connections)

    # -- sending
    def send(
        self,
        data: bytes,
        dest: Address,
        transport: TransportName | None = None,
        *,
        connection_id: int | None = None,
    ) -> bool:
        """Send one message; False when it could not leave (no socket for it).

        Without ``transport``: over the peer's TCP connection when one is open from exactly
        that address and port (the request's own connection), else over UDP. TCP to a peer
        with no connection opens one; what is sent to it meanwhile waits for that one.
        """
        conn = self._connections.get(connection_id) if connection_id is not None else None
        if conn is None and transport == "TCP":
            waiting = self._connecting.get(dest)
            if waiting is not None:
                waiting.append(data)
                return True
        if conn is None and transport != "UDP":
            conn = self._by_peer.get(dest)
        if conn is not None:
            if conn.transport is None or conn.transport.is_closing():
                self._send_failed(dest)
                return False
            conn.write(data)
            return True
        if transport == "TLS":
            # Phones behind NAT are reached only over the connection they opened.
            log.info("tls_no_connection", dest=dest)
            return False
        if transport == "TCP":
            self._connecting[dest] = [data]
            task = asyncio.get_running_loop().create_task(self._connect_and_send(dest))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        proto = self._udp_for(dest)
        if proto is None or proto.transport is None:
            return False
        proto.transport.sendto(data, dest)
        return True

    async def _connect_and_send(self, dest: Address) -> None:
        """Open our connection to ``dest`` and write the messages waiting for it, in order; if
        it cannot be opened, they are dropped and the failure is reported once."""
        loop = asyncio.get_running_loop()
        listen = next((a for a in self.listening if a.transport == "TCP"), None)
        local = (listen.host, listen.port) if listen else ("0.0.0.0", 0)
        try:
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda: _TcpConnection(self, local, ours=True), *dest),
                    timeout=5,
                )
            except (OSError, TimeoutError) as exc:
                dropped = len(self._connecting.get(dest, ()))
                log.info("tcp_connect_failed", dest=dest, error=str(exc), messages=dropped)
                self._send_failed(dest)
                return
            # No await from here on: nothing joins the list while it is written out.
            waiting = self._connecting.get(dest, [])
            if not self.connection_alive(proto.id):
                # Refused by the cap (every connection held is trusted) or closed at once.
                log.info("tcp_connect_failed", dest=dest, error="closed", messages=len(waiting))
                self._send_failed(dest)
                return
            for data in waiting:
                proto.write(data)
        finally:
            # Whatever the outcome (opened, refused, cancelled while closing): later messages
            # to ``dest`` take the open connection or open a new one.
            self._connecting.pop(dest, None)

    def _send_failed(self, dest: Address) -> None:
        if self.on_send_failed is not None:
            asyncio.get_running_loop().call_soon(self.on_send_failed, dest)

    def _udp_for(self, dest: Address) -> _UdpProtocol | None:
        want_v6 = ":" in dest[0]
        fallback = None
        for local, proto in self._udp.items():
            if (":" in local[0]) == want_v6:
                return proto
            fallback = proto
        return fallback

    def local_address_towards(self, dest_host: str) -> str:
        """The address this host uses to reach ``dest_host`` (for a wildcard listener)."""
        cached = self._route_cache.get(dest_host)
        if cached is not None:
            return cached
        family = socket.AF_INET6 if ":" in dest_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((dest_host, 9))
                address = str(probe.getsockname()[0])
            except OSError:
                address = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        if len(self._route_cache) > 4096:
            self._route_cache.clear()
        self._route_cache[dest_host] = address
        return address

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for listener, task in self._accepting:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            listener.close()
        self._accepting.clear()
        for conn in list(self._connections.values()):
            if conn.transport is None:
                conn.abort()
            conn.close()
        for proto in self._udp.values():
            if proto.transport is not None:
                proto.transport.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp.clear()
