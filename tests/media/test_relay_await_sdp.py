"""The call engine's relay sessions drop what a party sends before its SDP is applied (issue #18).

An SRTP callee sends its first packets as soon as it has sent its 200; the relay can read them
before the call engine has read the 200 (and the key in its SDP). Relayed then, they reached a
plain-RTP carrier still encrypted, with the 10-octet tag: the TLS + SIPp carrier test in
tests/integration/test_tls_baresip.py saw two such 182-octet packets at each answer.
"""

from __future__ import annotations

import pytest
from pylibsrtp import Policy, Session

from pbx.media.latch import Side
from pbx.media.relay import MediaSession, PortPool
from pbx.media.sdes import Crypto
from tests.media.test_relay import RTCP_RR, rtp
from tests.media.udp import HOST, TEST_PORTS, endpoint

PHONE_KEY = bytes(range(100, 130))


@pytest.mark.asyncio
async def test_an_srtp_callee_that_sends_before_its_answer_is_applied_is_not_relayed_raw() -> None:
    pool = PortPool(*TEST_PORTS)
    session = await MediaSession.open(pool, HOST, inactivity_seconds=60, await_sdp=True)
    try:
        async with endpoint() as carrier, endpoint() as phone, endpoint() as carrier_rtcp:
            session.set_remote(Side.A, *carrier.address, rtcp=carrier_rtcp.address)
            phone_tx = Session(Policy(key=PHONE_KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
            # The callee's SRTP and SRTCP arrive before its 200 (and key) has been read.
            phone.send(phone_tx.protect(rtp(1)), (HOST, session.b.port))
            phone.send(phone_tx.protect_rtcp(RTCP_RR), (HOST, session.b.rtcp_port))
            await carrier.expect_nothing()
            await carrier_rtcp.expect_nothing()
            stats = session.stats(Side.B)
            # Counted as received and dropped for want of a destination, not as a stray source.
            assert (stats.rtp_received, stats.rtp_dropped, stats.rtp_rejected) == (1, 1, 0)
            assert stats.rtp_source is None  # nothing latched either
            # Its answer is applied: from now on its packets are decrypted and relayed.
            session.set_remote(Side.B, *phone.address)
            session.set_crypto(Side.B, Crypto(1, "AES_CM_128_HMAC_SHA1_80", PHONE_KEY))
            phone.send(phone_tx.protect(rtp(2)), (HOST, session.b.port))
            data, _ = await carrier.receive()
            assert data == rtp(2)
            # The carrier's side was applied first and is plain: it was relayed all along.
            carrier.send(rtp(9), (HOST, session.a.port))
            data, _ = await phone.receive()
            assert data != rtp(9)  # encrypted toward the SRTP phone
    finally:
        session.close()
    assert pool.in_use == 0


@pytest.mark.asyncio
async def test_a_plain_party_is_relayed_once_its_sdp_is_applied() -> None:
    pool = PortPool(*TEST_PORTS)
    session = await MediaSession.open(pool, HOST, inactivity_seconds=60, await_sdp=True)
    try:
        async with endpoint() as caller, endpoint() as callee:
            session.set_remote(Side.A, *caller.address)
            callee.send(rtp(1), (HOST, session.b.port))
            await caller.expect_nothing()
            session.set_remote(Side.B, *callee.address)
            session.set_crypto(Side.B, None)  # what the call engine does for a plain answer
            callee.send(rtp(2), (HOST, session.b.port))
            data, _ = await caller.receive()
            assert data == rtp(2)
            caller.send(rtp(3), (HOST, session.a.port))
            data, _ = await callee.receive()
            assert data == rtp(3)
    finally:
        session.close()
    assert pool.in_use == 0
