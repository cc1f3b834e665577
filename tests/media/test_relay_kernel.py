"""The relay's kernel fast path with real nftables on loopback (``[media] kernel_forwarding``).

The tests run as root (as the test command does here): they load a private table per test
process, named after its pid, and remove it at the end. Phones sit on 127.0.0.2 and 127.0.0.3
and the relay on 127.0.0.1, so what arrives from the kernel shows both rewritten ports and
the rewritten source address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from pbx.media.kernel import KernelForwarder
from pbx.media.relay import MediaSession, PortPool, Side
from pbx.media.rtp import RtpPacket
from tests.media.udp import HOST, TEST_PORTS, Endpoint, until

PHONE_A, PHONE_B = "127.0.0.2", "127.0.0.3"

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="loading nftables tables needs root"),
]


def rtp(seq: int) -> bytes:
    return bytes(RtpPacket(0, seq, seq * 160, 0x1234, b"\xff" * 160))


@contextlib.asynccontextmanager
async def phone(host: str) -> AsyncIterator[Endpoint]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Endpoint, local_addr=(host, 0))
    try:
        yield protocol
    finally:
        transport.close()


def table_exists(name: str) -> bool:
    result = subprocess.run(["nft", "list", "table", "ip", name], capture_output=True)
    return result.returncode == 0


@pytest_asyncio.fixture
async def kernel() -> AsyncIterator[KernelForwarder]:
    forwarder = KernelForwarder(asyncio.get_running_loop(), poll_seconds=0.2)
    forwarder.start()
    try:
        async with asyncio.timeout(10):
            assert await forwarder.started(), "nft did not load the table"
        yield forwarder
    finally:
        forwarder.close()
    assert not table_exists(forwarder.table)


@contextlib.asynccontextmanager
async def relayed_call(
    kernel: KernelForwarder, **options: Any
) -> AsyncIterator[tuple[MediaSession, Endpoint, Endpoint]]:
    """A session with its kernel path, and two phones it relays between; closed on exit."""
    pool = PortPool(*TEST_PORTS)
    session = MediaSession.open_now(pool, HOST, tick_seconds=0.05, kernel=kernel, **options)
    try:
        async with phone(PHONE_A) as a, phone(PHONE_B) as b:
            session.set_remote(Side.A, *a.address)
            session.set_remote(Side.B, *b.address)
            yield session, a, b
    finally:
        session.close()
        await kernel.settled()


@pytest_asyncio.fixture
async def call(
    kernel: KernelForwarder,
) -> AsyncIterator[tuple[MediaSession, Endpoint, Endpoint]]:
    async with relayed_call(kernel) as parties:
        yield parties
    assert not kernel.flows.installed


async def talk(session: MediaSession, a: Endpoint, b: Endpoint, seq: int) -> None:
    """One packet each way, and both received."""
    a.send(rtp(seq), (HOST, session.a.port))
    b.send(rtp(seq), (HOST, session.b.port))
    await b.receive()
    await a.receive()


def both_in_kernel(session: MediaSession) -> bool:
    return session.a.rtp.offloaded and session.b.rtp.offloaded


async def in_kernel(
    session: MediaSession, a: Endpoint, b: Endpoint, kernel: KernelForwarder
) -> int:
    """Talk until both RTP channels are in the kernel; the next sequence number."""
    seq = 0
    async with asyncio.timeout(10):
        while not both_in_kernel(session):
            await talk(session, a, b, seq)
            seq += 1
            await asyncio.sleep(0.02)  # a phone's pace: the relay's tick sees the channel move
    await kernel.settled()
    return seq


async def test_latched_calls_are_forwarded_by_the_kernel_with_our_addresses(
    call: tuple[MediaSession, Endpoint, Endpoint], kernel: KernelForwarder
) -> None:
    session, a, b = call
    seq = await in_kernel(session, a, b, kernel)
    b.drain()
    a.drain()
    read_by_relay = session.a.rtp.received, session.b.rtp.received
    for n in range(seq, seq + 20):
        await talk(session, a, b, n)
    # What arrives comes from the relay's other port and address, as the relay's own would.
    a.send(rtp(seq + 20), (HOST, session.a.port))
    data, source = await b.receive()
    assert data == rtp(seq + 20)
    assert source == (HOST, session.b.port)
    b.send(rtp(seq + 20), (HOST, session.b.port))
    assert await a.receive() == (rtp(seq + 20), (HOST, session.a.port))
    # The relay read none of them, and counts them all once the kernel's counters are read.
    assert (session.a.rtp.received, session.b.rtp.received) == read_by_relay
    await kernel.poll_now()
    stats = session.stats(Side.A)
    assert stats.rtp_received == stats.rtp_relayed == seq + 21
    assert session.a.rtp.kernel_received >= 21
    assert stats.rtp_lost == 0
    assert kernel.rtp_forwarded >= 42


async def test_rtcp_stays_with_the_relay(
    call: tuple[MediaSession, Endpoint, Endpoint], kernel: KernelForwarder
) -> None:
    session, a, b = call
    await in_kernel(session, a, b, kernel)
    assert set(kernel.flows.installed) == {session.a.port, session.b.port}
    report = bytes([0x80, 201, 0, 1]) + (0x1234).to_bytes(4, "big")
    async with phone(PHONE_A) as a_rtcp:
        for n in range(1, 11):  # over several of the relay's ticks: each is read here
            a_rtcp.send(report, (HOST, session.a.rtcp_port))
            await until(lambda n=n: session.a.rtcp.received == n)  # type: ignore[misc]
            await asyncio.sleep(0.03)
            assert session.a.rtcp_port not in kernel.flows.wanted
    assert session.a.rtcp.relayed == 10


async def exchange(session: MediaSession, a: Endpoint, b: Endpoint, seqs: range) -> None:
    """A sends each packet of ``seqs`` in turn, B each back; each arrives once, in order, from
    the relay's ports (a duplicate would arrive before the next packet)."""
    for n in seqs:
        a.send(rtp(n), (HOST, session.a.port))
        assert await b.receive() == (rtp(n), (HOST, session.b.port))
        b.send(rtp(n), (HOST, session.b.port))
        assert await a.receive() == (rtp(n), (HOST, session.a.port))


async def test_a_recorded_call_stays_in_the_kernel_which_copies_each_packet_for_the_tap(
    call: tuple[MediaSession, Endpoint, Endpoint], kernel: KernelForwarder
) -> None:
    session, a, b = call
    seq = await in_kernel(session, a, b, kernel)
    tapped: list[tuple[float, bytes]] = []
    session.set_tap(Side.A, tapped.append)
    await kernel.settled()
    installed = kernel.flows.installed
    assert installed[session.a.port].copy
    assert not installed[session.b.port].copy
    assert both_in_kernel(session)
    read_by_relay = session.b.rtp.received
    await exchange(session, a, b, range(seq, seq + 20))
    # The tap got each of A's packets once, through the kernel's copies; none was sent twice.
    await until(lambda: len(tapped) == 20)
    assert [packet for _, packet in tapped] == [rtp(n) for n in range(seq, seq + 20)]
    await b.expect_nothing(0.05)
    assert session.b.rtp.received == read_by_relay  # B's packets: forwarded, not copied
    # A packet sent to the copies' port from outside, even from A's address and the port that
    # says "A's call", is dropped: it does not go into the recording.
    assert kernel.copies_port is not None
    async with phone(PHONE_A) as forger:
        forger.send(rtp(9999), (HOST, kernel.copies_port))
        await exchange(session, a, b, range(seq + 20, seq + 21))  # after it, in order
    forged = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        forged.bind((PHONE_A, session.a.port))
        forged.sendto(rtp(9999), (HOST, kernel.copies_port))
        await exchange(session, a, b, range(seq + 21, seq + 22))
    finally:
        forged.close()
    await until(lambda: len(tapped) == 22)
    assert rtp(9999) not in [packet for _, packet in tapped]
    await kernel.poll_now()
    stats = session.stats(Side.A)
    assert stats.rtp_received == stats.rtp_relayed == seq + 22  # copies not counted twice
    assert stats.rtp_lost == 0
    assert session.stats(Side.B).rtp_received == seq + 22
    assert kernel.rtp_copied >= 22
    # The recording stops: the flow goes on in the kernel without copies (it may have come
    # back meanwhile, silent between two listings: then it returns to the kernel, uncopied).
    session.set_tap(Side.A, None)
    seq += 22
    async with asyncio.timeout(10):
        while not (both_in_kernel(session) and kernel.flows.wanted[session.a.port].copy is False):
            await talk(session, a, b, seq)
            seq += 1
            await asyncio.sleep(0.02)
    await kernel.settled()
    await exchange(session, a, b, range(seq, seq + 10))
    assert len(tapped) == 22
    await kernel.poll_now()
    stats = session.stats(Side.A)
    assert stats.rtp_received == stats.rtp_relayed == seq + 10
    assert stats.rtp_lost == 0


async def test_copies_still_on_their_way_when_a_recorded_flow_comes_back_are_not_sent_again(
    call: tuple[MediaSession, Endpoint, Endpoint], kernel: KernelForwarder
) -> None:
    session, a, b = call
    tapped: list[tuple[float, bytes]] = []
    session.set_tap(Side.A, tapped.append)
    seq = await in_kernel(session, a, b, kernel)
    assert kernel.flows.installed[session.a.port].copy
    # A burst the kernel forwards and copies, and at once a re-INVITE takes the call back:
    # the relay reads the copies after it stopped being offloaded.
    for n in range(seq, seq + 10):
        a.send(rtp(n), (HOST, session.a.port))
    session.set_remote(Side.A, *a.address)
    assert not session.a.rtp.offloaded
    for n in range(seq, seq + 10):
        assert await b.receive() == (rtp(n), (HOST, session.b.port))
    await until(lambda: len(tapped) == seq + 10)
    await b.expect_nothing(0.05)
    assert [packet for _, packet in tapped] == [rtp(n) for n in range(seq + 10)]
    await kernel.settled()
    # Back with the relay: it forwards what A sends from now on, and records it.
    a.send(rtp(seq + 10), (HOST, session.a.port))
    assert await b.receive() == (rtp(seq + 10), (HOST, session.b.port))
    await until(lambda: len(tapped) == seq + 11)


async def test_a_flow_that_falls_silent_comes_back_to_the_relay(
    call: tuple[MediaSession, Endpoint, Endpoint], kernel: KernelForwarder
) -> None:
    session, a, b = call
    await in_kernel(session, a, b, kernel)
    # A stops; B goes on. Two listings without a packet from A: A's flow is handed back.
    async with asyncio.timeout(5):
        n = 1000
        while session.a.rtp.offloaded:
            b.send(rtp(n), (HOST, session.b.port))
            n += 1
            await asyncio.sleep(0.02)
    assert session.b.rtp.offloaded
    await kernel.settled()
    assert set(kernel.flows.installed) == {session.b.port}


async def test_a_stray_source_cannot_take_a_channel_the_kernel_forwards(
    call: tuple[MediaSession, Endpoint, Endpoint], kernel: KernelForwarder
) -> None:
    session, a, b = call
    seq = await in_kernel(session, a, b, kernel)
    latched = session.a.rtp.source
    async with phone(PHONE_A) as stray:
        for n in range(5):
            stray.send(rtp(5000 + n), (HOST, session.a.port))
        await until(lambda: session.a.rtp.rejected == 5)
    await b.expect_nothing()
    assert session.a.rtp.source == latched
    await talk(session, a, b, seq)


async def test_a_new_sdp_takes_the_call_back_before_anything_goes_to_the_old_address(
    call: tuple[MediaSession, Endpoint, Endpoint], kernel: KernelForwarder
) -> None:
    session, a, b = call
    seq = await in_kernel(session, a, b, kernel)
    async with phone(PHONE_B) as moved:  # a re-INVITE: B's media now comes from elsewhere
        session.set_remote(Side.B, *moved.address)
        assert not session.a.rtp.offloaded  # the relay reads A's packets again at once
        await kernel.settled()
        # A may be handed over again at once (the kernel's last count of it makes it active
        # in the next tick), but only towards B's new address.
        assert session.b.port not in kernel.flows.installed
        assert all(flow.dest == moved.address for flow in kernel.flows.installed.values())
        a.send(rtp(seq), (HOST, session.a.port))
        assert await moved.receive() == (rtp(seq), (HOST, session.b.port))
        await b.expect_nothing()
        # Once the new party sends too, the call goes back to the kernel, to the new address.
        async with asyncio.timeout(10):
            while not both_in_kernel(session):
                seq += 1
                a.send(rtp(seq), (HOST, session.a.port))
                moved.send(rtp(seq), (HOST, session.b.port))
                await moved.receive()
                await a.receive()
                await asyncio.sleep(0.02)
        await kernel.settled()
        a.send(rtp(seq + 1), (HOST, session.a.port))
        assert await moved.receive() == (rtp(seq + 1), (HOST, session.b.port))
        await b.expect_nothing()
        session.set_remote(Side.B, *b.address)  # before the socket closes


async def test_a_party_that_stops_sending_in_the_kernel_is_reported_inactive(
    kernel: KernelForwarder,
) -> None:
    inactive: list[Side] = []
    options = {"inactivity_seconds": 1.0, "on_inactive": inactive.append}
    async with relayed_call(kernel, **options) as (session, a, b):
        seq = await in_kernel(session, a, b, kernel)
        # A's last packet, through the kernel; then A falls silent and B goes on through the
        # kernel, past the inactivity time.
        a.send(rtp(seq), (HOST, session.a.port))
        await b.receive()
        loop = asyncio.get_running_loop()
        silent_from = loop.time()
        async with asyncio.timeout(10):
            n = 1000
            while Side.A not in inactive:
                b.send(rtp(n), (HOST, session.b.port))
                n += 1
                await asyncio.sleep(0.02)
        # Silence is counted from the tick that saw A's last packet counted, which a listing
        # may credit a moment before ``silent_from``: within one tick (0.05 s).
        assert loop.time() - silent_from >= 1.0 - 0.05
        assert inactive == [Side.A]  # B's packets, counted from the kernel, keep B active
        assert session.b.rtp.offloaded


async def test_without_nft_the_relay_stays_in_user_space() -> None:
    loop = asyncio.get_running_loop()
    forwarder = KernelForwarder(loop, nft="/nonexistent/nft", table="pbx_relay_test_missing")
    forwarder.start()
    async with asyncio.timeout(5):
        assert not await forwarder.started()
    assert forwarder.ended
    try:
        async with relayed_call(forwarder) as (session, a, b):
            for n in range(10):
                await talk(session, a, b, n)
                await asyncio.sleep(0.02)
            assert session.a.rtp.received == 10
            assert not session.a.rtp.offloaded
    finally:
        forwarder.close()


async def test_when_nft_refuses_the_table_the_copies_socket_is_closed(tmp_path: Path) -> None:
    # An nft that lists tables but refuses to load ours (as without CAP_NET_ADMIN).
    nft = tmp_path / "nft"
    nft.write_text(
        '#!/bin/sh\nif [ "$1" = "-j" ]; then echo \'{"nftables": []}\'; exit 0; fi\n'
        'echo "Operation not permitted" >&2\nexit 1\n'
    )
    nft.chmod(0o755)
    forwarder = KernelForwarder(asyncio.get_running_loop(), nft=str(nft), table="pbx_relay_t")
    forwarder.start()
    try:
        async with asyncio.timeout(5):
            assert not await forwarder.started()
        assert forwarder.copies_port is None  # not left bound on every address
    finally:
        forwarder.close()
