"""The media of every call through rtpengine (``[media] engine = "rtpengine"``, issue #20).

Adapter (asyncio), with the same interface as ``pbx.media.calls.CallMedia``, so the call engine
does not know which one it drives. This node relays no RTP: rtpengine does, and this module
tells it what to do over the ng protocol (``pbx.media.ng``):

- ``open``: an ``offer`` (from-tag ``a``, the caller) and an ``answer`` (to-tag ``b``) with
  placeholder SDP give the call its two rtpengine ports (the one the caller sends to, the one
  the callee sends to) and rtpengine's address, which the call core writes into both SDPs as it
  does for the built-in relay.
- ``set_remote``: the party's real SDP (built from its ``AudioStream``) in a repeated ``offer``
  (side A) or ``answer`` (side B), with the ``port latching`` flag so rtpengine keeps the ports
  it gave. Requests for one call are sent one after the other, in the order they were made.
- ``play``: ``play media`` of the prompt's WAV file to the caller; rtpengine encodes it and
  reports its duration, after which the call core is told it has played.
- ``record``: ``start recording``. rtpengine runs in userspace here, where only its ``pcap``
  recording method works (the ``proc`` method and rtpengine's recording daemon need its kernel
  module): rtpengine writes the call's packets to a pcap file under its ``--recording-dir``,
  and when the call ends this module turns that file into the call's stereo WAV at the path the
  call core chose (``pbx.media.pcap_wav``: caller left, callee right), then deletes the pcap.
- ``release``: ``delete`` (no delay, so the pcap is complete at once).

- inactivity: every ``inactivity_seconds / 4`` (0.25 to 5 s) a ``query`` reads how many packets
  (RTP and RTCP) rtpengine has received from each party; a party expected to send (its SDP says
  sendrecv or sendonly) whose count has not moved for ``inactivity_seconds`` triggers
  ``on_inactive(side)`` once, as with the built-in relay (``restart_silence`` starts the count
  again, a new packet re-arms it).

Not carried over from the built-in relay: SRTP (the SDP offered is plain RTP; ``srtp_keys`` gives
none, so the call core answers an SRTP offer 488 rather than with plain RTP, and a tenant that
requires encryption is a configuration error on such a node). See docs/design.md 10.7.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from pbx.config.model import MediaSettings
from pbx.media.bencode import Value
from pbx.media.calls import PROMPTS, _load_prompts
from pbx.media.g711 import Codec
from pbx.media.latch import Side
from pbx.media.ng import NgClient, NgError, Reply
from pbx.media.pcap_wav import pcap_to_stereo_wav
from pbx.media.relay import RelayCounters
from pbx.media.sdp import AudioStream, Direction

log = structlog.get_logger("pbx.media.rtpengine")

TAGS = {Side.A: "a", Side.B: "b"}
COMMON: dict[str, Value] = {
    "ICE": "remove",
    "replace": ["origin", "session connection"],
    "flags": ["port latching"],
}


@dataclass
class _Call:
    ng_id: str
    host: str = ""
    ports: tuple[int, int] = (0, 0)
    last: asyncio.Task[None] | None = None  # the call's latest request: the next one waits
    recording: Path | None = None
    player: asyncio.TimerHandle | None = None
    streams: dict[Side, AudioStream] = field(default_factory=dict)
    watcher: asyncio.Task[None] | None = None
    heard: dict[Side, tuple[int, float]] = field(default_factory=dict)  # packets, since when
    silent: set[Side] = field(default_factory=set)  # on_inactive already called


class RtpengineMedia:
    """Media for the call engine through rtpengine (see the module docstring)."""

    def __init__(
        self,
        clock: Callable[[], float],
        address: tuple[str, int],
        *,
        prompts_dir: Path = PROMPTS,
        recording_dir: Path | None = None,
    ) -> None:
        self.clock = clock
        self.counters = RelayCounters()  # stays zero: no RTP passes through this node
        self.prompts = _load_prompts(prompts_dir)
        self.prompt_files = {name: (prompts_dir / f"{name}.wav").resolve() for name in self.prompts}
        self.recording_dir = recording_dir  # rtpengine's --recording-dir (its pcaps/ inside)
        self.client = NgClient(address)
        self._node = secrets.token_hex(4)  # call ids of several nodes sharing one rtpengine
        self._calls: dict[str, _Call] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def ports_in_use(self) -> int:
        """rtpengine RTP ports held for this node's calls (two per call)."""
        return 2 * sum(1 for call in self._calls.values() if call.ports != (0, 0))

    def open_now(
        self,
        call_id: str,
        settings: MediaSettings,
        bind_host: str,
        on_inactive: Callable[[Side], None],
    ) -> tuple[int, int] | None:
        """Never at once: rtpengine is asked over the network (``open``)."""
        return None

    async def open(
        self,
        call_id: str,
        settings: MediaSettings,
        bind_host: str,
        on_inactive: Callable[[Side], None],
    ) -> tuple[int, int]:
        """Ask rtpengine for the call's two ports; (A port, B port). Raises NgError."""
        call = self._calls[call_id] = _Call(f"{self._node}-{call_id}")
        try:
            offered = await self._ng(call, "offer", placeholder_sdp(bind_host))
            answered = await self._ng(call, "answer", placeholder_sdp(bind_host))
        except NgError:
            self._calls.pop(call_id, None)
            raise
        host, b_port = sdp_address(offered)
        _, a_port = sdp_address(answered)
        call.host, call.ports = host, (a_port, b_port)
        if self._calls.get(call_id) is not call:  # released meanwhile
            self._delete(call)
        else:
            call.watcher = asyncio.get_running_loop().create_task(
                self._watch(call, settings.inactivity_seconds, on_inactive)
            )
        return call.ports

    def media_host(self, call_id: str) -> str:
        """The address to write in the call's SDPs ("" for the node's own)."""
        call = self._calls.get(call_id)
        return call.host if call is not None else ""

    def set_remote(self, call_id: str, side: Side, stream: AudioStream) -> None:
        if (call := self._calls.get(call_id)) is None:
            return
        call.streams[side] = stream
        command = "offer" if side is Side.A else "answer"
        self._serial(call, self._ng(call, command, party_sdp(stream)))

    def srtp_keys(self, call_id: str) -> tuple[bytes, bytes]:
        return (b"", b"")  # plain RTP toward both parties (see the module docstring)

    def restart_silence(self, call_id: str, side: Side) -> None:
        if (call := self._calls.get(call_id)) is not None and side in call.heard:
            call.heard[side] = (call.heard[side][0], self.clock())
            call.silent.discard(side)

    async def _watch(
        self, call: _Call, inactivity: float, on_inactive: Callable[[Side], None]
    ) -> None:
        """Poll rtpengine's packet counts; report a party silent for ``inactivity`` seconds."""
        interval = min(5.0, max(0.25, inactivity / 4))
        query: dict[str, Value] = {"command": "query", "call-id": call.ng_id}
        while True:
            await asyncio.sleep(interval)
            try:
                reply = await self.client.request(query)
            except NgError as exc:
                log.warning("rtpengine_query_failed", call=call.ng_id, error=str(exc))
                continue
            for side in inactive_sides(call, reply, self.clock(), inactivity):
                on_inactive(side)

    async def record(self, call_id: str, path: Path) -> bool:
        """Have rtpengine record the call; its WAV is written at ``path`` when it ends."""
        call = self._calls.get(call_id)
        if call is None:
            return True
        if self.recording_dir is None:
            log.warning("recording_failed", call=call_id, error="no [media] recording_dir")
            return False
        try:
            await self.client.request({"command": "start recording", "call-id": call.ng_id})
        except NgError as exc:
            log.warning("recording_failed", call=call_id, error=str(exc))
            return False
        call.recording = path
        return True

    def play(self, call_id: str, prompt: str, codec: Codec, on_done: Callable[[int], None]) -> None:
        """Have rtpengine play a prompt to the caller; ``on_done(packets)`` when it has."""
        call = self._calls[call_id]
        command: dict[str, Value] = {
            "command": "play media",
            "call-id": call.ng_id,
            "from-tag": TAGS[Side.A],
            "file": str(self.prompt_files[prompt]),
        }

        async def start() -> None:
            try:
                reply = await self.client.request(command)
            except NgError as exc:
                log.warning("prompt_failed", call=call_id, error=str(exc))
                on_done(0)
                return
            duration = reply.get(b"duration")
            milliseconds = duration if isinstance(duration, int) else 0
            call.player = asyncio.get_running_loop().call_later(
                milliseconds / 1000, on_done, milliseconds // 20
            )

        self._serial(call, start())

    def release(self, call_id: str) -> None:
        """Delete the call in rtpengine; then write its recording, if it had one."""
        call = self._calls.pop(call_id, None)
        if call is None:
            return
        if call.player is not None:
            call.player.cancel()
        if call.watcher is not None:
            call.watcher.cancel()
        if call.ports != (0, 0):  # otherwise ``open`` deletes it when its answer comes
            self._delete(call)

    def _delete(self, call: _Call) -> None:
        async def delete() -> None:
            try:
                await self.client.request(
                    {"command": "delete", "call-id": call.ng_id, "delete delay": 0}
                )
            except NgError as exc:
                log.warning("rtpengine_delete_failed", call=call.ng_id, error=str(exc))
            if call.recording is not None and self.recording_dir is not None:
                await asyncio.to_thread(self._write_recording, call)

        self._serial(call, delete())

    def _write_recording(self, call: _Call) -> None:
        assert call.recording is not None
        assert self.recording_dir is not None
        pcaps = sorted((self.recording_dir / "pcaps").glob(f"{call.ng_id}-*.pcap"))
        if not pcaps:
            log.warning("recording_failed", call=call.ng_id, error="rtpengine wrote no pcap")
            return
        # Written beside and renamed into place: the recording's path never holds part of a
        # WAV (a full disk, a crash), and a reader that sees it sees all of it.
        part = call.recording.with_name(call.recording.name + ".part")
        try:
            wav = pcap_to_stereo_wav(pcaps[-1].read_bytes(), *call.ports)
            call.recording.parent.mkdir(parents=True, exist_ok=True)
            part.write_bytes(wav)
            os.replace(part, call.recording)
            for pcap in pcaps:
                pcap.unlink()
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                part.unlink()
            log.warning("recording_failed", call=call.ng_id, error=str(exc))

    async def _ng(self, call: _Call, command: str, sdp: bytes) -> Reply:
        request: dict[str, Value] = {
            **COMMON,
            "command": command,
            "call-id": call.ng_id,
            "from-tag": TAGS[Side.A],
            "sdp": sdp,
        }
        if command == "answer" or call.ports != (0, 0):
            request["to-tag"] = TAGS[Side.B]
        return await self.client.request(request)

    def _serial(self, call: _Call, coro: Coroutine[Any, Any, object]) -> None:
        """Run ``coro`` after the call's earlier requests (a failure is logged, not raised)."""
        previous = call.last

        async def run() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await coro
            except NgError as exc:
                log.warning("rtpengine_request_failed", call=call.ng_id, error=str(exc))

        call.last = asyncio.get_running_loop().create_task(run())
        self._tasks.add(call.last)
        call.last.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Server shutdown: nothing is held here (rtpengine owns the sockets)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task kept until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# -- inactivity (pure) ----------------------------------------------------------------------------


def received_packets(reply: Reply, tag: str) -> int:
    """Packets (RTP and RTCP) rtpengine received from the party ``tag``, from a query reply."""
    tags = reply.get(b"tags")
    party = tags.get(tag.encode()) if isinstance(tags, dict) else None
    medias = party.get(b"medias") if isinstance(party, dict) else None
    total = 0
    for media in medias if isinstance(medias, list) else []:
        streams = media.get(b"streams") if isinstance(media, dict) else None
        for stream in streams if isinstance(streams, list) else []:
            stats = stream.get(b"stats") if isinstance(stream, dict) else None
            packets = stats.get(b"packets") if isinstance(stats, dict) else None
            total += packets if isinstance(packets, int) else 0
    return total


def inactive_sides(call: _Call, reply: Reply, now: float, inactivity: float) -> list[Side]:
    """The sides to report silent now (each once until it sends again); updates ``call``."""
    out = []
    for side, tag in TAGS.items():
        packets = received_packets(reply, tag)
        before, since = call.heard.get(side, (-1, now))
        if packets != before:  # it sent (or counting starts): silence is measured from now
            call.heard[side] = (packets, now)
            call.silent.discard(side)
            continue
        stream = call.streams.get(side)
        sends = stream is not None and stream.direction in (Direction.SENDRECV, Direction.SENDONLY)
        if sends and side not in call.silent and now - since >= inactivity:
            call.silent.add(side)
            out.append(side)
    return out


# -- SDP for rtpengine (pure) -------------------------------------------------------------------


def placeholder_sdp(host: str) -> bytes:
    """A party not known yet: rtpengine allocates its ports; the real SDP follows."""
    return _sdp(host, 9, (Codec.PCMU, Codec.PCMA), 101, Direction.SENDRECV)


def party_sdp(stream: AudioStream) -> bytes:
    """A party's audio as rtpengine should reach it."""
    return _sdp(
        stream.address or "0.0.0.0",
        stream.port,
        stream.codecs,
        stream.telephone_event,
        stream.direction,
    )


def _sdp(
    host: str, port: int, codecs: tuple[Codec, ...], event: int | None, direction: Direction
) -> bytes:
    family = "IP6" if ":" in host else "IP4"
    types = [str(codec.payload_type) for codec in codecs]
    lines = ["v=0", f"o=- 1 1 IN {family} {host}", "s=-", f"c=IN {family} {host}", "t=0 0"]
    lines.append(f"m=audio {port} RTP/AVP {' '.join(types + ([str(event)] if event else []))}")
    lines += [f"a=rtpmap:{codec.payload_type} {codec.name}/8000" for codec in codecs]
    if event is not None:
        lines.append(f"a=rtpmap:{event} telephone-event/8000")
    lines.append(f"a={direction.value}")
    return ("\r\n".join(lines) + "\r\n").encode()


_CONNECTION = re.compile(rb"^c=IN IP[46] (\S+)", re.M)
_AUDIO = re.compile(rb"^m=audio (\d+) ", re.M)


def sdp_address(reply: Reply) -> tuple[str, int]:
    """rtpengine's (address, port) in the SDP of an offer/answer reply; NgError if absent."""
    sdp = reply.get(b"sdp")
    if not isinstance(sdp, bytes):
        raise NgError("rtpengine: reply without SDP")
    connection, audio = _CONNECTION.search(sdp), _AUDIO.search(sdp)
    if connection is None or audio is None:
        raise NgError("rtpengine: reply SDP without address or audio port")
    return connection.group(1).decode(), int(audio.group(1))
