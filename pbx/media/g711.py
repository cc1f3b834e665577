"""G.711 PCMU (µ-law) and PCMA (A-law) (ITU-T G.711; RTP payload types 0 and 8, RFC 3551 §4.5.14).

Table-driven and pure. Linear audio is signed 16-bit little-endian bytes, the WAV sample order.
Decoding splits each code into the low and high bytes of its sample with two ``bytes.translate``
calls and interleaves them, so it runs at C speed. Encoding looks up a 65536-entry table per
sample through ``map`` (no Python-level loop body). The tables follow the reference
implementation (Sun Microsystems' public-domain g711.c, as used by SoX and CPython's audioop):
µ-law works on the top 14 bits (bias 0x21, clip 8159), A-law on the top 13 bits.
"""

from __future__ import annotations

import enum
import sys
from array import array

PCMU_SILENCE = 0xFF
PCMA_SILENCE = 0xD5


class Codec(enum.Enum):
    """The G.711 variants we carry, with their static RTP payload type."""

    PCMU = 0
    PCMA = 8

    @property
    def payload_type(self) -> int:
        """The static RTP payload type (RFC 3551 table 4)."""
        return self.value

    @property
    def silence(self) -> int:
        """The code for digital silence (a linear 0)."""
        return PCMU_SILENCE if self is Codec.PCMU else PCMA_SILENCE

    @classmethod
    def from_payload_type(cls, payload_type: int) -> Codec | None:
        """PCMU for 0, PCMA for 8, None otherwise."""
        if payload_type == 0:
            return cls.PCMU
        if payload_type == 8:
            return cls.PCMA
        return None


def ulaw_to_linear(code: int) -> int:
    """Decode one µ-law code to a signed 16-bit sample."""
    code = ~code & 0xFF
    t = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return 0x84 - t if code & 0x80 else t - 0x84


def linear_to_ulaw(sample: int) -> int:
    """Encode one signed 16-bit sample to µ-law."""
    sample >>= 2  # to 14 bits, rounding towards minus infinity as the reference does
    if sample < 0:
        mask = 0x7F
        sample = -sample
    else:
        mask = 0xFF
    sample = min(sample, 8159) + 0x21
    segment = (sample >> 6).bit_length()
    if segment >= 8:
        return 0x7F ^ mask
    return (segment << 4 | (sample >> (segment + 1)) & 0x0F) ^ mask


def alaw_to_linear(code: int) -> int:
    """Decode one A-law code to a signed 16-bit sample."""
    code ^= 0x55
    t = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        t += 8
    else:
        t = (t + 0x108) << (segment - 1)
    return t if code & 0x80 else -t


_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def linear_to_alaw(sample: int) -> int:
    """Encode one signed 16-bit sample to A-law."""
    sample >>= 3
    if sample >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        sample = -sample - 1
    segment = next((i for i, end in enumerate(_ALAW_SEGMENT_ENDS) if sample <= end), 8)
    if segment == 8:
        return 0x7F ^ mask
    code = segment << 4 | ((sample >> 1) if segment < 2 else (sample >> segment)) & 0x0F
    return code ^ mask


def _decode_tables(decode: object) -> tuple[bytes, bytes]:
    assert callable(decode)
    samples = [decode(code) & 0xFFFF for code in range(256)]
    return bytes(s & 0xFF for s in samples), bytes(s >> 8 for s in samples)


def _encode_table(encode: object) -> bytes:
    assert callable(encode)
    # Indexed by the sample read as unsigned 16-bit: 0..32767 then -32768..-1.
    return bytes(encode(i if i < 0x8000 else i - 0x10000) for i in range(0x10000))


_ULAW_LOW, _ULAW_HIGH = _decode_tables(ulaw_to_linear)
_ALAW_LOW, _ALAW_HIGH = _decode_tables(alaw_to_linear)
# A-law has no zero: its silence code 0xD5 decodes to +8. Where "no audio" must be exactly 0
# (a recording's gaps), this variant maps 0xD5 to 0, an error of half a quantisation step.
_ALAW_ZERO_LOW = _ALAW_LOW[:PCMA_SILENCE] + b"\x00" + _ALAW_LOW[PCMA_SILENCE + 1 :]
_ULAW_ENCODE = _encode_table(linear_to_ulaw)
_ALAW_ENCODE = _encode_table(linear_to_alaw)
# PCMU <-> PCMA transcoding without a linear step (decode then re-encode each code).
_ULAW_TO_ALAW = bytes(linear_to_alaw(ulaw_to_linear(c)) for c in range(256))
_ALAW_TO_ULAW = bytes(linear_to_ulaw(alaw_to_linear(c)) for c in range(256))
_BIG_ENDIAN = sys.byteorder == "big"


def _decode(data: bytes, low: bytes, high: bytes) -> bytes:
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(low)
    out[1::2] = data.translate(high)
    return bytes(out)


def _encode(pcm: bytes, table: bytes) -> bytes:
    if len(pcm) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    samples = array("H")
    samples.frombytes(pcm)
    if _BIG_ENDIAN:
        samples.byteswap()
    return bytes(map(table.__getitem__, samples))


def decode_ulaw(data: bytes) -> bytes:
    """µ-law codes to signed 16-bit little-endian PCM."""
    return _decode(data, _ULAW_LOW, _ULAW_HIGH)


def decode_alaw(data: bytes) -> bytes:
    """A-law codes to signed 16-bit little-endian PCM."""
    return _decode(data, _ALAW_LOW, _ALAW_HIGH)


def encode_ulaw(pcm: bytes) -> bytes:
    """Signed 16-bit little-endian PCM to µ-law codes."""
    return _encode(pcm, _ULAW_ENCODE)


def encode_alaw(pcm: bytes) -> bytes:
    """Signed 16-bit little-endian PCM to A-law codes."""
    return _encode(pcm, _ALAW_ENCODE)


def decode(codec: Codec, data: bytes, *, silence_is_zero: bool = False) -> bytes:
    """Decode a G.711 payload to signed 16-bit little-endian PCM.

    With silence_is_zero, the A-law silence code decodes to 0 instead of 8 (µ-law's already
    does), so padding with ``codec.silence`` gives digital silence.
    """
    if codec is Codec.PCMU:
        return decode_ulaw(data)
    if silence_is_zero:
        return _decode(data, _ALAW_ZERO_LOW, _ALAW_HIGH)
    return decode_alaw(data)


def decode_stereo(
    left_codec: Codec | None, left: bytes, right_codec: Codec | None, right: bytes
) -> bytes:
    """Two channels of G.711 codes (equal lengths) as stereo frames of signed 16-bit
    little-endian PCM, decoded straight into place (a recording's second: no mono buffers to
    interleave afterwards). As ``decode(silence_is_zero=True)``; a channel whose codec is None
    (no audio yet) is silence."""
    if len(left) != len(right):
        raise ValueError("channels must be of equal length")
    frames = bytearray(4 * len(left))
    for offset, codec, codes in ((0, left_codec, left), (2, right_codec, right)):
        if codec is None:
            continue  # already zero
        low = _ULAW_LOW if codec is Codec.PCMU else _ALAW_ZERO_LOW
        high = _ULAW_HIGH if codec is Codec.PCMU else _ALAW_HIGH
        frames[offset::4] = codes.translate(low)
        frames[offset + 1 :: 4] = codes.translate(high)
    return bytes(frames)


def encode(codec: Codec, pcm: bytes) -> bytes:
    """Encode signed 16-bit little-endian PCM to a G.711 payload."""
    return encode_ulaw(pcm) if codec is Codec.PCMU else encode_alaw(pcm)


def ulaw_to_alaw(data: bytes) -> bytes:
    """Transcode µ-law to A-law code by code (G.711 §3 tables, via the linear value)."""
    return data.translate(_ULAW_TO_ALAW)


def alaw_to_ulaw(data: bytes) -> bytes:
    """Transcode A-law to µ-law code by code."""
    return data.translate(_ALAW_TO_ULAW)
