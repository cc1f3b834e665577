"""Builders for the messages the transaction layer and UAs derive from others.

- ``build_response``: RFC 3261 8.2.6 (UAS response construction), 8.2.6.1 (100 Trying keeps
  Timestamp), 8.2.6.2 (To tag), 17.2.1 (no To tag on a 100 built by the transaction layer),
  and the reason phrases of RFC 3261 section 21 plus later RFCs in common use.
- ``build_ack_for_non2xx``: RFC 3261 17.1.1.3 (ACK for a non-2xx final, part of the INVITE
  client transaction).
- ``build_cancel``: RFC 3261 9.1 (CANCEL of a pending INVITE).
- ``new_branch`` / ``new_tag`` / ``new_call_id``: RFC 3261 8.1.1.7, 19.3 (unique, random).
"""

from __future__ import annotations

from collections.abc import Iterable

from pbx.errors import LocalProtocolError
from pbx.sip.entropy import token_hex
from pbx.sip.message import (
    MAGIC_COOKIE,
    Branch,
    CallId,
    CSeq,
    NameAddress,
    SipRequest,
    SipResponse,
    Tag,
    canonical_header_name,
)

# RFC 3261 section 21, RFC 3262, 3265, 3903, 4412, 4474, 5079, 5360, 5393, 6086, 6665, 8197.
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

_CLASS_PHRASES = {
    1: "Trying",
    2: "OK",
    3: "Redirection",
    4: "Client Error",
    5: "Server Error",
    6: "Global Failure",
}


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` (its class's phrase when it has none)."""
    return REASON_PHRASES.get(status) or _CLASS_PHRASES.get(status // 100, "Unknown")


def new_branch() -> Branch:
    """A fresh Via branch: magic cookie plus 96 random bits (RFC 3261 8.1.1.7)."""
    return Branch(MAGIC_COOKIE + token_hex(12))


def new_tag() -> Tag:
    """A fresh From/To tag with 64 random bits (RFC 3261 19.3 asks for at least 32)."""
    return Tag(token_hex(8))


def new_call_id(host: str) -> CallId:
    """A fresh Call-ID ``<128 random bits>@host`` (RFC 3261 8.1.1.4)."""
    return CallId(f"{token_hex(16)}@{host}")


def _route_headers(request: SipRequest) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in request.headers if canonical_header_name(k) == "route")


def build_response(
    req: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    contact: Iterable[NameAddress] = (),
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response to ``req`` built per RFC 3261 8.2.6.

    Via (all values, in order), From, To, Call-ID and CSeq are copied from the request. ``to_tag``
    is added to To only when the request's To has no tag (8.2.6.2) and never to a 100 (17.2.1).
    A 100 copies the request's Timestamp header (8.2.6.1). ``headers`` are extra raw headers.
    """
    if not 100 <= status <= 699:
        raise LocalProtocolError(f"status {status} out of range 100-699")
    if req.method == "ACK":
        raise LocalProtocolError("ACK is never answered (RFC 3261 17.1.1.3)")
    to = req.to
    if to_tag is not None and to.tag is None and status != 100:
        to = to.with_tag(to_tag)
    extra = tuple(headers)
    if status == 100:
        timestamp = req.header("Timestamp")
        if timestamp is not None and not any(
            canonical_header_name(k) == "timestamp" for k, _ in extra
        ):
            extra = (("Timestamp", timestamp), *extra)
    return SipResponse(
        status=status,
        reason=reason if reason is not None else reason_phrase(status),
        via=req.via,
        from_=req.from_,
        to=to,
        call_id=req.call_id,
        cseq=req.cseq,
        contact=tuple(contact),
        headers=extra,
        body=body,
    )


def build_ack_for_non2xx(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK an INVITE client transaction sends for a 300-699 final (RFC 3261 17.1.1.3).

    Request-URI, Call-ID, From and CSeq number come from the INVITE; To comes from the response
    (it carries the tag); Via is the INVITE's top Via only (same branch); Route headers are the
    INVITE's. No body.
    """
    if invite.method != "INVITE":
        raise LocalProtocolError(f"ACK is only built for INVITE, not {invite.method}")
    if not 300 <= response.status <= 699:
        raise LocalProtocolError(f"ACK for {response.status} belongs to the TU, not here")
    return SipRequest(
        method="ACK",
        uri=invite.uri,
        via=invite.via[:1],
        from_=invite.from_,
        to=response.to,
        call_id=invite.call_id,
        cseq=CSeq(invite.cseq.number, "ACK"),
        max_forwards=70,
        headers=_route_headers(invite),
    )


# RFC 3326 (and RFC 3261 9.1's use of it by forking proxies): the CANCEL of a fork that lost to
# another answer, so that the phone does not show the call as missed.
ANSWERED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


def build_cancel(invite: SipRequest, reason: str | None = None) -> SipRequest:
    """A CANCEL for a pending INVITE (RFC 3261 9.1).

    Request-URI, Call-ID, To, From and the CSeq number are the INVITE's (method CANCEL); Via is
    the INVITE's top Via only, so the CANCEL carries the INVITE's branch; Route headers are
    copied. No body. ``reason``: a Reason header value (RFC 3326), e.g. ``ANSWERED_ELSEWHERE``.
    """
    if invite.method != "INVITE":
        raise LocalProtocolError(f"only INVITE can be cancelled, not {invite.method}")
    return SipRequest(
        method="CANCEL",
        uri=invite.uri,
        via=invite.via[:1],
        from_=invite.from_,
        to=invite.to,
        call_id=invite.call_id,
        cseq=CSeq(invite.cseq.number, "CANCEL"),
        max_forwards=70,
        headers=(*_route_headers(invite), *((("Reason", reason),) if reason else ())),
    )
