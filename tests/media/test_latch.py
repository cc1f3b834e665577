"""Symmetric RTP latching and loss counting (``pbx.media.latch``), on fake time: no sockets."""

from __future__ import annotations

import pytest

from pbx.media.latch import Channel, Party, Side, SourceVerdict
from pbx.media.rtp import RtpPacket
from pbx.media.sdp import Direction

DECLARED = ("192.0.2.10", 40000)
NAT = ("203.0.113.5", 51000)
STRAY = ("198.51.100.9", 6000)


def rtp(seq: int) -> bytes:
    return bytes(RtpPacket(0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, 0x1234, b"\xff" * 160))


def party(now: float = 0.0) -> Party:
    p = Party(Side.A, 30000, now, relatch_seconds=1.0)
    p.declare(*DECLARED, Direction.SENDRECV, now)
    return p


def deliver(p: Party, source: tuple[str, int], seq: int, now: float) -> SourceVerdict | None:
    """What the relay does per datagram: latch rules only for a source other than the latched."""
    channel = p.rtp
    if source != channel.source:
        verdict = p.accept_source(channel, source, rtp(seq), now)
        if not verdict.accepted:
            return verdict
    else:
        verdict = None
    channel.received += 1
    channel.latest = rtp(seq)
    return verdict


def test_until_a_packet_arrives_the_party_is_sent_to_its_declared_address() -> None:
    p = party()
    assert (p.rtp.dest, p.rtcp.dest) == (DECLARED, ("192.0.2.10", 40001))


def test_first_packet_latches_its_source_and_rtcp_follows_the_rtp_source() -> None:
    p = party()
    assert deliver(p, NAT, 1, 0.1) is SourceVerdict.LATCHED
    assert p.rtp.dest == NAT
    assert p.rtcp.dest == ("203.0.113.5", 51001)  # guessed: RTCP has not latched yet


@pytest.mark.parametrize(
    ("silence", "verdict", "dest"),
    [
        (0.5, SourceVerdict.REJECTED_FIRST, NAT),  # the latched source is still active
        (0.999, SourceVerdict.REJECTED_FIRST, NAT),
        (1.0, SourceVerdict.RELATCHED, STRAY),  # silent for relatch_seconds: a NAT rebinding
        (5.0, SourceVerdict.RELATCHED, STRAY),
    ],
)
def test_a_stray_source_is_dropped_until_the_latched_one_has_been_silent(
    silence: float, verdict: SourceVerdict, dest: tuple[str, int]
) -> None:
    p = party()
    deliver(p, NAT, 1, 0.0)
    p.observe(0.0)  # the session tick notes the packet
    assert deliver(p, STRAY, 2, silence) is verdict
    assert p.rtp.dest == dest


def test_only_the_first_stray_packet_is_reported() -> None:
    p = party()
    deliver(p, NAT, 1, 0.0)
    p.observe(0.0)
    assert deliver(p, STRAY, 2, 0.1) is SourceVerdict.REJECTED_FIRST
    assert deliver(p, STRAY, 3, 0.2) is SourceVerdict.REJECTED


def test_the_declared_address_always_latches_even_after_a_stray_got_in_first() -> None:
    p = party()
    deliver(p, STRAY, 1, 0.0)
    p.observe(0.0)
    assert deliver(p, DECLARED, 2, 0.1) is SourceVerdict.LATCHED
    assert p.rtp.dest == DECLARED


def test_a_new_declaration_forgets_the_latch() -> None:
    p = party()
    deliver(p, NAT, 1, 0.0)
    p.declare("192.0.2.77", 42000, Direction.SENDRECV, 3.0)
    assert p.rtp.source is None
    assert p.rtp.dest == ("192.0.2.77", 42000)


@pytest.mark.parametrize(
    ("direction", "rtp_dest"),
    [
        (Direction.SENDRECV, DECLARED),
        (Direction.RECVONLY, DECLARED),
        (Direction.SENDONLY, None),  # on hold: it does not receive
        (Direction.INACTIVE, None),
    ],
)
def test_a_party_that_does_not_receive_gets_no_rtp_but_still_rtcp(
    direction: Direction, rtp_dest: tuple[str, int] | None
) -> None:
    p = Party(Side.B, 30002, 0.0, relatch_seconds=1.0)
    p.declare(*DECLARED, direction, 0.0)
    assert p.rtp.dest == rtp_dest
    assert p.rtcp.dest == ("192.0.2.10", 40001)


def test_a_null_address_declares_nothing() -> None:
    p = Party(Side.B, 30002, 0.0, relatch_seconds=1.0)
    p.declare(None, 0, Direction.SENDRECV, 0.0)
    assert (p.rtp.dest, p.rtcp.dest) == (None, None)


def test_an_rtcp_attribute_overrides_port_plus_one() -> None:
    p = Party(Side.B, 30002, 0.0, relatch_seconds=1.0)
    p.declare(*DECLARED, Direction.SENDRECV, 0.0, rtcp=("192.0.2.11", 50000))
    assert p.rtcp.dest == ("192.0.2.11", 50000)


def test_observe_reports_when_the_party_last_sent_and_restart_counts_silence_anew() -> None:
    p = party(now=0.0)
    deliver(p, NAT, 1, 0.0)
    assert p.observe(2.0) == 2.0  # the packet is noticed at this tick
    assert p.observe(9.0) == 2.0  # nothing since
    p.restart_silence(10.0)
    assert p.observe(11.0) == 10.0


@pytest.mark.parametrize(
    ("seqs", "lost"),
    [
        (list(range(100)), 0),
        ([*range(0, 50), *range(53, 100)], 3),
        ([*range(65530, 65536), *range(65538, 65550)], 2),  # across the wrap
        ([*range(0, 10), 5, 5, 3], 0),  # duplicates and late packets never give negative loss
    ],
)
def test_loss_is_expected_minus_received(seqs: list[int], lost: int) -> None:
    channel = Channel(0.0)
    for index, seq in enumerate(seqs):
        data = rtp(seq)
        if index == 0:
            channel.start_stream(data)
        channel.received += 1
        channel.latest = data
        channel.catch_up()
    assert channel.lost() == lost


def test_a_sender_restart_closes_the_old_stream_and_keeps_its_loss() -> None:
    channel = Channel(0.0)
    channel.start_stream(rtp(100))
    for seq in [*range(100, 110), *range(112, 120), 30000, 30001, 30002]:
        channel.received += 1
        channel.latest = rtp(seq)
        channel.catch_up()
    assert channel.lost() == 2  # the two lost before the restart; the new stream is whole
