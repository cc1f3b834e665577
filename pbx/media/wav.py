"""PCM WAV (RIFF/WAVE, WAVE_FORMAT_PCM) headers and helpers for 16-bit telephone audio.

Pure apart from the two file helpers at the bottom: headers are built as bytes, parsed from bytes
with the stdlib ``wave`` module, and the size fields can be patched in place once a file written
incrementally is complete. The canonical 44-byte header is used: "RIFF" size "WAVE", a 16-byte
"fmt " chunk, then "data" size and the samples (little-endian, interleaved by frame).
"""

from __future__ import annotations

import io
import struct
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path

from pbx.errors import PbxError

WAV_HEADER_SIZE = 44
RIFF_SIZE_OFFSET = 4
DATA_SIZE_OFFSET = 40
_PCM_FORMAT = 1
_MAX_DATA_SIZE = 0xFFFF_FFFF - (WAV_HEADER_SIZE - 8)


class WavError(PbxError):
    """A file is not a WAV we can use (not PCM, wrong rate, channels or sample width)."""


@dataclass(frozen=True, slots=True)
class WavFormat:
    """Channels, sample rate and bytes per sample of a PCM WAV."""

    channels: int = 1
    sample_rate: int = 8000
    sample_width: int = 2

    @property
    def frame_size(self) -> int:
        """Bytes per frame (one sample of every channel)."""
        return self.channels * self.sample_width

    @property
    def byte_rate(self) -> int:
        """Bytes per second of audio."""
        return self.sample_rate * self.frame_size


TELEPHONE_MONO = WavFormat(1, 8000, 2)
TELEPHONE_STEREO = WavFormat(2, 8000, 2)


@dataclass(frozen=True, slots=True)
class WavAudio:
    """A decoded WAV: its format and its raw little-endian frames."""

    format: WavFormat
    frames: bytes

    @property
    def frame_count(self) -> int:
        """Number of frames (samples per channel)."""
        return len(self.frames) // self.format.frame_size

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frame_count / self.format.sample_rate


def build_wav_header(fmt: WavFormat, data_size: int) -> bytes:
    """The 44-byte header of a PCM WAV whose data chunk holds data_size bytes."""
    if not 0 <= data_size <= _MAX_DATA_SIZE:
        raise ValueError(f"data size {data_size} does not fit a WAV file")
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", WAV_HEADER_SIZE - 8 + data_size),
            b"WAVE",
            b"fmt ",
            struct.pack(
                "<IHHIIHH",
                16,
                _PCM_FORMAT,
                fmt.channels,
                fmt.sample_rate,
                fmt.byte_rate,
                fmt.frame_size,
                8 * fmt.sample_width,
            ),
            b"data",
            struct.pack("<I", data_size),
        )
    )


def size_patches(data_size: int) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """(offset, bytes) pairs that fix the RIFF and data sizes of a header from build_wav_header."""
    if not 0 <= data_size <= _MAX_DATA_SIZE:
        raise ValueError(f"data size {data_size} does not fit a WAV file")
    return (
        (RIFF_SIZE_OFFSET, struct.pack("<I", WAV_HEADER_SIZE - 8 + data_size)),
        (DATA_SIZE_OFFSET, struct.pack("<I", data_size)),
    )


def build_wav(fmt: WavFormat, frames: bytes) -> bytes:
    """A complete WAV file in memory."""
    return build_wav_header(fmt, len(frames)) + frames


def parse_wav(data: bytes, expect: WavFormat | None = None) -> WavAudio:
    """Parse a PCM WAV; raise WavError if it is malformed or differs from expect."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            fmt = WavFormat(reader.getnchannels(), reader.getframerate(), reader.getsampwidth())
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError, struct.error) as exc:
        raise WavError(f"not a PCM WAV file: {exc}") from exc
    if expect is not None and fmt != expect:
        raise WavError(f"WAV format {fmt} differs from the expected {expect}")
    return WavAudio(fmt, frames)


def interleave_stereo(left: bytes, right: bytes) -> bytes:
    """Two mono 16-bit little-endian channels of equal length to one stereo frame sequence."""
    if len(left) != len(right) or len(left) % 2:
        raise ValueError("channels must be 16-bit and of equal length")
    out = array("h", bytes(2 * len(left)))
    out[0::2] = array("h", left)
    out[1::2] = array("h", right)
    return out.tobytes()


def read_wav(path: Path, expect: WavFormat | None = None) -> WavAudio:
    """Read and parse a WAV file (blocking: call at start-up or through asyncio.to_thread)."""
    return parse_wav(path.read_bytes(), expect)


def repair_wav(path: Path) -> bool:
    """Fix the size fields of a canonical WAV cut short by a crash (blocking: start-up, or
    through asyncio.to_thread): the data chunk is made to hold every whole frame on disk, and
    a partly written last frame is cut off. Returns whether the file is a playable WAV now
    (False: missing, or not one of ours)."""
    try:
        with path.open("r+b") as file:
            header = file.read(WAV_HEADER_SIZE)
            if len(header) < WAV_HEADER_SIZE or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
                return False
            if header[36:40] != b"data":
                return False
            channels, _, _, block_align, _ = struct.unpack("<HIIHH", header[22:36])
            if channels < 1 or block_align < 1:
                return False
            size = file.seek(0, io.SEEK_END) - WAV_HEADER_SIZE
            data_size = min(_MAX_DATA_SIZE, size - size % block_align)
            if data_size != size:
                file.truncate(WAV_HEADER_SIZE + data_size)
            for offset, value in size_patches(data_size):
                file.seek(offset)
                file.write(value)
    except OSError:
        return False
    return True
