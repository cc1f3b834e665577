"""Pure UAS request checks of RFC 3261 section 8.2 (and 10.3 for REGISTER's To).

``validate_request`` runs the checks a UAS makes before any application logic, in the order of
8.2: method inspection (8.2.1: 501 unknown, 405 known but not allowed here, with Allow), header
inspection (8.2.2: CSeq agreeing with the method, 416 for an unsupported Request-URI scheme, 420
with Unsupported for unknown Require option tags, 8.2.2.3), then content processing (8.2.3: 415
with Accept for a body we cannot read; 406 when an INVITE's Accept excludes application/sdp,
21.4.7). SIP version (505), missing or repeated Call-ID/From/To/CSeq/Max-Forwards and CSeq over
2**32-1 (400) are caught by ``pbx.sip.parse`` already, since the message model cannot even hold
them; they are checked here again for messages built in code.

Method policy: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO and UPDATE are allowed (``ALLOW``).
PRACK, MESSAGE, NOTIFY, SUBSCRIBE, REFER and PUBLISH are known but not offered: 405 with Allow.
NOTIFY is refused because the B2BUA never subscribes (no REFER, no SUBSCRIBE), so any NOTIFY it
gets belongs to no subscription (RFC 6665 4.1.3 would answer 481 to that; 405 tells the peer not
to retry). Any other method is unknown: 501 with Allow. ``SUPPORTED`` is empty: we implement no
option tag (no 100rel, timer, replaces, path, outbound), so any Require gets 420.

``outcome_for_datagram`` combines parse and validate into the status a UDP server would answer a
datagram with; see its docstring for the mapping.
"""

from __future__ import annotations

from typing import Final

from pbx.immutable import immutable
from pbx.sip.message import SipRequest, SipResponse, SipUri
from pbx.sip.parse import MAX_CSEQ, SipParseError, parse_message, split_header_values

__all__ = [
    "ACCEPT",
    "ACCEPTED",
    "ACCEPT_HEADER",
    "ALLOW",
    "ALLOW_HEADER",
    "KNOWN_NOT_ALLOWED",
    "REQUEST_URI_SCHEMES",
    "SUPPORTED",
    "SUPPORTED_HEADER",
    "Rejection",
    "outcome_for_datagram",
    "validate_request",
]

ALLOW: Final = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE")
ALLOW_HEADER: Final = ", ".join(ALLOW)
KNOWN_NOT_ALLOWED: Final = frozenset(
    {"PRACK", "MESSAGE", "NOTIFY", "SUBSCRIBE", "REFER", "PUBLISH"}
)
ACCEPT: Final = ("application/sdp",)
ACCEPT_HEADER: Final = ", ".join(ACCEPT)
SUPPORTED: Final[tuple[str, ...]] = ()
SUPPORTED_HEADER: Final = ", ".join(SUPPORTED)
REQUEST_URI_SCHEMES: Final = frozenset({"sip", "sips", "tel"})
# Methods whose body we interpret as a session description (RFC 3261 13.2.1, RFC 3311).
_SDP_METHODS: Final = frozenset({"INVITE", "UPDATE"})
# What ``outcome_for_datagram`` returns for a request that passed every check here: the
# application (registrar, B2BUA) chooses the final status. Not a SIP status code.
ACCEPTED: Final = 0

_ALLOW_HDR = (("Allow", ALLOW_HEADER),)


@immutable
class Rejection:
    """The response a UAS must send instead of processing the request."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def _media_type(value: str) -> str:
    return value.partition(";")[0].strip(" \t").lower()


def validate_request(req: SipRequest) -> Rejection | None:
    """The RFC 3261 8.2 rejection for ``req``, or None when it may be processed.

    A rejection of an ACK must not be sent (RFC 3261 17.2.1 ACKs get no response): drop it.
    """
    if req.version != "SIP/2.0":
        return Rejection(505, "Version Not Supported")
    method = req.method
    # 8.2.1 method inspection.
    if method not in ALLOW:
        if method in KNOWN_NOT_ALLOWED:
            return Rejection(405, "Method Not Allowed", _ALLOW_HDR)
        return Rejection(501, "Not Implemented", _ALLOW_HDR)
    # Malformed-request checks (RFC 3261 8.2.2 preamble, 20.16, 19.1.1 table 1).
    if req.cseq.method != method:
        return Rejection(400, "CSeq Method Does Not Match")
    if not 0 <= req.cseq.number <= MAX_CSEQ:
        return Rejection(400, "CSeq Out Of Range")
    if req.max_forwards is not None and not 0 <= req.max_forwards <= 255:
        return Rejection(400, "Max-Forwards Out Of Range")
    # 8.2.2.1: Request-URI scheme.
    uri = req.uri
    if uri.scheme not in REQUEST_URI_SCHEMES:
        return Rejection(416, "Unsupported URI Scheme")
    if isinstance(uri, SipUri) and uri.headers is not None:
        # 19.1.1: headers are not allowed in a Request-URI (RFC 4475 3.1.2.11).
        return Rejection(400, "Headers Not Allowed In Request-URI")
    # 8.2.2.3: Require, except in CANCEL and ACK.
    if method != "ACK" and method != "CANCEL":
        unknown = [t for t in req.header_values("Require") if t.lower() not in SUPPORTED]
        if unknown:
            return Rejection(420, "Bad Extension", (("Unsupported", ", ".join(unknown)),))
    if method == "REGISTER":
        # 10.2/10.3: the To of a REGISTER is the address-of-record: a SIP or SIPS URI
        # (RFC 4475 3.3.4 expects 400 otherwise).
        if not isinstance(req.to.uri, SipUri):
            return Rejection(400, "To Must Be A SIP URI")
        # 10.2.2 / 10.3 step 6: "Contact: *" only with Expires: 0 (and nothing else).
        if req.contact_star and (req.header("Expires") or "").strip() != "0":
            return Rejection(400, "Contact * Needs Expires 0")
    # 8.2.3 content processing.
    if req.body and method in _SDP_METHODS:
        encoding = req.header("Content-Encoding")
        if encoding is not None and any(
            e.lower() != "identity" for e in split_header_values(encoding)
        ):
            return Rejection(415, "Unsupported Media Type", (("Accept-Encoding", "identity"),))
        ctype = req.header("Content-Type")
        if ctype is None:
            # 20.15: "The Content-Type header field MUST be present if the body is not empty."
            return Rejection(400, "Missing Content-Type")
        if _media_type(ctype) not in ACCEPT:
            return Rejection(415, "Unsupported Media Type", (("Accept", ACCEPT_HEADER),))
    if method == "INVITE" and req.header("Accept") is not None:
        offered = {_media_type(v) for v in req.header_values("Accept")}
        if offered and not offered & {"application/sdp", "application/*", "*/*"}:
            # 21.4.7: our answer would have to carry SDP, which the UAC says it cannot read.
            return Rejection(406, "Not Acceptable", (("Accept", ACCEPT_HEADER),))
    return None


def outcome_for_datagram(data: bytes) -> int | None:
    """The status a UDP server answers the datagram ``data`` with, before application logic.

    - None: nothing is sent. Responses are never answered (the transaction layer absorbs or drops
      them); ACKs are never answered; a request too broken to answer (no Via, From, To, Call-ID
      or CSeq readable) is dropped.
    - a status code: the parse error's ``status_hint`` (400, 505, 513) or the ``Rejection``.
    - ``ACCEPTED`` (0): well-formed and acceptable; the registrar or B2BUA picks the status
      (401 challenge, 200, 404...), which is never 400.
    """
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        if exc.partial is not None and exc.partial.can_answer:
            return exc.status_hint
        return None
    if isinstance(msg, SipResponse):
        return None
    if msg.method == "ACK":
        return None
    rejection = validate_request(msg)
    return ACCEPTED if rejection is None else rejection.status
