"""RTP loss counting (RFC 3550 A.1/A.3) and the relay's packet totals and metrics.

The loss tests drive one leg's RTP protocol directly, with a stand-in for the other party's
socket: no sockets, no event loop, and the sampling (``RelayLeg._observe`` on each session tick) is
called by hand, so each case is checked both when every packet is sampled and when only some are.
"""

from __future__ import annotations

import re

import pytest

from pbx.media.latch import Channel
from pbx.media.relay import (
    MediaSession,
    PortPool,
    RelayCounters,
    RelayLeg,
    Side,
    _RelayProtocol,
)
from pbx.media.rtp import RtpPacket
from pbx.metrics import Registry
from tests.media.udp import HOST, TEST_PORTS, endpoint
from tests.prometheus import metric_values

PHONE = ("192.0.2.10", 40000)
OTHER_PHONE = ("192.0.2.20", 40002)


def rtp(seq: int) -> bytes:
    return bytes(RtpPacket(0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, 0x1234, b"\xff" * 160))


class _Sink:
    """Stands in for the other leg's socket."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent += 1


class Feed:
    """One party's RTP reaching its leg; ``every`` packets, the session's tick samples it."""

    def __init__(self, every: int = 1) -> None:
        self.clock = 0.0
        self.leg = RelayLeg(Side.A, 30000, lambda: self.clock, relatch_seconds=1.0)
        out = Channel(0.0)
        self.sink = _Sink()
        out.transport = self.sink
        out.dest = OTHER_PHONE
        self.protocol = _RelayProtocol(self.leg, self.leg.rtp, out)
        self.every = every
        self.count = 0

    def send(self, *seqs: int, source: tuple[str, int] = PHONE) -> None:
        for seq in seqs:
            self.protocol.datagram_received(rtp(seq), source)
            self.count += 1
            if self.count % self.every == 0:
                self.clock += 0.02
                self.leg._observe(self.clock)

    @property
    def lost(self) -> int:
        """The loss now (reading it samples the latest packet too, as a scrape does)."""
        return self.leg.stats().rtp_lost


SAMPLING = pytest.mark.parametrize("every", [1, 7, 1000], ids=["each", "every-7th", "at-end"])
# A restart is confirmed by a second sample after the jump: ticks come every 0.5 s at most.
TICKING = pytest.mark.parametrize("every", [1, 7], ids=["each", "every-7th"])


@SAMPLING
def test_in_order_stream_loses_nothing(every: int) -> None:
    feed = Feed(every)
    feed.send(*range(1000, 1500))
    assert feed.lost == 0
    stats = feed.leg.stats()
    assert (stats.rtp_received, stats.rtp_relayed, stats.rtp_dropped) == (500, 500, 0)


@SAMPLING
def test_a_gap_of_n_sequence_numbers_counts_n_lost(every: int) -> None:
    feed = Feed(every)
    feed.send(*range(0, 100))
    feed.send(*range(105, 200))  # 100-104 never came
    assert feed.lost == 5
    feed.send(*range(200, 300), *range(310, 320))  # and 300-309
    assert feed.lost == 15


@SAMPLING
def test_loss_is_counted_across_the_sequence_number_wrap(every: int) -> None:
    feed = Feed(every)
    feed.send(*range(65500, 65535))
    feed.send(*range(65537, 65600))  # 65535 and 65536 (0 on the wire) never came; 1-63 did
    assert feed.lost == 2
    assert feed.leg.rtp.highest_seq - feed.leg.rtp.base_seq == 65599 - 65500


@SAMPLING
def test_duplicates_and_reordering_never_give_negative_loss(every: int) -> None:
    feed = Feed(every)
    feed.send(*range(0, 10))
    feed.send(5, 9, 9, 3)  # duplicates and late ones: more received than expected
    assert feed.lost == 0
    feed.send(11, 10, 13, 12, 14)  # swapped pairs
    assert feed.lost == 0
    # A.3 counts duplicates as received, so they offset loss (here the 4 extra ones above).
    feed.send(16, 15, 18)  # 17 lost
    assert feed.lost == 0
    fresh = Feed(every)
    fresh.send(*range(0, 15), 16, 15, 15, 19)  # 17 and 18 lost, one duplicate: nets to 1
    assert fresh.lost == 1


def test_a_late_packet_fills_the_gap_it_left() -> None:
    feed = Feed()
    feed.send(0, 1, 3)
    assert feed.lost == 1
    feed.send(2)  # late, but arrived: A.3 counts it as received
    assert feed.lost == 0


@TICKING
def test_a_sender_restarting_its_sequence_starts_a_new_stream(every: int) -> None:
    feed = Feed(every)
    feed.send(*range(100, 200))
    feed.send(*range(40000, 40100))  # a jump beyond MAX_DROPOUT, then in sequence
    assert feed.lost == 0
    feed.send(*range(40100, 40110), *range(40113, 40120))  # the new stream's own loss
    assert feed.lost == 3


def test_one_stray_jump_is_not_taken_as_a_restart() -> None:
    feed = Feed()
    feed.send(*range(0, 50), 30000, *range(50, 100), *range(102, 110))
    # The stray packet counts as received (as in A.3); the gap of 2 after it is still seen.
    assert feed.lost == 1


def test_a_new_source_starts_a_new_stream_and_keeps_the_old_loss() -> None:
    feed = Feed()
    feed.send(*range(0, 10), 12)  # 10 and 11 lost
    feed.clock += 2.0  # silent past relatch_seconds: another source may latch
    feed.leg._observe(feed.clock)
    feed.send(*range(7000, 7010), source=OTHER_PHONE)
    assert feed.leg.stats().rtp_source == OTHER_PHONE
    assert feed.lost == 2


def test_packets_from_a_stray_source_are_rejected_and_not_sequenced() -> None:
    feed = Feed()
    feed.send(*range(0, 10))
    feed.send(500, 501, source=OTHER_PHONE)  # the latched source is active: dropped
    stats = feed.leg.stats()
    assert (stats.rtp_received, stats.rtp_dropped, stats.rtp_rejected) == (10, 2, 2)
    assert stats.rtp_lost == 0


# --- RelayCounters: live and closed sessions, and the metrics ---------------------------------


@pytest.mark.asyncio
async def test_totals_cover_live_and_closed_sessions_once() -> None:
    pool = PortPool(*TEST_PORTS)
    counters = RelayCounters()
    registry = Registry()
    counters.export(registry)
    first = await MediaSession.open(pool, HOST, counters=counters)
    second = await MediaSession.open(pool, HOST, counters=counters)
    try:
        async with endpoint() as a, endpoint() as b:
            for s in (first, second):
                s.set_remote(Side.A, *a.address)
                s.set_remote(Side.B, *b.address)
            for seq in (*range(10), *range(12, 20)):  # 10 and 11 lost on the way to us
                a.send(rtp(seq), (HOST, first.a.port))
            for seq in range(5):
                b.send(rtp(seq), (HOST, second.b.port))
            for _ in range(18):  # relayed through the first session to B
                await b.receive()
            for _ in range(5):  # through the second one to A
                await a.receive()
            live = counters.totals()
            assert (live.rtp_received, live.rtp_relayed, live.rtp_lost) == (23, 23, 2)
            first.close()
            first.close()  # idempotent: nothing counted twice
            assert counters.totals() == live
            assert counters.live == {second}
            values = metric_values(registry.render())
            assert values["pbx_rtp_packets_received_total"] == 23
            assert values["pbx_rtp_packets_relayed_total"] == 23
            assert values["pbx_rtp_packets_lost_total"] == 2
            assert values['pbx_rtp_packets_dropped_total{reason="source"}'] == 0
            assert values['pbx_rtp_packets_dropped_total{reason="no_destination"}'] == 0
            assert values["pbx_rtcp_packets_relayed_total"] == 0
    finally:
        first.close()
        second.close()
    assert counters.live == set()
    assert counters.totals().rtp_relayed == 23
    assert pool.in_use == 0


def test_the_lost_counter_never_goes_down() -> None:
    counters = RelayCounters()
    feed = Feed()
    feed.send(0, 1, 3)

    class _Session:  # what totals() reads of a session
        sides = (Side.A,)

        def leg(self, side: Side) -> RelayLeg:
            return feed.leg

    counters.live.add(_Session())  # type: ignore[arg-type]
    assert counters.totals().rtp_lost == 1
    feed.send(2)  # the gap is filled: the stream's loss is 0 again
    assert feed.lost == 0
    assert counters.totals().rtp_lost == 1  # a counter: holds its highest value
    feed.send(*range(4, 10), *range(12, 14))
    assert counters.totals().rtp_lost == 2


def test_metrics_are_exposed_before_any_call() -> None:
    registry = Registry()
    RelayCounters().export(registry)
    text = registry.render()
    for name in (
        "pbx_rtp_packets_received_total",
        "pbx_rtp_packets_relayed_total",
        "pbx_rtp_packets_lost_total",
        "pbx_rtcp_packets_relayed_total",
    ):
        assert f"# TYPE {name} counter" in text
        assert re.search(rf"^{name} 0$", text, re.M), text
    assert 'pbx_rtp_packets_dropped_total{reason="no_destination"} 0' in text
    assert 'pbx_rtp_packets_dropped_total{reason="source"} 0' in text
