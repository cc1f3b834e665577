"""The media of every call: relay sessions, recorders and prompt players, by call id.

Adapter (asyncio). The call engine carries the call core's media actions out here: open the
relay (``open``), point a side at its party (``set_remote``), count silence from the answer
(``restart_silence``), record, play a prompt, and release everything (``release``; a recorder
is closed before its relay, so its last packets are written). Prompts are read once, from the
package (``pbx/prompts``), so an installed server plays them too.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import structlog

from pbx.config.model import MediaSettings
from pbx.errors import PbxError
from pbx.media.g711 import Codec
from pbx.media.kernel import KernelForwarder
from pbx.media.player import PlaybackFinished, PromptPlayer
from pbx.media.recorder import CallRecorder
from pbx.media.relay import MediaSession, PortPool, RelayCounters, Side
from pbx.media.sdp import AudioStream
from pbx.media.wav import TELEPHONE_MONO, WavAudio, read_wav

log = structlog.get_logger("pbx.media.calls")

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
PROMPT_NAMES = ("009608",)
# Port parking under load (``PortPool``, issue #21): a closed call's bound port pairs are
# kept, up to this many (two sockets each) and never more than an eighth of the open-file
# limit in sockets, and reused after the pool's quarantine.
PARKED_PAIRS = 1024


class MediaPlane(Protocol):
    """What the call engine needs of its media: ``CallMedia`` (the built-in relay) or
    ``pbx.media.rtpengine.RtpengineMedia`` (``[media] engine = "rtpengine"``, issue #20)."""

    counters: RelayCounters
    prompts: dict[str, WavAudio]

    @property
    def ports_in_use(self) -> int: ...
    async def open(
        self,
        call_id: str,
        settings: MediaSettings,
        bind_host: str,
        on_inactive: Callable[[Side], None],
    ) -> tuple[int, int]: ...
    def open_now(
        self,
        call_id: str,
        settings: MediaSettings,
        bind_host: str,
        on_inactive: Callable[[Side], None],
    ) -> tuple[int, int] | None: ...
    def media_host(self, call_id: str) -> str: ...
    def set_remote(self, call_id: str, side: Side, stream: AudioStream) -> None: ...
    def srtp_keys(self, call_id: str) -> tuple[bytes, bytes]: ...
    def restart_silence(self, call_id: str, side: Side) -> None: ...
    async def record(self, call_id: str, path: Path) -> bool: ...
    def play(
        self, call_id: str, prompt: str, codec: Codec, on_done: Callable[[int], None]
    ) -> None: ...
    def release(self, call_id: str) -> None: ...
    def close(self) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...


class CallMedia:
    """Media I/O for the call engine (see the module docstring)."""

    def __init__(self, clock: Callable[[], float], prompts_dir: Path = PROMPTS) -> None:
        self.clock = clock
        self.counters = RelayCounters()  # packet totals of every session, live or closed
        self.prompts = _load_prompts(prompts_dir)
        self._pool: PortPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the pool's
        self._sessions: dict[str, MediaSession] = {}
        self._recorders: dict[str, CallRecorder] = {}
        self._players: dict[str, PromptPlayer] = {}
        self._kernel: KernelForwarder | None = None  # [media] kernel_forwarding
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def ports_in_use(self) -> int:
        """RTP port pairs held by sessions."""
        return self._pool.in_use if self._pool is not None else 0

    async def open(
        self,
        call_id: str,
        settings: MediaSettings,
        bind_host: str,
        on_inactive: Callable[[Side], None],
    ) -> tuple[int, int]:
        """Open the call's relay; its A and B ports. Raises PbxError or OSError."""
        return self.open_now(call_id, settings, bind_host, on_inactive)

    def open_now(
        self,
        call_id: str,
        settings: MediaSettings,
        bind_host: str,
        on_inactive: Callable[[Side], None],
    ) -> tuple[int, int]:
        """``open`` without waiting: the relay opens at once (``MediaSession.open_now``).
        Raises PbxError or OSError."""
        if self._pool is None:
            # The pool's sockets and timers belong to this loop; kept with it (issue #21).
            self._loop = asyncio.get_running_loop()
            self._pool = PortPool(
                settings.rtp_port_min,
                settings.rtp_port_max,
                park_limit=_park_limit(),
                clock=self.clock,
            )
            if settings.kernel_forwarding:
                self._kernel = KernelForwarder(self._loop)
                self._kernel.start()
                self.counters.kernel = self._kernel
        session = MediaSession.open_now(
            self._pool,
            bind_host,
            inactivity_seconds=settings.inactivity_seconds,
            on_inactive=on_inactive,
            counters=self.counters,
            clock=self.clock,
            await_sdp=True,  # an SRTP party's first packets may come before its SDP (issue #18)
            loop=self._loop,
            kernel=self._kernel,
        )
        self._sessions[call_id] = session
        return session.a.port, session.b.port

    def media_host(self, call_id: str) -> str:
        return ""  # this node's own address: the call core's choice

    def set_remote(self, call_id: str, side: Side, stream: AudioStream) -> None:
        if (session := self._sessions.get(call_id)) is not None:
            session.set_remote(side, stream.address, stream.port, stream.direction)
            session.set_crypto(side, stream.crypto)

    def srtp_keys(self, call_id: str) -> tuple[bytes, bytes]:
        """Our SRTP keys for the call's A and B sides (issue #18; written into each SDP)."""
        session = self._sessions.get(call_id)
        if session is None:
            return (b"", b"")
        return session.srtp_keys[Side.A], session.srtp_keys[Side.B]

    def restart_silence(self, call_id: str, side: Side) -> None:
        if (session := self._sessions.get(call_id)) is not None:
            session.restart_silence(side)

    async def record(self, call_id: str, path: Path) -> bool:
        """Record the call's relay into ``path``; False if that failed."""
        session = self._sessions.get(call_id)
        if session is None:
            return True
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            recorder = await CallRecorder.start(path.parent, path.name, session)
        except OSError as exc:
            log.warning("recording_failed", call=call_id, error=str(exc))
            return False
        if self._sessions.get(call_id) is not session:  # released meanwhile
            await recorder.close()
        else:
            self._recorders[call_id] = recorder
        return True

    def play(self, call_id: str, prompt: str, codec: Codec, on_done: Callable[[int], None]) -> None:
        """Play a prompt to the caller; ``on_done(packets_sent)`` when it has played."""

        def done(result: PlaybackFinished) -> None:
            on_done(result.packets_sent)

        session = self._sessions[call_id]
        player = PromptPlayer.from_wav(
            self.prompts[prompt], codec, session.a.send_rtp, on_done=done
        )
        self._players[call_id] = player
        player.start()

    def release(self, call_id: str) -> None:
        """Stop the player and recorder, close the relay: its ports go back to the pool."""
        if (player := self._players.pop(call_id, None)) is not None:
            player.stop()
        recorder = self._recorders.pop(call_id, None)
        session = self._sessions.pop(call_id, None)
        if recorder is None:
            if session is not None:
                session.close()
            return

        async def close_then_release() -> None:
            try:
                await recorder.close()
            finally:
                if session is not None:
                    session.close()

        self.spawn(close_then_release())

    def close(self) -> None:
        """Server shutdown: close the port pairs parked for reuse (live sessions stay)."""
        if self._pool is not None:
            self._pool.close_parked()
        if self._kernel is not None:
            self._kernel.close()  # its table goes with it
            self._kernel = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task kept until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _park_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return PARKED_PAIRS
    return min(PARKED_PAIRS, soft // 16)  # two sockets a pair: an eighth of the limit


def _load_prompts(directory: Path) -> dict[str, WavAudio]:
    """The announcements, read once (a missing one makes its fork fail with 480)."""
    prompts = {}
    for name in PROMPT_NAMES:
        try:
            prompts[name] = read_wav(directory / f"{name}.wav", expect=TELEPHONE_MONO)
        except (OSError, PbxError) as exc:
            log.warning("prompt_unavailable", prompt=name, error=str(exc))
    return prompts
