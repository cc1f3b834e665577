"""Test audio helpers: sine tones and a Goertzel detector (numpy is not a project dependency)."""

from __future__ import annotations

import math
from array import array


def tone(frequency: float, seconds: float, amplitude: int = 12000, rate: int = 8000) -> bytes:
    """A sine tone as 16-bit little-endian PCM."""
    count = round(seconds * rate)
    return array(
        "h", (round(amplitude * math.sin(2 * math.pi * frequency * n / rate)) for n in range(count))
    ).tobytes()


def goertzel_power(pcm: bytes, frequency: float, rate: int = 8000) -> float:
    """Normalised power of one frequency in 16-bit PCM (Goertzel algorithm)."""
    samples = array("h", pcm)
    if not samples:
        return 0.0
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coefficient * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coefficient * s1 * s2
    return power / (len(samples) ** 2)


def dominant(pcm: bytes, candidates: tuple[float, ...]) -> float:
    """Which of the candidate frequencies is strongest."""
    return max(candidates, key=lambda f: goertzel_power(pcm, f))


def rms(pcm: bytes) -> float:
    """Root mean square level of 16-bit PCM."""
    samples = array("h", pcm)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def split_stereo(frames: bytes) -> tuple[bytes, bytes]:
    """Stereo 16-bit frames to the (left, right) mono channels."""
    samples = array("h", frames)
    return samples[0::2].tobytes(), samples[1::2].tobytes()
