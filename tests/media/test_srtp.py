"""SRTP (issue #18): SDES a=crypto lines, the anchor's per-side security, the tenant policy, and
the relay decrypting and encrypting per leg over loopback with libsrtp."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from pbx.call.encryption import call_refusal, register_refusal
from pbx.config.model import TenantConfig, TenantId
from pbx.media.anchor import MediaAnchor
from pbx.media.latch import Side
from pbx.media.relay import MediaSession, PortPool
from pbx.media.sdes import Crypto, format_crypto, parse_crypto, usable_crypto
from pbx.media.sdp import audio_stream, parse_sdp
from tests.call.bench import CallBench, invite
from tests.call.test_core import ACME
from tests.media.test_relay import RTCP_RR, rtp
from tests.media.udp import HOST, TEST_PORTS, endpoint
from tests.routing.builders import NUMBER, from_trunk, snapshot

KEY_A = bytes(range(30))
KEY_B = bytes(range(100, 130))
PHONE_KEY = bytes(range(200, 230))
INLINE = base64.b64encode(PHONE_KEY).decode()


def sdp(address: str, port: int, proto: str = "RTP/AVP", *extra: str) -> bytes:
    lines = [
        "v=0",
        f"o=x 7 7 IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} {proto} 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


SECURE = sdp("192.0.2.10", 4000, "RTP/SAVP", f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{INLINE}")
PLAIN = sdp("192.0.2.20", 6000)


# --- a=crypto ---------------------------------------------------------------------------------


def test_crypto_lines_we_can_use_and_those_we_pass_over() -> None:
    good = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}|2^31")
    assert good == Crypto(1, "AES_CM_128_HMAC_SHA1_80", PHONE_KEY)
    assert "inline" not in repr(good)  # keys never reach a log line
    assert parse_crypto(format_crypto(good)) == good
    short = base64.b64encode(PHONE_KEY[:20]).decode()
    for bad in (
        f"1 AES_256_CM_HMAC_SHA1_80 inline:{INLINE}",  # another suite
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}|2^20|1:4",  # an MKI
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}|1:4",
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE};inline:{INLINE}",  # two keys
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE} UNENCRYPTED_SRTP",  # a session parameter
        f"1 AES_CM_128_HMAC_SHA1_80 inline:{short}",  # wrong length
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!",
        f"x AES_CM_128_HMAC_SHA1_80 inline:{INLINE}",
        "",
    ):
        assert parse_crypto(bad) is None, bad
    assert usable_crypto([f"1 F8_128_HMAC_SHA1_80 inline:{INLINE}", format_crypto(good)]) == good


def test_sdp_stream_carries_the_party_key_and_unusable_srtp_is_not_active() -> None:
    stream = audio_stream(parse_sdp(SECURE))
    assert stream is not None
    assert stream.secure
    assert stream.active
    assert stream.crypto == Crypto(2, "AES_CM_128_HMAC_SHA1_32", PHONE_KEY)
    plain = audio_stream(parse_sdp(PLAIN))
    assert plain is not None
    assert plain.crypto is None
    assert not plain.secure
    # a=crypto on RTP/AVP ("best effort" SRTP) is plain RTP here.
    avp = audio_stream(
        parse_sdp(sdp("192.0.2.1", 4000, "RTP/AVP", f"a=crypto:1 X inline:{INLINE}"))
    )
    assert avp is not None
    assert avp.crypto is None
    savp_bad = audio_stream(parse_sdp(sdp("192.0.2.1", 4000, "RTP/SAVP", "a=crypto:1 X inline:y")))
    assert savp_bad is not None
    assert not savp_bad.active


# --- the anchor: each side on its own ----------------------------------------------------------


def crypto_lines(body: bytes) -> list[str]:
    return [line for line in body.decode().split("\r\n") if line.startswith(("a=crypto", "m="))]


def test_srtp_caller_to_a_plain_callee_and_back() -> None:
    anchor = MediaAnchor(parse_sdp(SECURE), "203.0.113.1", 20000, 20002, 100, (KEY_A, KEY_B))
    assert anchor.secured(Side.A)
    # The carrier (not on TLS) gets plain RTP.
    assert crypto_lines(anchor.offer_to_callee()) == ["m=audio 20002 RTP/AVP 0 8 101"]
    anchored = anchor.answer_to_caller(PLAIN)
    assert anchored is not None
    ours = base64.b64encode(KEY_A).decode()
    # The caller's answer echoes its chosen tag and suite with OUR key for side A.
    assert crypto_lines(anchored.body) == [
        "m=audio 20000 RTP/SAVP 0 8 101",
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{ours}",
    ]
    assert anchored.remote is not None
    assert anchored.remote.stream.crypto is None
    assert not anchor.secured(Side.B)
    stream = anchor.caller_stream()
    assert stream is not None
    assert stream.crypto is not None
    assert stream.crypto.key_salt == PHONE_KEY


def test_a_callee_on_tls_is_offered_srtp_with_a_key_of_its_own() -> None:
    anchor = MediaAnchor(parse_sdp(PLAIN), "203.0.113.1", 20000, 20002, 100, (KEY_A, KEY_B))
    offer = anchor.offer_to_callee(secure=True)
    ours = base64.b64encode(KEY_B).decode()
    assert crypto_lines(offer) == [
        "m=audio 20002 RTP/SAVP 0 8 101",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{ours}",
    ]
    callee = sdp(
        "192.0.2.30", 7000, "RTP/SAVP", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{INLINE}"
    )
    anchored = anchor.answer_to_caller(callee)
    assert anchored is not None
    assert crypto_lines(anchored.body) == ["m=audio 20000 RTP/AVP 0 8 101"]  # the caller: plain
    assert anchored.remote is not None
    assert anchored.remote.stream.crypto is not None
    assert anchor.secured(Side.B)
    assert not anchor.secured(Side.A)
    # A re-INVITE from the plain caller reaches the SRTP callee as SRTP, same key.
    across = anchor.offer_across(Side.A, PLAIN)
    assert across is not None
    assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{ours}" in crypto_lines(across.body)


def test_our_own_answer_to_an_srtp_caller_is_srtp() -> None:
    anchor = MediaAnchor(parse_sdp(SECURE), "203.0.113.1", 20000, 20002, 100, (KEY_A, KEY_B))
    answer = anchor.answer_ourselves()
    assert answer is not None
    assert "m=audio 20000 RTP/SAVP 0 101" in crypto_lines(answer.body)
    assert any(
        line.startswith("a=crypto:2 AES_CM_128_HMAC_SHA1_32") for line in crypto_lines(answer.body)
    )


@pytest.mark.parametrize(("keys", "refused"), [((KEY_A, KEY_B), False), ((b"", b""), True)])
def test_an_srtp_offer_is_refused_when_the_media_plane_has_no_keys(
    keys: tuple[bytes, bytes], refused: bool
) -> None:
    # rtpengine's media plane hands out no keys (plain RTP only): answering the SRTP offer with
    # plain RTP would be no answer to it (RFC 3264) and would drop the caller's encryption.
    request = replace(invite(NUMBER), body=SECURE, headers=(("Content-Type", "application/sdp"),))
    b = CallBench(snapshot(ACME), request, from_trunk(), registered={"1001": 1}, keys=keys)
    b.start()
    trace = "SRTP offered; this node's media engine has no SRTP -> 488"
    if refused:
        assert b.final_to_caller().status == 488
        assert trace in b.core.record().trace
        assert b.legs() == []
    else:
        assert b.to_caller() == []  # ringing
        (leg,) = b.legs()
        assert b"m=audio 20002 RTP/AVP " in leg.invite.request.body  # a callee on UDP: plain


# --- the tenant's policy -----------------------------------------------------------------------


def test_a_requiring_tenant_refuses_clear_text_registers_calls_and_rtp_offers() -> None:
    allow = TenantConfig(TenantId("acme"), __import__("pathlib").Path("acme.toml"), "acme.example")
    require = replace(allow, encryption="require")
    assert register_refusal(allow, "UDP") is None
    for transport in ("UDP", "TCP"):
        refused = register_refusal(require, transport)
        assert refused is not None
        assert (refused.status, refused.reason) == (403, "TLS Required")
        call = call_refusal(require, transport, SECURE)
        assert call is not None
        assert call.status == 403
    assert register_refusal(require, "TLS") is None
    assert call_refusal(require, "TLS", SECURE) is None
    for body in (PLAIN, b""):
        call = call_refusal(require, "TLS", body)
        assert call is not None
        assert (call.status, call.reason) == (488, "SRTP Required")
    assert call_refusal(allow, "UDP", PLAIN) is None


# --- the relay with libsrtp over loopback ------------------------------------------------------


def phone_session(
    key: bytes, inbound: bool, profile: int = Policy.SRTP_PROFILE_AES128_CM_SHA1_80
) -> Session:
    kind = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
    return Session(Policy(key=key, ssrc_type=kind, srtp_profile=profile))


@pytest.mark.asyncio
async def test_relay_decrypts_the_srtp_phone_and_encrypts_toward_it_plain_on_the_other_leg() -> (
    None
):
    pool = PortPool(*TEST_PORTS)
    session = await MediaSession.open(pool, HOST, inactivity_seconds=60)
    try:
        async with (
            endpoint() as phone,
            endpoint() as carrier,
            endpoint() as phone_rtcp,
            endpoint() as carrier_rtcp,
        ):
            session.set_remote(Side.A, *phone.address, rtcp=phone_rtcp.address)
            session.set_remote(Side.B, *carrier.address, rtcp=carrier_rtcp.address)
            session.set_crypto(Side.A, Crypto(1, "AES_CM_128_HMAC_SHA1_80", PHONE_KEY))
            our_key = session.srtp_keys[Side.A]
            assert our_key != session.srtp_keys[Side.B]
            tapped: list[tuple[float, bytes]] = []
            session.set_tap(Side.A, tapped.append)
            phone_tx, phone_rx = phone_session(PHONE_KEY, False), phone_session(our_key, True)
            # SRTP from the phone reaches the carrier as plain RTP (and the recorder's tap too).
            phone.send(phone_tx.protect(rtp(1)), (HOST, session.a.port))
            data, _ = await carrier.receive()
            assert data == rtp(1)
            assert tapped[0][1] == rtp(1)
            # SRTCP both ways (each RTCP socket speaks first, so the relay latches it).
            phone_rtcp.send(phone_tx.protect_rtcp(RTCP_RR), (HOST, session.a.rtcp_port))
            data, _ = await carrier_rtcp.receive()
            assert data == RTCP_RR
            carrier_rtcp.send(RTCP_RR, (HOST, session.b.rtcp_port))
            data, _ = await phone_rtcp.receive()
            assert phone_rx.unprotect_rtcp(data) == RTCP_RR
            # Plain RTP from the carrier reaches the phone encrypted with our key for side A.
            carrier.send(rtp(7, b"\x11" * 160), (HOST, session.b.port))
            data, _ = await phone.receive()
            assert data != rtp(7, b"\x11" * 160)
            assert phone_rx.unprotect(data) == rtp(7, b"\x11" * 160)
            # A forged or plain packet on the SRTP leg is dropped and counted, never relayed.
            phone.send(rtp(2), (HOST, session.a.port))
            await carrier.expect_nothing()
            assert session.stats(Side.A).rtp_dropped == 1
            # A prompt (the 009608 player) is encrypted too.
            assert session.a.send_rtp(rtp(50))
            data, _ = await phone.receive()
            assert phone_rx.unprotect(data) == rtp(50)
            # Back to plain (a re-INVITE without SRTP): packets pass unchanged.
            session.set_crypto(Side.A, None)
            phone.send(rtp(3), (HOST, session.a.port))
            data, _ = await carrier.receive()
            assert data == rtp(3)
            with pytest.raises(SrtpError):
                phone_rx.unprotect(rtp(4))
    finally:
        session.close()
    assert pool.in_use == 0


@pytest.mark.asyncio
async def test_two_srtp_legs_use_different_keys() -> None:
    pool = PortPool(*TEST_PORTS)
    session = await MediaSession.open(pool, HOST, inactivity_seconds=60)
    other_key = bytes(range(50, 80))
    try:
        async with endpoint() as alice, endpoint() as bob:
            session.set_remote(Side.A, *alice.address)
            session.set_remote(Side.B, *bob.address)
            session.set_crypto(Side.A, Crypto(1, "AES_CM_128_HMAC_SHA1_80", PHONE_KEY))
            session.set_crypto(Side.B, Crypto(1, "AES_CM_128_HMAC_SHA1_32", other_key))
            alice_tx = phone_session(PHONE_KEY, False)
            bob_rx = phone_session(
                session.srtp_keys[Side.B], True, Policy.SRTP_PROFILE_AES128_CM_SHA1_32
            )
            sent = alice_tx.protect(rtp(1))
            alice.send(sent, (HOST, session.a.port))
            data, _ = await bob.receive()
            assert data != sent  # re-encrypted, not passed through
            assert bob_rx.unprotect(data) == rtp(1)
    finally:
        session.close()
