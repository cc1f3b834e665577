"""The prompt player: 20 ms G.711 packets, paced by the loop clock, with correct RTP fields."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pbx.media import g711
from pbx.media.g711 import Codec
from pbx.media.player import PlaybackFinished, PromptPlayer, encode_prompt
from pbx.media.relay import MediaSession, PortPool, Side
from pbx.media.rtp import parse_rtp, sequence_add, timestamp_add
from pbx.media.wav import TELEPHONE_MONO, WavAudio, WavFormat, read_wav
from tests.media.audio import tone
from tests.media.udp import HOST, TEST_PORTS, endpoint

PROMPT = Path(__file__).resolve().parents[2] / "pbx" / "prompts" / "009608.wav"


def prompt_excerpt(seconds: float) -> WavAudio:
    audio = read_wav(PROMPT, expect=TELEPHONE_MONO)
    start = 2 * 8000 * 1  # one second in: speech, not the leading silence
    return WavAudio(TELEPHONE_MONO, audio.frames[start : start + 2 * round(8000 * seconds)])


def test_prompt_is_cut_into_20ms_payloads_with_the_last_one_padded() -> None:
    audio = WavAudio(TELEPHONE_MONO, tone(400, 0.05))  # 400 samples: 2.5 packets
    payloads = encode_prompt(audio, Codec.PCMA)
    assert [len(p) for p in payloads] == [160, 160, 160]
    assert payloads[2][80:] == bytes([0xD5]) * 80
    with pytest.raises(ValueError, match="8 kHz mono"):
        encode_prompt(WavAudio(WavFormat(channels=2), b""), Codec.PCMU)


@pytest.mark.asyncio
@pytest.mark.parametrize("codec", [Codec.PCMU, Codec.PCMA])
async def test_player_streams_the_prompt_as_paced_rtp(codec: Codec) -> None:
    pool = PortPool(*TEST_PORTS)
    loop = asyncio.get_running_loop()
    audio = prompt_excerpt(0.6)  # 30 packets
    finished: list[PlaybackFinished] = []
    session = await MediaSession.open(pool, HOST, sides=(Side.A,))
    try:
        async with endpoint() as phone:
            session.set_remote(Side.A, *phone.address)
            player = PromptPlayer.from_wav(
                audio, codec, session.a.send_rtp, on_done=finished.append
            )
            started = loop.time()
            result = await asyncio.wait_for(player.start(), 3)
            elapsed = loop.time() - started
            received = [await phone.receive() for _ in range(30)]
            await phone.expect_nothing(0.05)
    finally:
        session.close()
    assert result == PlaybackFinished(30, completed=True)
    assert finished == [result]
    # Paced, not blasted: packet 29 is due at 29 * 20 ms = 0.58 s.
    assert 0.57 <= elapsed < 0.9
    packets = [parse_rtp(data) for data, _ in received]
    assert {src for _, src in received} == {(HOST, session.a.port)}  # symmetric: from our port
    first = packets[0]
    for k, p in enumerate(packets):
        assert p.payload_type == codec.payload_type
        assert p.sequence == sequence_add(first.sequence, k)
        assert p.timestamp == timestamp_add(first.timestamp, 160 * k)
        assert p.ssrc == first.ssrc
        assert p.marker is (k == 0)
        assert len(p.payload) == 160
    # The decoded audio is the prompt, within G.711 quantisation.
    decoded = g711.decode(codec, b"".join(p.payload for p in packets))
    assert decoded == g711.decode(codec, g711.encode(codec, audio.frames))


@pytest.mark.asyncio
async def test_player_keeps_absolute_deadlines_after_the_loop_stalls() -> None:
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    player = PromptPlayer(
        [bytes(160)] * 25, Codec.PCMU, lambda _: sent.append(loop.time()), sequence=0, timestamp=0
    )
    done = player.start()
    await asyncio.sleep(0.1)
    time.sleep(0.1)  # noqa: ASYNC251 - deliberately block the loop for five packet times
    await asyncio.wait_for(done, 2)
    start = sent[0]
    # The overdue packets went out together, then the schedule resumed: no drift.
    # Relative scheduling would end at least 0.1 s (the stall) after 24 * 20 ms.
    assert 0.47 <= sent[-1] - start < 0.55
    late_burst = [t for t in sent if abs(t - sent[8]) < 0.003]
    assert len(late_burst) >= 4


@pytest.mark.asyncio
async def test_stop_ends_playback_early_and_resolves_done() -> None:
    sent: list[bytes] = []
    player = PromptPlayer([bytes(160)] * 50, Codec.PCMU, sent.append, repeat=2)
    done = player.start()
    await asyncio.sleep(0.1)
    player.stop()
    result = await done
    assert result.completed is False
    assert 3 <= result.packets_sent == len(sent) <= 10
    await asyncio.sleep(0.06)
    assert len(sent) == result.packets_sent
    with pytest.raises(RuntimeError, match="plays once"):
        player.start()


@pytest.mark.asyncio
async def test_repeat_loops_the_prompt_with_continuous_numbering() -> None:
    sent: list[bytes] = []
    payloads = [bytes([k]) * 160 for k in range(3)]
    player = PromptPlayer(payloads, Codec.PCMU, sent.append, repeat=2, sequence=65534)
    result = await asyncio.wait_for(player.start(), 2)
    assert result == PlaybackFinished(6, completed=True)
    packets = [parse_rtp(d) for d in sent]
    assert [p.payload[0] for p in packets] == [0, 1, 2, 0, 1, 2]
    assert [p.sequence for p in packets] == [65534, 65535, 0, 1, 2, 3]
    assert [p.marker for p in packets] == [True] + [False] * 5
