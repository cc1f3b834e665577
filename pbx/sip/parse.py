"""SIP message parsing: bytes in, ``pbx.sip.message`` values out (serialization, re-exported
here, lives beside the values in ``pbx.sip.message``).

Implements RFC 3261 section 7 (message format: start line, header fields, compact forms 7.3.3,
multi-value headers 7.3.1, line folding 7.3.1), 18.3 (framing: Content-Length; over UDP a missing
Content-Length means "the rest of the datagram" and octets after the body are ignored), 19.1
(sip/sips URIs), 20 (header fields; addr-spec parameters are header parameters, 20.10) and 25
(the grammar: token, quoted-string with quoted-pair, LWS/SWS, name-addr, via-parm, CSeq), and the
tel URI of RFC 3966 (kept as written). Any other URI scheme is an opaque ``AbsoluteUri``.

Be liberal: header names are case-insensitive, URI parameters are compared case-insensitively
(``transport=UDP`` is fine), LWS is allowed wherever the grammar allows SWS/LWS, and a message
whose line ends are bare LF is accepted. Malformed input raises ``SipParseError`` (a
``RemoteProtocolError``) whose ``status_hint`` is the status to answer: 400 malformed, 505
unsupported SIP version, 513 message over ``MAX_MESSAGE_SIZE``.

Failed requests can still be answered: ``SipParseError.partial`` is a ``PartialMessage`` holding
the start line and every header line read before the failure (raw, unfolded). When it carries Via,
From, To, Call-ID and CSeq (``partial.can_answer``), ``partial.error_response(...)`` builds the
400/505/513 answer of RFC 3261 8.2 from those raw values, byte-exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, Final, TypeVar

from pbx.errors import RemoteProtocolError
from pbx.immutable import immutable
from pbx.sip.message import (
    COMPACT_FORMS,
    HEADER_ELEMENT_RE,
    AbsoluteUri,
    Address,
    CallId,
    CSeq,
    NameAddress,
    Params,
    SipRequest,
    SipResponse,
    SipUri,
    TelUri,
    Uri,
    Via,
    canonical_header_name,
    remember_text,
    serialize_request,
    serialize_response,
    split_header_values,
)

__all__ = [
    "MAX_CSEQ",
    "MAX_MESSAGE_SIZE",
    "MEMO_ENTRIES",
    "MEMO_TEXT_LENGTH",
    "PartialMessage",
    "SipParseError",
    "clear_memos",
    "is_keepalive",
    "memo_entries",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "read_partial",
    "serialize_request",
    "serialize_response",
    "split_header_values",
]

# A SIP message over this many octets is refused with 513 (RFC 3261 18.1.1, 21.5.14): a UDP
# datagram cannot be larger, and a TCP peer may not make us buffer more.
MAX_MESSAGE_SIZE: Final = 65536
# RFC 3261 20.16: "The sequence number MUST be expressible as a 32-bit unsigned integer".
MAX_CSEQ: Final = 2**32 - 1
# RFC 3261 20.22: Max-Forwards is an integer in the range 0-255.
MAX_MAX_FORWARDS: Final = 255


class SipParseError(RemoteProtocolError):
    """The peer sent a malformed message; ``partial`` (when not None) is what could be read."""

    def __init__(
        self, message: str, status_hint: int = 400, partial: PartialMessage | None = None
    ) -> None:
        super().__init__(message, status_hint)
        self.partial = partial


# --------------------------------------------------------------------------- grammar (RFC 3261 25)
_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = f"[{_TOKEN_CHARS}]+"
_TOKEN_RE = re.compile(_TOKEN)
_QUOTED = r'"(?:[^"\\]|\\[\s\S])*"'
_QUOTED_RE = re.compile(_QUOTED)
# gen-value = token / host / quoted-string; host adds ':' and brackets (IPv6, RFC 3261 25.1).
_GEN_VALUE = rf"[{_TOKEN_CHARS}:\[\]]+|{_QUOTED}"
_PARAM_RE = re.compile(rf"[ \t]*;[ \t]*({_TOKEN})(?:[ \t]*=[ \t]*({_GEN_VALUE}))?[ \t]*")
_PARAMS_FAST_RE = re.compile(rf"(?:;{_TOKEN}(?:=[{_TOKEN_CHARS}:\[\]]+)?)*")
_DISPLAY_TOKENS_RE = re.compile(rf"{_TOKEN}(?:[ \t]+{_TOKEN})*")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
# RFC 3261 25.1: user = 1*( unreserved / escaped / user-unreserved ); password likewise, plus ':'
# is the separator. Escapes are kept, never decoded here.
_USER_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/]+")
_PASSWORD_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,]*")
_HOSTPORT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-_.]+)(?::([0-9]{1,5}))?")
# uri-parameter = pname [ "=" pvalue ], paramchar = param-unreserved / unreserved / escaped.
_PARAMCHAR = r"A-Za-z0-9\-_.!~*'()\[\]/:&+$%"
_URI_PARAMS_RE = re.compile(rf"(?:;[{_PARAMCHAR}]+(?:=[{_PARAMCHAR}]+)?)+")
_URI_HEADERS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/?:+$%=&]+")
_TEL_NUMBER_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW]+")
_OPAQUE_URI_RE = re.compile(r"[^\s<>\"]+")
_VIA_RE = re.compile(
    rf"({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]*/[ \t]*({_TOKEN})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-_.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?"
)
_CSEQ_RE = re.compile(rf"([0-9]+)[ \t]+({_TOKEN})")
_DIGITS_RE = re.compile(r"[0-9]+")
_CALL_ID_RE = re.compile(r"[^\s]+")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
# The lookbehind makes a match start only at the first blank of a run, so that a long run of
# blanks costs linear, not quadratic, time.
_FOLD_RE = re.compile(r"(?<![ \t])[ \t]*\r?\n[ \t]+")
_TAG_PARAM_RE = re.compile(r";[ \t]*tag[ \t]*=", re.IGNORECASE)

# Fast paths: one regex for the common shapes, with the same meaning as the general code below
# them, which handles everything else (LWS inside values, quoted parameters, odd user parts).
_SIP_URI_FAST = (
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()%&=+$,]+)(?::([A-Za-z0-9\-_.!~*'()%&=+$,]*))?@)?"
    r"([A-Za-z0-9\-_.]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    rf"((?:;[{_PARAMCHAR}]+(?:=[{_PARAMCHAR}]+)?)*)"
)
_SIP_URI_FAST_RE = re.compile(_SIP_URI_FAST)
_HEADER_PARAMS_FAST = rf"(?:;{_TOKEN}(?:=[{_TOKEN_CHARS}:\[\]]+)?)*"
_DISPLAY_FAST = rf"(?:({_QUOTED})[ \t]*|({_TOKEN}(?:[ \t]+{_TOKEN})*)[ \t]*)?"
_NAME_ADDR_SIP_FAST_RE = re.compile(rf"{_DISPLAY_FAST}<{_SIP_URI_FAST}>({_HEADER_PARAMS_FAST})")
_NAME_ADDR_FAST_RE = re.compile(rf"{_DISPLAY_FAST}<([^<>\s\"]+)>({_HEADER_PARAMS_FAST})")
_VIA_FAST_RE = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9\-_.]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    rf"({_HEADER_PARAMS_FAST})"
)

# Which headers get typed fields (long and compact names, lower case).
_VIA, _FROM, _TO, _CALL_ID, _CSEQ, _MAX_FORWARDS, _CONTACT, _CONTENT_LENGTH = range(8)
_TYPED: Final[dict[str, int]] = {
    "via": _VIA,
    "from": _FROM,
    "to": _TO,
    "call-id": _CALL_ID,
    "cseq": _CSEQ,
    "max-forwards": _MAX_FORWARDS,
    "contact": _CONTACT,
    "content-length": _CONTENT_LENGTH,
}
for _short, _long in COMPACT_FORMS.items():
    if _long in _TYPED:
        _TYPED[_short] = _TYPED[_long]
# The usual spellings, so that the common case needs no str.lower().
for _name in (
    "Via", "From", "To", "Call-ID", "Call-Id", "CSeq", "Max-Forwards", "Contact",
    "Content-Length", "V", "F", "T", "I", "M", "L",
):  # fmt: skip
    _TYPED[_name] = _TYPED[_name.lower()]
# Header names known to be tokens: their lines need no regex check.
_COMMON_NAMES: Final = frozenset(
    {k for k in _TYPED if k[0].isupper() or len(k) == 1}
    | {
        "Allow",
        "Supported",
        "Require",
        "User-Agent",
        "Server",
        "Content-Type",
        "Expires",
        "Route",
        "Record-Route",
        "Authorization",
        "WWW-Authenticate",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "Accept",
        "Allow-Events",
        "Session-Expires",
        "Min-SE",
        "Date",
        "P-Asserted-Identity",
        "Privacy",
        "Diversion",
        "History-Info",
        "Reason",
        "Event",
        "Subscription-State",
        "Content-Disposition",
        "Organization",
        "Subject",
        "Warning",
        "Unsupported",
        "Min-Expires",
        "Retry-After",
        "Timestamp",
        "Accept-Language",
        "Accept-Encoding",
        "Content-Encoding",
        "Referred-By",
        "Refer-To",
        "Replaces",
    }
)
_SINGLETON_NAMES = {_FROM: "From", _TO: "To", _CALL_ID: "Call-ID", _CSEQ: "CSeq"}


def _fail(message: str, status: int = 400) -> SipParseError:
    return SipParseError(message, status)


# --------------------------------------------------------------------------- values
def _split_strict(text: str, what: str) -> list[str]:
    """Like ``split_header_values`` but an empty element or an unbalanced quote/'<' is an error."""
    if '"' not in text and "<" not in text:
        parts = text.split(",")
    else:
        parts = []
        pos, end = 0, len(text)
        while True:
            match = HEADER_ELEMENT_RE.match(text, pos)
            stop = match.end() if match else pos
            parts.append(text[pos:stop])
            if stop == end:
                break
            if text[stop] != ",":
                raise _fail(f"unbalanced quote or '<' in {what}")
            pos = stop + 1
    out = [p.strip(" \t") for p in parts]
    if not all(out):
        raise _fail(f"empty value in {what}")
    return out


def _parse_params(text: str, what: str) -> Params:
    """``*( SEMI generic-param )`` with SWS allowed around ';' and '=' (RFC 3261 25.1)."""
    if not text:
        return ()
    if _PARAMS_FAST_RE.fullmatch(text):
        return _split_params(text)
    out: list[tuple[str, str | None]] = []
    pos, end = 0, len(text)
    while pos < end:
        match = _PARAM_RE.match(text, pos)
        if match is None:
            if not text[pos:].strip(" \t"):
                break
            raise _fail(f"bad parameter in {what}: {text[pos:]!r}")
        out.append((match.group(1), match.group(2)))
        pos = match.end()
    return tuple(out)


def _canonical_port(port_text: str | None) -> bool:
    """Whether a port is written as formatting writes it (no leading zero), or absent."""
    return port_text is None or port_text[0] != "0" or port_text == "0"


def _split_params(text: str) -> Params:
    """``;a=b;c`` already known to be well-formed (no LWS, no quotes) into pairs."""
    if text.find(";", 1) < 0:
        name, eq, value = text[1:].partition("=")
        return ((name, value if eq else None),)
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        out.append((name, value if eq else None))
    return tuple(out)


# The header values of a message are parsed through a memo (``_memoized``): the same text comes
# back many times (a dialog's From and To in each of its requests and responses, a transaction's
# top Via in each of its responses, a phone's Contact in every REGISTER and answer, the
# Request-URI of every call to a number, "CSeq: 1 INVITE") and the values are immutable, so one
# parse can serve them all. A memo is a dict of at most MEMO_ENTRIES values, emptied when full
# (an LRU's bookkeeping cost more than its better hit rate saved: 12 % of a parse), each from a
# header line of at most MEMO_TEXT_LENGTH characters: with the caps' parameter count such a value
# takes at most about 6 KB, so the memos hold about 12 MB at worst (about 1 MB with usual
# headers), whatever peers send. Errors are not memoized: malformed text is parsed, and refused,
# every time. The public ``parse_*`` functions parse afresh.
MEMO_ENTRIES: Final = 512
MEMO_TEXT_LENGTH: Final = 192

_V = TypeVar("_V")
_MEMOS: list[dict[str, Any]] = []


def _memoized(parse: Callable[[str], _V]) -> Callable[[str], _V]:
    """``parse`` with a bounded memo of its results for short texts."""
    memo: dict[str, _V] = {}
    _MEMOS.append(memo)

    @wraps(parse)
    def parse_value(text: str) -> _V:
        value = memo.get(text)
        if value is None:
            value = parse(text)
            if len(text) <= MEMO_TEXT_LENGTH:
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()
                memo[text] = value
        return value

    return parse_value


def memo_entries() -> int:
    """How many parsed header values the memos hold."""
    return sum(len(memo) for memo in _MEMOS)


def clear_memos() -> None:
    """Empty the memos of parsed header values."""
    for memo in _MEMOS:
        memo.clear()


def parse_uri(text: str) -> Uri:
    """A sip/sips URI (RFC 3261 19.1), a tel URI (RFC 3966) or another absoluteURI, as written."""
    fast = _SIP_URI_FAST_RE.fullmatch(text)
    if fast is not None:
        scheme, user, password, host, port_text, ptext = fast.groups()
        port = None if port_text is None else int(port_text)
        if port is None or port <= 65535:
            params = _split_params(ptext) if ptext else ()
            lower_host = host.lower()
            uri = SipUri(scheme, lower_host, user, password, port, params, None)
            if lower_host == host and _canonical_port(port_text):
                remember_text(uri, text)
            return uri
    match = _SCHEME_RE.match(text)
    if match is None:
        raise _fail(f"not a URI: {text!r}")
    scheme = match.group(1).lower()
    if scheme == "sip" or scheme == "sips":
        return _parse_sip_uri(text, scheme, match.end())
    if scheme == "tel":
        return _parse_tel_uri(text, match.end())
    if match.end() == len(text) or not _OPAQUE_URI_RE.fullmatch(text):
        raise _fail(f"bad URI: {text!r}")
    return AbsoluteUri(scheme, text)


def _parse_sip_uri(text: str, scheme: str, start: int) -> SipUri:
    rest = text[start:]
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        # The first '@' ends userinfo: user and password may not hold a bare '@' (25.1).
        user, colon, pw = rest[:at].partition(":")
        if not _USER_RE.fullmatch(user):
            raise _fail(f"bad user part in URI {text!r}")
        if colon:
            if not _PASSWORD_RE.fullmatch(pw):
                raise _fail(f"bad password in URI {text!r}")
            password = pw
        rest = rest[at + 1 :]
    match = _HOSTPORT_RE.match(rest)
    if match is None:
        raise _fail(f"bad host in URI {text!r}")
    host, port_text = match.groups()
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise _fail(f"bad port in URI {text!r}")
    params: Params = ()
    headers: str | None = None
    tail = rest[match.end() :]
    if tail:
        ptext, qmark, htext = tail.partition("?")
        if ptext:
            if not _URI_PARAMS_RE.fullmatch(ptext):
                raise _fail(f"bad parameters in URI {text!r}")
            params = _split_params(ptext)
        if qmark:
            if not _URI_HEADERS_RE.fullmatch(htext):
                raise _fail(f"bad headers in URI {text!r}")
            headers = htext
    return SipUri(scheme, host.lower(), user, password, port, params, headers)


def _parse_tel_uri(text: str, start: int) -> TelUri:
    number, semi, ptext = text[start:].partition(";")
    if not _TEL_NUMBER_RE.fullmatch(number):
        raise _fail(f"bad tel URI {text!r}")
    params: Params = ()
    if semi:
        ptext = ";" + ptext
        if not _URI_PARAMS_RE.fullmatch(ptext):
            raise _fail(f"bad parameters in tel URI {text!r}")
        params = _split_params(ptext)
    return TelUri(number, params)


def parse_name_addr(text: str) -> NameAddress:
    """name-addr or addr-spec, then header parameters (RFC 3261 20.10, 25.1)."""
    sip = _NAME_ADDR_SIP_FAST_RE.fullmatch(text)
    if sip is not None:
        quoted, tokens, scheme, user, password, host, port_text, uparams, ptext = sip.groups()
        port = None if port_text is None else int(port_text)
        if port is None or port <= 65535:
            lower_host = host.lower()
            uri: Uri = SipUri(
                scheme,
                lower_host,
                user,
                password,
                port,
                _split_params(uparams) if uparams else (),
                None,
            )
            name = quoted or tokens
            address = NameAddress(uri, name, _split_params(ptext) if ptext else ())
            # Formatting writes "<uri>" or "name <uri>": one space, host in lower case.
            if (
                lower_host == host
                and _canonical_port(port_text)
                and (text[0] == "<" if name is None else text.startswith(" <", len(name)))
            ):
                remember_text(address, text)
            return address
    fast = _NAME_ADDR_FAST_RE.fullmatch(text)
    if fast is not None:
        quoted, tokens, uri_text, ptext = fast.groups()
        return NameAddress(
            parse_uri(uri_text), quoted or tokens, _split_params(ptext) if ptext else ()
        )
    text = text.strip(" \t")
    if not text:
        raise _fail("empty address")
    display: str | None = None
    if text[0] == '"':
        match = _QUOTED_RE.match(text)
        if match is None:
            raise _fail(f"unterminated quoted display name: {text!r}")
        display = match.group()
        rest = text[match.end() :].lstrip(" \t")
        if not rest.startswith("<"):
            raise _fail(f"quoted display name without <URI>: {text!r}")
    else:
        lt = text.find("<")
        if lt < 0:
            return _parse_addr_spec(text)
        if lt > 0:
            # RFC 4475 3.1.1.6: no LWS is needed between a token display name and '<'.
            display = text[:lt].rstrip(" \t")
            if not _DISPLAY_TOKENS_RE.fullmatch(display):
                raise _fail(f"display name must be tokens or a quoted string: {display!r}")
        rest = text[lt:]
    gt = rest.find(">")
    if gt < 0:
        raise _fail(f"missing '>' in {text!r}")
    # RFC 4475 3.1.2.14: spaces just inside <> are not allowed; a liberal element ignores them.
    uri = parse_uri(rest[1:gt].strip(" \t"))
    return NameAddress(uri, display, _parse_params(rest[gt + 1 :], "address"))


def _parse_addr_spec(text: str) -> NameAddress:
    # RFC 3261 20.10: without <>, everything after the first ';' is a header parameter, and a
    # URI holding ',', '?' or ';' had to be written in <> (RFC 4475 3.1.2.13).
    semi = text.find(";")
    uri_text = text if semi < 0 else text[:semi].rstrip(" \t")
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers is not None:
        raise _fail(f"URI with headers must be in <>: {text!r}")
    params = _parse_params(text[semi:], "address") if semi >= 0 else ()
    return NameAddress(uri, None, params)


def parse_via(text: str) -> Via:
    """One via-parm: sent-protocol, sent-by and via-params (RFC 3261 20.42, 25.1)."""
    fast = _VIA_FAST_RE.fullmatch(text)
    if fast is not None:
        transport, host, port_text, ptext = fast.groups()
        fast_port = None if port_text is None else int(port_text)
        if fast_port is None or fast_port <= 65535:
            params = _split_params(ptext) if ptext else ()
            upper_transport, lower_host = transport.upper(), host.lower()
            via = Via(upper_transport, lower_host, fast_port, params)
            if upper_transport == transport and lower_host == host and _canonical_port(port_text):
                remember_text(via, text)
            return via
    text = text.strip(" \t")
    match = _VIA_RE.match(text)
    if match is None:
        raise _fail(f"bad Via: {text!r}")
    name, version, transport, host, port_text = match.groups()
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise _fail(f"bad port in Via: {text!r}")
    params = _parse_params(text[match.end() :], "Via")
    protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name.upper()}/{version}"
    return Via(transport.upper(), host.lower(), port, params, protocol)


@_memoized
def _parse_via_line(text: str) -> tuple[Via, ...]:
    """The Vias of one Via header line."""
    if "," not in text:
        return (parse_via(text),)
    return tuple(parse_via(part) for part in _split_strict(text, "Via"))


@_memoized
def _parse_contact_line(text: str) -> tuple[NameAddress, ...]:
    """The addresses of one Contact header line (not "*")."""
    if "," not in text:
        return (parse_name_addr(text),)
    return tuple(parse_name_addr(part) for part in _split_strict(text, "Contact"))


_parse_address = _memoized(parse_name_addr)  # From, To
_parse_request_uri = _memoized(parse_uri)


@_memoized
def _parse_cseq(text: str) -> CSeq:
    digits, _, method = text.partition(" ")
    if digits.isdigit() and digits.isascii() and len(digits) < 11 and _TOKEN_RE.fullmatch(method):
        value = int(digits)
        if value <= MAX_CSEQ:
            return CSeq(value, method)
    match = _CSEQ_RE.fullmatch(text)
    if match is None:
        raise _fail(f"bad CSeq: {text!r}")
    number = int(match.group(1))
    if number > MAX_CSEQ:
        raise _fail(f"CSeq number out of range: {match.group(1)}")
    return CSeq(number, match.group(2))


def _parse_int(text: str, what: str, limit: int) -> int:
    if text.isdigit() and text.isascii() and len(text) < 10:
        value = int(text)
        if value <= limit:
            return value
    if not _DIGITS_RE.fullmatch(text):
        raise _fail(f"bad {what}: {text!r}")
    if len(text) > 12 or int(text) > limit:
        raise _fail(f"{what} out of range: {text!r}")
    return int(text)


# --------------------------------------------------------------------------- partial messages
@immutable
class PartialMessage:
    """What could be read of a message that failed to parse: enough, if present, to answer it.

    ``headers`` holds every header line read before the failure, in order, names as written and
    folding collapsed. Values are raw: nothing in them has been parsed.
    """

    start_line: str
    method: str | None  # None for a response or an unreadable start line
    headers: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        """Raw values of header ``name`` (compact forms included), one per header line."""
        want = canonical_header_name(name)
        return [v for k, v in self.headers if canonical_header_name(k) == want]

    @property
    def can_answer(self) -> bool:
        """A request (not ACK) with Via, From, To, Call-ID and CSeq: a response can be built."""
        if self.method is None or self.method == "ACK":
            return False
        return all(self.values(n) for n in ("via", "from", "to", "call-id", "cseq"))

    def error_response(self, status: int, reason: str, to_tag: str) -> bytes | None:
        """RFC 3261 8.2.6 response echoing the raw Via/From/To/Call-ID/CSeq; None if impossible.

        ``to_tag`` is added to To when it has none (8.2.6.2); the caller makes it up.
        """
        if not self.can_answer:
            return None
        lines = [f"SIP/2.0 {status} {reason}"]
        lines.extend(f"Via: {v}" for v in self.values("via"))
        to = self.values("to")[0]
        if not _TAG_PARAM_RE.search(to):
            to = f"{to};tag={to_tag}"
        lines.append(f"From: {self.values('from')[0]}")
        lines.append(f"To: {to}")
        lines.append(f"Call-ID: {self.values('call-id')[0]}")
        lines.append(f"CSeq: {self.values('cseq')[0]}")
        lines.append("Content-Length: 0")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- messages
def _split_head(data: bytes) -> tuple[str, str, int]:
    """The start line, the header block (folding collapsed) and where the body starts."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n", 0, crlf) if crlf >= 0 else data.find(b"\n\n")
    if crlf >= 0 and lf < 0:
        head_bytes, body_start = data[:crlf], crlf + 4
    elif lf >= 0:
        head_bytes, body_start = data[:lf], lf + 2
        if head_bytes.endswith(b"\r"):
            head_bytes = head_bytes[:-1]
    else:
        # No blank line: over UDP the end of the datagram ends the headers (RFC 4475 3.1.2.15).
        head_bytes, body_start = data.rstrip(b"\r\n"), len(data)
    head = head_bytes.decode("utf-8", "surrogateescape")
    nl = head.find("\n")
    if nl < 0:
        return head.rstrip("\r"), "", body_start
    start = head[:nl]
    if start.endswith("\r"):
        start = start[:-1]
    block = head[nl + 1 :]
    if "\n " in block or "\n\t" in block:
        # RFC 3261 7.3.1: a line starting with whitespace continues the previous header line;
        # the fold is equivalent to a single SP. (The start line cannot be continued: a first
        # header line starting with whitespace is malformed.)
        block = _FOLD_RE.sub(" ", block)
    return start, block, body_start


def _header_lines(block: str) -> list[str] | None:
    """The header lines of ``block``; None when one holds a CR that ends no line."""
    lines = block.split("\r\n")
    if len(lines) == block.count("\n") + 1 == block.count("\r") + 1:
        return lines
    # Bare LF line ends (RFC 3261 7.5 asks for CRLF; be liberal). A lone CR is malformed.
    block = block.replace("\r\n", "\n")
    return None if "\r" in block else block.split("\n")


def _split_headers(block: str) -> tuple[list[tuple[str, str]], str | None]:
    """Raw ``(name, value)`` pairs; on a bad line, the pairs before it and the error text.

    The tolerant reading behind ``PartialMessage``: only used once parsing has failed.
    """
    out: list[tuple[str, str]] = []
    if not block:
        return out, None
    for line in block.replace("\r\n", "\n").split("\n"):
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN_RE.fullmatch(name) or "\r" in value:
            return out, f"malformed header line: {line[:80]!r}"
        out.append((name, value.strip(" \t")))
    return out, None


def is_keepalive(data: bytes) -> bool:
    """Whether a datagram is a NAT keep-alive, not a message: only CR, LF, SP, TAB or NUL.

    Phones send CRLF CRLF (RFC 5626 3.5.1 style) or a few NULs over UDP; drop them silently.
    """
    return not data.strip(b"\r\n \t\x00")


def _partial(data: bytes, method: str | None) -> PartialMessage:
    start, block, _ = _split_head(data)
    raw, _ = _split_headers(block)
    return PartialMessage(start, method, tuple(raw))


def read_partial(data: bytes) -> PartialMessage:
    """The start line and raw header lines of ``data``, nothing parsed (a message refused
    before parsing, ``pbx.sip.limits``, is answered from this)."""
    data = data.lstrip(b"\r\n")
    first = data[: data.find(b" ")] if b" " in data[:64] else b""
    method = first.decode("latin-1")
    if not _TOKEN_RE.fullmatch(method) or method.upper().startswith("SIP/"):
        return _partial(data, None)
    return _partial(data, method)


def parse_message(
    data: bytes, *, stream: bool = False, source: Address | None = None
) -> SipRequest | SipResponse:
    """Parse one message: a UDP datagram, or (``stream=True``) one message framed off TCP.

    ``source``: where a received message came from; a request's top Via is then stamped with it
    as the server keeps it (``Via.stamped``: received, rport).

    Over a stream Content-Length is mandatory (RFC 3261 18.3, 20.14). Raises ``SipParseError``
    whose ``partial`` is set (see ``PartialMessage``).
    """
    if data[:1] in (b"\r", b"\n"):
        # RFC 3261 7.5: CRLFs before the start line are ignored.
        data = data.lstrip(b"\r\n")
    start, block, body_start = _split_head(data)
    method: str | None = None
    status: int | None = None
    reason = ""
    uri_text = ""
    error: SipParseError | None = None
    if "\r" in start:
        error = _fail("bare CR in the start line")
    elif start.startswith("SIP/2.0 "):
        code, _, reason = start[8:].partition(" ")
        if len(code) == 3 and code.isdigit() and "1" <= code[0] <= "6":
            status = int(code)
        else:
            error = _fail(f"bad status line: {start[:80]!r}")
    elif start[:4].upper() == "SIP/":
        error = _fail(f"bad status line: {start[:80]!r}")
    else:
        parts = start.split(" ")
        if _TOKEN_RE.fullmatch(parts[0]):
            # Readable enough to answer 400 (RFC 4475 3.1.2.9/3.1.2.10: extra SP is malformed).
            method = parts[0]
        if len(parts) != 3 or method is None:
            error = _fail(f"bad request line: {start[:80]!r}")
        else:
            uri_text = parts[1]
            version = parts[2]
            if version != "SIP/2.0":
                if not _VERSION_RE.fullmatch(version):
                    error = _fail(f"bad request line: {start[:80]!r}")
                elif version.upper() != "SIP/2.0":
                    error = _fail(f"unsupported SIP version {version!r}", 505)
    if error is None and len(data) > MAX_MESSAGE_SIZE:
        error = _fail(f"message of {len(data)} octets is too large", 513)
    try:
        if error is not None:
            raise error
        return _build(data, block, body_start, method, uri_text, status, reason, stream, source)
    except SipParseError as exc:
        exc.partial = _partial(data, method)
        raise


def _build(
    data: bytes,
    block: str,
    body_start: int,
    method: str | None,
    uri_text: str,
    status: int | None,
    reason: str,
    stream: bool,
    source: Address | None = None,
) -> SipRequest | SipResponse:
    # One pass over the header lines: each typed header's values go to its bucket, the other
    # headers stay in order as written.
    buckets: tuple[list[str], ...] = ([], [], [], [], [], [], [], [])
    headers: list[tuple[str, str]] = []
    lines = _header_lines(block) if block else []
    if lines is None:
        raise _fail("bare CR in the header block")
    typed = _TYPED.get
    known = _COMMON_NAMES
    token = _TOKEN_RE.fullmatch
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise _fail(f"malformed header line: {line[:80]!r}")
        kind = typed(name)
        if kind is None:
            if name not in known:
                name = name.rstrip(" \t")
                if not token(name):
                    raise _fail(f"malformed header line: {line[:80]!r}")
                kind = typed(name.lower())
            if kind is None:
                headers.append((name, value.strip(" \t")))
                continue
        buckets[kind].append(value.strip(" \t"))
    for kind, hname in _SINGLETON_NAMES.items():
        count = len(buckets[kind])
        if count != 1:
            raise _fail(f"missing {hname}" if count == 0 else f"more than one {hname}")
    if not buckets[_VIA]:
        raise _fail("missing Via")
    via: list[Via] = []
    for value in buckets[_VIA]:
        via.extend(_parse_via_line(value))
    contact: list[NameAddress] = []
    contact_star = False
    for value in buckets[_CONTACT]:
        if value == "*":
            contact_star = True
        else:
            contact.extend(_parse_contact_line(value))
    if contact_star and (contact or len(buckets[_CONTACT]) > 1):
        raise _fail("Contact '*' mixed with addresses")
    max_forwards: int | None = None
    if buckets[_MAX_FORWARDS]:
        if len(buckets[_MAX_FORWARDS]) > 1:
            raise _fail("more than one Max-Forwards")
        max_forwards = _parse_int(buckets[_MAX_FORWARDS][0], "Max-Forwards", MAX_MAX_FORWARDS)
    from_ = _parse_address(buckets[_FROM][0])
    to = _parse_address(buckets[_TO][0])
    call_id = buckets[_CALL_ID][0]
    if not call_id or " " in call_id or not _CALL_ID_RE.fullmatch(call_id):
        raise _fail(f"bad Call-ID: {call_id!r}")
    cseq = _parse_cseq(buckets[_CSEQ][0])

    lengths = buckets[_CONTENT_LENGTH]
    if not lengths:
        if stream:
            raise _fail("missing Content-Length on a stream transport")
        body = data[body_start:]
    else:
        content_length = _parse_int(lengths[0], "Content-Length", MAX_MESSAGE_SIZE * 16)
        for other in lengths[1:]:
            if _parse_int(other, "Content-Length", MAX_MESSAGE_SIZE * 16) != content_length:
                raise _fail("conflicting Content-Length values")
        if content_length > len(data) - body_start:
            raise _fail("Content-Length larger than the message body")
        # RFC 3261 18.3: octets after Content-Length's worth of body are discarded.
        body = data[body_start : body_start + content_length]

    if method is not None:
        if source is not None:
            via[0] = via[0].stamped(source)
        return SipRequest(
            method,
            _parse_request_uri(uri_text),
            tuple(via),
            from_,
            to,
            CallId(call_id),
            cseq,
            max_forwards,
            tuple(contact),
            contact_star,
            tuple(headers),
            body,
        )
    assert status is not None
    if contact_star:
        raise _fail("Contact '*' in a response")
    return SipResponse(
        status,
        reason,
        tuple(via),
        from_,
        to,
        CallId(call_id),
        cseq,
        tuple(contact),
        tuple(headers),
        body,
        "SIP/2.0",
        max_forwards,
    )
