"""Port parking (issue #21): closed sessions' bound pairs are reused after a quarantine."""

from __future__ import annotations

import errno
import socket

import pytest
from structlog.testing import capture_logs

from pbx.clock import FakeClock
from pbx.config.model import MediaSettings
from pbx.media.calls import CallMedia
from pbx.media.relay import MediaSession, PortPool, PortPoolExhausted, Side
from pbx.media.rtp import RtpPacket
from tests.media.udp import HOST, endpoint

pytestmark = pytest.mark.asyncio


def rtp(seq: int) -> bytes:
    return bytes(RtpPacket(0, seq, seq * 160, 0x1234, b"\xff" * 160))


def binds(port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((HOST, port))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def parking_pool(first: int, last: int, clock: FakeClock, **options: float) -> PortPool:
    """A pool that parks whatever the load (``park_min_rate=0``), on a fake clock."""
    options = {"park_limit": 8, "park_min_rate": 0, **options}
    return PortPool(first, last, clock=clock.monotonic, **options)  # type: ignore[arg-type]


async def open_session(pool: PortPool, clock: FakeClock) -> MediaSession:
    return await MediaSession.open(pool, HOST, clock=clock.monotonic)


async def test_a_closed_session_parks_its_pairs_and_they_drop_and_count_what_arrives() -> None:
    clock = FakeClock()
    pool = parking_pool(31300, 31319, clock)
    s = await open_session(pool, clock)
    ports = [s.a.port, s.a.rtcp_port, s.b.port, s.b.rtcp_port]
    async with endpoint() as a, endpoint() as b:
        s.set_remote(Side.A, *a.address)
        s.set_remote(Side.B, *b.address)
        a.send(rtp(1), (HOST, s.a.port))
        await b.receive()
        s.close()
        assert (pool.in_use, pool.parked, pool.available) == (0, 2, 10)
        assert not any(binds(port) for port in ports)  # still bound: parked, not closed
        # A late packet of the old call, on RTP and on RTCP: dropped and counted, not relayed.
        a.send(rtp(2), (HOST, ports[0]))
        a.send(b"\x80\xc9\x00\x01rtcp", (HOST, ports[1]))
        await b.expect_nothing()
        assert pool.parked_dropped == 2
        assert s.stats(Side.A).rtp_received == 1  # the closed session saw none of it
        assert not s.a.send_rtp(rtp(3))  # a prompt of the closed call cannot leave either
    pool.close_parked()
    assert all(binds(port) for port in ports)


async def test_a_parked_pair_is_reused_only_after_its_quarantine_and_then_relays() -> None:
    clock = FakeClock()
    pool = parking_pool(31320, 31339, clock, quarantine_seconds=2.0)
    first = await open_session(pool, clock)
    parked = {first.a.port, first.b.port}
    first.close()
    clock.advance(1.9)  # within the quarantine: cold ports
    second = await open_session(pool, clock)
    assert {second.a.port, second.b.port}.isdisjoint(parked)
    second.close()
    clock.advance(0.1)  # the first pairs' quarantine is over (the second's is not)
    third = await open_session(pool, clock)
    try:
        assert {third.a.port, third.b.port} == parked
        assert pool.parked == 2
        async with endpoint() as a, endpoint() as b, endpoint() as b_rtcp:
            third.set_remote(Side.A, *a.address)
            third.set_remote(Side.B, *b.address, rtcp=b_rtcp.address)
            a.send(rtp(1), (HOST, third.a.port))
            assert (await b.receive())[0] == rtp(1)
            # Relayed through the parked RTCP sockets to B's declared RTCP address (B has not
            # sent yet, so nothing of B's is latched).
            report = b"\x80\xc9\x00\x01rtcp"
            a.send(report, (HOST, third.a.rtcp_port))
            assert await b_rtcp.receive() == (report, (HOST, third.b.rtcp_port))
            b.send(rtp(7), (HOST, third.b.port))
            assert (await a.receive())[0] == rtp(7)
            stats = third.stats(Side.A)
            assert (stats.rtcp_received, stats.rtcp_relayed) == (1, 1)
        assert pool.parked_dropped == 0
    finally:
        third.close()
        pool.close_parked()


async def test_parking_keeps_at_most_park_limit_pairs_and_closes_the_rest() -> None:
    clock = FakeClock()
    pool = parking_pool(31340, 31359, clock, park_limit=1)
    s = await open_session(pool, clock)
    a_port, b_port = s.a.port, s.b.port
    s.close()
    assert pool.parked == 1
    assert not binds(a_port)  # parked
    assert binds(b_port)  # no room: closed, as without parking
    pool.close_parked()


async def test_a_full_pool_reuses_parked_pairs_within_their_quarantine() -> None:
    clock = FakeClock()
    pool = parking_pool(31360, 31363, clock)  # two pairs: one session
    s = await open_session(pool, clock)
    s.close()
    # No cold port is left: the pool without parking would hand out these ports again too.
    again = await open_session(pool, clock)
    assert {again.a.port, again.b.port} == {31360, 31362}
    assert pool.in_use == 2
    with pytest.raises(PortPoolExhausted):
        await open_session(pool, clock)
    again.close()
    assert (pool.in_use, pool.parked) == (0, 2)
    pool.close_parked()
    assert (pool.in_use, pool.parked, pool.available) == (0, 0, 2)


async def test_a_parked_pair_bound_otherwise_is_closed_not_reused() -> None:
    clock = FakeClock()
    pool = parking_pool(31364, 31371, clock, quarantine_seconds=0.0)
    s = await open_session(pool, clock)
    s.close()
    other = await MediaSession.open(pool, HOST, clock=clock.monotonic, rcvbuf=1 << 16)
    try:
        assert pool.parked == 0  # both parked pairs were bound without that buffer size
        assert {other.a.port, other.b.port}.isdisjoint({31364, 31366})
    finally:
        other.close()
        pool.close_parked()


async def test_a_pool_without_parking_closes_everything_as_before() -> None:
    pool = PortPool(31372, 31379)
    s = await MediaSession.open(pool, HOST)
    ports = [s.a.port, s.b.port]
    s.close()
    assert pool.parked == 0
    assert all(binds(port) for port in ports)


async def test_a_quiet_pool_does_not_park_and_a_busy_one_does() -> None:
    clock = FakeClock()
    pool = PortPool(31380, 31399, park_limit=8, park_min_rate=6, clock=clock.monotonic)
    s = await open_session(pool, clock)  # 2 pairs taken this second: quiet
    s.close()
    assert pool.parked == 0
    busy = [await open_session(pool, clock) for _ in range(2)]  # 6 pairs this second
    clock.advance(1.5)  # the window just ended still counts
    busy[0].close()
    assert pool.parked == 2
    clock.advance(1.0)  # nothing taken for over a second: quiet again
    busy[1].close()
    assert pool.parked == 2
    pool.close_parked()


async def test_pairs_not_reused_within_quarantine_and_linger_are_closed() -> None:
    clock = FakeClock()
    pool = parking_pool(31400, 31419, clock, quarantine_seconds=2.0, linger_seconds=1.0)
    first = await open_session(pool, clock)
    first_ports = [first.a.port, first.b.port]
    first.close()
    clock.advance(1.0)
    second = await open_session(pool, clock)
    second_ports = [second.a.port, second.b.port]
    second.close()
    clock.advance(2.0)  # the first pairs' quarantine and linger are over, not the second's
    pool.sweep()
    assert pool.parked == 2
    assert all(binds(port) for port in first_ports)
    assert not any(binds(port) for port in second_ports)
    pool.close_parked()


async def test_call_media_parks_under_load_and_closes_the_parked_pairs_on_close() -> None:
    clock = FakeClock()
    media = CallMedia(clock.monotonic)
    settings = MediaSettings(rtp_port_min=31500, rtp_port_max=31899)
    ports = [await media.open(f"c{i}", settings, HOST, lambda side: None) for i in range(12)]
    for i in range(12):  # 24 pairs taken within a second: parked
        media.release(f"c{i}")
    assert media.ports_in_use == 0
    assert not any(binds(port) for pair in ports for port in pair)
    media.close()
    assert all(binds(port) for pair in ports for port in pair)


async def test_a_busy_last_cold_port_falls_back_to_a_parked_pair_within_its_quarantine() -> None:
    # Three pairs: one session parks two, another process holds the third. Binding that last
    # cold port fails, so the session takes the parked pairs at once rather than retrying the
    # same busy port until it gives up (the 503 "no media ports" seen under load).
    clock = FakeClock()
    pool = parking_pool(31420, 31425, clock, quarantine_seconds=2.0)
    first = await open_session(pool, clock)
    parked = {first.a.port, first.b.port}
    first.close()
    (held_port,) = {31420, 31422, 31424} - parked
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        holder.bind((HOST, held_port))
        again = await open_session(pool, clock)
        try:
            assert {again.a.port, again.b.port} == parked
            assert (pool.in_use, pool.parked) == (2, 0)
        finally:
            again.close()
    finally:
        holder.close()
        pool.close_parked()
    assert pool.in_use == 0


async def test_a_port_whose_bind_fails_is_tried_once_per_pair_not_again_and_again() -> None:
    # Without parking: the only free pair is held by another process. The session fails at
    # once with the bind error, having tried that port once: set aside, it is the only port
    # left, so it is handed out early, met again, and given back (it stays in the pool).
    pool = PortPool(31426, 31427)
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tried: list[int] = []
    allocate = pool.allocate

    def counting_allocate() -> int:
        port = allocate()
        tried.append(port)
        return port

    pool.allocate = counting_allocate  # type: ignore[method-assign]
    try:
        holder.bind((HOST, 31426))
        with pytest.raises(OSError, match="in use") as raised:
            await MediaSession.open(pool, HOST)
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        holder.close()
    assert tried == [31426, 31426]  # tried, set aside, the only one left, met again: stop
    assert (pool.in_use, pool.available, pool.set_aside_count) == (0, 1, 0)


async def test_a_set_aside_port_returns_after_busy_seconds_or_when_nothing_else_is_left() -> None:
    clock = FakeClock()
    pool = PortPool(31470, 31473, busy_seconds=60.0, clock=clock.monotonic)
    busy = pool.allocate()
    pool.set_aside(busy)
    assert (pool.available, pool.set_aside_count) == (1, 1)
    other = pool.allocate()
    assert other != busy
    pool.release(other)
    assert pool.allocate() == other  # the set-aside port is not offered while others are
    pool.release(other)
    clock.advance(60.0)
    assert pool.allocate() == other  # due again: to the back of the queue
    assert pool.allocate() == busy
    pool.set_aside(busy)
    assert pool.allocate() == busy  # set aside again, but nothing else is left: early
    assert (pool.in_use, pool.set_aside_count) == (2, 0)


async def test_a_busy_port_is_met_once_per_busy_seconds_not_by_every_call() -> None:
    # Given back at once, a port another process holds was met again on every round of the
    # pool: with half a range held, two failed binds and two warnings per call (issue #21).
    clock = FakeClock()
    pool = PortPool(31460, 31467, busy_seconds=60.0, clock=clock.monotonic)
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        holder.bind((HOST, 31460))
        with capture_logs() as logs:
            for _ in range(6):
                session = await MediaSession.open(pool, HOST)
                assert 31460 not in (session.a.port, session.b.port)
                session.close()
        assert [entry["port"] for entry in logs if entry["event"] == "rtp_port_busy"] == [31460]
        clock.advance(60.0)
        with capture_logs() as logs:
            for _ in range(3):
                session = await MediaSession.open(pool, HOST)
                session.close()
        assert [entry["port"] for entry in logs if entry["event"] == "rtp_port_busy"] == [31460]
    finally:
        holder.close()
    assert (pool.in_use, pool.set_aside_count) == (0, 1)


async def test_open_now_opens_at_once_parked_pairs_first_and_relays() -> None:
    clock = FakeClock()
    pool = parking_pool(31428, 31447, clock, quarantine_seconds=2.0)
    cold = MediaSession.open_now(pool, HOST, clock=clock.monotonic)  # nothing parked: bound
    first = await open_session(pool, clock)
    parked = {first.a.port, first.b.port}
    first.close()
    clock.advance(1.9)
    early = MediaSession.open_now(pool, HOST, clock=clock.monotonic)  # in quarantine: cold
    assert not {early.a.port, early.b.port} & parked
    assert pool.parked == 2
    clock.advance(0.1)
    now = MediaSession.open_now(pool, HOST, clock=clock.monotonic)
    try:
        assert {now.a.port, now.b.port} == parked
        assert (pool.in_use, pool.parked) == (6, 0)
        for session in (cold, now):
            async with endpoint() as a, endpoint() as b:
                session.set_remote(Side.A, *a.address)
                session.set_remote(Side.B, *b.address)
                a.send(rtp(1), (HOST, session.a.port))
                b.send(rtp(7), (HOST, session.b.port))
                assert (await b.receive())[0] == rtp(1)
                assert (await a.receive())[0] == rtp(7)
    finally:
        for session in (cold, early, now):
            session.close()
        pool.close_parked()


async def test_call_media_opens_at_once_and_reuses_parked_pairs_under_load() -> None:
    clock = FakeClock()
    media = CallMedia(clock.monotonic)
    settings = MediaSettings(rtp_port_min=31900, rtp_port_max=31999)
    opened = [media.open_now(f"c{i}", settings, HOST, lambda side: None) for i in range(12)]
    assert media.ports_in_use == 24
    for i in range(12):
        media.release(f"c{i}")
    clock.advance(2.0)
    ports = media.open_now("new", settings, HOST, lambda side: None)
    assert set(ports) <= {port for pair in opened for port in pair}  # parked ones, reused
    assert media.ports_in_use == 2
    media.release("new")
    media.close()


async def test_a_session_that_met_a_busy_port_is_freed_by_reference_counting() -> None:
    # The bind error was kept in a local of the frame it was raised through: error ->
    # traceback -> frame -> error, a cycle holding the session and, through its callbacks, the
    # whole call. The server freezes what survives (gc.freeze) and runs no full collection
    # under load, so every call that met a busy port (one held by another process) stayed in
    # memory: about 27 KB a call, 935 MiB per 35,000 calls (issue #21, loadtests/bench_calls).
    import gc
    import weakref

    pool = PortPool(31450, 31455)
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collecting = gc.isenabled()
    gc.disable()
    try:
        holder.bind((HOST, 31450))
        session = await MediaSession.open(pool, HOST)
        assert session.a.port == 31452  # 31450 was busy: given back, the next pair taken
        gone = weakref.ref(session)
        session.close()
        del session
        assert gone() is None  # freed at once, with no collection
    finally:
        holder.close()
        if collecting:
            gc.enable()
