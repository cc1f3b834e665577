"""The call recorder: both parties of a relayed call in one stereo WAV, time-aligned."""

from __future__ import annotations

import asyncio
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pbx.media import g711
from pbx.media.g711 import Codec
from pbx.media.recorder import CallRecorder, next_flush
from pbx.media.relay import MediaSession, PortPool, Side
from pbx.media.rtp import build_rtp_header
from tests.media.audio import dominant, rms, split_stereo, tone
from tests.media.udp import HOST, TEST_PORTS, Endpoint, endpoint

FREQUENCIES = (400.0, 1000.0)


@pytest_asyncio.fixture
async def session() -> AsyncIterator[MediaSession]:
    pool = PortPool(*TEST_PORTS)
    s = await MediaSession.open(pool, HOST)
    try:
        yield s
    finally:
        s.close()
    assert pool.in_use == 0


def packets(codec: Codec, pcm: bytes, ssrc: int, first_ts: int = 1000) -> list[bytes]:
    payload = g711.encode(codec, pcm)
    return [
        build_rtp_header(codec.payload_type, k, first_ts + 160 * k, ssrc, marker=k == 0)
        + payload[160 * k : 160 * (k + 1)]
        for k in range(len(payload) // 160)
    ]


async def send_paced(
    ep: Endpoint, dest: tuple[str, int], items: list[bytes], start: float, burst: int = 1
) -> None:
    """Send items[k] at start + k * 20 ms (in bursts of `burst`, sent when the last is due)."""
    loop = asyncio.get_running_loop()
    for k in range(0, len(items), burst):
        due = start + (k + burst - 1) * 0.02
        await asyncio.sleep(max(0.0, due - loop.time()))
        for item in items[k : k + burst]:
            ep.send(item, dest)


def read_channels(path: Path) -> tuple[bytes, bytes, int]:
    with wave.open(str(path), "rb") as r:
        assert (r.getnchannels(), r.getframerate(), r.getsampwidth()) == (2, 8000, 2)
        frames = r.readframes(r.getnframes())
        return (*split_stereo(frames), r.getnframes())


def window(pcm: bytes, start: float, end: float) -> bytes:
    return pcm[2 * round(start * 8000) : 2 * round(end * 8000)]


@pytest.mark.asyncio
async def test_each_party_is_on_its_own_channel_at_the_right_time(
    session: MediaSession, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    async with endpoint() as a, endpoint() as b:
        session.set_remote(Side.A, *a.address)
        session.set_remote(Side.B, *b.address)
        recorder = await CallRecorder.start(tmp_path, "call.wav", session, flush_seconds=0.2)
        try:
            t0 = loop.time()
            # A (PCMU, 400 Hz) talks during 0.0-0.5 s, then B (PCMA, 1000 Hz) during 0.6-1.1 s.
            a_packets = packets(Codec.PCMU, tone(400, 0.5), ssrc=1)
            b_packets = packets(Codec.PCMA, tone(1000, 0.5), ssrc=2)
            await asyncio.gather(
                send_paced(a, (HOST, session.a.port), a_packets, t0),
                send_paced(b, (HOST, session.b.port), b_packets, t0 + 0.6),
            )
            await asyncio.sleep(0.1)
        finally:
            result = await recorder.close()
    left, right, frames = read_channels(result.path)
    assert result.frames == frames
    assert 1.1 <= result.duration < 1.6
    assert result.packets == 50
    assert result.late_packets == 0
    # Left = caller (A), right = callee (B); each silent while the other talks.
    assert dominant(window(left, 0.1, 0.4), FREQUENCIES) == 400
    assert rms(window(left, 0.1, 0.4)) > 5000
    assert rms(window(right, 0.1, 0.4)) == 0
    assert dominant(window(right, 0.75, 1.0), FREQUENCIES) == 1000
    assert rms(window(right, 0.75, 1.0)) > 5000
    assert rms(window(left, 0.7, 1.1)) == 0
    # Onsets within 60 ms of when each party started talking.
    assert rms(window(right, 0.0, 0.54)) == 0
    assert rms(window(right, 0.66, 0.7)) > 5000


@pytest.mark.asyncio
async def test_bursty_arrival_is_placed_by_rtp_timestamp_without_gaps(
    session: MediaSession, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    async with endpoint() as a:
        recorder = await CallRecorder.start(tmp_path, "bursty.wav", session, flush_seconds=0.2)
        try:
            # 0.8 s of tone arriving in bursts of 5 packets (100 ms of jitter).
            await send_paced(
                a, (HOST, session.a.port), packets(Codec.PCMU, tone(400, 0.8), 7), loop.time(), 5
            )
            await asyncio.sleep(0.1)
        finally:
            result = await recorder.close()
    left, _, _ = read_channels(result.path)
    loud = [rms(left[i : i + 320]) > 5000 for i in range(0, len(left) - 320, 320)]
    first, last = loud.index(True), len(loud) - 1 - loud[::-1].index(True)
    assert all(loud[first : last + 1]), "a gap inside the tone"
    assert 38 <= last - first + 1 <= 41  # 40 packets of 20 ms, contiguous


@pytest.mark.asyncio
async def test_file_is_a_valid_wav_while_recording_and_never_overwritten(
    session: MediaSession, tmp_path: Path
) -> None:
    recorder = await CallRecorder.start(
        tmp_path, "live.wav", session, flush_seconds=0.1, jitter_seconds=0.05
    )
    try:
        await asyncio.sleep(0.5)
        with wave.open(str(recorder.path), "rb") as r:  # header patched after each flush
            assert r.getnframes() > 0
            assert r.getnchannels() == 2
        with pytest.raises(FileExistsError):
            await CallRecorder.start(tmp_path, "live.wav")
    finally:
        result = await recorder.close()
    assert await recorder.close() is result  # idempotent
    _, _, frames = read_channels(result.path)
    assert frames == result.frames
    assert result.packets == 0


@pytest.mark.asyncio
async def test_telephone_events_and_unknown_payloads_are_not_recorded(
    session: MediaSession, tmp_path: Path
) -> None:
    async with endpoint() as a:
        recorder = await CallRecorder.start(tmp_path, "dtmf.wav", session, flush_seconds=0.1)
        try:
            for k in range(5):
                a.send(
                    build_rtp_header(101, k, 160 * k, 9) + b"\x01\x0a\x00\xa0",
                    (HOST, session.a.port),
                )
                a.send(build_rtp_header(18, k, 160 * k, 9) + b"\x55" * 20, (HOST, session.a.port))
            await asyncio.sleep(0.1)
        finally:
            result = await recorder.close()
    left, right, _ = read_channels(result.path)
    assert result.packets == 0
    assert rms(left) == 0
    assert rms(right) == 0


@pytest.mark.asyncio
async def test_recording_name_must_be_a_plain_file_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        await CallRecorder.start(tmp_path, "../escape.wav")


@pytest.mark.asyncio
async def test_codec_change_mid_call_is_still_recorded(
    session: MediaSession, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    async with endpoint() as a:
        recorder = await CallRecorder.start(tmp_path, "switch.wav", session, flush_seconds=0.2)
        try:
            first = packets(Codec.PCMU, tone(400, 0.3), ssrc=5)
            # After a re-INVITE the caller sends PCMA, continuing its timestamps.
            second = packets(Codec.PCMA, tone(400, 0.3), ssrc=5, first_ts=1000 + 160 * 15)
            await send_paced(a, (HOST, session.a.port), first + second, loop.time())
            await asyncio.sleep(0.1)
        finally:
            result = await recorder.close()
    left, _, _ = read_channels(result.path)
    assert result.packets == 30
    assert dominant(window(left, 0.05, 0.25), FREQUENCIES) == 400
    assert dominant(window(left, 0.35, 0.55), FREQUENCIES) == 400
    assert rms(window(left, 0.35, 0.55)) > 5000


@pytest.mark.asyncio
async def test_close_does_not_wait_for_the_next_flush(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    recorder = await CallRecorder.start(tmp_path, "quick.wav", flush_seconds=10)
    await asyncio.sleep(0.05)
    began = loop.time()
    result = await recorder.close()
    assert loop.time() - began < 1.0
    assert result.frames > 0  # the 50 ms heard so far (silence) are written on close


def test_a_failed_write_is_reported_without_the_frames_that_held_its_audio() -> None:
    # The write runs in a worker thread and its error comes back in a list. With its
    # traceback, the error held the worker's frame, which held that list: a cycle keeping the
    # batch's audio until a full collection, which the server runs none of under load
    # (issue #21).
    from pbx.media import recorder

    [error] = recorder._append_all([(-1, b"\x00" * 320, 44, 320)])  # a bad descriptor
    assert isinstance(error, OSError)
    assert error.__traceback__ is None


def test_next_flush_keeps_the_schedule_and_skips_the_moments_missed() -> None:
    assert next_flush(10.0, 1.0, 10.004) == 11.0  # a quick flush: one period on
    assert next_flush(10.0, 1.0, 11.0) == 12.0  # never at once again
    assert next_flush(10.0, 1.0, 12.3) == 13.0  # a write that overran: the missed moments skipped
    assert next_flush(10.0, 0.5, 9.9) == 10.5  # at least one period on
