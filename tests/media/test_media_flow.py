"""The building blocks together, as the call engine will drive them: SDP in, relay, recording."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from pbx.media import g711
from pbx.media.g711 import Codec
from pbx.media.player import PromptPlayer
from pbx.media.recorder import CallRecorder
from pbx.media.relay import MediaSession, PortPool, Side
from pbx.media.rtp import build_rtp_header, parse_rtp
from pbx.media.sdp import (
    answer_sdp,
    audio_stream,
    build_sdp,
    make_origin,
    parse_sdp,
    rewrite_sdp,
)
from pbx.media.wav import TELEPHONE_MONO, WavAudio
from tests.media.audio import dominant, split_stereo, tone
from tests.media.udp import HOST, TEST_PORTS, endpoint


def phone_sdp(port: int, formats: str, *extra: str) -> bytes:
    lines = [
        "v=0",
        f"o=phone 1 1 IN IP4 {HOST}",
        "s=-",
        f"c=IN IP4 {HOST}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@pytest.mark.asyncio
async def test_offer_answer_relay_and_recording_end_to_end(tmp_path: Path) -> None:
    pool = PortPool(*TEST_PORTS)
    async with endpoint() as phone_a, endpoint() as phone_b:
        # Caller offers G.722, PCMA, PCMU and DTMF; the PBX relays, keeping PCMA/PCMU/DTMF.
        offer = parse_sdp(
            phone_sdp(
                phone_a.address[1], "9 8 0 101", "a=rtpmap:101 telephone-event/8000", "a=ptime:20"
            )
        )
        a = audio_stream(offer)
        assert a is not None
        assert a.active
        media = await MediaSession.open(pool, HOST, inactivity_seconds=30)
        try:
            media.set_remote(Side.A, a.address, a.port, a.direction)
            to_b = parse_sdp(
                build_sdp(
                    rewrite_sdp(offer, address=HOST, port=media.b.port, origin=make_origin(7, HOST))
                )
            )
            seen_by_b = audio_stream(to_b)
            assert seen_by_b is not None
            assert seen_by_b.codecs == (Codec.PCMA, Codec.PCMU)
            assert seen_by_b.telephone_event == 101
            assert seen_by_b.port == media.b.port
            # Callee answers PCMA; the answer goes back to the caller with our A-leg port.
            answer = parse_sdp(phone_sdp(phone_b.address[1], "8"))
            b = audio_stream(answer)
            assert b is not None
            media.set_remote(Side.B, b.address, b.port, b.direction)
            to_a = audio_stream(
                rewrite_sdp(
                    answer,
                    address=HOST,
                    port=media.a.port,
                    origin=make_origin(8, HOST),
                    offer=offer,
                )
            )
            assert to_a is not None
            assert to_a.codec is Codec.PCMA
            recorder = await CallRecorder.start(tmp_path, "call.wav", media, flush_seconds=0.2)
            try:
                loop = asyncio.get_running_loop()
                start = loop.time()
                a_audio = g711.encode_alaw(tone(400, 0.4))
                b_audio = g711.encode_alaw(tone(1000, 0.4))
                for k in range(20):
                    await asyncio.sleep(max(0.0, start + 0.02 * k - loop.time()))
                    chunk = slice(160 * k, 160 * (k + 1))
                    phone_a.send(
                        build_rtp_header(8, k, 160 * k, 1) + a_audio[chunk], (HOST, to_a.port)
                    )
                    phone_b.send(
                        build_rtp_header(8, k, 160 * k, 2) + b_audio[chunk],
                        (HOST, seen_by_b.port),
                    )
                got_b = [parse_rtp((await phone_b.receive())[0]) for _ in range(20)]
                got_a = [parse_rtp((await phone_a.receive())[0]) for _ in range(20)]
            finally:
                result = await recorder.close()
        finally:
            media.close()
    assert b"".join(p.payload for p in got_b) == a_audio
    assert b"".join(p.payload for p in got_a) == b_audio
    assert pool.in_use == 0
    with wave.open(str(result.path), "rb") as r:
        left, right = split_stereo(r.readframes(r.getnframes()))
    middle = slice(2 * 800, 2 * 2400)  # 0.1-0.3 s
    assert dominant(left[middle], (400.0, 1000.0)) == 400
    assert dominant(right[middle], (400.0, 1000.0)) == 1000


@pytest.mark.asyncio
async def test_announcement_answered_by_the_pbx_itself() -> None:
    pool = PortPool(*TEST_PORTS)
    prompt = WavAudio(TELEPHONE_MONO, tone(440, 0.2))
    async with endpoint() as caller:
        offer = parse_sdp(phone_sdp(caller.address[1], "0 8"))
        media = await MediaSession.open(pool, HOST, sides=(Side.A,))
        try:
            answer = audio_stream(
                answer_sdp(offer, address=HOST, port=media.a.port, origin=make_origin(9, HOST))
            )
            a = audio_stream(offer)
            assert answer is not None
            assert a is not None
            assert answer.codec is Codec.PCMU
            media.set_remote(Side.A, a.address, a.port, a.direction)
            player = PromptPlayer.from_wav(prompt, answer.codec, media.a.send_rtp)
            result = await asyncio.wait_for(player.start(), 2)
            packets = [parse_rtp((await caller.receive())[0]) for _ in range(10)]
        finally:
            media.close()
    assert result.completed
    assert [p.payload_type for p in packets] == [0] * 10
    assert g711.decode_ulaw(b"".join(p.payload for p in packets)) == g711.decode_ulaw(
        g711.encode_ulaw(prompt.frames)
    )
