"""Symmetric RTP latching and RTP loss counting: the pure half of the relay (RFC 3550 §6.4.1,
appendix A.1 and A.3; the latching rules are numbered in ``pbx.media.relay``'s docstring).

Pure: no sockets, no clock (``now`` is passed in), no logging. A ``Party`` is what we know of
one side of a call (the address its SDP declared, the source we latched, where its packets go);
its two ``Channel``s (RTP and RTCP) count what it sent and, for RTP, what was lost on the way.
``pbx.media.relay`` keeps the sockets and calls ``Party.accept_source`` only when a datagram
comes from somewhere other than the latched source, so the hot path stays a tuple comparison.
"""

from __future__ import annotations

import enum
from typing import Protocol

from pbx.media.rtp import rtcp_port
from pbx.media.sdp import Direction

# RFC 3550 appendix A.1: sequence number steps taken as loss, and late packets tolerated.
SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100

Address = tuple[str, int]


class DatagramSender(Protocol):
    """What a channel sends through (an asyncio datagram transport in the relay)."""

    def sendto(self, data: bytes, addr: Address) -> None: ...


class Side(enum.Enum):
    """The two parties of a relayed call."""

    __hash__ = object.__hash__  # a dict key of the hot paths (see sip.transaction.TransactionTimer)

    A = "a"  # the caller's leg
    B = "b"  # the callee's leg

    @property
    def other(self) -> Side:
        """The opposite side."""
        return Side.B if self is Side.A else Side.A


class Channel:
    """One local socket (RTP or RTCP) of a party's leg: where the party is, what it sent, and
    the loss of its streams. ``transport`` is the adapter's socket, opaque here."""

    __slots__ = (
        "bad_received",
        "bad_seq",
        "base_seq",
        "declared",
        "dest",
        "dropped",
        "highest_seq",
        "kernel_received",
        "last_active",
        "latest",
        "lost_before",
        "offloaded",
        "received",
        "received_base",
        "rejected",
        "relayed",
        "resync",
        "seen",
        "source",
        "stray_seen",
        "transport",
    )

    def __init__(self, now: float) -> None:
        self.transport: DatagramSender | None = None
        self.declared: Address | None = None  # from SDP
        self.source: Address | None = None  # latched source, None until the first packet
        self.dest: Address | None = None  # where packets for this party go now, or None
        self.received = 0
        self.relayed = 0  # packets from this party sent on to the other party
        self.dropped = 0  # rejected sources and packets with no destination
        self.rejected = 0  # from a source other than the latched one
        self.stray_seen = False
        # The kernel fast path (``pbx.media.kernel``): whether the kernel forwards this
        # channel's packets now, and how many it has forwarded (the statistics count them as
        # received and relayed; ``received`` does not, so the loss count covers what the relay
        # itself read).
        self.offloaded = False
        self.kernel_received = 0
        # The next packet read opens a new stream (its packets went through the kernel since).
        self.resync = False
        # Loss counting (module docstring; read for RTP only). The hot path just keeps the
        # latest datagram; catch_up reads its sequence number. The current stream: its first and
        # highest extended sequence numbers, and `received` before its first packet; a jump
        # waiting for a second packet to confirm it; the loss of the streams before.
        self.latest: bytes | None = None
        self.base_seq = 0
        self.highest_seq = -1
        self.received_base = 0
        self.bad_seq = -1
        self.bad_received = 0
        self.lost_before = 0
        # Updated by the session timer, not per packet: when `received` last moved, and its value.
        self.last_active = now
        self.seen = 0

    def catch_up(self) -> None:
        """Advance the current stream to the latest packet's sequence number (A.1 rules).

        Called every session tick and before the loss is read. Taking only the latest packet
        of each interval gives the same extended highest number as reading every packet, as
        long as a stream moves by less than MAX_DROPOUT per tick (6,000 packets/s at 0.5 s;
        G.711 at 20 ms sends 50).
        """
        data = self.latest
        if data is None or len(data) < 4:  # nothing yet, or too short to be RTP
            return
        seq = data[2] << 8 | data[3]
        if self.resync:
            # Back from the kernel: the stream goes on from here, counted from this packet.
            self.resync = False
            self._close_stream(seq, self.received - 1)
            return
        step = (seq - self.highest_seq) & (SEQ_MOD - 1)
        if step < MAX_DROPOUT:  # in order, maybe after a gap (0: nothing new, or a duplicate)
            self.highest_seq += step
            self.bad_seq = -1
        elif step <= SEQ_MOD - MAX_MISORDER:  # a jump: a new stream once a packet follows it
            if self.bad_seq >= 0 and 0 < (seq - self.bad_seq) & (SEQ_MOD - 1) < MAX_DROPOUT:
                # The sender restarted: the jump's packet opened the new stream.
                self._close_stream(self.bad_seq, self.bad_received - 1)
                self.highest_seq += (seq - self.base_seq) & (SEQ_MOD - 1)
            else:
                self.bad_seq, self.bad_received = seq, self.received
        # else: late (reordered) by up to MAX_MISORDER, or a duplicate: nothing to update

    def stream_lost(self) -> int:
        """Packets lost in the current stream (RFC 3550 A.3: expected - received), never < 0."""
        expected = self.highest_seq - self.base_seq + 1
        return max(0, expected - (self.received - self.received_base))

    def lost(self) -> int:
        """Packets lost in every stream this channel has had, up to the latest packet."""
        self.catch_up()
        return self.lost_before + self.stream_lost()

    def hand_to_kernel(self, *, copied: bool = False) -> None:
        """The kernel forwards this channel's packets from now on: close the current stream
        (its loss is kept); the relay's next packet opens another (``resync``). ``copied``: the
        relay still reads a copy of each packet, so they are counted here as before and the
        stream goes on."""
        if copied:
            self.offloaded = True
            return
        self.catch_up()
        self.lost_before += self.stream_lost()
        # No stream until the relay reads a packet again: nothing expected, nothing received.
        self.base_seq, self.highest_seq, self.bad_seq = 0, -1, -1
        self.received_base = self.received
        self.latest = None
        self.resync = True
        self.offloaded = True

    @property
    def total_received(self) -> int:
        """What the party sent us, whoever forwarded it."""
        return self.received + self.kernel_received

    def start_stream(self, data: bytes) -> None:
        """A new source latched: close the current stream; ``data`` (not yet counted) opens one."""
        self.catch_up()
        self._close_stream((data[2] << 8 | data[3]) if len(data) >= 4 else 0, self.received)
        self.latest = data

    def _close_stream(self, first_seq: int, received: int) -> None:
        """Add the current stream's loss to the past ones and open a new stream, numbered from
        ``first_seq``, whose first packet was counted after ``received`` packets."""
        expected = self.highest_seq - self.base_seq + 1
        self.lost_before += max(0, expected - (received - self.received_base))
        self.base_seq = self.highest_seq = first_seq
        self.received_base = received
        self.bad_seq = -1


class SourceVerdict(enum.Enum):
    """What ``Party.accept_source`` made of a datagram from a source other than the latched one."""

    LATCHED = "latched"  # the first source, or the SDP-declared address: latched
    RELATCHED = "relatched"  # the latched source had been silent for relatch_seconds
    REJECTED_FIRST = "rejected_first"  # dropped; the first stray one (worth a log line)
    REJECTED = "rejected"  # dropped

    @property
    def accepted(self) -> bool:
        return self in (SourceVerdict.LATCHED, SourceVerdict.RELATCHED)


class Party:
    """One side of a relayed call: its local port and what we know of its party."""

    def __init__(self, side: Side, port: int, now: float, relatch_seconds: float) -> None:
        self.side = side
        self.port = port
        self.relatch_seconds = relatch_seconds
        self.rtp = Channel(now)
        self.rtcp = Channel(now)
        self.direction = Direction.SENDRECV

    @property
    def rtcp_port(self) -> int:
        """The local RTCP port (RTP + 1)."""
        return rtcp_port(self.port)

    def declare(
        self,
        address: str | None,
        port: int,
        direction: Direction,
        now: float,
        *,
        rtcp: Address | None = None,
    ) -> None:
        """Where this party's SDP says to send, and its direction; forgets any latch (rule 4).

        RTCP goes to ``rtcp`` if the SDP had an a=rtcp line (RFC 3605), else to port + 1.
        """
        self.direction = direction
        declared = (address, port) if address is not None and port else None
        self.rtp.declared = declared
        if declared is None:
            self.rtcp.declared = None
        else:
            self.rtcp.declared = rtcp or (declared[0], rtcp_port(declared[1]))
        self.rtp.source = self.rtcp.source = None
        self.update_dest()
        self.rtp.last_active = self.rtcp.last_active = now

    def update_dest(self) -> None:
        """Where this party's packets go now (rules 1 and 2)."""
        receives = self.direction.receives
        rtp_dest = self.rtp.source or self.rtp.declared
        self.rtp.dest = rtp_dest if receives else None
        rtcp_dest = self.rtcp.source or self.rtcp.declared
        if self.rtcp.source is None and self.rtp.source is not None:
            # RTP has latched but RTCP has not: guess the same host, RTP port + 1.
            rtcp_dest = (self.rtp.source[0], rtcp_port(self.rtp.source[1]))
        # RTCP receiver reports still flow on hold, so RTCP is sent whatever the direction.
        self.rtcp.dest = rtcp_dest

    def accept_source(
        self, channel: Channel, addr: Address, data: bytes, now: float
    ) -> SourceVerdict:
        """Latch rules 2 and 3 for a datagram from ``addr``, which is not the latched source.

        A latched RTP source starts a new stream for loss counting at ``data``.
        """
        verdict = SourceVerdict.LATCHED
        if channel.source is not None and addr != channel.declared:
            # While the kernel forwards the latched source, its silence is not known here:
            # the kernel path hands a silent source back first (``pbx.media.kernel``).
            if channel.offloaded or now - channel.last_active < self.relatch_seconds:
                if channel.stray_seen:
                    return SourceVerdict.REJECTED
                channel.stray_seen = True
                return SourceVerdict.REJECTED_FIRST
            verdict = SourceVerdict.RELATCHED
        channel.source = addr
        self.update_dest()
        if channel is self.rtp:
            channel.start_stream(data)
        return verdict

    def observe(self, now: float) -> float:
        """Note which channels moved since the last tick; return when the party last sent."""
        self.rtp.catch_up()
        for channel in (self.rtp, self.rtcp):
            received = channel.total_received
            if received != channel.seen:
                channel.seen = received
                channel.last_active = now
        return max(self.rtp.last_active, self.rtcp.last_active)

    def restart_silence(self, now: float) -> None:
        """Count this party's silence from ``now`` (e.g. from the answer: silence while a call
        rings is normal)."""
        self.observe(now)
        self.rtp.last_active = self.rtcp.last_active = now
