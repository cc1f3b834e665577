"""Prompt playback: stream an 8 kHz mono 16-bit WAV to a party as G.711 RTP (RFC 3550, RFC 3551).

Adapter (asyncio). The prompt is encoded once (PCMU or PCMA, as negotiated) and cut into 20 ms
packets of 160 samples, the last one padded with silence. Packet k is sent at start + k * 20 ms
on the loop clock: each send is scheduled against that absolute deadline, never "20 ms after the
previous one", so timer lateness does not accumulate into drift; if the loop falls behind, the
overdue packets go out at once (their timestamps stay correct, the receiver's jitter buffer
absorbs the burst).

RTP fields (RFC 3550 §5.1): random initial sequence number, timestamp and SSRC; the timestamp
advances by 160 per packet; the marker bit is set on the first packet, the start of a talkspurt
(RFC 3551 §4.1). ``done`` resolves when the prompt has been sent (or ``stop()`` was called), so
the call engine can hang up.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from pbx.media import g711
from pbx.media.g711 import Codec
from pbx.media.rtp import build_rtp_header, sequence_add, timestamp_add
from pbx.media.wav import TELEPHONE_MONO, WavAudio

SAMPLES_PER_PACKET = 160
PACKET_SECONDS = SAMPLES_PER_PACKET / 8000


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    """The outcome of a playback: how many packets went out, and whether it ran to the end."""

    packets_sent: int
    completed: bool


def encode_prompt(audio: WavAudio, codec: Codec) -> list[bytes]:
    """Encode an 8 kHz mono 16-bit prompt into 20 ms G.711 payloads (last one padded)."""
    if audio.format != TELEPHONE_MONO:
        raise ValueError(f"prompt must be 8 kHz mono 16-bit, not {audio.format}")
    encoded = g711.encode(codec, audio.frames)
    remainder = len(encoded) % SAMPLES_PER_PACKET
    if remainder:
        encoded += bytes([codec.silence]) * (SAMPLES_PER_PACKET - remainder)
    return [encoded[i : i + SAMPLES_PER_PACKET] for i in range(0, len(encoded), SAMPLES_PER_PACKET)]


class PromptPlayer:
    """Sends encoded prompt packets through ``send`` (``RelayLeg.send_rtp``) on a 20 ms clock."""

    def __init__(
        self,
        payloads: list[bytes],
        codec: Codec,
        send: Callable[[bytes], object],
        *,
        repeat: int = 1,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
        on_done: Callable[[PlaybackFinished], None] | None = None,
    ) -> None:
        if repeat < 1:
            raise ValueError("repeat must be at least 1")
        rng = random.SystemRandom()
        self.payloads = payloads
        self.codec = codec
        self.ssrc = rng.getrandbits(32) if ssrc is None else ssrc
        self.first_sequence = rng.getrandbits(16) if sequence is None else sequence
        self.first_timestamp = rng.getrandbits(32) if timestamp is None else timestamp
        self._send = send
        self._total = len(payloads) * repeat
        self._sent = 0
        self._start = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_done = on_done
        self.done: asyncio.Future[PlaybackFinished] | None = None

    @classmethod
    def from_wav(
        cls,
        audio: WavAudio,
        codec: Codec,
        send: Callable[[bytes], object],
        *,
        repeat: int = 1,
        on_done: Callable[[PlaybackFinished], None] | None = None,
    ) -> PromptPlayer:
        """A player for a WAV prompt (encodes it; cache ``encode_prompt`` for a busy prompt)."""
        return cls(encode_prompt(audio, codec), codec, send, repeat=repeat, on_done=on_done)

    @property
    def packets_sent(self) -> int:
        """How many packets have gone out so far."""
        return self._sent

    def start(self) -> asyncio.Future[PlaybackFinished]:
        """Begin sending now; returns the future that resolves when playback ends."""
        if self.done is not None:
            raise RuntimeError("a PromptPlayer plays once")
        self._loop = asyncio.get_running_loop()
        self.done = self._loop.create_future()
        self._start = self._loop.time()
        self._tick()
        return self.done

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        count = len(self.payloads)
        # Send every packet whose deadline has passed (normally exactly one).
        while self._sent < self._total and self._start + self._sent * PACKET_SECONDS <= now:
            k = self._sent
            header = build_rtp_header(
                self.codec.payload_type,
                sequence_add(self.first_sequence, k),
                timestamp_add(self.first_timestamp, k * SAMPLES_PER_PACKET),
                self.ssrc,
                marker=k == 0,
            )
            self._send(header + self.payloads[k % count])
            self._sent += 1
        if self._sent >= self._total:
            self._finish(completed=True)
            return
        self._handle = self._loop.call_at(self._start + self._sent * PACKET_SECONDS, self._tick)

    def stop(self) -> None:
        """Stop sending (the call ended); ``done`` resolves with completed=False."""
        self._finish(completed=self._sent >= self._total)

    def _finish(self, *, completed: bool) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self.done is None or self.done.done():
            return
        result = PlaybackFinished(self._sent, completed)
        self.done.set_result(result)
        if self._on_done is not None:
            self._on_done(result)
