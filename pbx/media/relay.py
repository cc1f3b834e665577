"""The RTP/RTCP relay: a port pool and a two-leg media session (RFC 3550 §11; symmetric RTP).

Adapter (asyncio). The call engine opens one ``MediaSession`` per call. Each leg (side A, the
caller, and side B, the callee) has its own local RTP socket on an even port and RTCP socket on
the next port, taken from a ``PortPool``. Packets a party sends to its leg go out of the other
leg's sockets to the other party; RTCP is relayed the same way on the odd ports.

Where to send (symmetric RTP, for phones behind NAT; same rules for RTP and RTCP, separately):
1. Until a party has sent anything, its packets go to the address and port its SDP declared
   (RTCP to that port + 1). ``set_remote`` sets them; address None (hold, c=0.0.0.0, port 0)
   or a direction that does not receive means nothing is sent to it.
2. The first packet that arrives on a leg's socket "latches" it: from then on that party is sent
   to the packet's source address and port, whatever its SDP said (a NAT changes both).
3. Once latched, packets from any other source are dropped and counted (no injection), unless the
   latched source has been silent for ``relatch_seconds``: then the new source is latched
   (a NAT rebinding, or a phone that changed network). Silence is measured by the session's
   timer, so the threshold is met within one tick (``tick_seconds``) of it. The exception:
   packets from exactly the SDP-declared address always latch, so a stray sender that got in
   first cannot keep a phone with a public address from its own media.
4. A new ``set_remote`` (re-INVITE, UPDATE) forgets the latch; rule 1 applies again.

Counters and loss (RFC 3550 §6.4.1, appendix A.1 and A.3): each channel counts what its party sent
us (received), what went on to the other party (relayed) and what did not (dropped: from a source
other than the latched one, "rejected", or with no destination: the other party on hold, not known
yet, or absent). RTP channels also follow each stream's 16-bit sequence number to count packets lost
on the way to us: expected = extended highest sequence number - base + 1, lost = expected -
received, never below 0. So that the hot path parses nothing, the sequence number is read from the
latest packet only, at each session tick and whenever the loss is read (``Channel.catch_up``, in the
pure ``pbx.media.latch`` with the latching rules); with the appendix A.1 rules that gives the same
highest number as reading every packet: a step forward of less than ``MAX_DROPOUT`` extends it
(wrap-around included), a packet up to ``MAX_MISORDER`` behind it is late or a duplicate and changes
nothing, and a larger jump starts a new stream once a later reading follows it in sequence (the
sender restarted). A newly latched source starts a new stream too. The loss of finished streams is
kept, so a channel's loss is theirs plus the current stream's. ``RelayCounters`` sums all this over
every session, live or closed, for the metrics.

Inactivity: a party that is expected to send (its direction is sendrecv or sendonly) and from
which neither RTP nor RTCP has arrived for ``inactivity_seconds`` triggers ``on_inactive(side)``
once; it is armed again by the next packet. RTCP counts, since a held phone often sends only RTCP.

SRTP (issue #18): a leg whose party declared an SDES key (``set_crypto``) decrypts what the party
sends (checked before a new source may latch: a forged packet cannot take the leg) and encrypts
what is sent to it, with our own key for that leg (``srtp_keys``, fresh per session and side).
A plain leg relays as before, so an SRTP phone and a plain-RTP carrier talk through the relay.
Until a party's SDP has been applied (``set_remote``) we cannot tell whether it speaks SRTP, so
in the call engine's sessions (``await_sdp``) what it sends is dropped (counted as received and
dropped, no destination): an SRTP callee sends as soon as it has sent its 200, and the relay may
read that packet before the call engine reads the 200, which used to pass the still-encrypted
packet on to a plain carrier.
The recorder's tap sees decrypted packets; prompts are encrypted like relayed packets.

The hot path is ``datagram_received``: one tuple comparison, two counter increments, one
reference kept (the latest packet, for the loss count) and one ``sendto``; nothing is parsed,
allocated or logged per packet. The sockets are read by ``UdpEndpoint`` (one ``recvfrom`` per
packet, through the loop's ``add_reader``), not by the loop's datagram transports.
The optional tap (for the recorder) is a sink called with ``(arrival_time, datagram)`` that
must be O(1) and never block, e.g. ``collections.deque.append``; it is drained elsewhere by a
timer.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import errno
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from pbx.errors import PbxError
from pbx.media.kernel import KernelForwarder
from pbx.media.latch import Address, Channel, Party, SourceVerdict
from pbx.media.latch import Side as Side
from pbx.media.rtp import rtcp_port
from pbx.media.sdes import Crypto
from pbx.media.sdp import AudioStream, Direction
from pbx.media.srtp import SrtpError, SrtpLeg, new_key
from pbx.metrics import Registry

log = structlog.get_logger("pbx.media.relay")

# Receives (arrival time on the loop clock, the datagram). Must be O(1) and non-blocking.
PacketSink = Callable[[tuple[float, bytes]], object]


class PortPoolExhausted(PbxError):
    """Every RTP port pair of the configured range is in use."""


@dataclass(frozen=True, slots=True)
class ParkedPair:
    """A released port pair whose bound sockets are kept for the next session (see PortPool)."""

    host: str
    rcvbuf: int | None
    rtp: UdpEndpoint
    rtcp: UdpEndpoint


def _fits(pair: ParkedPair, host: str, rcvbuf: int | None) -> bool:
    """Whether a parked pair can serve a session bound to ``host`` with ``rcvbuf``."""
    return pair.host == host and pair.rcvbuf == rcvbuf and not pair.rtp.is_closing()


class _ParkedProtocol(asyncio.DatagramProtocol):
    """Receives on parked sockets: every datagram is a late or stray one, dropped and counted."""

    __slots__ = ("pool",)

    def __init__(self, pool: PortPool) -> None:
        self.pool = pool

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.pool.parked_dropped += 1

    def error_received(self, exc: Exception) -> None:
        pass


class PortPool:
    """Even RTP ports (RTP + 1 for RTCP) from an inclusive range, handed out round-robin.

    Released ports go to the back of the queue, so a port is reused as late as possible and
    stray packets of an old call do not reach a new one.

    Parking (``park_limit`` > 0; the call engine's pool, issue #21): binding four sockets and
    making four transports is most of what opening a session costs, so under load a closing
    session parks its bound pairs here instead of closing them, up to ``park_limit`` pairs.
    - Only under load: a pair is parked only if at least ``park_min_rate`` pairs were taken in
      the last second; otherwise (and beyond the limit) it is closed as before, so a quiet
      server frees a call's ports as soon as the call ends.
    - Quarantine: a parked pair drops and counts (``parked_dropped``) whatever arrives, and is
      handed to a new session only once parked for ``quarantine_seconds``, so the old call's
      late packets never reach the new one. When no cold port is left, the longest-parked pair
      is taken even within its quarantine (the pool without parking would hand out that
      just-released port too).
    - Linger: a pair not taken within ``linger_seconds`` after its quarantine is closed (a
      timer, ``sweep``), so ports are not held once the load has gone.
    Ready parked pairs are taken before cold ports. Parked ports count as available, not in
    use. ``clock`` is the monotonic clock these times are read on.

    Busy ports: a port another process holds (its bind failed, EADDRINUSE) is set aside for
    ``busy_seconds`` and then goes to the back of the queue. Given back at once, it was met
    again on every round of the queue: with half a range held, two failed binds and two
    ``rtp_port_busy`` warnings per call (issue #21, design 9.12). When no other port is left,
    the longest set aside is handed out early (as a parked pair within its quarantine is: our
    own socket of a moment ago may be what held it). Set-aside ports count neither as in use
    nor as available.
    """

    def __init__(
        self,
        first: int,
        last: int,
        *,
        park_limit: int = 0,
        park_min_rate: int = 20,
        quarantine_seconds: float = 2.0,
        linger_seconds: float = 2.0,
        busy_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1024 <= first <= last <= 65535:
            raise ValueError(f"invalid RTP port range {first}-{last}")
        start = first + (first % 2)
        self.first = first
        self.last = last
        self._free: collections.deque[int] = collections.deque(range(start, last, 2))
        if not self._free:
            raise ValueError(f"RTP port range {first}-{last} holds no even/odd port pair")
        self._in_use: set[int] = set()
        self.size = len(self._free)
        self.park_limit = park_limit
        self.park_min_rate = park_min_rate
        self.quarantine_seconds = quarantine_seconds
        self.linger_seconds = linger_seconds
        self.busy_seconds = busy_seconds
        self.clock = clock
        # Ports another process held, with when they are tried again, in that order.
        self._aside: collections.deque[tuple[float, int]] = collections.deque()
        # Parked pairs by port, in the order they were parked, with when.
        self._parked: collections.OrderedDict[int, tuple[float, ParkedPair]] = (
            collections.OrderedDict()
        )
        self.parked_protocol = _ParkedProtocol(self)
        self.parked_dropped = 0  # datagrams that reached a parked pair
        self._sweeper: asyncio.TimerHandle | None = None
        # Pairs taken in the current one-second window and in the one before (the load).
        self._window_start = -1e9
        self._window_taken = 0
        self._previous_taken = 0

    @classmethod
    def from_spec(cls, spec: str) -> PortPool:
        """A pool from a config value such as "20000-29999"."""
        low, sep, high = spec.partition("-")
        try:
            return cls(int(low), int(high if sep else low))
        except ValueError as exc:
            raise ValueError(f"invalid rtp_ports {spec!r}: {exc}") from exc

    def allocate(self) -> int:
        """Take an even RTP port (its RTCP port is the next one); raise PortPoolExhausted.

        Cold ports only: parked ones come from ``take_parked``.
        """
        aside = self._aside
        if aside:
            now = self.clock()
            while aside and aside[0][0] <= now:
                self._free.append(aside.popleft()[1])
            if aside and not self._free:  # nothing else left: the longest set aside, early
                self._free.append(aside.popleft()[1])
        if not self._free:
            raise PortPoolExhausted(
                f"no free RTP port pair in {self.first}-{self.last} ({self.size} pairs in use)"
            )
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def take_parked(
        self, host: str, rcvbuf: int | None, *, early: bool = False
    ) -> tuple[int, ParkedPair] | None:
        """A parked pair bound as asked, to reuse (marked in use), or None: bind a port from
        ``allocate``. Called once per pair a session needs (it measures the load).

        The longest-parked pair, once its quarantine is over; or, when no cold port is left,
        even before (see the class docstring). ``early``: even before, whatever is left (the
        cold ports could not be bound; not counted as load again). A pair bound otherwise
        (another address or buffer size) is closed and its port freed.
        """
        now = self.clock()
        if not early:
            if now - self._window_start >= 1.0:
                self._previous_taken = self._window_taken if now - self._window_start < 2.0 else 0
                self._window_start, self._window_taken = now, 0
            self._window_taken += 1
        while self._parked:
            port, (parked_at, pair) = next(iter(self._parked.items()))
            if not early and self._quarantined(parked_at, now):
                return None
            del self._parked[port]
            if _fits(pair, host, rcvbuf):
                self._in_use.add(port)
                return port, pair
            self._close_pair(port, pair)
        return None

    def _quarantined(self, parked_at: float, now: float) -> bool:
        """Whether a pair parked at ``parked_at`` must wait still: its quarantine is not over
        and cold ports are left (see the class docstring)."""
        return bool(self._free) and now - parked_at < self.quarantine_seconds

    def park(self, port: int, pair: ParkedPair) -> bool:
        """Release ``port`` keeping its bound pair; False (nothing done) if it is not to be
        parked: no load, or no room (see the class docstring)."""
        now = self.clock()
        if len(self._parked) >= self.park_limit or self._recently_taken(now) < self.park_min_rate:
            return False
        if port not in self._in_use:
            raise ValueError(f"RTP port {port} is not allocated")
        self._in_use.remove(port)
        pair.rtp.set_protocol(self.parked_protocol)
        pair.rtcp.set_protocol(self.parked_protocol)
        self._parked[port] = (now, pair)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(
                self.quarantine_seconds + self.linger_seconds, self.sweep
            )
        return True

    def _recently_taken(self, now: float) -> int:
        """Pairs taken in the last second: the window in progress or the one just ended."""
        age = now - self._window_start
        if age < 1.0:
            return max(self._window_taken, self._previous_taken)
        return self._window_taken if age < 2.0 else 0

    def sweep(self) -> None:
        """Close the pairs parked for longer than their quarantine and linger (the timer)."""
        self._sweeper = None
        now = self.clock()
        keep = self.quarantine_seconds + self.linger_seconds
        while self._parked:
            port, (parked_at, pair) = next(iter(self._parked.items()))
            if now - parked_at < keep:
                self._sweeper = asyncio.get_running_loop().call_later(
                    keep - (now - parked_at), self.sweep
                )
                return
            del self._parked[port]
            self._close_pair(port, pair)

    def _close_pair(self, port: int, pair: ParkedPair) -> None:
        pair.rtp.close()
        pair.rtcp.close()
        self._free.append(port)

    def release(self, port: int) -> None:
        """Give a port back; releasing a port that is not allocated is a bug (ValueError)."""
        try:
            self._in_use.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} is not allocated") from None
        self._free.append(port)

    def set_aside(self, port: int) -> None:
        """Give back ``port``, which another process holds: offered again only after
        ``busy_seconds`` (see the class docstring)."""
        try:
            self._in_use.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} is not allocated") from None
        self._aside.append((self.clock() + self.busy_seconds, port))

    @property
    def set_aside_count(self) -> int:
        """How many port pairs are set aside because another process held them."""
        return len(self._aside)

    def close_parked(self) -> None:
        """Close every parked pair (server shutdown); their ports become free ones."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._parked:
            port, (_, pair) = self._parked.popitem(last=False)
            self._close_pair(port, pair)

    @property
    def in_use(self) -> int:
        """How many port pairs are allocated."""
        return len(self._in_use)

    @property
    def parked(self) -> int:
        """How many released port pairs keep their sockets (see the class docstring)."""
        return len(self._parked)

    @property
    def available(self) -> int:
        """How many port pairs are free (parked ones included)."""
        return len(self._free) + len(self._parked)


@dataclass(frozen=True, slots=True)
class LegStats:
    """Counters for what one party sent us (dropped includes rejected: see the module docstring)."""

    rtp_received: int
    rtp_relayed: int
    rtp_dropped: int
    rtcp_received: int
    rtcp_relayed: int
    rtcp_dropped: int
    rtp_source: Address | None
    rtcp_source: Address | None
    rtp_rejected: int = 0
    rtcp_rejected: int = 0
    rtp_lost: int = 0


def _awaiting_sdp(data: bytes) -> bytes:
    """A party's ``unprotect`` until its SDP is applied: RTP or SRTP is not known yet."""
    raise SrtpError("no SDP from this party yet")


class _RelayProtocol(asyncio.DatagramProtocol):
    """Receives a party's datagrams on one local socket and forwards them to the other party."""

    __slots__ = ("channel", "leg", "out", "protect", "tap", "unprotect")

    def __init__(self, leg: RelayLeg, channel: Channel, out: Channel) -> None:
        self.leg = leg
        self.channel = channel
        self.out = out  # the other leg's channel of the same kind
        self.tap: PacketSink | None = None
        # SRTP: this party's decryption, and the other party's encryption (None: plain).
        self.unprotect: Callable[[bytes], bytes] | None = None
        self.protect: Callable[[bytes], bytes] | None = None

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # The hot path: keep it to a comparison, counters and one sendto (module docstring).
        channel = self.channel
        unprotect = self.unprotect
        if unprotect is not None:
            try:
                data = unprotect(data)
            except SrtpError:
                channel.dropped += 1
                if unprotect is _awaiting_sdp:
                    channel.received += 1  # not the party's fault: its SDP is not here yet
                else:
                    channel.rejected += 1
                return
        if addr != channel.source and not self.leg._accept_source(channel, addr, data):
            channel.dropped += 1
            channel.rejected += 1
            return
        channel.received += 1
        channel.latest = data  # its sequence number is read later (catch_up), not here
        tap = self.tap
        if tap is not None:
            tap((self.leg.clock(), data))
        out = self.out
        dest = out.dest
        transport = out.transport
        if dest is None or transport is None:
            channel.dropped += 1
            return
        protect = self.protect
        if protect is not None:
            try:
                data = protect(data)
            except SrtpError:
                channel.dropped += 1
                return
        transport.sendto(data, dest)
        channel.relayed += 1

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a party that went away: the inactivity timer handles it.
        pass


class RelayLeg(Party):
    """One side of a MediaSession: the pure ``Party`` (latching, counters) plus its clock and
    the sending of packets we generate."""

    def __init__(
        self,
        side: Side,
        port: int,
        clock: Callable[[], float],
        relatch_seconds: float,
    ) -> None:
        super().__init__(side, port, clock(), relatch_seconds)
        self.clock = clock
        self.srtp: SrtpLeg | None = None  # set by MediaSession.set_crypto

    def set_remote(
        self,
        address: str | None,
        port: int,
        direction: Direction = Direction.SENDRECV,
        *,
        rtcp: Address | None = None,
    ) -> None:
        """Where this party's SDP says to send, and its direction; forgets any latch."""
        self.declare(address, port, direction, self.clock(), rtcp=rtcp)

    def _accept_source(self, channel: Channel, addr: Address, data: bytes) -> bool:
        """Latch rules 2 and 3 (``Party.accept_source``), logged; off the hot path."""
        verdict = self.accept_source(channel, addr, data, self.clock())
        if verdict is SourceVerdict.REJECTED_FIRST:
            assert channel.source is not None
            log.info(
                "rtp_stray_source_dropped",
                side=self.side.value,
                source=f"{addr[0]}:{addr[1]}",
                latched=f"{channel.source[0]}:{channel.source[1]}",
            )
        elif verdict is SourceVerdict.RELATCHED:
            log.info(
                "rtp_relatched",
                side=self.side.value,
                rtcp=channel is self.rtcp,
                source=f"{addr[0]}:{addr[1]}",
            )
        return verdict.accepted

    def _observe(self, now: float) -> float:
        return self.observe(now)

    def send_rtp(self, data: bytes) -> bool:
        """Send a packet we generate (a prompt) to this party; False if it has no destination."""
        dest, transport = self.rtp.dest, self.rtp.transport
        if dest is None or transport is None:
            return False
        if self.srtp is not None:
            try:
                data = self.srtp.protect(data)
            except SrtpError:
                return False
        transport.sendto(data, dest)
        return True

    def stats(self) -> LegStats:
        """A snapshot of this leg's counters."""
        return LegStats(
            self.rtp.total_received,
            self.rtp.relayed + self.rtp.kernel_received,
            self.rtp.dropped,
            self.rtcp.total_received,
            self.rtcp.relayed + self.rtcp.kernel_received,
            self.rtcp.dropped,
            self.rtp.source,
            self.rtcp.source,
            self.rtp.rejected,
            self.rtcp.rejected,
            self.rtp.lost(),
        )


@dataclass(slots=True)
class PacketTotals:
    """Packets the parties sent us, summed over legs (see LegStats and the module docstring)."""

    rtp_received: int = 0
    rtp_relayed: int = 0
    rtp_rejected: int = 0  # from a source other than the latched one
    rtp_undeliverable: int = 0  # no destination: the other party on hold, unknown or absent
    rtp_lost: int = 0
    rtp_kernel: int = 0  # of the relayed, those the kernel forwarded (``RelayCounters``)
    rtcp_received: int = 0
    rtcp_relayed: int = 0

    def add_leg(self, leg: RelayLeg) -> None:
        """Add one leg's counters (read from its channels: no snapshot object is built)."""
        rtp, rtcp = leg.rtp, leg.rtcp
        self.rtp_received += rtp.received  # the relay's own: the kernel's are the forwarder's
        self.rtp_relayed += rtp.relayed
        self.rtp_rejected += rtp.rejected
        self.rtp_undeliverable += rtp.dropped - rtp.rejected
        self.rtp_lost += rtp.lost()
        self.rtcp_received += rtcp.received
        self.rtcp_relayed += rtcp.relayed


class RelayCounters:
    """Packet totals over every session opened with it: the closed ones' sum plus the live ones.

    Read at scrape time (the metrics' callbacks), so the relay's hot path only ever touches its
    own channel's integers. Sessions register themselves (``MediaSession.open(counters=...)``)
    and move their counts to the closed sum when they close.
    """

    def __init__(self) -> None:
        self.live: set[MediaSession] = set()
        self.kernel: KernelForwarder | None = None  # its totals are added (``totals``)
        self._closed = PacketTotals()
        self._lost_shown = 0

    def session_closed(self, session: MediaSession) -> None:
        """Fold a closing session's counts into the closed sum (once: it leaves ``live``)."""
        if session in self.live:
            self.live.remove(session)
            for side in session.sides:
                self._closed.add_leg(session.leg(side))

    def totals(self) -> PacketTotals:
        """The sums now, over closed and live sessions."""
        totals = dataclasses.replace(self._closed)
        for session in self.live:
            for side in session.sides:
                totals.add_leg(session.leg(side))
        if self.kernel is not None:
            # The copied ones (recorded calls) the sessions counted as they read the copies.
            forwarded = self.kernel.rtp_forwarded
            totals.rtp_received += forwarded - self.kernel.rtp_copied
            totals.rtp_relayed += forwarded - self.kernel.rtp_copied
            totals.rtp_kernel = forwarded
        # A live stream's loss shrinks when a late packet fills a gap; a counter never goes
        # down, so it shows the highest sum reported so far until the real one passes it.
        totals.rtp_lost = self._lost_shown = max(self._lost_shown, totals.rtp_lost)
        return totals

    def export(self, registry: Registry) -> None:
        """Expose the totals as counters in ``registry``, summed once per scrape."""
        received = registry.counter(
            "pbx_rtp_packets_received_total", "RTP packets received from the parties"
        )
        relayed = registry.counter(
            "pbx_rtp_packets_relayed_total", "RTP packets relayed to the other party"
        )
        dropped = registry.counter(
            "pbx_rtp_packets_dropped_total",
            "RTP packets not relayed, by reason (source: not the latched source; "
            "no_destination: the other party on hold, unknown or absent)",
        )
        lost = registry.counter(
            "pbx_rtp_packets_lost_total",
            "RTP packets the parties sent that never reached us (RFC 3550 A.3, from sequence "
            "numbers)",
        )
        rtcp_relayed = registry.counter(
            "pbx_rtcp_packets_relayed_total", "RTCP packets relayed to the other party"
        )
        kernel = registry.counter(
            "pbx_rtp_packets_kernel_total",
            "RTP packets the kernel forwarded ([media] kernel_forwarding); also counted as "
            "received and relayed",
        )

        registry.gauge(
            "pbx_rtp_kernel_flows",
            "Directions of calls' RTP the kernel forwards now ([media] kernel_forwarding)",
            lambda: len(self.kernel.flows.installed) if self.kernel is not None else 0,
        )

        def collect() -> None:
            totals = self.totals()
            received.set_total(totals.rtp_received)
            relayed.set_total(totals.rtp_relayed)
            dropped.set_total(totals.rtp_rejected, reason="source")
            dropped.set_total(totals.rtp_undeliverable, reason="no_destination")
            lost.set_total(totals.rtp_lost)
            rtcp_relayed.set_total(totals.rtcp_relayed)
            kernel.set_total(totals.rtp_kernel)

        registry.on_render(collect)


# The largest datagram a read takes whole (a UDP datagram's limit): nothing is truncated.
MAX_DATAGRAM = 65535


class UdpEndpoint:
    """A bound UDP socket of the relay, read with the loop's ``add_reader``: one ``recvfrom``
    per readiness, handed to its protocol's ``datagram_received``.

    The subset of ``asyncio.DatagramTransport`` the relay uses (``sendto``, ``set_protocol``,
    ``is_closing``, ``close``), made for a socket that receives one datagram per 20 ms (issue
    #21, docs/design.md 9.10). An event loop's datagram transport reads until the socket has
    nothing left, which costs a second ``recvmsg`` (EAGAIN) for each RTP packet, and converts
    the address of every ``sendto``; here the readiness is level-triggered, so a socket with
    more queued is simply read again on the next turn, and ``sendto`` is the socket's own.
    Nothing is queued: a datagram the kernel will not take at once (a full send buffer) is
    lost, as it would be on a congested link; real-time media is not worth sending late.
    A protocol that raises is reported to the loop's exception handler once and the socket
    closed, as a transport does. Made synchronously, so a session opens in the step that asks
    for it.
    """

    __slots__ = ("_closed", "_fd", "_loop", "_protocol", "_sock")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._closed = False
        loop.add_reader(self._fd, self._read)

    def _read(self) -> None:
        try:
            data, addr = self._sock.recvfrom(MAX_DATAGRAM)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._protocol.error_received(exc)
            return
        try:
            self._protocol.datagram_received(data, addr)
        except Exception as exc:
            # A bug in the protocol: reported once and the socket closed, as a transport does,
            # rather than the same traceback for every packet.
            self._loop.call_exception_handler(
                {"message": "relay protocol failed; socket closed", "exception": exc}
            )
            self.close()

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send one datagram now, or lose it (see the class docstring)."""
        try:
            self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._protocol.error_received(exc)

    def set_protocol(self, protocol: asyncio.DatagramProtocol) -> None:
        """Hand what arrives from now on to ``protocol``."""
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop reading and close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._sock.close()


# What an endpoint reads for until its session wires it (within the same step).
_UNWIRED = asyncio.DatagramProtocol()


def _bind_udp(host: str, port: int, rcvbuf: int | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class MediaSession:
    """Relays RTP and RTCP between the two parties of a call. Open with ``MediaSession.open``."""

    def __init__(
        self,
        pool: PortPool,
        host: str,
        *,
        inactivity_seconds: float,
        on_inactive: Callable[[Side], None] | None,
        relatch_seconds: float,
        tick_seconds: float | None,
        loop: asyncio.AbstractEventLoop,
        counters: RelayCounters | None = None,
        clock: Callable[[], float] | None = None,
        rcvbuf: int | None = None,
        kernel: KernelForwarder | None = None,
    ) -> None:
        self.pool = pool
        self._kernel = kernel
        self.host = host
        self.rcvbuf = rcvbuf
        self.inactivity_seconds = inactivity_seconds
        self.on_inactive = on_inactive
        self._loop = loop
        # The monotonic clock (the loop's unless one is injected): ticks, latching, the tap.
        self._clock = clock or loop.time
        self._relatch_seconds = relatch_seconds
        self._tick_seconds = tick_seconds or max(0.05, min(0.5, inactivity_seconds / 4))
        self._ports: list[int] = []
        # Each port's RTP and RTCP endpoints, in that order (bound here, or parked ones).
        self._endpoints: dict[int, list[UdpEndpoint]] = {}
        self._protocols: dict[tuple[Side, bool], _RelayProtocol] = {}
        self._legs: dict[Side, RelayLeg] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._inactive_reported: set[Side] = set()
        self.closed = False
        self._counters = counters
        if counters is not None:
            counters.live.add(self)
        # Our SRTP master key and salt for each side: what we send that party is encrypted
        # with it, if the party speaks SRTP (the call engine writes it into that side's SDP).
        self.srtp_keys: dict[Side, bytes] = {Side.A: new_key(), Side.B: new_key()}

    @classmethod
    def open_now(
        cls,
        pool: PortPool,
        host: str = "0.0.0.0",
        *,
        inactivity_seconds: float = 60.0,
        on_inactive: Callable[[Side], None] | None = None,
        relatch_seconds: float = 1.0,
        tick_seconds: float | None = None,
        rcvbuf: int | None = None,
        bind_attempts: int = 16,
        sides: tuple[Side, ...] = (Side.A, Side.B),
        counters: RelayCounters | None = None,
        clock: Callable[[], float] | None = None,
        await_sdp: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
        kernel: KernelForwarder | None = None,
    ) -> MediaSession:
        """Allocate and bind the legs' RTP and RTCP sockets; raise PortPoolExhausted or OSError.

        At once: binding is synchronous and the endpoints read with the loop's ``add_reader``
        (``UdpEndpoint``), so nothing waits for the loop and the call engine opens a call's
        media in its own step (issue #21). Parked pairs (``PortPool``) are taken first.
        A port pair that another process holds is skipped (up to ``bind_attempts`` times).
        ``sides=(Side.A,)`` opens only the caller's leg, for a call the PBX answers itself
        (the announcement): its packets are counted and tapped, and dropped.
        ``counters``, when given, sums this session's packet counts with the others' it has.
        ``clock`` is the monotonic clock (``Clock.monotonic``; the loop's time by default).
        ``await_sdp``: drop what a party sends until its SDP is applied (the call engine's
        sessions; see the module docstring).
        ``loop``: the running loop, when the caller keeps it (in CPython 3.11 each
        ``asyncio.get_running_loop()`` makes a ``getpid`` system call).
        ``kernel``: hand the latched flows to nftables when nothing needs their packets here
        (``pbx.media.kernel``; ``_offer_kernel``).
        """
        session = cls(
            pool,
            host,
            inactivity_seconds=inactivity_seconds,
            on_inactive=on_inactive,
            relatch_seconds=relatch_seconds,
            tick_seconds=tick_seconds,
            loop=loop or asyncio.get_running_loop(),
            counters=counters,
            clock=clock,
            rcvbuf=rcvbuf,
            kernel=kernel,
        )
        try:
            session._wire(sides, bind_attempts, await_sdp)
        except BaseException:
            session.close()
            raise
        # A random first tick spreads the timers of sessions opened together.
        session._timer = session._loop.call_later(
            session._tick_seconds * (0.5 + random.random()), session._tick
        )
        return session

    @classmethod
    async def open(cls, pool: PortPool, host: str = "0.0.0.0", **options: Any) -> MediaSession:
        """``open_now``, for callers that await (the same options)."""
        return cls.open_now(pool, host, **options)

    def _wire(self, sides: tuple[Side, ...], bind_attempts: int, await_sdp: bool) -> None:
        """Take a pair for each side and give each of the four endpoints its protocol."""
        for side in sides:
            port = self._take_pair(bind_attempts)
            self._legs[side] = RelayLeg(side, port, self._clock, self._relatch_seconds)
        for side, leg in self._legs.items():
            other = self._legs.get(side.other)
            # With one leg, the missing other side is a channel that has no destination.
            rtp_out = other.rtp if other else Channel(0.0)
            rtcp_out = other.rtcp if other else Channel(0.0)
            rtp_end, rtcp_end = self._endpoints[leg.port]
            for end, channel, out, is_rtcp in (
                (rtp_end, leg.rtp, rtp_out, False),
                (rtcp_end, leg.rtcp, rtcp_out, True),
            ):
                protocol = _RelayProtocol(leg, channel, out)
                if await_sdp:
                    protocol.unprotect = _awaiting_sdp
                self._protocols[(side, is_rtcp)] = protocol
                end.set_protocol(protocol)
                channel.transport = end

    def _take_pair(self, attempts: int) -> int:
        """Take a port pair, a parked one if the pool has one ready, else two newly bound
        sockets, and keep its endpoints (``_endpoints``); its port.

        A cold port that cannot be bound (another process holds it, or its old socket is not
        closed yet) is set aside by the pool for a while, and the next attempt takes a parked
        pair even within its quarantine, then the next cold port. When no cold port is left
        (or a port is met a second time), the bind error is raised.
        """
        last_error: OSError | None = None
        rcvbuf = self.rcvbuf
        tried: set[int] = set()
        # The bind error is dropped from this frame on the way out: kept, it would make a
        # cycle (error -> traceback -> this frame -> error) holding the session and its call,
        # which only a full collection frees, and the server runs none under load (issue #21).
        try:
            for _ in range(attempts):
                parked = self.pool.take_parked(self.host, rcvbuf, early=bool(tried))
                if parked is not None:
                    port, pair = parked
                    self._ports.append(port)
                    self._endpoints[port] = [pair.rtp, pair.rtcp]
                    return port
                try:
                    port = self.pool.allocate()
                except PortPoolExhausted:
                    if last_error is None:
                        raise
                    break  # the rest are set aside: the bind error says why
                if port in tried:
                    self.pool.release(port)
                    break
                tried.add(port)
                self._ports.append(port)
                try:
                    rtp_sock = _bind_udp(self.host, port, rcvbuf)
                except OSError as exc:
                    last_error = exc
                    self._give_back(port, exc)
                    continue
                try:
                    rtcp_sock = _bind_udp(self.host, rtcp_port(port), rcvbuf)
                except OSError as exc:
                    rtp_sock.close()
                    last_error = exc
                    self._give_back(port, exc)
                    continue
                self._endpoints[port] = [
                    UdpEndpoint(self._loop, rtp_sock, _UNWIRED),
                    UdpEndpoint(self._loop, rtcp_sock, _UNWIRED),
                ]
                return port
            assert last_error is not None
            raise last_error
        finally:
            last_error = None

    def _give_back(self, port: int, exc: OSError) -> None:
        self._ports.remove(port)
        if exc.errno != errno.EADDRINUSE:
            self.pool.release(port)
            raise exc
        self.pool.set_aside(port)
        log.warning("rtp_port_busy", port=port, retry_seconds=self.pool.busy_seconds)

    @property
    def sides(self) -> tuple[Side, ...]:
        """The sides this session has legs for."""
        return tuple(self._legs)

    def leg(self, side: Side) -> RelayLeg:
        """The leg of one side."""
        return self._legs[side]

    @property
    def a(self) -> RelayLeg:
        """The caller's leg."""
        return self._legs[Side.A]

    @property
    def b(self) -> RelayLeg:
        """The callee's leg."""
        return self._legs[Side.B]

    def set_remote(
        self,
        side: Side,
        address: str | None,
        port: int,
        direction: Direction = Direction.SENDRECV,
        *,
        rtcp: Address | None = None,
    ) -> None:
        """Apply one party's SDP (its address, RTP port and direction); resets its latch."""
        self._take_back()
        self._legs[side].set_remote(address, port, direction, rtcp=rtcp)
        for is_rtcp in (False, True):
            protocol = self._protocols.get((side, is_rtcp))
            if protocol is not None and protocol.unprotect is _awaiting_sdp:
                protocol.unprotect = None  # plain until set_crypto says otherwise
        self._inactive_reported.discard(side)

    def apply_sdp(self, side: Side, stream: AudioStream) -> None:
        """set_remote from a parsed stream (``sdp.audio_stream``), a=rtcp included."""
        rtcp = None
        if stream.rtcp_port is not None and stream.address is not None:
            rtcp = (stream.rtcp_address or stream.address, stream.rtcp_port)
        self.set_remote(side, stream.address, stream.port, stream.direction, rtcp=rtcp)

    def set_crypto(self, side: Side, crypto: Crypto | None) -> None:
        """The SDES key the party on ``side`` sends with (None: plain RTP). The same key again
        keeps the libsrtp sessions (and their rollover counters)."""
        leg = self._legs.get(side)
        if leg is None:
            return
        current = leg.srtp.theirs if leg.srtp is not None else None
        if crypto == current:
            return
        self._take_back()
        leg.srtp = SrtpLeg(crypto, self.srtp_keys[side]) if crypto is not None else None
        srtp = leg.srtp
        for is_rtcp in (False, True):
            inbound = self._protocols.get((side, is_rtcp))
            if inbound is not None:
                inbound.unprotect = (
                    None if srtp is None else srtp.unprotect_rtcp if is_rtcp else srtp.unprotect
                )
            towards = self._protocols.get((side.other, is_rtcp))
            if towards is not None:
                towards.protect = (
                    None if srtp is None else srtp.protect_rtcp if is_rtcp else srtp.protect
                )

    def set_tap(self, side: Side, sink: PacketSink | None) -> None:
        """Copy every RTP packet this party sends to sink(arrival_time, datagram), or stop.

        With the kernel fast path, a channel the kernel forwards goes on being forwarded
        there, with a copy of each packet for the tap from the next batch on (or no longer).
        """
        self._protocols[(side, False)].tap = sink
        if self._kernel is not None and not self.closed:
            self._offer_kernel(self._clock())

    def stats(self, side: Side) -> LegStats:
        """Counters for what one party sent."""
        return self._legs[side].stats()

    def restart_silence(self, side: Side) -> None:
        """Measure the party's silence from now on and report it again when it lasts
        ``inactivity_seconds`` (a call just answered: silence while it rang is normal)."""
        self._legs[side].restart_silence(self._clock())
        self._inactive_reported.discard(side)

    def _tick(self) -> None:
        now = self._clock()
        for side, leg in self._legs.items():
            last_active = leg._observe(now)
            if last_active == now:
                self._inactive_reported.discard(side)
            elif (
                leg.direction.sends
                and side not in self._inactive_reported
                and now - last_active >= self.inactivity_seconds
            ):
                self._inactive_reported.add(side)
                log.info(
                    "rtp_inactive",
                    side=side.value,
                    port=leg.port,
                    silent_seconds=round(now - last_active, 1),
                )
                if self.on_inactive is not None:
                    try:
                        self.on_inactive(side)
                    except Exception:
                        log.exception("on_inactive_failed", side=side.value)
        if self._kernel is not None and not self.closed:
            self._offer_kernel(now)
        if not self.closed:
            self._timer = self._loop.call_later(self._tick_seconds, self._tick)

    def _offer_kernel(self, now: float) -> None:
        """Hand each channel to the kernel that it may forward, take back the others.

        An RTP channel may go when the session has both legs and no SRTP on either (the relay
        re-keys each leg), both SDPs are applied, it has latched a source, the other party has
        a destination, and it is active: it moved in this tick, or the kernel holds it already
        (the kernel path gives back a flow that falls silent, and it returns here once the
        relay reads packets from it again). A recorded channel (a tap) goes as a copied flow:
        the kernel forwards its packets and copies each to the forwarder's copies socket, which
        hands them to the tap.
        """
        kernel = self._kernel
        assert kernel is not None
        if not kernel.active:
            return
        legs = self._legs
        whole = len(legs) == 2 and not any(
            p.unprotect is not None or p.protect is not None for p in self._protocols.values()
        )
        wanted = kernel.flows.wanted
        for (side, is_rtcp), protocol in self._protocols.items():
            if is_rtcp:
                continue  # RTCP stays here (``pbx.media.kernel``)
            channel, out = protocol.channel, protocol.out
            leg, other = legs[side], legs.get(side.other)
            port = leg.port
            flow = wanted.get(port)
            copy = protocol.tap is not None
            if (
                whole
                and channel.offloaded
                and flow is not None
                and flow.source == channel.source
                and flow.dest == out.dest
                and flow.copy == copy
            ):
                continue  # in the kernel, unchanged: the common case, kept cheap
            flow = None
            if (
                whole
                and other is not None
                and channel.source is not None
                and out.dest is not None
                and (channel.offloaded or channel.last_active == now)
            ):
                flow = kernel.flow(channel.source, port, other.port, out.dest, self.host, copy=copy)
            kernel.want(port, flow, channel, protocol)

    def _take_back(self) -> None:
        """Every channel back to the relay (a new SDP or key, or the end)."""
        kernel = self._kernel
        if kernel is None:
            return
        for (side, is_rtcp), protocol in self._protocols.items():
            if not is_rtcp:
                kernel.want(self._legs[side].port, None, protocol.channel)

    def close(self) -> None:
        """Close every socket and give the ports back to the pool (idempotent); with a parking
        pool, the bound pairs are parked instead, as far as it has room (``PortPool``)."""
        if self.closed:
            return
        self.closed = True
        self._take_back()
        if self._counters is not None:
            # Its counts move to the closed sessions' sum in one step: never counted twice.
            self._counters.session_closed(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for leg in self._legs.values():
            # Packets we generate (a prompt) must not leave through a pair that is parked or
            # has gone to another session.
            leg.rtp.transport = leg.rtcp.transport = None
        for port in self._ports:
            # A port whose binding was cut short has no endpoints (see _take_pair).
            ends = self._endpoints.get(port, [])
            if len(ends) == 2:
                pair = ParkedPair(self.host, self.rcvbuf, ends[0], ends[1])
                if self.pool.park(port, pair):
                    continue
            for end in ends:
                end.close()
            self.pool.release(port)
        self._ports.clear()
        self._endpoints.clear()

    async def __aenter__(self) -> MediaSession:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
