"""Call recording: a stereo 16-bit 8 kHz WAV, caller on the left channel, callee on the right.

Adapter (asyncio). The relay's taps append ``(arrival_time, datagram)`` to a deque per side
(O(1) on the hot path). A timer drains them once per ``flush_seconds``, on the recorder's own
schedule (its first flush at a random moment, so that many recorders do not flush together,
and every later one a whole period after it, however long the writes took), copies each
PCMU/PCMA payload (RFC 3551 payload types 0 and 8; telephone-event, comfort noise and anything
else are skipped) onto a per-party timeline of G.711 codes, decodes the finished second of
both parties in one call (straight into stereo frames), and writes it from a worker thread:
neither decoding nor disk I/O holds up the relay. A party that switches codec mid-call is
transcoded into its first codec.

Writes in batches (issue #21): handing a flush's two small positioned writes to a thread cost
more than the writes (a future, a wake-up, the GIL changing hands, per recorder and second), so
the recorders of an event loop share a ``BatchedWriter``: the writes queued within
``BATCH_SECONDS`` go to the worker thread as one job (one job in flight at a time), and each
recorder still awaits its own writes and sees its own ``OSError``.

Time alignment. Sample 0 is the moment the recorder started (on the loop clock). Within a run
of packets, a packet's position comes from its RTP timestamp (RFC 3550 §5.1: the sampling
instant), so network jitter does not move audio around. A run is anchored by the arrival time of
its first packet, and re-anchored on a new SSRC, or when the timestamp-derived position strays
more than ``resync_seconds`` from the arrival-derived one (the sender jumped its timestamps,
paused them during hold, or its clock drifted). Where a side sent nothing, its channel is
silence. Audio is final ``jitter_seconds`` after its arrival; a packet arriving later than that,
behind what is already written, is dropped and counted.

The WAV header's sizes are patched after every write, so after a crash the file is valid up to
the last flush; ``close()`` writes the rest and patches them a last time.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import random
import struct
import weakref
from dataclasses import dataclass
from io import FileIO
from pathlib import Path

import structlog

from pbx.errors import RemoteProtocolError
from pbx.media import g711
from pbx.media.g711 import Codec
from pbx.media.relay import MediaSession, PacketSink, Side
from pbx.media.rtp import peek_rtp
from pbx.media.wav import (
    TELEPHONE_STEREO,
    WAV_HEADER_SIZE,
    build_wav_header,
)

log = structlog.get_logger("pbx.media.recorder")

SAMPLE_RATE = 8000
_FAST_HEADER = struct.Struct("!BBHII")
BATCH_SECONDS = 0.05  # how long a write may wait for others to share its thread job


_WRITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BatchedWriter] = (
    weakref.WeakKeyDictionary()
)


class BatchedWriter:
    """Appends to recordings from a worker thread, many recorders' writes per thread job."""

    def __init__(self, loop: asyncio.AbstractEventLoop, batch_seconds: float = BATCH_SECONDS):
        self._loop = loop
        self._batch_seconds = batch_seconds
        self._pending: list[tuple[int, bytes, int, int, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._job: asyncio.Task[None] | None = None
        self.jobs = 0  # thread jobs run (for the tests and the load test)

    @classmethod
    def for_loop(cls, loop: asyncio.AbstractEventLoop) -> BatchedWriter:
        """The writer the recorders of ``loop`` share."""
        writer = _WRITERS.get(loop)
        if writer is None:
            writer = _WRITERS[loop] = cls(loop)
        return writer

    async def append(self, fd: int, frames: bytes, offset: int, data_size: int) -> None:
        """Write ``frames`` at ``offset`` in the WAV file ``fd``, then its header's sizes."""
        done = self._loop.create_future()
        self._pending.append((fd, frames, offset, data_size, done))
        if self._timer is None and self._job is None:
            self._timer = self._loop.call_later(self._batch_seconds, self._start)
        await done

    def _start(self) -> None:
        self._timer = None
        jobs, self._pending = self._pending, []
        self._job = self._loop.create_task(self._run(jobs))

    async def _run(self, jobs: list[tuple[int, bytes, int, int, asyncio.Future[None]]]) -> None:
        try:
            errors = await asyncio.to_thread(_append_all, [job[:4] for job in jobs])
        except asyncio.CancelledError:  # loop shutdown: the waiting recorders are cancelled too
            for job in jobs:
                job[4].cancel()
            raise
        finally:
            self.jobs += 1
            self._job = None
            if self._pending:  # queued while this job ran: the next batch
                self._timer = self._loop.call_later(self._batch_seconds, self._start)
        for job, error in zip(jobs, errors, strict=True):
            done = job[4]
            if done.done():
                continue
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """What a finished recording holds."""

    path: Path
    frames: int
    packets: int
    late_packets: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / SAMPLE_RATE


class _Track:
    """One party's channel: pending packets, the current anchor, and undecided samples."""

    __slots__ = ("_codec", "anchor", "buffer", "late", "packets", "queue", "silence_byte")

    def __init__(self) -> None:
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        # (ssrc, rtp timestamp, sample position) of the current run, or None.
        self.anchor: tuple[int, int, int] | None = None
        # G.711 codes (one byte per sample) from the written position onwards, in `codec`, the
        # codec of the party's first packet; gaps hold its silence code. Decoding waits for
        # the flush, one call per second of audio instead of one per packet.
        self._codec: Codec | None = None
        self.silence_byte = b""
        self.buffer = bytearray()
        self.packets = 0
        self.late = 0

    @property
    def codec(self) -> Codec | None:
        """The codec the timeline is kept in (the party's first), or None before any audio."""
        return self._codec

    @codec.setter
    def codec(self, codec: Codec) -> None:
        self._codec = codec
        self.silence_byte = bytes([codec.silence])

    def take(self, count: int) -> bytes:
        """Remove the first count G.711 codes, padded with silence; decoded by the caller
        (``g711.decode_stereo``, with the other party's)."""
        codes = bytes(self.buffer[:count])
        del self.buffer[:count]
        if self._codec is None:
            return bytes(count)  # no audio yet: decode_stereo leaves the channel silent
        if len(codes) < count:
            codes += self.silence_byte * (count - len(codes))
        return codes


class CallRecorder:
    """Records both parties of a MediaSession into one stereo WAV. Create with ``start``."""

    def __init__(
        self,
        path: Path,
        file: FileIO,
        start_time: float,
        *,
        flush_seconds: float,
        jitter_seconds: float,
        resync_seconds: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.path = path
        self._file = file
        self._start = start_time
        self._flush_seconds = flush_seconds
        self._jitter_seconds = jitter_seconds
        self._resync = round(resync_seconds * SAMPLE_RATE)
        self._loop = loop
        self._writer = BatchedWriter.for_loop(loop)
        self._tracks = {Side.A: _Track(), Side.B: _Track()}
        self._written = 0  # frames already in the file
        self._task: asyncio.Task[None] | None = None
        self._session: MediaSession | None = None
        self._result: RecordingResult | None = None
        self._stopping = False
        self._sleeping = False
        self._failed = False

    @classmethod
    async def start(
        cls,
        directory: Path,
        name: str,
        session: MediaSession | None = None,
        *,
        flush_seconds: float = 1.0,
        jitter_seconds: float = 0.3,
        resync_seconds: float = 0.5,
    ) -> CallRecorder:
        """Create ``directory/name`` (a .wav) and, if given, tap both sides of ``session``."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"recording name {name!r} must be a plain file name")
        path = directory / name
        loop = asyncio.get_running_loop()
        file = await asyncio.to_thread(_create, path)
        recorder = cls(
            path,
            file,
            loop.time(),
            flush_seconds=flush_seconds,
            jitter_seconds=jitter_seconds,
            resync_seconds=resync_seconds,
            loop=loop,
        )
        if session is not None:
            recorder.attach(session)
        recorder._task = loop.create_task(recorder._run(), name=f"recorder:{name}")
        return recorder

    def sink(self, side: Side) -> PacketSink:
        """The tap for one side: append (arrival_time, datagram); O(1), never blocks."""
        return self._tracks[side].queue.append

    def attach(self, session: MediaSession) -> None:
        """Tap both sides of a session (those it has)."""
        self._session = session
        for side in session.sides:
            session.set_tap(side, self.sink(side))

    async def _run(self) -> None:
        # close() cancels this task only while it sleeps, never during a write (_sleeping);
        # a plain sleep is far cheaper than waiting on an event with a timeout. The first flush
        # is at a random moment so that recorders started together do not all flush at once,
        # and each later one keeps to that recorder's own schedule (``next_flush``): counted
        # from the end of its last write instead, the recorders whose writes shared a batch
        # would all wake together a period later, and under load they gathered into a few
        # bursts of hundreds of flushes that held the relay up (late packets, loss).
        loop = self._loop
        period = self._flush_seconds
        due = loop.time() + period * (0.5 + random.random())
        while not self._stopping:
            self._sleeping = True
            try:
                await asyncio.sleep(max(0.0, due - loop.time()))
            finally:
                self._sleeping = False
            try:
                await self._flush(self._position(loop.time() - self._jitter_seconds))
            except OSError:
                log.exception("recording_write_failed", path=str(self.path))
                self._failed = True
                self._detach()
                return
            due = next_flush(due, period, loop.time())

    def _detach(self) -> None:
        if self._session is not None and not self._session.closed:
            for side in self._session.sides:
                self._session.set_tap(side, None)

    def _position(self, when: float) -> int:
        return max(0, round((when - self._start) * SAMPLE_RATE))

    def _place(self, track: _Track) -> None:
        """Copy the track's queued packets onto its timeline (once per flush, per packet)."""
        # Runs for every recorded packet: locals and inlined arithmetic, no helper calls.
        queue = track.queue
        written = self._written
        resync = self._resync
        start = self._start
        codec_type = track.codec.payload_type if track.codec is not None else -1
        while queue:
            arrival, data = queue.popleft()
            if len(data) < 12:
                continue
            if data[0] == 0x80:  # no padding, extension or CSRC: the common case
                _, second, _, timestamp, ssrc = _FAST_HEADER.unpack_from(data)
                payload_type = second & 0x7F
                payload = data[12:]
            else:
                try:
                    view = peek_rtp(data)
                except RemoteProtocolError:
                    continue
                payload_type, timestamp, ssrc = view.payload_type, view.timestamp, view.ssrc
                payload = data[view.payload_offset : view.payload_end]
            if payload_type != codec_type:
                if payload_type != 0 and payload_type != 8:
                    continue  # telephone-event, comfort noise, anything else: not recorded
                if codec_type == -1:
                    track.codec = Codec(payload_type)
                    codec_type = payload_type
                else:
                    # The codec changed mid-call (re-INVITE): transcode into the track's codec.
                    payload = (
                        g711.ulaw_to_alaw(payload)
                        if payload_type == 0
                        else g711.alaw_to_ulaw(payload)
                    )
            track.packets += 1
            size = len(payload)
            # The packet's first sample, judged by when it arrived.
            heard = round((arrival - start) * SAMPLE_RATE) - size
            anchor = track.anchor
            if anchor is not None and anchor[0] == ssrc:
                # RTP timestamp distance, modulo 2**32, signed (RFC 3550 §5.1).
                position = anchor[2] + (
                    ((timestamp - anchor[1] + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000
                )
                if not -resync <= position - heard <= resync:
                    position = heard
                    track.anchor = (ssrc, timestamp, position)
            else:
                position = heard
                track.anchor = (ssrc, timestamp, position)
            offset = position - written
            if offset < 0:
                if offset + size <= 0:
                    track.late += 1
                    continue
                payload = payload[-offset:]
                offset = 0
                size = len(payload)
            buffer = track.buffer
            if offset == len(buffer):
                buffer += payload  # the next packet in sequence: the usual case
                continue
            if offset > len(buffer):
                buffer += track.silence_byte * (offset - len(buffer))
            buffer[offset : offset + size] = payload

    async def _flush(self, horizon: int) -> None:
        """Write every frame before ``horizon`` (a sample position) to the file."""
        for track in self._tracks.values():
            self._place(track)
        count = horizon - self._written
        if count <= 0:
            return
        a, b = self._tracks[Side.A], self._tracks[Side.B]
        frames = g711.decode_stereo(a.codec, a.take(count), b.codec, b.take(count))
        written_before = self._written
        self._written = horizon
        offset = WAV_HEADER_SIZE + 4 * written_before
        await self._writer.append(self._file.fileno(), frames, offset, 4 * self._written)

    async def close(self) -> RecordingResult:
        """Stop tapping, write what is left, patch the header and close the file (idempotent)."""
        if self._result is not None:
            return self._result
        self._detach()
        self._stopping = True
        if self._task is not None:
            if self._sleeping:
                self._task.cancel()
            await asyncio.wait({self._task})  # whatever its outcome; our own cancel propagates
            self._task = None
        try:
            if not self._failed:
                # Everything heard so far, and any packet already queued, goes in.
                for track in self._tracks.values():
                    self._place(track)
                end = max(
                    [self._position(self._loop.time())]
                    + [self._written + len(t.buffer) for t in self._tracks.values()]
                )
                await self._flush(end)
        finally:
            await asyncio.to_thread(self._file.close)
        self._result = RecordingResult(
            self.path,
            self._written,
            sum(t.packets for t in self._tracks.values()),
            sum(t.late for t in self._tracks.values()),
        )
        log.info(
            "recording_finished",
            path=str(self.path),
            seconds=round(self._result.duration, 2),
            packets=self._result.packets,
            late_packets=self._result.late_packets,
        )
        return self._result


def next_flush(due: float, period: float, now: float) -> float:
    """A recorder's next flush: the first moment after ``now`` on its own schedule, ``due``
    plus a whole number (at least one) of periods; a flush whose write overran a period skips
    the moments it missed rather than flushing again at once."""
    return due + max(1, math.floor((now - due) / period) + 1) * period


def _create(path: Path) -> FileIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    file = path.open("xb", buffering=0)  # never overwrite an existing recording
    try:
        _write_at(file.fileno(), build_wav_header(TELEPHONE_STEREO, 0), 0)
    except BaseException:
        file.close()
        raise
    return file


def _append(fd: int, frames: bytes, offset: int, data_size: int) -> None:
    # Two positioned writes per flush: the frames, then the header with the new sizes.
    _write_at(fd, frames, offset)
    _write_at(fd, build_wav_header(TELEPHONE_STEREO, data_size), 0)


def _append_all(jobs: list[tuple[int, bytes, int, int]]) -> list[OSError | None]:
    """Run a batch of ``_append`` calls (in the worker thread); each one's error, or None."""
    errors: list[OSError | None] = []
    for job in jobs:
        try:
            _append(*job)
        except OSError as exc:
            # Without its traceback: its frames hold ``errors`` (a cycle holding the frames'
            # audio, which only a full collection frees; issue #21).
            errors.append(exc.with_traceback(None))
        else:
            errors.append(None)
    return errors


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
