"""The RTP relay over real loopback sockets: forwarding, latching, RTCP, hold, inactivity, ports."""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from pbx.clock import FakeClock
from pbx.media.relay import MediaSession, PortPool, PortPoolExhausted, Side, UdpEndpoint
from pbx.media.rtp import RtpPacket
from pbx.media.sdp import Direction, audio_stream, parse_sdp
from tests.media.udp import HOST, TEST_PORTS, Endpoint, endpoint, endpoint_pair, until


def rtp(seq: int, payload: bytes = b"\xff" * 160, pt: int = 0) -> bytes:
    return bytes(RtpPacket(pt, seq, seq * 160, 0x1234, payload))


RTCP_RR = bytes([0x80, 201, 0, 1]) + (0x1234).to_bytes(4, "big")


@pytest.fixture
def pool() -> PortPool:
    return PortPool(*TEST_PORTS)


@pytest_asyncio.fixture
async def session(pool: PortPool) -> AsyncIterator[MediaSession]:
    s = await MediaSession.open(pool, HOST, inactivity_seconds=60)
    try:
        yield s
    finally:
        s.close()
    assert pool.in_use == 0


def relay_addr(s: MediaSession, side: Side, rtcp: bool = False) -> tuple[str, int]:
    leg = s.leg(side)
    return HOST, leg.rtcp_port if rtcp else leg.port


# --- PortPool ---------------------------------------------------------------------------------


def test_port_pool_hands_out_even_ports_and_reuses_released_ones_last() -> None:
    pool = PortPool(31001, 31009)  # odd start: first pair is 31002/31003; 31008/31009 is last
    ports = [pool.allocate() for _ in range(4)]
    assert ports == [31002, 31004, 31006, 31008]
    assert pool.in_use == 4
    assert pool.available == 0
    with pytest.raises(PortPoolExhausted, match="no free RTP port pair in 31001-31009"):
        pool.allocate()
    pool.release(31004)
    assert pool.allocate() == 31004
    with pytest.raises(ValueError, match="not allocated"):
        pool.release(31010)


def test_port_pool_parses_the_config_spec() -> None:
    pool = PortPool.from_spec("20000-29999")
    assert pool.size == 5000
    with pytest.raises(ValueError, match="invalid rtp_ports"):
        PortPool.from_spec("abc")
    with pytest.raises(ValueError, match="no even/odd port pair"):
        PortPool(31000, 31000)


@pytest.mark.asyncio
async def test_open_skips_a_port_pair_held_by_another_socket() -> None:
    pool = PortPool(31100, 31109)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        squatter.bind((HOST, 31101))  # the RTCP port of the first pair
        s = await MediaSession.open(pool, HOST)
        try:
            assert {s.a.port, s.b.port} == {31102, 31104}
            assert pool.in_use == 2
        finally:
            s.close()
    finally:
        squatter.close()
    assert pool.in_use == 0


@pytest.mark.asyncio
async def test_open_releases_the_first_leg_when_the_pool_runs_out() -> None:
    pool = PortPool(31200, 31201)  # a single pair: the second leg cannot get one
    with pytest.raises(PortPoolExhausted):
        await MediaSession.open(pool, HOST)
    assert pool.in_use == 0
    # The first leg's sockets are closed: the ports bind again.
    s = await MediaSession.open(pool, HOST, sides=(Side.A,))
    s.close()
    assert pool.in_use == 0


# --- forwarding -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rtp_and_rtcp_are_relayed_both_ways(session: MediaSession) -> None:
    async with endpoint_pair() as (a_rtp, a_rtcp), endpoint_pair() as (b_rtp, b_rtcp):
        session.set_remote(Side.A, *a_rtp.address)
        session.set_remote(Side.B, *b_rtp.address)
        a_rtp.send(rtp(1), relay_addr(session, Side.A))
        data, src = await b_rtp.receive()
        assert data == rtp(1)
        assert src == relay_addr(session, Side.B)  # B sees the PBX's B-leg port as its peer
        b_rtp.send(rtp(7), relay_addr(session, Side.B))
        data, src = await a_rtp.receive()
        assert data == rtp(7)
        assert src == relay_addr(session, Side.A)
        # RTCP: the odd ports, relayed the same way (to the declared RTP port + 1).
        a_rtcp.send(RTCP_RR, relay_addr(session, Side.A, rtcp=True))
        data, src = await b_rtcp.receive()
        assert (data, src) == (RTCP_RR, relay_addr(session, Side.B, rtcp=True))
        b_rtcp.send(RTCP_RR, relay_addr(session, Side.B, rtcp=True))
        assert (await a_rtcp.receive())[0] == RTCP_RR
    a, b = session.stats(Side.A), session.stats(Side.B)
    assert (a.rtp_received, a.rtp_relayed, a.rtp_dropped) == (1, 1, 0)
    assert (b.rtp_received, b.rtp_relayed, b.rtcp_relayed) == (1, 1, 1)


@pytest.mark.asyncio
async def test_many_packets_are_relayed_in_order_without_loss(session: MediaSession) -> None:
    async with endpoint() as a, endpoint() as b:
        session.set_remote(Side.A, *a.address)
        session.set_remote(Side.B, *b.address)
        for seq in range(200):
            a.send(rtp(seq), relay_addr(session, Side.A))
            if seq % 50 == 49:
                await asyncio.sleep(0.01)
        got = [(await b.receive())[0] for _ in range(200)]
        assert got == [rtp(seq) for seq in range(200)]


@pytest.mark.asyncio
async def test_symmetric_rtp_latches_onto_the_source_behind_nat(session: MediaSession) -> None:
    async with endpoint() as a_declared, endpoint() as a_nat, endpoint() as b:
        # A's SDP names one address, but its packets come from another (its NAT mapping).
        session.set_remote(Side.A, *a_declared.address)
        session.set_remote(Side.B, *b.address)
        b.send(rtp(1), relay_addr(session, Side.B))
        assert (await a_declared.receive())[0] == rtp(1)  # before latching: the SDP address
        a_nat.send(rtp(2), relay_addr(session, Side.A))
        assert (await b.receive())[0] == rtp(2)
        b.send(rtp(3), relay_addr(session, Side.B))
        assert (await a_nat.receive())[0] == rtp(3)  # after latching: the source address
        await a_declared.expect_nothing()
        assert session.stats(Side.A).rtp_source == a_nat.address


@pytest.mark.asyncio
async def test_latching_works_without_any_sdp_address(session: MediaSession) -> None:
    async with endpoint() as a, endpoint() as b:
        session.set_remote(Side.B, *b.address)
        b.send(rtp(1), relay_addr(session, Side.B))  # nowhere to send yet: dropped
        await until(lambda: session.stats(Side.B).rtp_dropped == 1)
        a.send(rtp(2), relay_addr(session, Side.A))
        await b.receive()
        b.send(rtp(3), relay_addr(session, Side.B))
        assert (await a.receive())[0] == rtp(3)


@pytest.mark.asyncio
async def test_stray_source_is_dropped_while_the_latched_one_is_active_then_relatched(
    pool: PortPool,
) -> None:
    clock = FakeClock()
    s = await MediaSession.open(
        pool, HOST, relatch_seconds=0.3, tick_seconds=0.05, clock=clock.monotonic
    )
    try:
        async with endpoint() as a, endpoint() as intruder, endpoint() as b:
            s.set_remote(Side.A, *a.address)
            s.set_remote(Side.B, *b.address)
            a.send(rtp(1), relay_addr(s, Side.A))
            await b.receive()
            intruder.send(rtp(99), relay_addr(s, Side.A))
            await b.expect_nothing(0.1)
            assert s.stats(Side.A).rtp_dropped == 1
            # A goes quiet longer than relatch_seconds: the new source (a NAT rebinding) wins.
            clock.advance(0.5)
            intruder.send(rtp(100), relay_addr(s, Side.A))
            assert (await b.receive())[0] == rtp(100)
            b.send(rtp(5), relay_addr(s, Side.B))
            assert (await intruder.receive())[0] == rtp(5)
            await a.expect_nothing(0.1)
    finally:
        s.close()


@pytest.mark.asyncio
async def test_the_sdp_declared_address_wins_over_an_earlier_stray_latch(
    session: MediaSession,
) -> None:
    async with endpoint() as a, endpoint() as stray, endpoint() as b:
        session.set_remote(Side.A, *a.address)
        session.set_remote(Side.B, *b.address)
        stray.send(rtp(66), relay_addr(session, Side.A))  # gets in first and latches
        await b.receive()
        a.send(rtp(1), relay_addr(session, Side.A))  # the party its SDP announced
        assert (await b.receive())[0] == rtp(1)
        b.send(rtp(2), relay_addr(session, Side.B))
        assert (await a.receive())[0] == rtp(2)
        await stray.expect_nothing(0.05)


@pytest.mark.asyncio
async def test_new_sdp_forgets_the_latch(session: MediaSession) -> None:
    async with endpoint() as a_old, endpoint() as a_new, endpoint() as b:
        session.set_remote(Side.A, *a_old.address)
        session.set_remote(Side.B, *b.address)
        a_old.send(rtp(1), relay_addr(session, Side.A))
        await b.receive()
        session.set_remote(Side.A, *a_new.address)  # re-INVITE with a new address
        b.send(rtp(2), relay_addr(session, Side.B))
        assert (await a_new.receive())[0] == rtp(2)
        await a_old.expect_nothing(0.05)


@pytest.mark.asyncio
async def test_rtcp_goes_to_the_latched_rtp_host_port_plus_one_before_rtcp_latches(
    session: MediaSession,
) -> None:
    async with endpoint_pair() as (a_rtp, a_rtcp), endpoint() as b_rtp:
        session.set_remote(Side.B, *b_rtp.address)
        a_rtp.send(rtp(1), relay_addr(session, Side.A))  # A's SDP is unknown; RTP latches
        await b_rtp.receive()
        async with endpoint(b_rtp.address[1] + 1) as b_rtcp:
            b_rtcp.send(RTCP_RR, relay_addr(session, Side.B, rtcp=True))
            assert (await a_rtcp.receive())[0] == RTCP_RR


@pytest.mark.asyncio
async def test_rtcp_follows_an_rfc3605_rtcp_attribute(session: MediaSession) -> None:
    async with endpoint() as a_rtp, endpoint() as a_rtcp, endpoint() as b_rtcp:
        body = (
            f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
            f"m=audio {a_rtp.address[1]} RTP/AVP 0\r\na=rtcp:{a_rtcp.address[1]}\r\n"
        )
        stream = audio_stream(parse_sdp(body))
        assert stream is not None
        session.apply_sdp(Side.A, stream)
        b_rtcp.send(RTCP_RR, relay_addr(session, Side.B, rtcp=True))
        assert (await a_rtcp.receive())[0] == RTCP_RR


@pytest.mark.asyncio
async def test_party_on_hold_is_not_sent_media(session: MediaSession) -> None:
    async with endpoint() as a, endpoint() as b:
        session.set_remote(Side.A, *a.address, Direction.SENDONLY)  # A put the call on hold
        session.set_remote(Side.B, *b.address, Direction.RECVONLY)
        a.send(rtp(1), relay_addr(session, Side.A))  # music on hold still reaches B
        await b.receive()
        b.send(rtp(2), relay_addr(session, Side.B))
        await a.expect_nothing()
        assert session.stats(Side.B).rtp_dropped == 1
        session.set_remote(Side.A, *a.address, Direction.SENDRECV)  # resumed
        b.send(rtp(3), relay_addr(session, Side.B))
        assert (await a.receive())[0] == rtp(3)


@pytest.mark.asyncio
async def test_hold_with_null_address_sends_nothing(session: MediaSession) -> None:
    async with endpoint() as b:
        session.set_remote(Side.A, None, 0)  # c=0.0.0.0
        session.set_remote(Side.B, *b.address)
        b.send(rtp(1), relay_addr(session, Side.B))
        await until(lambda: session.stats(Side.B).rtp_dropped == 1)


# --- inactivity, taps, one-legged sessions, close ---------------------------------------------


@pytest.mark.asyncio
async def test_silent_party_triggers_the_inactivity_callback_once(pool: PortPool) -> None:
    fired: list[tuple[Side, float]] = []
    loop = asyncio.get_running_loop()
    s = await MediaSession.open(
        pool,
        HOST,
        inactivity_seconds=0.3,
        on_inactive=lambda side: fired.append((side, loop.time())),
    )
    started = loop.time()
    try:
        async with endpoint() as a, endpoint() as b:
            s.set_remote(Side.A, *a.address)
            s.set_remote(Side.B, *b.address)
            # A keeps talking for 0.8 s; B says nothing at all.
            for seq in range(40):
                a.send(rtp(seq), relay_addr(s, Side.A))
                await asyncio.sleep(0.02)
            assert [side for side, _ in fired] == [Side.B]
            assert 0.3 <= fired[0][1] - started < 0.9
            # B speaks again: re-armed, and fires again once it is quiet again.
            b.send(rtp(1), relay_addr(s, Side.B))
            await asyncio.sleep(0.6)
            # A stopped at 0.8 s too, so both fire now, in either order.
            assert sorted(side.value for side, _ in fired) == ["a", "b", "b"]
    finally:
        s.close()


@pytest.mark.asyncio
async def test_silence_is_measured_again_from_restart_silence(pool: PortPool) -> None:
    clock = FakeClock()
    fired: list[Side] = []
    s = await MediaSession.open(
        pool,
        HOST,
        inactivity_seconds=10.0,
        on_inactive=fired.append,
        tick_seconds=0.01,
        clock=clock.monotonic,
    )
    try:
        s.set_remote(Side.A, HOST, 9, Direction.INACTIVE)  # not expected to send
        s.set_remote(Side.B, HOST, 9)
        clock.advance(10.0)
        await asyncio.sleep(0.05)  # a few ticks of the session's timer
        assert fired == [Side.B]  # reported once ...
        clock.advance(30.0)
        await asyncio.sleep(0.05)
        assert fired == [Side.B]  # ... and not again while the silence lasts
        s.restart_silence(Side.B)  # the call was answered: silence counts from now
        clock.advance(9.0)
        await asyncio.sleep(0.05)
        assert fired == [Side.B]
        clock.advance(1.0)
        await asyncio.sleep(0.05)
        assert fired == [Side.B, Side.B]
    finally:
        s.close()


@pytest.mark.asyncio
async def test_party_that_declared_it_does_not_send_is_not_inactive(pool: PortPool) -> None:
    fired: list[Side] = []
    s = await MediaSession.open(pool, HOST, inactivity_seconds=0.2, on_inactive=fired.append)
    try:
        s.set_remote(Side.A, HOST, 9, Direction.RECVONLY)
        s.set_remote(Side.B, HOST, 9, Direction.INACTIVE)
        await asyncio.sleep(0.4)
        assert fired == []
    finally:
        s.close()


@pytest.mark.asyncio
async def test_rtcp_alone_keeps_a_held_party_active(pool: PortPool) -> None:
    fired: list[Side] = []
    s = await MediaSession.open(pool, HOST, inactivity_seconds=0.25, on_inactive=fired.append)
    try:
        async with endpoint() as a:
            s.set_remote(Side.B, HOST, 9, Direction.INACTIVE)
            for _ in range(8):
                a.send(RTCP_RR, relay_addr(s, Side.A, rtcp=True))
                await asyncio.sleep(0.06)
            assert fired == []
    finally:
        s.close()


@pytest.mark.asyncio
async def test_tap_sees_each_party_packets_with_arrival_time(session: MediaSession) -> None:
    taps: dict[Side, collections.deque[tuple[float, bytes]]] = {
        side: collections.deque() for side in Side
    }
    for side in Side:
        session.set_tap(side, taps[side].append)
    loop = asyncio.get_running_loop()
    async with endpoint() as a, endpoint() as b:
        session.set_remote(Side.A, *a.address)
        session.set_remote(Side.B, *b.address)
        before = loop.time()
        a.send(rtp(1), relay_addr(session, Side.A))
        await b.receive()
        b.send(rtp(2), relay_addr(session, Side.B))
        await a.receive()
    assert [d for _, d in taps[Side.A]] == [rtp(1)]
    assert [d for _, d in taps[Side.B]] == [rtp(2)]
    assert before <= taps[Side.A][0][0] <= loop.time()
    session.set_tap(Side.A, None)


@pytest.mark.asyncio
async def test_one_legged_session_sends_generated_packets_and_drops_incoming(
    pool: PortPool,
) -> None:
    s = await MediaSession.open(pool, HOST, sides=(Side.A,))
    try:
        assert pool.in_use == 1
        async with endpoint() as a:
            assert not s.a.send_rtp(rtp(0))  # no destination yet
            s.set_remote(Side.A, *a.address)
            assert s.a.send_rtp(rtp(1))
            assert (await a.receive()) == (rtp(1), relay_addr(s, Side.A))
            a.send(rtp(2), relay_addr(s, Side.A))
            await until(lambda: s.stats(Side.A).rtp_dropped == 1)
            assert s.stats(Side.A).rtp_received == 1
    finally:
        s.close()
    assert pool.in_use == 0


@pytest.mark.asyncio
async def test_close_releases_ports_and_sockets(pool: PortPool) -> None:
    s = await MediaSession.open(pool, HOST)
    ports = [s.a.port, s.a.rtcp_port, s.b.port, s.b.rtcp_port]
    assert pool.in_use == 2
    s.close()
    s.close()  # idempotent
    assert pool.in_use == 0
    for port in ports:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind((HOST, port))
        finally:
            probe.close()


@pytest.mark.asyncio
async def test_async_context_manager_closes(pool: PortPool) -> None:
    async with await MediaSession.open(pool, HOST) as s:
        assert pool.in_use == 2
    assert s.closed
    assert pool.in_use == 0


@pytest.mark.asyncio
async def test_session_survives_icmp_errors_from_a_vanished_party(session: MediaSession) -> None:
    async with endpoint() as b:
        vanished: Endpoint
        async with endpoint() as vanished:
            addr = vanished.address
        session.set_remote(Side.A, *addr)  # nobody listens there any more
        session.set_remote(Side.B, *b.address)
        for seq in range(3):
            b.send(rtp(seq), relay_addr(session, Side.B))
            await asyncio.sleep(0.02)
        assert session.stats(Side.B).rtp_relayed == 3
        async with endpoint() as a:
            a.send(rtp(9), relay_addr(session, Side.A))
            assert (await b.receive())[0] == rtp(9)


# --- UdpEndpoint: the relay's own socket reading (issue #21) ---------------------------------


class _Recorder(asyncio.DatagramProtocol):
    def __init__(self, expect: int = 1, fail: bool = False) -> None:
        self.received: list[bytes] = []
        self.errors: list[Exception] = []
        self.expect = expect
        self.done = asyncio.Event()  # set once ``expect`` datagrams have arrived
        self.fail = fail

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        if len(self.received) == self.expect:
            self.done.set()
        if self.fail:
            raise RuntimeError("protocol bug")

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


def _bound(sock_type: type[socket.socket] = socket.socket) -> socket.socket:
    sock = sock_type(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind((HOST, 0))
    return sock


@pytest.mark.asyncio
async def test_an_endpoint_reads_every_queued_datagram_in_order() -> None:
    # One recvfrom per readiness: the readiness is level-triggered, so datagrams queued
    # together are all read, one loop turn each.
    loop = asyncio.get_running_loop()
    protocol = _Recorder(expect=5)
    sock = _bound()
    end = UdpEndpoint(loop, sock, protocol)
    sender = _bound()
    try:
        for seq in range(5):
            sender.sendto(rtp(seq), sock.getsockname())
        async with asyncio.timeout(2):
            await protocol.done.wait()
        assert protocol.received == [rtp(seq) for seq in range(5)]
        assert not end.is_closing()
    finally:
        end.close()
        sender.close()
    assert sock.fileno() == -1  # closed with the endpoint


@pytest.mark.asyncio
async def test_a_failing_protocol_is_reported_once_and_its_socket_closed() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    was_reported = asyncio.Event()

    def handler(_loop: object, context: dict[str, object]) -> None:
        reported.append(context)
        was_reported.set()

    loop.set_exception_handler(handler)
    protocol = _Recorder(fail=True)
    sock = _bound()
    address = sock.getsockname()
    end = UdpEndpoint(loop, sock, protocol)
    sender = _bound()
    try:
        for seq in range(3):
            sender.sendto(rtp(seq), address)
        async with asyncio.timeout(2):
            await was_reported.wait()
        # Closed in the same step: its reader is gone, so nothing more is read.
        assert end.is_closing()
        assert sock.fileno() == -1
        assert len(protocol.received) == 1
        assert len(reported) == 1
        assert isinstance(reported[0]["exception"], RuntimeError)
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(address)  # the port is free again
        finally:
            probe.close()
    finally:
        loop.set_exception_handler(None)
        end.close()
        sender.close()


class _FullSocket(socket.socket):
    """A socket whose send buffer is always full, or whose sends fail (``error``)."""

    error: OSError = BlockingIOError()

    def sendto(self, *args: object) -> int:
        raise self.error


@pytest.mark.asyncio
async def test_an_endpoint_drops_what_the_kernel_will_not_take_and_reports_other_errors() -> None:
    loop = asyncio.get_running_loop()
    protocol = _Recorder()
    sock = _bound(_FullSocket)
    end = UdpEndpoint(loop, sock, protocol)
    try:
        end.sendto(rtp(1), (HOST, 9))  # a full send buffer: lost, nothing raised or queued
        assert protocol.errors == []
        refused = ConnectionRefusedError()
        _FullSocket.error = refused
        end.sendto(rtp(2), (HOST, 9))
        assert protocol.errors == [refused]
    finally:
        _FullSocket.error = BlockingIOError()
        end.close()
