"""PCM WAV headers: what we write the stdlib ``wave`` module reads, and the reverse."""

from __future__ import annotations

import io
import wave
from array import array
from pathlib import Path

import pytest

from pbx.media.wav import (
    TELEPHONE_MONO,
    TELEPHONE_STEREO,
    WavError,
    WavFormat,
    build_wav,
    build_wav_header,
    interleave_stereo,
    parse_wav,
    read_wav,
    size_patches,
)
from tests.media.audio import split_stereo

PROMPT = Path(__file__).resolve().parents[2] / "pbx" / "prompts" / "009608.wav"


def samples(*values: int) -> bytes:
    return array("h", values).tobytes()


@pytest.mark.parametrize("fmt", [TELEPHONE_MONO, TELEPHONE_STEREO])
def test_written_wav_is_read_by_the_stdlib(tmp_path: Path, fmt: WavFormat) -> None:
    frames = samples(*range(-500, 500, 7)) * fmt.channels
    path = tmp_path / "out.wav"
    path.write_bytes(build_wav(fmt, frames))
    with wave.open(str(path), "rb") as r:
        assert (r.getnchannels(), r.getframerate(), r.getsampwidth()) == (fmt.channels, 8000, 2)
        assert r.getnframes() == len(frames) // fmt.frame_size
        assert r.readframes(r.getnframes()) == frames


def test_header_is_the_canonical_44_bytes() -> None:
    header = build_wav_header(TELEPHONE_STEREO, 32000)
    assert len(header) == 44
    assert header[:4] == b"RIFF"
    assert header[8:16] == b"WAVEfmt "
    assert int.from_bytes(header[4:8], "little") == 36 + 32000
    assert int.from_bytes(header[28:32], "little") == 32000  # byte rate: 8000 * 2 channels * 2
    assert int.from_bytes(header[40:44], "little") == 32000


def test_size_patches_fix_a_header_written_before_the_data(tmp_path: Path) -> None:
    frames = samples(1, -1, 2, -2)
    blob = bytearray(build_wav_header(TELEPHONE_STEREO, 0) + frames)
    for offset, value in size_patches(len(frames)):
        blob[offset : offset + len(value)] = value
    assert bytes(blob) == build_wav(TELEPHONE_STEREO, frames)
    assert parse_wav(bytes(blob)).frames == frames


def test_stdlib_written_wav_is_parsed() -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(samples(3, 4, 5))
    audio = parse_wav(out.getvalue(), expect=TELEPHONE_MONO)
    assert audio.frames == samples(3, 4, 5)
    assert audio.frame_count == 3


def test_unexpected_format_and_junk_are_refused() -> None:
    with pytest.raises(WavError, match="differs"):
        parse_wav(build_wav(TELEPHONE_STEREO, b""), expect=TELEPHONE_MONO)
    with pytest.raises(WavError, match="not a PCM WAV"):
        parse_wav(b"RIFF....junk")


def test_stereo_interleaving_round_trips() -> None:
    left, right = samples(1, 2, 3), samples(-1, -2, -3)
    stereo = interleave_stereo(left, right)
    assert stereo == samples(1, -1, 2, -2, 3, -3)
    assert split_stereo(stereo) == (left, right)
    with pytest.raises(ValueError, match="equal length"):
        interleave_stereo(left, right[:2])


def test_the_after_hours_prompt_is_8khz_mono_16bit_speech() -> None:
    audio = read_wav(PROMPT, expect=TELEPHONE_MONO)
    assert 8 < audio.duration < 20
    pcm = array("h", audio.frames)
    assert max(abs(s) for s in pcm) > 8000  # not silence


def test_repair_wav_fixes_sizes_and_refuses_what_is_not_ours(tmp_path: Path) -> None:
    from pbx.media.wav import repair_wav

    good = tmp_path / "cut.wav"
    good.write_bytes(build_wav_header(TELEPHONE_STEREO, 0) + b"\x00\x01" * 6 + b"\x09")
    assert repair_wav(good)
    assert read_wav(good, TELEPHONE_STEREO).frames == b"\x00\x01" * 6
    assert repair_wav(good)  # idempotent
    assert not repair_wav(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_bytes(b"hello, this is not a wave file at all, not at all!")
    assert not repair_wav(text)
    odd = tmp_path / "odd.wav"
    odd.write_bytes(build_wav_header(TELEPHONE_STEREO, 0)[:36] + b"LIST" + bytes(8))
    assert not repair_wav(odd)
