"""SDP re-anchoring for a relayed call: every offer and answer that crosses the B2BUA is
rewritten to the relay's address and the port of the leg it goes to (RFC 3264 sections 5-8).

Pure: SDP bodies in, rewritten bodies out, with the stream the relay must now send to
(``Remote``). One ``MediaAnchor`` per call holds what the rewriting needs: our media address,
the relay's port on each side, the o= line we present to each side (its version goes up with
every new description we send that side, RFC 3264 section 8), the caller's initial offer, and a
mid-call offer waiting for its answer. An unreadable body gives None; the caller of these
methods decides what that means (a provisional without SDP, a failed call).

SRTP (issue #18, RFC 4568): each side is secured on its own. The caller's side is SRTP when its
offer is ``RTP/SAVP`` with a usable key; a callee's side when the call engine says so for that
leg (``offer_to_callee(secure=...)``: a phone on TLS). What we send a secured side carries our
own key for it (``keys``, fresh per call and side, drawn by the adapter); what we send a plain
side is ``RTP/AVP`` without a=crypto. The relay decrypts and encrypts per side, so the two sides
never share a key and a plain side (the carrier) gets plain RTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from pbx.errors import RemoteProtocolError
from pbx.media.g711 import Codec
from pbx.media.latch import Side
from pbx.media.sdes import KEY_SALT_LENGTH, SUITES, Crypto
from pbx.media.sdp import (
    Attribute,
    AudioStream,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    answer_sdp,
    audio_stream,
    build_sdp,
    make_origin,
    parse_sdp,
    rewrite_sdp,
    with_security,
)


@dataclass(frozen=True, slots=True)
class Remote:
    """Where the relay's ``side`` must now send: the stream that side's party declared."""

    side: Side
    stream: AudioStream


@dataclass(frozen=True, slots=True)
class Anchored:
    """A description rewritten for the leg it goes to, and the remote it declared (if any)."""

    body: bytes
    remote: Remote | None


@dataclass(frozen=True, slots=True)
class PromptAnswer:
    """Our own answer to the caller's offer (the PBX answers, e.g. an announcement)."""

    body: bytes
    codec: Codec


class MediaAnchor:
    """The rewriting state of one call's media (see the module docstring)."""

    __slots__ = ("caller_offer", "host", "keys", "origins", "pending_offer", "ports", "secure")

    def __init__(
        self,
        caller_offer: SessionDescription | None,  # None: late offer (the offer is in the 2xx)
        host: str,
        a_port: int,
        b_port: int,
        session_id: int,
        keys: tuple[bytes, bytes] = (b"", b""),
    ) -> None:
        self.caller_offer = caller_offer
        # Our SRTP master key and salt for each side (what we send that side is encrypted with).
        self.keys = {Side.A: keys[0], Side.B: keys[1]}
        caller = audio_stream(caller_offer) if caller_offer is not None else None
        self.secure = {
            Side.A: caller is not None and caller.crypto is not None,
            Side.B: False,
        }
        self.host = host
        self.ports = {Side.A: a_port, Side.B: b_port}
        self.origins = {
            Side.A: make_origin(session_id, host),
            Side.B: make_origin(session_id + 1, host),
        }
        self.pending_offer: SessionDescription | None = None

    def offer_to_callee(self, secure: bool = False) -> bytes:
        """The caller's offer as a B leg gets it (our address, the B port), as SRTP with our
        B key when ``secure`` (the callee is on TLS), else as plain RTP; empty for a late offer
        (the B legs get an INVITE without SDP too)."""
        if self.caller_offer is None:
            return b""
        self.secure[Side.B] = self.secure[Side.B] or secure
        rewritten = rewrite_sdp(
            self.caller_offer,
            address=self.host,
            port=self.ports[Side.B],
            origin=self.origins[Side.B],
        )
        return build_sdp(with_security(rewritten, self._ours(Side.B, None) if secure else None))

    def secured(self, side: Side) -> bool:
        """Whether the party on ``side`` is sent SRTP (for the call record)."""
        return self.secure[side]

    def caller_stream(self) -> AudioStream | None:
        """The caller's stream as the relay must treat it (its key, if SRTP)."""
        return audio_stream(self.caller_offer) if self.caller_offer is not None else None

    def _ours(self, side: Side, theirs: Crypto | None) -> Crypto | None:
        """Our crypto line toward ``side``: the tag and suite of the line it chose (an answer)
        or of our offer (tag 1, the _80 suite), with our key for that side."""
        key = self.keys[side]
        if len(key) != KEY_SALT_LENGTH:
            return None  # no keys handed in: SRTP cannot be offered
        if theirs is None:
            return Crypto(1, SUITES[0], key)
        return Crypto(theirs.tag, theirs.suite, key)

    def _secure_answer(
        self, side: Side, rewritten: SessionDescription, offer: SessionDescription
    ) -> SessionDescription:
        """An answer for ``side`` to its ``offer``: SRTP (echoing its chosen line) if the offer
        was, else plain."""
        stream = audio_stream(offer)
        theirs = stream.crypto if stream is not None else None
        self.secure[side] = theirs is not None
        return with_security(rewritten, self._ours(side, theirs) if theirs else None)

    def answer_to_caller(self, body: bytes) -> Anchored | None:
        """A callee's answer (in a 183 or the 2xx) to the caller's offer, for the caller."""
        answer = _parse(body)
        if answer is None or self.caller_offer is None:
            return None
        rewritten = rewrite_sdp(
            answer,
            address=self.host,
            port=self.ports[Side.A],
            origin=self.origins[Side.A],
            offer=self.caller_offer,
        )
        rewritten = self._secure_answer(Side.A, rewritten, self.caller_offer)
        remote = _remote(Side.B, answer)
        self.secure[Side.B] = remote is not None and remote.stream.crypto is not None
        return Anchored(build_sdp(rewritten), remote)

    def offer_across(self, from_side: Side, body: bytes) -> Anchored | None:
        """A mid-call offer (re-INVITE, UPDATE) from ``from_side`` for the other side."""
        offer = _parse(body)
        if offer is None:
            return None
        to = from_side.other
        rewritten = rewrite_sdp(
            offer, address=self.host, port=self.ports[to], origin=self._bump(to)
        )
        # The other side stays as it was: SRTP with our (same) key, or plain.
        rewritten = with_security(rewritten, self._ours(to, None) if self.secure[to] else None)
        self.pending_offer = offer
        return Anchored(build_sdp(rewritten), _remote(from_side, offer))

    def answer_across(self, to_side: Side, body: bytes) -> Anchored | None:
        """The answer to a mid-call offer, for ``to_side`` (the side that offered)."""
        offer = self.pending_offer
        if offer is None:
            return None
        answer = _parse(body)
        if answer is None:
            return None
        rewritten = rewrite_sdp(
            answer,
            address=self.host,
            port=self.ports[to_side],
            origin=self._bump(to_side),
            offer=offer,
        )
        rewritten = self._secure_answer(to_side, rewritten, offer)
        return Anchored(build_sdp(rewritten), _remote(to_side.other, answer))

    def answer_ourselves(self) -> PromptAnswer | None:
        """Our answer to the caller's offer with one G.711 codec; None if none is acceptable
        (or the caller made no offer)."""
        if self.caller_offer is None:
            return None
        answer = answer_sdp(
            self.caller_offer,
            address=self.host,
            port=self.ports[Side.A],
            origin=self.origins[Side.A],
        )
        stream = audio_stream(answer)
        codec = stream.codec if stream is not None else None
        if codec is None:
            return None
        answer = self._secure_answer(Side.A, answer, self.caller_offer)
        return PromptAnswer(build_sdp(answer), codec)

    def offer_ourselves(self) -> bytes:
        """Our own offer to a late-offer caller whom the PBX answers (an announcement, issue
        16): PCMU, PCMA and telephone-event on the relay's A port; the answer is in its ACK."""
        ip6 = ":" in self.host
        media = MediaDescription(
            "audio",
            self.ports[Side.A],
            "RTP/AVP",
            ("0", "8", "101"),
            attributes=(
                Attribute("rtpmap", "0 PCMU/8000"),
                Attribute("rtpmap", "8 PCMA/8000"),
                Attribute("rtpmap", "101 telephone-event/8000"),
                Attribute("fmtp", "101 0-16"),
                Attribute("ptime", "20"),
                Attribute("sendrecv"),
            ),
        )
        connection = Connection(self.host, address_type="IP6" if ip6 else "IP4")
        origin = self.origins[Side.A]
        return build_sdp(SessionDescription(origin=origin, connection=connection, media=(media,)))

    def prompt_answer(self, body: bytes) -> tuple[Codec, Remote] | None:
        """The late-offer caller's answer (in its ACK) to ``offer_ourselves``: the codec the
        prompt is played with and where to send it; None without a usable audio answer."""
        answer = _parse(body)
        stream = audio_stream(answer) if answer is not None else None
        if stream is None or not stream.active or stream.codec is None or stream.secure:
            return None
        return stream.codec, Remote(Side.A, stream)

    def _bump(self, side: Side) -> Origin:
        origin = self.origins[side] = self.origins[side].next_version()
        return origin


def _parse(body: bytes) -> SessionDescription | None:
    if not body:
        return None
    try:
        return parse_sdp(body)
    except RemoteProtocolError:
        return None


def _remote(side: Side, description: SessionDescription) -> Remote | None:
    stream = audio_stream(description)
    return Remote(side, stream) if stream is not None else None
