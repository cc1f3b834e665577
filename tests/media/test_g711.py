"""G.711 µ-law and A-law: known code values, the reference tables, and round-trip error bounds."""

from __future__ import annotations

import math
import warnings
from array import array

import pytest

from pbx.media import g711
from pbx.media.g711 import Codec
from pbx.media.wav import interleave_stereo

ALL_SAMPLES = array("h", range(-32768, 32768)).tobytes()


@pytest.mark.parametrize(
    ("code", "linear"),
    [
        (0xFF, 0),  # µ-law "positive zero", the silence code
        (0x7F, 0),  # "negative zero"
        (0x80, 32124),  # largest positive
        (0x00, -32124),  # largest negative
        (0xFE, 8),
        (0x7E, -8),
        (0xEF, 132),  # segment 1 starts
        (0xDF, 396),
    ],
)
def test_ulaw_decodes_known_codes(code: int, linear: int) -> None:
    assert g711.ulaw_to_linear(code) == linear
    assert g711.decode_ulaw(bytes([code])) == linear.to_bytes(2, "little", signed=True)


@pytest.mark.parametrize(
    ("code", "linear"),
    [
        (0xD5, 8),  # A-law silence (even bits inverted)
        (0x55, -8),
        (0xAA, 32256),  # largest positive
        (0x2A, -32256),
        (0xC5, 264),
        (0x80, 5504),
    ],
)
def test_alaw_decodes_known_codes(code: int, linear: int) -> None:
    assert g711.alaw_to_linear(code) == linear
    assert g711.decode_alaw(bytes([code])) == linear.to_bytes(2, "little", signed=True)


@pytest.mark.parametrize(
    ("linear", "ulaw", "alaw"),
    [(0, 0xFF, 0xD5), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A), (1000, 0xCE, 0xFA)],
)
def test_known_samples_encode(linear: int, ulaw: int, alaw: int) -> None:
    assert g711.linear_to_ulaw(linear) == ulaw
    assert g711.linear_to_alaw(linear) == alaw


def test_table_codecs_match_the_scalar_reference_for_every_input() -> None:
    samples = array("h", ALL_SAMPLES)
    assert g711.encode_ulaw(ALL_SAMPLES) == bytes(g711.linear_to_ulaw(s) for s in samples)
    assert g711.encode_alaw(ALL_SAMPLES) == bytes(g711.linear_to_alaw(s) for s in samples)
    codes = bytes(range(256))
    assert array("h", g711.decode_ulaw(codes)).tolist() == [g711.ulaw_to_linear(c) for c in codes]
    assert array("h", g711.decode_alaw(codes)).tolist() == [g711.alaw_to_linear(c) for c in codes]


def test_codecs_match_cpython_audioop_where_it_still_exists() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # removed in Python 3.13
    assert g711.encode_ulaw(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert g711.encode_alaw(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    codes = bytes(range(256))
    assert g711.decode_ulaw(codes) == audioop.ulaw2lin(codes, 2)
    assert g711.decode_alaw(codes) == audioop.alaw2lin(codes, 2)


@pytest.mark.parametrize("codec", list(Codec))
def test_every_code_survives_decode_then_encode(codec: Codec) -> None:
    codes = bytes(range(256))
    again = g711.encode(codec, g711.decode(codec, codes))
    if codec is Codec.PCMU:
        # 0x7F (negative zero) decodes to 0, which encodes as 0xFF (positive zero).
        assert again == codes.replace(b"\x7f", b"\xff")
    else:
        assert again == codes


@pytest.mark.parametrize("codec", list(Codec))
def test_round_trip_error_stays_within_the_companding_bounds(codec: Codec) -> None:
    decoded = array("h", g711.decode(codec, g711.encode(codec, ALL_SAMPLES)))
    worst_relative = 0.0
    for original, back in zip(range(-32768, 32768), decoded, strict=True):
        error = abs(original - back)
        # The loudest segment has a step of 1024 (µ-law and A-law), plus clipping
        # at ±32124 / ±32256: the error never exceeds 1024.
        assert error <= 1024, (original, back)
        if abs(original) >= 1024:
            worst_relative = max(worst_relative, error / abs(original))
    # Logarithmic companding: half a step is about 1/32 of the segment start, so ~3.5 %.
    assert worst_relative < 0.04


@pytest.mark.parametrize("codec", list(Codec))
def test_tone_round_trip_keeps_a_high_signal_to_noise_ratio(codec: Codec) -> None:
    tone = array("h", (round(10000 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(8000)))
    back = array("h", g711.decode(codec, g711.encode(codec, tone.tobytes())))
    signal = sum(s * s for s in tone)
    noise = sum((s - b) ** 2 for s, b in zip(tone, back, strict=True))
    assert 10 * math.log10(signal / noise) > 35  # G.711 gives about 38 dB


def test_transcoding_matches_decode_then_encode() -> None:
    codes = bytes(range(256))
    assert g711.ulaw_to_alaw(codes) == g711.encode_alaw(g711.decode_ulaw(codes))
    assert g711.alaw_to_ulaw(codes) == g711.encode_ulaw(g711.decode_alaw(codes))


def test_odd_length_pcm_is_refused() -> None:
    with pytest.raises(ValueError, match="even number"):
        g711.encode_ulaw(b"\x00")


def test_codec_payload_types() -> None:
    assert Codec.from_payload_type(0) is Codec.PCMU
    assert Codec.from_payload_type(8) is Codec.PCMA
    assert Codec.from_payload_type(18) is None
    assert (Codec.PCMU.silence, Codec.PCMA.silence) == (0xFF, 0xD5)


def test_alaw_silence_can_decode_to_exact_zero() -> None:
    assert g711.decode(Codec.PCMA, b"\xd5\x55") == b"\x08\x00\xf8\xff"
    assert g711.decode(Codec.PCMA, b"\xd5\x55", silence_is_zero=True) == b"\x00\x00\xf8\xff"
    assert g711.decode(Codec.PCMU, b"\xff", silence_is_zero=True) == b"\x00\x00"


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (Codec.PCMU, Codec.PCMA),
        (Codec.PCMA, Codec.PCMU),
        (Codec.PCMA, Codec.PCMA),
        (None, Codec.PCMU),
        (Codec.PCMA, None),
        (None, None),
    ],
)
def test_decode_stereo_is_both_channels_decoded_then_interleaved(
    left: Codec | None, right: Codec | None
) -> None:
    codes = bytes(range(256)) * 3
    other = bytes(reversed(codes))

    def mono(codec: Codec | None, data: bytes) -> bytes:
        if codec is None:
            return bytes(2 * len(data))
        return g711.decode(codec, data, silence_is_zero=True)

    expected = interleave_stereo(mono(left, codes), mono(right, other))
    assert g711.decode_stereo(left, codes, right, other) == expected
    with pytest.raises(ValueError, match="equal length"):
        g711.decode_stereo(left, codes, right, other[1:])
