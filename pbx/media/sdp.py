"""SDP (RFC 4566) parsing and the B2BUA's offer/answer rewriting (RFC 3264).

Pure. ``parse_sdp`` turns a body into a ``SessionDescription`` value that keeps every line it does
not interpret, in order, so ``build_sdp(parse_sdp(x))`` reproduces x (with CRLF line ends).

The B2BUA relays media, so each leg sees the PBX as its peer: ``rewrite_sdp`` puts our address and
relay port into an offer or answer before it is passed to the other leg, keeps only PCMU (0),
PCMA (8) and telephone-event (RFC 4733, a dynamic payload type whose number is passed through
unchanged, since the relay forwards packets without rewriting them), and drops the rest.
``answer_sdp`` answers an offer ourselves (the announcement player), picking one codec.

Rules applied (RFC 3264):
- §6: "the answer MUST contain exactly the same number of "m=" lines as the offer"; a stream we
  do not relay (video, a second audio stream) is kept with port 0, i.e. rejected. An audio
  stream with no codec in common, or whose address is not an IP literal, is rejected the same
  way and skipped by ``audio_stream``: the call engine answers 488 if the offer had nothing else.
  RTP/SAVP with usable ``a=crypto`` lines is relayed as SRTP (``pbx.media.sdes``, issue 18).
- Unreadable SDP raises RemoteProtocolError (the engine answers 400): see ``parse_sdp`` for what
  is checked (issue 17 item 8, docs/design.md 9.1).
- §6.1: the answer lists only formats present in the offer; ``rewrite_sdp(answer, offer=...)``
  enforces it.
- §8.4 (hold): direction comes from a=sendrecv/sendonly/recvonly/inactive, media level first,
  then session level, default sendrecv. The RFC 2543 form, c=0.0.0.0, means "do not send to me":
  the address is reported as None and, in the rewritten SDP, expressed as a direction (sendrecv
  becomes sendonly, recvonly becomes inactive) with our real address, as §8.4 recommends.
- §8 (session version): each leg's o= line belongs to us; the caller passes an ``Origin`` and
  bumps its version (``Origin.next_version``) whenever the SDP it sends changes.

SRTP (issue #18): an ``RTP/SAVP`` audio stream is relayed too; ``AudioStream.crypto`` is the
party's first usable ``a=crypto`` key (``pbx.media.sdes``) and a SAVP stream without one is not
``active`` (488). ``with_security`` sets the profile and our own ``a=crypto`` line of a rewritten
description: each leg is secured (or not) on its own.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, replace

from pbx.errors import RemoteProtocolError
from pbx.media.g711 import Codec
from pbx.media.sdes import SAVP_PROFILES, Crypto, format_crypto, usable_crypto

TELEPHONE_EVENT = "telephone-event"
HOLD_ADDRESS = "0.0.0.0"
# Attributes kept on a rewritten audio stream; everything else (ICE, a=rtcp, rtcp-mux, crypto,
# ssrc, …) describes the far end's transport, which the relay replaces.
_KEPT_ATTRIBUTES = frozenset({"rtpmap", "fmtp", "ptime", "maxptime"})
_RTP_PROFILES = frozenset({"RTP/AVP", "RTP/AVPF"}) | SAVP_PROFILES
_STATIC_NAMES = {0: "PCMU", 8: "PCMA"}
# One SDP line at most, like one SIP header line (``MessageCaps.max_header_line_bytes``).
MAX_LINE_CHARS = 4_096
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Direction(enum.Enum):
    """Media direction attribute (RFC 4566 §6, RFC 3264 §6.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reversed(self) -> Direction:
        """The direction the answerer takes for an offered direction (RFC 3264 §6.1)."""
        return _REVERSED[self]

    @property
    def sends(self) -> bool:
        """True if the side declaring this direction sends media."""
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        """True if the side declaring this direction wants to receive media."""
        return self in (Direction.SENDRECV, Direction.RECVONLY)


_REVERSED = {
    Direction.SENDRECV: Direction.SENDRECV,
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.INACTIVE: Direction.INACTIVE,
}
_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(frozen=True, slots=True)
class Origin:
    """The o= line (RFC 4566 §5.2)."""

    username: str
    session_id: str
    session_version: int
    address: str
    network_type: str = "IN"
    address_type: str = "IP4"

    def next_version(self) -> Origin:
        """The same origin with the version incremented (RFC 3264 §8)."""
        return replace(self, session_version=self.session_version + 1)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.network_type} {self.address_type} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """The c= line (RFC 4566 §5.7); multicast TTL/count suffixes stay in address."""

    address: str
    network_type: str = "IN"
    address_type: str = "IP4"

    def __str__(self) -> str:
        return f"{self.network_type} {self.address_type} {self.address}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """An a= line: a property (value None) or name:value (RFC 4566 §5.13)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An a=rtpmap value (RFC 4566 §6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        suffix = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{suffix}"


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """An m= section: the media line, its c= line, and its other lines in order."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: tuple[Attribute, ...] = ()
    # i=, b=, k= lines as (type, value), in order; they come before a= lines (RFC 4566 §5).
    other_lines: tuple[tuple[str, str], ...] = ()

    def attribute(self, name: str) -> str | None:
        """The value of the first a=name line ('' for a property), or None."""
        for a in self.attributes:
            if a.name == name:
                return "" if a.value is None else a.value
        return None

    def rtpmaps(self) -> dict[int, RtpMap]:
        """The a=rtpmap lines by payload type (malformed ones are ignored)."""
        maps: dict[int, RtpMap] = {}
        for a in self.attributes:
            if a.name == "rtpmap" and a.value:
                parsed = _parse_rtpmap(a.value)
                if parsed is not None:
                    maps.setdefault(parsed.payload_type, parsed)
        return maps


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A parsed SDP body (RFC 4566 §5)."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    # t= lines and other session-level lines (i, u, e, p, b, t, r, z, k) in order.
    other_lines: tuple[tuple[str, str], ...] = (("t", "0 0"),)
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    version: int = 0

    def session_attribute(self, name: str) -> str | None:
        """The value of the first session-level a=name line ('' for a property), or None."""
        for a in self.attributes:
            if a.name == name:
                return "" if a.value is None else a.value
        return None


def _parse_rtpmap(value: str) -> RtpMap | None:
    try:
        pt_text, encoding_text = value.split(None, 1)
        parts = encoding_text.strip().split("/")
        return RtpMap(
            int(pt_text),
            parts[0],
            int(parts[1]),
            int(parts[2]) if len(parts) > 2 and parts[2] else None,
        )
    except (ValueError, IndexError):
        return None


def _bad(message: str) -> RemoteProtocolError:
    # 400 for a body we cannot parse; the engine may prefer 488 for one it cannot use.
    return RemoteProtocolError(f"SDP: {message}", status_hint=400)


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise _bad(f"malformed c= line {value[:40]!r}")
    return Connection(parts[2], parts[0], parts[1])


def usable_connection(conn: Connection) -> bool:
    """True for ``IN IP4 <IPv4 literal>`` or ``IN IP6 <IPv6 literal>``, unicast or the hold
    address. Host names are not resolved (a name would make every relayed packet wait for DNS
    in the event loop) and multicast is not relayed: such a stream is unusable (488)."""
    if conn.network_type != "IN":
        return False
    try:
        if conn.address_type == "IP4":
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                conn.address
            )
        elif conn.address_type == "IP6":
            address = ipaddress.IPv6Address(conn.address)
        else:
            return False
    except ValueError:
        return False
    return not address.is_multicast


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    return Attribute(name, rest if sep else None)


def _check_line(line: str) -> None:
    if len(line) > MAX_LINE_CHARS:
        raise _bad(f"a line of {len(line)} characters (at most {MAX_LINE_CHARS})")
    if _CONTROL.search(line):
        raise _bad("a control character in a line")  # RFC 4566 9: text excludes NUL, CR, LF
    if len(line) < 2 or line[1] != "=":
        raise _bad(f"malformed line {line[:40]!r}")


def _number(text: str, what: str, line: str) -> int:
    # RFC 4566 §5.2, §5.9: sess-id, sess-version and times are digits; 20 of them hold 2**64.
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise _bad(f"bad {what} in {line[:40]!r}")
    return int(text)


def _parse_media_line(value: str) -> dict[str, object]:
    parts = value.split()
    if len(parts) < 4:
        raise _bad(f"malformed m= line {value[:40]!r}")  # RFC 4566 §5.14: at least one fmt
    port_text, _, count_text = parts[1].partition("/")
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise _bad(f"bad port in m= line {value[:40]!r}")
    port = int(port_text)
    if port > 65535:
        raise _bad(f"port out of range in m= line {value[:40]!r}")
    port_count = None
    if count_text:
        if not (count_text.isascii() and count_text.isdigit() and len(count_text) <= 5):
            raise _bad(f"bad port count in m= line {value[:40]!r}")
        port_count = int(count_text)
    return {
        "media": parts[0],
        "port": port,
        "proto": parts[2],
        "formats": tuple(parts[3:]),
        "port_count": port_count,
        "connection": None,
        "attributes": [],
        "other_lines": [],
    }


def parse_sdp(body: bytes | str) -> SessionDescription:
    """Parse an SDP body; raise RemoteProtocolError (status hint 400) if it is not valid SDP.

    Checked here (harden, issue 17 item 8): v=0 first, one o= with six fields and numeric
    session id and version, t= with two numeric times, c= with three fields, m= with a numeric
    port (0-65535) and at least one format, lines of at most ``MAX_LINE_CHARS`` characters, no
    control characters. Whether a readable description is *usable* (an IP address to send to,
    a codec we carry) is ``audio_stream``'s question; the call engine answers 488 when not.
    """
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad("body is not UTF-8") from exc
    lines = [line[:-1] if line.endswith("\r") else line for line in body.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise _bad("must start with v=0")
    origin: Origin | None = None
    session_name = "-"
    connection: Connection | None = None
    other: list[tuple[str, str]] = []
    attributes: list[Attribute] = []
    media: list[MediaDescription] = []
    current: dict[str, object] | None = None

    def finish(section: dict[str, object] | None) -> None:
        if section is not None:
            section["attributes"] = tuple(section["attributes"])  # type: ignore[arg-type]
            section["other_lines"] = tuple(section["other_lines"])  # type: ignore[arg-type]
            media.append(MediaDescription(**section))  # type: ignore[arg-type]

    for line in lines[1:]:
        _check_line(line)
        kind, value = line[0], line[2:]
        if kind == "m":
            finish(current)
            current = _parse_media_line(value)
        elif current is not None:
            if kind == "c":
                current["connection"] = _parse_connection(value)
            elif kind == "a":
                current["attributes"].append(_parse_attribute(value))  # type: ignore[attr-defined]
            else:
                current["other_lines"].append((kind, value))  # type: ignore[attr-defined]
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6 or origin is not None:
                raise _bad(f"malformed o= line {value[:40]!r}")
            _number(parts[1], "session id", value)
            version = _number(parts[2], "session version", value)
            origin = Origin(parts[0], parts[1], version, parts[5], parts[3], parts[4])
        elif kind == "s":
            session_name = value
        elif kind == "c":
            connection = _parse_connection(value)
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        else:
            if kind == "t":
                times = value.split()
                if len(times) != 2:
                    raise _bad(f"malformed t= line {value[:40]!r}")
                for t in times:
                    _number(t, "time", value)
            other.append((kind, value))
    finish(current)
    if origin is None:
        raise _bad("no o= line")
    for m in media:
        if m.connection is None and connection is None and m.port != 0:
            raise _bad(f"no c= line for the {m.media[:40]} stream")  # RFC 4566 §5.7
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=connection,
        other_lines=tuple(other),
        attributes=tuple(attributes),
        media=tuple(media),
    )


def build_sdp(sd: SessionDescription) -> bytes:
    """Serialise a SessionDescription with CRLF line ends (RFC 4566 §5)."""
    lines = [f"v={sd.version}", f"o={sd.origin}", f"s={sd.session_name}"]
    # RFC 4566 §5: i, u, e, p come before c; b, t, r, z, k after it.
    before = [(k, v) for k, v in sd.other_lines if k in "iuep"]
    after = [(k, v) for k, v in sd.other_lines if k not in "iuep"]
    lines += [f"{k}={v}" for k, v in before]
    if sd.connection is not None:
        lines.append(f"c={sd.connection}")
    lines += [f"{k}={v}" for k, v in after]
    lines += [f"a={a}" for a in sd.attributes]
    for m in sd.media:
        port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
        lines.append(f"m={m.media} {port} {m.proto} {' '.join(m.formats)}")
        lines += [f"{k}={v}" for k, v in m.other_lines if k == "i"]
        if m.connection is not None:
            lines.append(f"c={m.connection}")
        lines += [f"{k}={v}" for k, v in m.other_lines if k != "i"]
        lines += [f"a={a}" for a in m.attributes]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def media_direction(sd: SessionDescription, m: MediaDescription) -> Direction:
    """The stream's direction: media-level attribute, else session-level, else sendrecv."""
    for attributes in (m.attributes, sd.attributes):
        for a in attributes:
            if a.value is None and a.name in _DIRECTIONS:
                return _DIRECTIONS[a.name]
    return Direction.SENDRECV


@dataclass(frozen=True, slots=True)
class AudioStream:
    """What the relay, recorder and player need to know of one side's audio stream."""

    address: str | None  # None: do not send to this side (port 0 or c=0.0.0.0)
    port: int
    direction: Direction
    codecs: tuple[Codec, ...]  # G.711 codecs offered/accepted, in preference order
    telephone_event: int | None  # the dynamic payload type of RFC 4733 events, if any
    ptime: int | None = None
    # RFC 3605 a=rtcp: the port (and address) RTCP should go to, when not RTP port + 1.
    rtcp_port: int | None = None
    rtcp_address: str | None = None
    # SRTP (RTP/SAVP): the key this party sends with, when one of its a=crypto lines is usable.
    secure: bool = False
    crypto: Crypto | None = None

    @property
    def active(self) -> bool:
        """False when the stream is rejected (port 0), has no codec we carry, or is SRTP
        without a key we can use."""
        return self.port != 0 and bool(self.codecs) and (not self.secure or self.crypto is not None)

    @property
    def on_hold(self) -> bool:
        """True when this side asks not to be sent media (sendonly, inactive, c=0.0.0.0)."""
        return self.address is None or not self.direction.receives

    @property
    def codec(self) -> Codec | None:
        """The preferred codec, which the other side sends with (RFC 3264 §6.1)."""
        return self.codecs[0] if self.codecs else None


def _stream_address(sd: SessionDescription, m: MediaDescription) -> str | None:
    conn = m.connection or sd.connection
    if conn is None or m.port == 0:
        return None
    address = conn.address.split("/")[0]
    return None if address in (HOLD_ADDRESS, "::") else address


def _formats_we_carry(m: MediaDescription) -> tuple[list[Codec], int | None]:
    """G.711 codecs (by static PT or by rtpmap name) and the telephone-event PT of a stream."""
    rtpmaps = m.rtpmaps()
    codecs: list[Codec] = []
    telephone_event: int | None = None
    for fmt in m.formats:
        try:
            pt = int(fmt)
        except ValueError:
            continue
        rtpmap = rtpmaps.get(pt)
        if pt in _STATIC_NAMES:
            # A static type keeps its meaning unless an rtpmap says otherwise (RFC 3551 §6).
            name = rtpmap.encoding.upper() if rtpmap else _STATIC_NAMES[pt]
            if name == _STATIC_NAMES[pt] and (rtpmap is None or rtpmap.clock_rate == 8000):
                codec = Codec(pt)
                if codec not in codecs:
                    codecs.append(codec)
        elif (
            96 <= pt <= 127
            and rtpmap is not None
            and rtpmap.encoding.lower() == TELEPHONE_EVENT
            and rtpmap.clock_rate == 8000
            and telephone_event is None
        ):
            telephone_event = pt
    return codecs, telephone_event


def _audio_index(sd: SessionDescription) -> int | None:
    """Index of the first audio stream we could relay: RTP/AVP(F), port not 0, an IP address
    (``usable_connection``) and a G.711 codec. Streams before it are rejected, so an offer of a
    G.729-only or host-named stream and a usable one gets the usable one (issue 17 item 8)."""
    for i, m in enumerate(sd.media):
        if m.media != "audio" or m.proto not in _RTP_PROFILES or m.port == 0:
            continue
        conn = m.connection or sd.connection
        if conn is not None and usable_connection(conn) and _formats_we_carry(m)[0]:
            return i
    return None


def audio_stream(sd: SessionDescription) -> AudioStream | None:
    """The first RTP audio stream that is not disabled (port 0), or None if there is none."""
    index = _audio_index(sd)
    if index is None:
        return None
    m = sd.media[index]
    codecs, telephone_event = _formats_we_carry(m)
    ptime_text = m.attribute("ptime")
    try:
        ptime = int(ptime_text) if ptime_text else None
    except ValueError:
        ptime = None
    address = _stream_address(sd, m)
    rtcp_port, rtcp_address = _parse_rtcp_attribute(m.attribute("rtcp"))
    return AudioStream(
        address=address,
        port=m.port,
        direction=_hold_direction(media_direction(sd, m), address is None),
        codecs=tuple(codecs),
        telephone_event=telephone_event,
        ptime=ptime,
        rtcp_port=rtcp_port,
        rtcp_address=rtcp_address,
        secure=m.proto in SAVP_PROFILES,
        crypto=(
            usable_crypto([a.value or "" for a in m.attributes if a.name == "crypto"])
            if m.proto in SAVP_PROFILES
            else None
        ),
    )


def _parse_rtcp_attribute(value: str | None) -> tuple[int | None, str | None]:
    """RFC 3605 §2.1: a=rtcp:port [nettype addrtype connection-address]; junk is ignored."""
    if not value:
        return None, None
    parts = value.split()
    try:
        port = int(parts[0])
    except ValueError:
        return None, None
    if not 0 < port <= 65535:
        return None, None
    address = parts[3] if len(parts) == 4 and parts[3] not in (HOLD_ADDRESS, "::") else None
    return port, address


def _hold_direction(direction: Direction, null_address: bool) -> Direction:
    # RFC 3264 §8.4: c=0.0.0.0 (RFC 2543 hold) means "do not send to me".
    if not null_address:
        return direction
    return Direction.SENDONLY if direction.sends else Direction.INACTIVE


def _rejected(m: MediaDescription) -> MediaDescription:
    # RFC 3264 §6: a rejected stream keeps its formats (at least one is required) with port 0.
    return MediaDescription(m.media, 0, m.proto, m.formats or ("0",))


def _kept_stream(
    m: MediaDescription,
    port: int,
    payload_types: list[int],
    direction: Direction,
) -> MediaDescription:
    formats = tuple(str(pt) for pt in payload_types)
    kept: list[Attribute] = []
    rtpmaps = m.rtpmaps()
    for pt in payload_types:
        # Always write rtpmap, even for static types: many phones expect it.
        rtpmap = rtpmaps.get(pt) or RtpMap(pt, _STATIC_NAMES[pt], 8000)
        kept.append(Attribute("rtpmap", str(rtpmap)))
        for a in m.attributes:
            if a.name == "fmtp" and a.value and a.value.split(None, 1)[0] == str(pt):
                kept.append(a)
    kept += [
        a for a in m.attributes if a.name in _KEPT_ATTRIBUTES and a.name not in ("rtpmap", "fmtp")
    ]
    kept.append(Attribute(direction.value))
    other = tuple((k, v) for k, v in m.other_lines if k == "b")
    return MediaDescription(m.media, port, m.proto, formats, None, None, tuple(kept), other)


def rewrite_sdp(
    sd: SessionDescription,
    *,
    address: str,
    port: int,
    origin: Origin,
    offer: SessionDescription | None = None,
) -> SessionDescription:
    """Rewrite an offer (or, with ``offer`` given, an answer to it) to our address and port.

    The first RTP audio stream keeps PCMU, PCMA and telephone-event, in the sender's order, and
    gets our address and port; every other stream, and this one if no codec is left, is
    rejected with port 0. An answer keeps only payload types present in ``offer``.
    """
    index = _audio_index(sd)
    allowed: set[str] | None = None
    if offer is not None:
        offer_index = _audio_index(offer)
        allowed = set(offer.media[offer_index].formats) if offer_index is not None else set()
    media: list[MediaDescription] = []
    for i, m in enumerate(sd.media):
        if i != index:
            media.append(_rejected(m) if m.port != 0 else replace(m, connection=None))
            continue
        codecs, telephone_event = _formats_we_carry(m)
        payload_types = [c.payload_type for c in codecs]
        if telephone_event is not None and payload_types:
            payload_types.append(telephone_event)
        if allowed is not None:
            payload_types = [pt for pt in payload_types if str(pt) in allowed]
        if not any(pt in _STATIC_NAMES for pt in payload_types):
            media.append(_rejected(m))
            continue
        direction = _hold_direction(media_direction(sd, m), _stream_address(sd, m) is None)
        media.append(_kept_stream(m, port, payload_types, direction))
    return SessionDescription(
        origin=origin,
        session_name="-",  # the far end's session name is not ours to repeat
        connection=Connection(address, "IN", _address_type(address)),
        other_lines=tuple((k, v) for k, v in sd.other_lines if k in "trz") or (("t", "0 0"),),
        attributes=(),
        media=tuple(media),
    )


def answer_sdp(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    origin: Origin,
    prefer: tuple[Codec, ...] = (Codec.PCMU, Codec.PCMA),
    direction: Direction | None = None,
) -> SessionDescription:
    """Answer an offer ourselves with one G.711 codec (plus telephone-event if offered).

    The codec is the offerer's most preferred one among ``prefer`` (RFC 3264 §6.1); the
    direction is the reverse of the offered one unless ``direction`` is given. Streams we do not
    take are rejected with port 0; ``audio_stream(answer)`` is None when nothing was accepted.
    """
    index = _audio_index(offer)
    media: list[MediaDescription] = []
    for i, m in enumerate(offer.media):
        if i != index:
            media.append(_rejected(m))
            continue
        codecs, telephone_event = _formats_we_carry(m)
        chosen = [c for c in codecs if c in prefer][:1]
        if not chosen:
            media.append(_rejected(m))
            continue
        payload_types = [chosen[0].payload_type]
        if telephone_event is not None:
            payload_types.append(telephone_event)
        offered = _hold_direction(media_direction(offer, m), _stream_address(offer, m) is None)
        answered = direction if direction is not None else offered.reversed()
        stream = _kept_stream(m, port, payload_types, answered)
        # ptime/maxptime describe what the offerer wants to receive: we send 20 ms anyway.
        media.append(
            replace(
                stream,
                attributes=(
                    *(a for a in stream.attributes if a.name not in ("ptime", "maxptime")),
                    Attribute("ptime", "20"),
                ),
            )
        )
    return SessionDescription(
        origin=origin,
        session_name="-",
        connection=Connection(address, "IN", _address_type(address)),
        other_lines=tuple((k, v) for k, v in offer.other_lines if k == "t") or (("t", "0 0"),),
        media=tuple(media),
    )


def with_security(sd: SessionDescription, crypto: Crypto | None) -> SessionDescription:
    """``sd`` (rewritten by us) with its relayed audio stream as SRTP carrying our ``crypto``
    line, or, with None, as plain RTP; other streams are left as they are."""
    index = _audio_index(sd)
    if index is None:
        return sd
    m = sd.media[index]
    feedback = m.proto.endswith("F")
    attributes = tuple(a for a in m.attributes if a.name != "crypto")
    if crypto is None:
        proto = "RTP/AVPF" if feedback else "RTP/AVP"
    else:
        proto = "RTP/SAVPF" if feedback else "RTP/SAVP"
        attributes = (Attribute("crypto", format_crypto(crypto)), *attributes)
    media = list(sd.media)
    media[index] = replace(m, proto=proto, attributes=attributes)
    return replace(sd, media=tuple(media))


def make_origin(session_id: int, address: str, username: str = "pbx") -> Origin:
    """A fresh o= line for one leg (version starts at the session id, as RFC 4566 §5.2 suggests)."""
    return Origin(username, str(session_id), session_id, address, "IN", _address_type(address))


def _address_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"
