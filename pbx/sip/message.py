"""SIP message values (RFC 3261 sections 7, 19.1, 20 and 25).

Pure data: frozen dataclasses for requests, responses, URIs and the headers the core routes on
(Via, From, To, Call-ID, CSeq, Contact, Max-Forwards). Every other header stays a raw
``(name, value)`` pair, in arrival order, byte-exact. Parsing lives in ``pbx.sip.parse`` and
serialization here (``SipRequest.to_bytes`` / ``SipResponse.to_bytes``; ``pbx.sip.parse``
re-exports ``serialize_request`` and ``serialize_response``).
"""

from __future__ import annotations

import re
from dataclasses import field
from typing import Final, NewType, TypeVar

from pbx.errors import LocalProtocolError
from pbx.immutable import immutable

CallId = NewType("CallId", str)
Branch = NewType("Branch", str)
Tag = NewType("Tag", str)

# (host, port) as the socket layer sees it; host is a literal IP address.
Address = tuple[str, int]

# RFC 3261 8.1.1.7: a branch starting with this cookie was made by an RFC 3261 element.
MAGIC_COOKIE = "z9hG4bK"

Params = tuple[tuple[str, str | None], ...]


def get_param(params: Params, name: str) -> str | None:
    """Value of the first parameter called ``name`` (case-insensitive); None if absent or bare."""
    lname = name.lower()
    for key, value in params:
        if key.lower() == lname:
            return value
    return None


def has_param(params: Params, name: str) -> bool:
    """Whether a parameter called ``name`` (case-insensitive) is present, with or without value."""
    return name.lower() in [key.lower() for key, _ in params]


def format_params(params: Params) -> str:
    """``;name=value;flag`` as written in a header or URI."""
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params])


def quote_string(text: str) -> str:
    """``text`` as an RFC 3261 25.1 quoted-string (for a display name or a parameter value).

    Backslash and double quote are escaped; CR and LF, which a quoted-string cannot hold, become
    spaces. Non-ASCII text (UTF-8 on the wire) is allowed as is.
    """
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\r", " ").replace("\n", " ") + '"'


def unquote_string(text: str) -> str:
    """The text of a quoted-string (quoted-pairs resolved); anything else is returned as is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    escaped = False
    for char in inner:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


@immutable
class SipUri:
    """A sip: or sips: URI (RFC 3261 19.1). ``user`` and param values keep their %-escapes."""

    scheme: str  # "sip" or "sips", lower case
    host: str  # lower case; IPv6 references keep their brackets
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: str | None = None  # the text after "?", escaped, never turned into real headers
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        return has_param(self.params, name)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.upper() if value else None

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._format()
            object.__setattr__(self, "_text", text)
        return text

    def _format(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)


@immutable
class TelUri:
    """A tel: URI (RFC 3966): the number as written (visual separators kept) and its params."""

    number: str
    params: Params = ()

    @property
    def scheme(self) -> str:
        return "tel"

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"


@immutable
class AbsoluteUri:
    """Any other scheme (RFC 3261 25.1 absoluteURI), kept opaque."""

    scheme: str  # lower case
    text: str  # the whole URI as written

    def __str__(self) -> str:
        return self.text


Uri = SipUri | TelUri | AbsoluteUri


@immutable
class NameAddress:
    """name-addr or addr-spec with header parameters (From, To, Contact, Route, ...)."""

    uri: Uri
    display_name: str | None = None  # as written: quoted-string with its quotes, or token(s)
    params: Params = ()
    _text: str | None = field(default=None, init=False, repr=False, compare=False)
    # The tag, once read (a one-tuple): dialog matching reads it about 40 times a call.
    _tag: tuple[Tag | None] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def tag(self) -> Tag | None:
        kept = self._tag
        if kept is None:
            value = get_param(self.params, "tag")
            kept = (Tag(value) if value is not None else None,)
            object.__setattr__(self, "_tag", kept)
        return kept[0]

    @property
    def display_text(self) -> str | None:
        """The display name as text: quotes removed and quoted-pairs resolved."""
        return None if self.display_name is None else unquote_string(self.display_name)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_tag(self, tag: str) -> NameAddress:
        kept = tuple((k, v) for k, v in self.params if k.lower() != "tag")
        tagged = NameAddress(self.uri, self.display_name, (*kept, ("tag", tag)))
        if len(kept) == len(self.params):
            # Only a parameter appended: the text is this value's text plus ";tag=...".
            remember_text(tagged, f"{self};tag={tag}")
        return tagged

    def __str__(self) -> str:
        text = self._text
        if text is None:
            name = f"{self.display_name} " if self.display_name else ""
            text = f"{name}<{self.uri}>{format_params(self.params)}"
            object.__setattr__(self, "_text", text)
        return text


@immutable
class Via:
    """One Via value (RFC 3261 20.42, 18.2.1, RFC 3581)."""

    transport: str  # upper case: UDP, TCP, TLS, SCTP, WS, WSS or an extension token
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"
    _text: str | None = field(default=None, init=False, repr=False, compare=False)
    _branch: tuple[Branch | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def branch(self) -> Branch | None:
        """The branch parameter (kept once read, like ``NameAddress.tag``)."""
        kept = self._branch
        if kept is None:
            value = get_param(self.params, "branch")
            kept = (Branch(value) if value is not None else None,)
            object.__setattr__(self, "_branch", kept)
        return kept[0]

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def rport(self) -> int | None:
        """The rport value filled in by a server; None when absent or empty."""
        value = get_param(self.params, "rport")
        return int(value) if value and value.isdigit() else None

    @property
    def wants_rport(self) -> bool:
        return has_param(self.params, "rport")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host, self.port)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_branch(self, branch: str) -> Via:
        """This Via for a new transaction: ``branch`` as its branch parameter, written last."""
        kept = tuple((k, v) for k, v in self.params if k.lower() != "branch")
        via = Via(self.transport, self.host, self.port, (*kept, ("branch", branch)), self.protocol)
        object.__setattr__(via, "_branch", (Branch(branch),))
        if len(kept) == len(self.params):
            # Only a parameter appended: the text is this value's text plus ";branch=...".
            remember_text(via, f"{self};branch={branch}")
        return via

    def stamped(self, source: Address) -> Via:
        """This Via as a server keeps it for a request that came from ``source``: ``received``
        added when the sent-by host differs or ``rport`` is asked (RFC 3261 18.2.1), and
        ``rport`` filled with the source port (RFC 3581 4)."""
        host, port = source
        if not self.wants_rport and self.host.strip("[]") == host:
            return self
        params: list[tuple[str, str | None]] = []
        for name, value in self.params:
            lname = name.lower()
            if lname == "received":
                continue
            params.append((name, str(port)) if lname == "rport" else (name, value))
        params.append(("received", host))
        return Via(self.transport, self.host, self.port, tuple(params), self.protocol)

    def __str__(self) -> str:
        text = self._text
        if text is None:
            port = f":{self.port}" if self.port is not None else ""
            params = format_params(self.params)
            text = f"{self.protocol}/{self.transport} {self.host}{port}{params}"
            object.__setattr__(self, "_text", text)
        return text


# The wire text of a header value, kept on the value (URIs, name-addrs, Via): the parser stores
# the text it read when that text is exactly what formatting the value would give, and __str__
# otherwise formats once and keeps the result. The values are immutable, so the text never goes
# stale; ``dataclasses.replace`` makes a new value without it (an ``init=False`` field is not
# copied), so a changed value is always formatted afresh. Not part of equality, hash or repr.
_T = TypeVar("_T", SipUri, NameAddress, Via)


def remember_text(value: _T, text: str) -> _T:
    """``value`` with ``text`` kept as its wire form; the caller guarantees that ``text`` is
    exactly what formatting ``value`` writes (the parser, when the input was canonical)."""
    object.__setattr__(value, "_text", text)
    return value


@immutable
class CSeq:
    number: int  # 0 .. 2**32-1
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


@immutable
class SipRequest:
    """A request. ``headers`` holds every header not given a typed field, in order."""

    method: str
    uri: Uri
    via: tuple[Via, ...]
    from_: NameAddress
    to: NameAddress
    call_id: CallId
    cseq: CSeq
    max_forwards: int | None = 70
    contact: tuple[NameAddress, ...] = ()
    contact_star: bool = False  # "Contact: *" (REGISTER removing every binding)
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    version: str = "SIP/2.0"
    # The message as sent, once serialised (``to_bytes``): a message is sent and kept by its
    # transaction, and sent again on retransmission. Not copied by ``dataclasses.replace``
    # (init=False), so a changed copy is serialised afresh.
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def header(self, name: str) -> str | None:
        """First raw header called ``name`` (case-insensitive, compact forms included)."""
        return find_header(self.headers, name)

    def header_values(self, name: str) -> list[str]:
        """Every raw value of header ``name``, comma-separated values split out."""
        return find_header_values(self.headers, name)

    def to_bytes(self) -> bytes:
        wire = self._wire
        if wire is None:
            wire = serialize_request(self)
            object.__setattr__(self, "_wire", wire)
        return wire


@immutable
class SipResponse:
    """A response. Same header conventions as ``SipRequest``."""

    status: int
    reason: str
    via: tuple[Via, ...]
    from_: NameAddress
    to: NameAddress
    call_id: CallId
    cseq: CSeq
    contact: tuple[NameAddress, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    version: str = "SIP/2.0"
    max_forwards: int | None = field(default=None, repr=False)
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def header(self, name: str) -> str | None:
        return find_header(self.headers, name)

    def header_values(self, name: str) -> list[str]:
        return find_header_values(self.headers, name)

    def to_bytes(self) -> bytes:
        """The message as sent; serialised once (see ``SipRequest._wire``)."""
        wire = self._wire
        if wire is None:
            wire = serialize_response(self)
            object.__setattr__(self, "_wire", wire)
        return wire


SipMessage = SipRequest | SipResponse


# Serialization lives here, beside the values, so that ``to_bytes`` calls it directly (an import
# inside ``to_bytes`` cost 0.9 µs per message, a third of serializing a response).
def _serialize(
    start: str,
    via: tuple[Via, ...],
    max_forwards: int | None,
    msg: SipRequest | SipResponse,
    contact_star: bool,
) -> bytes:
    lines = [start]
    for v in via:
        lines.append(f"Via: {v}")
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines.append(f"From: {msg.from_}")
    lines.append(f"To: {msg.to}")
    lines.append(f"Call-ID: {msg.call_id}")
    lines.append(f"CSeq: {msg.cseq}")
    if contact_star:
        lines.append("Contact: *")
    elif msg.contact:
        lines.append("Contact: " + ", ".join([str(c) for c in msg.contact]))
    for name, value in msg.headers:
        if name.lower() in ("content-length", "l"):
            continue
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(msg.body)}")
    lines.append("\r\n")
    text = "\r\n".join(lines)
    # A CR or LF inside any value would let it forge header lines: that is our caller's bug.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise LocalProtocolError("CR or LF inside a header value")
    return text.encode("utf-8", "surrogateescape") + msg.body


def serialize_request(req: SipRequest) -> bytes:
    """Wire form of a request; Content-Length is always written from the body."""
    return _serialize(
        f"{req.method} {req.uri} {req.version}",
        req.via,
        req.max_forwards,
        req,
        req.contact_star,
    )


def serialize_response(resp: SipResponse) -> bytes:
    """Wire form of a response; Content-Length is always written from the body."""
    return _serialize(
        f"{resp.version} {resp.status} {resp.reason}",
        resp.via,
        resp.max_forwards,
        resp,
        False,
    )


# RFC 3261 7.3.3 compact forms (plus RFC 3515/3891/4028 ones in common use).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
}


def canonical_header_name(name: str) -> str:
    """Lower-case long form of a header name (compact forms expanded)."""
    lname = name.lower()
    return COMPACT_FORMS.get(lname, lname)


def find_header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    want = canonical_header_name(name)
    for key, value in headers:
        if canonical_header_name(key) == want:
            return value
    return None


def find_header_values(headers: tuple[tuple[str, str], ...], name: str) -> list[str]:
    want = canonical_header_name(name)
    out: list[str] = []
    for key, value in headers:
        if canonical_header_name(key) == want:
            out.extend(split_header_values(value))
    return out


# One element of a comma-separated header value: commas inside quotes (RFC 3261 25.1
# quoted-string) or <> do not split.
HEADER_ELEMENT_RE: Final = re.compile(r'(?:"(?:[^"\\]|\\[\s\S])*"|<[^>]*>|[^,"<])*')


def split_header_values(text: str) -> list[str]:
    """Split a header value at commas outside quotes and <> (RFC 3261 7.3.1); empties dropped."""
    if '"' not in text and "<" not in text:
        return [part for part in (p.strip(" \t") for p in text.split(",")) if part]
    out: list[str] = []
    pos, end = 0, len(text)
    while pos <= end:
        match = HEADER_ELEMENT_RE.match(text, pos)
        stop = match.end() if match else pos
        if stop < end and text[stop] != ",":
            # An unbalanced quote or '<': the rest is one element (this helper never raises).
            stop = end
        part = text[pos:stop].strip(" \t")
        if part:
            out.append(part)
        pos = stop + 1
    return out
