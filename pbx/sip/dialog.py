"""SIP dialogs for both legs of a B2BUA call, sans-IO (RFC 3261 sections 12, 13, 14 and 15).

- Dialog state (12.1): id (Call-ID, local tag, remote tag), local/remote URI, local/remote
  CSeq, remote target, route set, secure flag; early and confirmed dialogs (12.1: a 101-199
  with a To tag makes an early dialog, a 2xx a confirmed one).
- UAS dialog from an INVITE (12.1.1); UAC dialogs from the INVITE's responses (12.1.2), several
  early dialogs per INVITE when a proxy forks it, and the 2xx recomputing the route set
  (13.2.2.4).
- Requests within a dialog (12.2.1.1): Request-URI and Route for loose and strict routing, CSeq
  numbering, ACK for a 2xx (13.2.2.4), and no BYE on an early dialog by the callee (15).
- Requests received within a dialog (12.2.2): CSeq order (500 for an old one), target refresh
  from Contact; re-INVITE glare (14.1, 14.2: 491, or 500 with Retry-After); responses within a
  dialog (12.2.1.2: target refresh from a 2xx, a 481 or 408 ends the dialog).
- Responses that establish a dialog copy Record-Route (12.1.1) and carry Contact (12.1.1, 8.2.6).
- 2xx retransmission by the UAS core until the ACK (13.3.1.4): ``TwoXxRetransmitter``.
- Cross-leg helpers for the B2BUA: ``copy_request`` and ``relay_response`` (not RFC text: a
  B2BUA is two UAs, so everything hop-by-hop is rebuilt per leg and only the end-to-end parts
  cross).

Not here: PRACK/100rel (we never require it; ``copy_request`` strips the option tag), session
timers (RFC 4028), UPDATE glare (RFC 3311 5.2), SUBSCRIBE/REFER dialog usages.
Nothing here reads a clock or touches a socket: time is passed in as ``now``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Final, Protocol

from pbx.errors import LocalProtocolError, RemoteProtocolError
from pbx.immutable import immutable
from pbx.sip import entropy
from pbx.sip.build import build_response, new_branch, new_call_id, new_tag
from pbx.sip.message import (
    Address,
    CallId,
    CSeq,
    NameAddress,
    Params,
    SipRequest,
    SipResponse,
    SipUri,
    Tag,
    Uri,
    Via,
    canonical_header_name,
)
from pbx.sip.parse import parse_name_addr, split_header_values

Headers = tuple[tuple[str, str], ...]

# 12.2: methods whose request (and 2xx) carry a Contact that replaces the remote target. Of the
# methods we speak, INVITE (re-INVITE) and UPDATE (RFC 3311 5.1).
TARGET_REFRESH_METHODS: Final = frozenset({"INVITE", "UPDATE"})

# Headers that describe one hop or one leg, never copied from one leg to the other by
# ``copy_request`` (canonical lower-case long names; compact forms are expanded before lookup).
HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "max-forwards",
        "cseq",
        "call-id",
        "from",
        "to",
        "authorization",
        "proxy-authorization",
        "proxy-require",
        "content-length",
        # RFC 3262 is per leg, and we never do it: no reliability headers cross.
        "rseq",
        "rack",
    }
)

# Response headers ``relay_response`` carries from one leg's response to the other's by default.
RELAYED_RESPONSE_HEADERS: Final = frozenset(
    {
        "content-type",
        "content-disposition",
        "content-encoding",
        "content-language",
        "retry-after",
        "warning",
        "reason",
    }
)

_CONTENT_HEADERS: Final = frozenset(
    {"content-type", "content-disposition", "content-encoding", "content-language"}
)

# 19.1.1, table 1: parameters that may not appear in a Request-URI (the URI's "headers" part is
# dropped too).
_NOT_IN_REQUEST_URI: Final = frozenset({"method"})

# 8.1.1.5: a CSeq number "MUST be less than 2**31" when chosen, and fits in 32 bits.
_MAX_CSEQ: Final = 2**32 - 1


class DialogState(enum.Enum):
    """12.1: early (after a 101-199 with a To tag) or confirmed (after a 2xx); then ended."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogRole(enum.Enum):
    """Which side of the dialog-creating INVITE we were."""

    UAC = "uac"
    UAS = "uas"


@immutable
class DialogId:
    """12: Call-ID, local tag and remote tag. An RFC 2543 peer's missing tag is ``""`` (12.1.1)."""

    call_id: CallId
    local_tag: Tag
    remote_tag: Tag

    @classmethod
    def of_request(cls, request: SipRequest) -> DialogId | None:
        """The id of the dialog a received request belongs to; None without a To tag."""
        local = request.to.tag
        if local is None:
            return None
        return cls(request.call_id, local, request.from_.tag or Tag(""))

    @classmethod
    def of_response(cls, response: SipResponse) -> DialogId | None:
        """The id of the dialog a received response (to our request) belongs to."""
        local = response.from_.tag
        if local is None:
            return None
        return cls(response.call_id, local, response.to.tag or Tag(""))


class SipTimerValues(Protocol):
    """T1 and T2 in seconds; ``pbx.sip.transaction.SipTimers`` is one."""

    @property
    def t1(self) -> float: ...

    @property
    def t2(self) -> float: ...


# ---------------------------------------------------------------------------------------------
# Helpers


def record_route_set(headers: Headers) -> tuple[NameAddress, ...]:
    """Every Record-Route value of a message, in message order (RFC 3261 20.30)."""
    out: list[NameAddress] = []
    for name, value in headers:
        if canonical_header_name(name) == "record-route":
            out.extend(parse_name_addr(part) for part in split_header_values(value))
    return tuple(out)


def is_loose_route(route: NameAddress) -> bool:
    """Whether a route entry names a loose router (``lr``, RFC 3261 19.1.1); non-SIP: assume so."""
    uri = route.uri
    return uri.has_param("lr") if isinstance(uri, SipUri) else True


def next_hop_uri(request: SipRequest) -> Uri:
    """Where a request goes first (8.1.2): the first Route's URI, else the Request-URI.

    For requests with loose routes (a pre-loaded outbound proxy, or no routes); a strictly
    routed in-dialog request goes to its Request-URI: see ``Dialog.next_hop``.
    """
    for name, value in request.headers:
        if canonical_header_name(name) == "route":
            parts = split_header_values(value)
            if parts:
                return parse_name_addr(parts[0]).uri
    return request.uri


def via_template(via: Via) -> Via:
    """``via`` without the per-transaction parameters (branch, received, rport value)."""
    kept: list[tuple[str, str | None]] = []
    for key, value in via.params:
        lkey = key.lower()
        if lkey in ("branch", "received"):
            continue
        kept.append((key, None) if lkey == "rport" else (key, value))
    return replace(via, params=tuple(kept))


def _request_uri_from_route(uri: Uri) -> Uri:
    # 12.2.1.1: the strict router's URI goes into the Request-URI, "stripping any parameters
    # that are not allowed in a Request-URI".
    if not isinstance(uri, SipUri):
        return uri
    params: Params = tuple((k, v) for k, v in uri.params if k.lower() not in _NOT_IN_REQUEST_URI)
    return replace(uri, params=params, headers=None)


def _without_100rel(value: str) -> str:
    return ", ".join(t for t in split_header_values(value) if t.lower() != "100rel")


def end_to_end_headers(headers: Headers, drop: Iterable[str] = ()) -> Headers:
    """Headers of one leg's request fit to cross to the other leg.

    Drops ``HOP_BY_HOP_HEADERS`` and the names in ``drop``; removes the ``100rel`` option tag
    from Supported and Require (we never do RFC 3262), dropping the header if nothing is left.
    """
    dropped = HOP_BY_HOP_HEADERS | {canonical_header_name(n) for n in drop}
    out: list[tuple[str, str]] = []
    for name, value in headers:
        canon = canonical_header_name(name)
        if canon in dropped:
            continue
        if canon in ("supported", "require"):
            value = _without_100rel(value)
            if not value:
                continue
        out.append((name, value))
    return tuple(out)


def _content_headers(body: bytes, content_type: str | None) -> Headers:
    if content_type is None:
        return ()
    if not body:
        raise LocalProtocolError("Content-Type given without a body")
    return (("Content-Type", content_type),)


# ---------------------------------------------------------------------------------------------
# The dialog


class Dialog:
    """One dialog (RFC 3261 12), either side. Mutable: CSeq, target and state change.

    Construct with ``Dialog.from_invite_as_uas`` or ``Dialog.from_response_as_uac`` (or through
    ``OutgoingInvite``). Outgoing requests come from ``new_request``/``ack_for``, responses to
    received requests from ``respond``; received requests go through ``receive_request`` and
    responses to our in-dialog requests through ``receive_response``.
    """

    __slots__ = (
        "_initial_credentials",
        "_initial_invite_cseq",
        "_last_ack",
        "id",
        "incoming_invite_cseq",
        "local",
        "local_contact",
        "local_cseq",
        "local_via",
        "outgoing_invite_cseq",
        "remote",
        "remote_cseq",
        "remote_target",
        "role",
        "route_set",
        "secure",
        "state",
    )

    def __init__(
        self,
        *,
        id: DialogId,
        role: DialogRole,
        state: DialogState,
        local: NameAddress,
        remote: NameAddress,
        local_cseq: int,
        remote_cseq: int | None,
        remote_target: Uri,
        route_set: tuple[NameAddress, ...],
        secure: bool,
        local_contact: NameAddress,
        local_via: Via | None,
        initial_invite_cseq: int,
    ) -> None:
        self.id = id
        self.role = role
        self.state = state
        # Our From (UAC) or To (UAS) value with our tag, and the peer's with theirs: every
        # request we send within the dialog carries them as From and To (12.2.1.1).
        self.local = local
        self.remote = remote
        # The CSeq number of the last request we sent (not ACK/CANCEL); the next one is +1.
        self.local_cseq = local_cseq
        # 12.2.2: None while "empty" (a UAC dialog before the peer's first request).
        self.remote_cseq = remote_cseq
        self.remote_target = remote_target
        self.route_set = route_set
        self.secure = secure
        self.local_contact = local_contact
        # Sent-by of our requests on this leg; each request gets it with a fresh branch.
        # None: requests leave without Via and the adapter adds one.
        self.local_via = local_via
        # 14.1/14.2: the CSeq of an INVITE transaction in progress in each direction.
        self.outgoing_invite_cseq: int | None = None
        self.incoming_invite_cseq: int | None = None
        self._initial_invite_cseq = initial_invite_cseq
        self._initial_credentials: Headers = ()
        self._last_ack: SipRequest | None = None

    def __repr__(self) -> str:
        return f"<Dialog {self.role.value} {self.state.value} {self.id}>"

    # -- creation ------------------------------------------------------------------------

    @classmethod
    def from_invite_as_uas(
        cls,
        invite: SipRequest,
        local_tag: str,
        local_contact: NameAddress,
        *,
        local_via: Via | None = None,
        secure: bool = False,
        first_local_cseq: int = 1,
    ) -> Dialog:
        """The UAS side's (early) dialog for a dialog-creating INVITE (RFC 3261 12.1.1).

        Call ``respond`` for every response to the INVITE: the first 101-299 carries
        ``local_tag``; a 2xx confirms the dialog, a 300-699 ends it. ``secure`` is whether
        the INVITE came over TLS; it counts only with a sips Request-URI (12.1.1).
        ``first_local_cseq`` numbers our first request (12.2.1.1 leaves the choice to us).
        """
        if invite.method != "INVITE":
            raise LocalProtocolError(f"a dialog is created by INVITE, not {invite.method}")
        if invite.to.tag is not None:
            raise LocalProtocolError("INVITE with a To tag is a re-INVITE: find its dialog")
        if not invite.contact:
            raise RemoteProtocolError("INVITE without Contact (RFC 3261 8.1.1.8)", 400)
        if not 0 < first_local_cseq < 2**31:
            raise LocalProtocolError(f"first CSeq {first_local_cseq} not in 1..2**31-1")
        tag = Tag(local_tag)
        dialog = cls(
            id=DialogId(invite.call_id, tag, invite.from_.tag or Tag("")),
            role=DialogRole.UAS,
            state=DialogState.EARLY,
            local=invite.to.with_tag(tag),
            remote=invite.from_,
            local_cseq=first_local_cseq - 1,
            remote_cseq=invite.cseq.number,
            remote_target=invite.contact[0].uri,
            # 12.1.1: "the route set MUST be set to the list of URIs in the Record-Route
            # header field from the request, taken in order".
            route_set=record_route_set(invite.headers),
            secure=secure and _is_sips(invite.uri),
            local_contact=local_contact,
            local_via=local_via,
            initial_invite_cseq=invite.cseq.number,
        )
        dialog.incoming_invite_cseq = invite.cseq.number
        return dialog

    @classmethod
    def from_response_as_uac(
        cls,
        invite: SipRequest,
        response: SipResponse,
        *,
        local_via: Via | None = None,
        secure: bool = False,
    ) -> Dialog:
        """The UAC side's dialog made by a 101-199 with a To tag (early) or a 2xx (confirmed).

        12.1.2: the route set is the response's Record-Route in reverse order, the remote
        target its Contact. ``local_via`` defaults to the INVITE's top Via without branch.
        """
        if invite.method != "INVITE" or response.cseq.method != "INVITE":
            raise LocalProtocolError("a UAC dialog is created by a response to INVITE")
        if response.cseq.number != invite.cseq.number or response.call_id != invite.call_id:
            raise LocalProtocolError("the response does not answer this INVITE")
        if not 101 <= response.status <= 299:
            raise LocalProtocolError(f"a {response.status} does not create a dialog")
        local_tag = invite.from_.tag
        if local_tag is None:
            raise LocalProtocolError("our INVITE has no From tag")
        remote_tag = response.to.tag
        if remote_tag is None:
            if response.status < 200:
                raise LocalProtocolError("a provisional response without To tag makes no dialog")
            # A 2xx without a To tag comes from an RFC 2543 peer: its tag is null (12.1.2).
            remote_tag = Tag("")
        dialog = cls(
            id=DialogId(invite.call_id, local_tag, remote_tag),
            role=DialogRole.UAC,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            local=invite.from_,
            remote=response.to,
            local_cseq=invite.cseq.number,
            remote_cseq=None,
            # A provisional response without Contact still makes an early dialog; its remote
            # target stays the Request-URI until a response names one.
            remote_target=response.contact[0].uri if response.contact else invite.uri,
            route_set=tuple(reversed(record_route_set(response.headers))),
            secure=secure and _is_sips(invite.uri),
            local_contact=invite.contact[0] if invite.contact else NameAddress(invite.from_.uri),
            local_via=local_via
            if local_via is not None
            else (via_template(invite.via[0]) if invite.via else None),
            initial_invite_cseq=invite.cseq.number,
        )
        if response.status < 200:
            dialog.outgoing_invite_cseq = invite.cseq.number
        # 22.1 via 13.2.2.4: "The ACK MUST contain the same credentials as the INVITE."
        dialog._initial_credentials = tuple(
            (k, v)
            for k, v in invite.headers
            if canonical_header_name(k) in ("authorization", "proxy-authorization")
        )
        return dialog

    # -- queries -------------------------------------------------------------------------

    @property
    def call_id(self) -> CallId:
        return self.id.call_id

    @property
    def is_early(self) -> bool:
        return self.state is DialogState.EARLY

    @property
    def is_confirmed(self) -> bool:
        return self.state is DialogState.CONFIRMED

    @property
    def is_terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    @property
    def invite_in_progress(self) -> bool:
        """Whether an INVITE transaction runs in either direction (14.1: no new one then)."""
        return self.outgoing_invite_cseq is not None or self.incoming_invite_cseq is not None

    @property
    def next_hop(self) -> Uri:
        """Where this dialog's requests go first (8.1.2): the first route, else the target.

        Use this rather than ``next_hop_uri(request)`` for in-dialog requests: with a strict
        first router its URI is the Request-URI and the first Route is the one after it.
        """
        if not self.route_set:
            return self.remote_target
        first = self.route_set[0]
        return first.uri if is_loose_route(first) else _request_uri_from_route(first.uri)

    def terminate(self) -> None:
        """Mark the dialog ended (the engine decided: BYE sent or received, timeout, ...)."""
        self.state = DialogState.TERMINATED

    # -- sending requests (12.2.1.1) -------------------------------------------------------

    def _request_uri_and_routes(self) -> tuple[Uri, Headers]:
        if not self.route_set:
            return self.remote_target, ()
        first = self.route_set[0]
        if is_loose_route(first):
            return self.remote_target, tuple(("Route", str(r)) for r in self.route_set)
        # 12.2.1.1, strict routing: "the UAC MUST place the first URI from the route set into
        # the Request-URI ... The UAC MUST add a Route header field containing the remainder of
        # the route set values in order, including all parameters. The UAC MUST then place the
        # remote target URI into the Route header field as the last value."
        rest = (*self.route_set[1:], NameAddress(self.remote_target))
        return _request_uri_from_route(first.uri), tuple(("Route", str(r)) for r in rest)

    def _via(self, branch: str | None) -> tuple[Via, ...]:
        if self.local_via is None:
            return ()
        return (self.local_via.with_branch(branch or new_branch()),)

    def new_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        branch: str | None = None,
    ) -> SipRequest:
        """The next request within this dialog (12.2.1.1): BYE, re-INVITE, UPDATE, INFO, ...

        Takes the next local CSeq. A re-INVITE is refused while an INVITE transaction runs in
        either direction (14.1: check ``invite_in_progress`` first and answer 491 upstream);
        a BYE ends the dialog, and the callee may not send one on an early dialog (15).
        """
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"{method} is built by ack_for / build_cancel")
        if self.state is DialogState.TERMINATED and method != "BYE":
            raise LocalProtocolError(f"{method} on a terminated dialog")
        if method == "INVITE" and self.invite_in_progress:
            raise LocalProtocolError("re-INVITE while an INVITE transaction is in progress")
        if method == "BYE" and self.role is DialogRole.UAS and self.is_early:
            # 15: "The callee's UA MUST NOT send a BYE on an early dialog."
            raise LocalProtocolError("the callee cannot BYE an early dialog: answer the INVITE")
        if self.local_cseq >= _MAX_CSEQ:
            raise LocalProtocolError("local CSeq exhausted")
        self.local_cseq += 1
        uri, routes = self._request_uri_and_routes()
        request = SipRequest(
            method=method,
            uri=uri,
            via=self._via(branch),
            from_=self.local,
            to=self.remote,
            call_id=self.id.call_id,
            cseq=CSeq(self.local_cseq, method),
            max_forwards=70,
            contact=(self.local_contact,) if method in TARGET_REFRESH_METHODS else (),
            headers=(*routes, *_content_headers(body, content_type), *headers),
            body=body,
        )
        if method == "INVITE":
            self.outgoing_invite_cseq = self.local_cseq
        elif method == "BYE":
            self.state = DialogState.TERMINATED
        return request

    def ack_for(
        self,
        response: SipResponse,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> SipRequest:
        """The ACK for a 2xx to an INVITE (initial or re-INVITE) of ours (13.2.2.4).

        Built like any in-dialog request (route set, remote target, new branch) but with the
        INVITE's CSeq number and method ACK; the initial INVITE's credentials are repeated.
        A retransmitted 2xx gets the very same ACK back (13.2.2.4: "... retransmit the ACK").
        """
        if response.cseq.method != "INVITE" or not 200 <= response.status <= 299:
            raise LocalProtocolError(f"ack_for takes a 2xx to INVITE, not {response.status}")
        number = response.cseq.number
        if self._last_ack is not None and self._last_ack.cseq.number == number:
            return self._last_ack
        uri, routes = self._request_uri_and_routes()
        credentials = self._initial_credentials if number == self._initial_invite_cseq else ()
        ack = SipRequest(
            method="ACK",
            uri=uri,
            via=self._via(None),
            from_=self.local,
            to=self.remote,
            call_id=self.id.call_id,
            cseq=CSeq(number, "ACK"),
            max_forwards=70,
            headers=(*routes, *credentials, *_content_headers(body, content_type), *headers),
            body=body,
        )
        self._last_ack = ack
        return ack

    def receive_response(self, response: SipResponse) -> None:
        """A response to a request we sent in this dialog (12.2.1.2, 13.2.2.4)."""
        status, cseq = response.status, response.cseq
        if cseq.method == "INVITE" and cseq.number == self.outgoing_invite_cseq and status >= 200:
            self.outgoing_invite_cseq = None
        initial = (
            self.role is DialogRole.UAC
            and cseq.method == "INVITE"
            and cseq.number == self._initial_invite_cseq
        )
        if initial and self.state is DialogState.EARLY:
            if status < 200:
                if response.contact:
                    self.remote_target = response.contact[0].uri
            elif status < 300:
                # 13.2.2.4: the dialog "MUST be transitioned to the confirmed state, and the
                # route set for the dialog MUST be recomputed based on the 2xx response".
                self.state = DialogState.CONFIRMED
                self.route_set = tuple(reversed(record_route_set(response.headers)))
                if response.contact:
                    self.remote_target = response.contact[0].uri
            else:
                self.state = DialogState.TERMINATED
            return
        if initial:
            return  # a retransmitted 2xx: the dialog is already confirmed
        if status in (408, 481):
            # 12.2.1.2: "If the response for a request within a dialog is a 481 or a 408, the
            # UAC SHOULD terminate the dialog."
            self.state = DialogState.TERMINATED
        elif 200 <= status <= 299 and cseq.method in TARGET_REFRESH_METHODS and response.contact:
            # 12.2.1.2: a 2xx to a target refresh request replaces the remote target.
            self.remote_target = response.contact[0].uri

    # -- receiving requests (12.2.2) -------------------------------------------------------

    def receive_request(self, request: SipRequest) -> SipResponse | None:
        """Check and apply a request received in this dialog.

        None: accepted (remote CSeq, target and state updated). Otherwise the response to send
        instead of processing it: 481 on an ended dialog (except a BYE crossing ours), 500 when
        out of order (12.2.2), 491 when our own INVITE is pending (14.2), 500 with Retry-After
        when the peer's previous INVITE is unanswered (14.2). ACK and CANCEL carry their
        INVITE's CSeq and are not ordered here.
        """
        if DialogId.of_request(request) != self.id:
            raise LocalProtocolError("request does not belong to this dialog")
        method, number = request.method, request.cseq.number
        if method in ("ACK", "CANCEL"):
            return None
        if self.state is DialogState.TERMINATED and method != "BYE":
            return self.respond(request, 481)
        if self.remote_cseq is not None and number < self.remote_cseq:
            # 12.2.2: "the request is out of order and MUST be rejected with a 500".
            return self.respond(request, 500, "Server Internal Error - CSeq Out of Order")
        self.remote_cseq = number
        if method == "INVITE":
            if self.outgoing_invite_cseq is not None:
                # 14.2: "MUST return a 491 (Request Pending) response to the received INVITE".
                return self.respond(request, 491)
            if self.incoming_invite_cseq is not None:
                # 14.2: "MUST return a 500 ... and MUST include a Retry-After header field with
                # a randomly chosen value of between 0 and 10 seconds".
                retry = str(entropy.token_bytes(1)[0] % 11)
                return self.respond(request, 500, headers=(("Retry-After", retry),))
            self.incoming_invite_cseq = number
        if method in TARGET_REFRESH_METHODS and request.contact:
            # 12.2.2: "it MUST replace the dialog's remote target URI with the URI from the
            # Contact header field in that request, if present."
            self.remote_target = request.contact[0].uri
        if method == "BYE":
            self.state = DialogState.TERMINATED
        return None

    def respond(
        self,
        request: SipRequest,
        status: int,
        reason: str | None = None,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> SipResponse:
        """A response to a request received in this dialog (or to the INVITE that made it).

        Adds our To tag (except on a 100), Contact on a 101-299 to INVITE/UPDATE, and, on a
        101-299 to the dialog-creating INVITE, the request's Record-Route values in order
        (12.1.1). A final response to a pending INVITE ends that transaction for 14.2; a 2xx
        to the dialog-creating INVITE confirms the dialog and a 300-699 ends it.
        """
        method, number = request.method, request.cseq.number
        initial = (
            self.role is DialogRole.UAS
            and method == "INVITE"
            and number == self._initial_invite_cseq
            and request.to.tag is None
        )
        establishing = 101 <= status <= 299
        extra: list[tuple[str, str]] = []
        if initial and establishing:
            # 12.1.1: "the UAS MUST copy all Record-Route header field values from the request
            # into the response ... and MUST maintain the order of those values."
            extra.extend(
                (k, v) for k, v in request.headers if canonical_header_name(k) == "record-route"
            )
        extra.extend(_content_headers(body, content_type))
        extra.extend(headers)
        response = build_response(
            request,
            status,
            reason,
            to_tag=self.id.local_tag,
            contact=(self.local_contact,)
            if establishing and method in TARGET_REFRESH_METHODS
            else (),
            headers=extra,
            body=body,
        )
        if method == "INVITE" and status >= 200 and number == self.incoming_invite_cseq:
            self.incoming_invite_cseq = None
        if initial and self.state is DialogState.EARLY and status >= 200:
            self.state = DialogState.CONFIRMED if status < 300 else DialogState.TERMINATED
        return response


def _is_sips(uri: Uri) -> bool:
    return isinstance(uri, SipUri) and uri.scheme == "sips"


# ---------------------------------------------------------------------------------------------
# The UAC side of the dialog-creating INVITE


class OutgoingInvite:
    """One INVITE we send and the dialogs its responses create (RFC 3261 12.1.2, 13.2.2.4).

    A forking proxy may answer with 1xx from several UASs, each with its own To tag: each is
    an early dialog. Each 2xx confirms (or creates) its dialog; every confirmed dialog must be
    ACKed (``Dialog.ack_for``), and all but the one the engine keeps ended with BYE. A
    300-699 ends the early dialogs. A 2xx for a dialog already ended here (``terminate_early``)
    returns that dialog unchanged: it still needs its ACK, then a BYE.
    """

    __slots__ = ("_order", "dialogs", "final_status", "local_via", "request", "secure")

    def __init__(
        self, request: SipRequest, *, local_via: Via | None = None, secure: bool = False
    ) -> None:
        if request.method != "INVITE":
            raise LocalProtocolError(f"OutgoingInvite for {request.method}")
        if request.from_.tag is None:
            raise LocalProtocolError("an INVITE we send must have a From tag (8.1.1.3)")
        self.request = request
        self.local_via = local_via
        self.secure = secure
        self.dialogs: dict[Tag, Dialog] = {}
        self.final_status: int | None = None
        self._order: list[Tag] = []

    @classmethod
    def build(
        cls,
        *,
        request_uri: Uri,
        from_: NameAddress,
        to: NameAddress,
        contact: NameAddress,
        via: Via | None,
        call_id: CallId | None = None,
        cseq: int = 1,
        route: Sequence[NameAddress] = (),
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        max_forwards: int = 70,
        branch: str | None = None,
        secure: bool = False,
    ) -> OutgoingInvite:
        """A new dialog-creating INVITE (8.1.1).

        ``from_`` gets a fresh tag unless it has one; ``to`` must have none. ``via`` is our
        sent-by on this leg (its branch is replaced by ``branch`` or a fresh one; None: the
        adapter adds Via). ``route`` is a pre-loaded route set, e.g. the trunk's outbound proxy
        (``;lr`` for a loose router). The Call-ID defaults to a fresh one at the Contact host.
        """
        if to.tag is not None:
            raise LocalProtocolError("the To of a dialog-creating INVITE has no tag")
        if not 0 <= cseq < 2**31:
            raise LocalProtocolError(f"CSeq {cseq} not below 2**31 (8.1.1.5)")
        if from_.tag is None:
            from_ = from_.with_tag(new_tag())
        if call_id is None:
            host = contact.uri.host if isinstance(contact.uri, SipUri) else "pbx.invalid"
            call_id = new_call_id(host.strip("[]"))
        request = SipRequest(
            method="INVITE",
            uri=request_uri,
            via=(via.with_branch(branch or new_branch()),) if via is not None else (),
            from_=from_,
            to=to,
            call_id=call_id,
            cseq=CSeq(cseq, "INVITE"),
            max_forwards=max_forwards,
            contact=(contact,),
            headers=(
                *(("Route", str(r)) for r in route),
                *_content_headers(body, content_type),
                *headers,
            ),
            body=body,
        )
        return cls(
            request,
            local_via=via_template(via) if via is not None else None,
            secure=secure,
        )

    def with_credentials(
        self, credentials: Iterable[tuple[str, str]], *, branch: str | None = None
    ) -> OutgoingInvite:
        """The INVITE again after a 401/407 (22.2): same Call-ID and From tag, CSeq + 1, a new
        branch, and ``credentials`` (Authorization/Proxy-Authorization) replacing old ones."""
        return self.retried(
            credentials, replacing=("authorization", "proxy-authorization"), branch=branch
        )

    def retried(
        self,
        headers: Iterable[tuple[str, str]],
        *,
        replacing: Iterable[str],
        branch: str | None = None,
    ) -> OutgoingInvite:
        """The INVITE again after a final response that asks for a change (a 401/407, 22.2; a
        422, RFC 4028 section 7.4): same Call-ID and From tag, CSeq + 1, a new branch, and
        ``headers`` instead of those named in ``replacing`` (canonical lower-case names)."""
        if self.dialogs and any(not d.is_terminated for d in self.dialogs.values()):
            raise LocalProtocolError("the INVITE still has live dialogs")
        old = self.request
        replaced = set(replacing)
        kept = tuple((k, v) for k, v in old.headers if canonical_header_name(k) not in replaced)
        via = old.via
        if via:
            via = (via[0].with_branch(branch or new_branch()), *via[1:])
        request = replace(
            old,
            via=via,
            cseq=CSeq(old.cseq.number + 1, "INVITE"),
            headers=(*kept, *headers),
        )
        return OutgoingInvite(request, local_via=self.local_via, secure=self.secure)

    def receive_response(self, response: SipResponse) -> Dialog | None:
        """Apply a response to this INVITE; the dialog it belongs to, if it makes or has one.

        100 and provisional responses without To tag belong to no dialog; a 300-699 ends every
        early dialog and returns None.
        """
        if (
            response.cseq.method != "INVITE"
            or response.cseq.number != self.request.cseq.number
            or response.call_id != self.request.call_id
        ):
            raise LocalProtocolError("the response does not answer this INVITE")
        status = response.status
        if status >= 300:
            if self.final_status is None:
                self.final_status = status
            for early in self.early_dialogs:
                early.receive_response(response)
            return None
        tag = response.to.tag
        if tag is None:
            if status < 200:
                return None
            tag = Tag("")
        if status >= 200 and self.final_status is None:
            self.final_status = status
        dialog = self.dialogs.get(tag)
        if dialog is None:
            if status == 100 or (status < 200 and self.final_status is not None):
                # A late provisional response after the final one opens no dialog.
                return None
            dialog = Dialog.from_response_as_uac(
                self.request, response, local_via=self.local_via, secure=self.secure
            )
            self.dialogs[tag] = dialog
            self._order.append(tag)
        else:
            dialog.receive_response(response)
        return dialog

    @property
    def early_dialogs(self) -> list[Dialog]:
        """Early dialogs, in the order their first response came."""
        return [self.dialogs[t] for t in self._order if self.dialogs[t].is_early]

    @property
    def confirmed_dialogs(self) -> list[Dialog]:
        """Confirmed dialogs (one per 2xx'ing fork), in order of creation."""
        return [self.dialogs[t] for t in self._order if self.dialogs[t].is_confirmed]

    def terminate_early(self) -> list[Dialog]:
        """End the early dialogs still open (e.g. after the winning 2xx's transaction is
        over); returns them."""
        ended = self.early_dialogs
        for dialog in ended:
            dialog.terminate()
        return ended


# ---------------------------------------------------------------------------------------------
# Finding the dialog of a message


# ---------------------------------------------------------------------------------------------
# 2xx retransmission by the UAS core (13.3.1.4)


class RetransmitState(enum.Enum):
    RETRANSMITTING = "retransmitting"
    ACKNOWLEDGED = "acknowledged"
    TIMED_OUT = "timed_out"


@immutable
class TwoXxAcknowledged:
    """The ACK for our 2xx arrived; retransmissions stopped."""

    call_id: CallId
    cseq: int
    ack: SipRequest


@immutable
class AckTimedOut:
    """No ACK for our 2xx within 64*T1 (13.3.1.4): the session "SHOULD be terminated" with a
    BYE."""

    call_id: CallId
    cseq: int


RetransmitEvent = TwoXxAcknowledged | AckTimedOut


class TwoXxRetransmitter:
    """Resends a 2xx to INVITE until its ACK arrives (RFC 3261 13.3.1.4).

    "the 2xx response is passed to the transport with an interval that starts at T1 seconds
    and doubles for each retransmission until it reaches T2 seconds ... Retransmissions end
    when an ACK request for the response is received ... If the server retransmits the 2xx
    response for 64*T1 seconds without receiving an ACK, the dialog is confirmed, but the
    session SHOULD be terminated."

    The first send is the caller's (through the INVITE server transaction); this object only
    yields the retransmissions, each to ``destination``. It retransmits on every transport:
    13.3.1.4 asks for it end to end, since a reliable first hop says nothing of the rest.
    """

    __slots__ = (
        "_deadline",
        "_events",
        "_interval",
        "_next",
        "_outbox",
        "_t2",
        "destination",
        "response",
        "state",
    )

    def __init__(
        self,
        response: SipResponse,
        destination: Address,
        now: float,
        timers: SipTimerValues,
    ) -> None:
        if response.cseq.method != "INVITE" or not 200 <= response.status <= 299:
            raise LocalProtocolError("only a 2xx to INVITE is retransmitted by the UAS core")
        self.response = response
        self.destination = destination
        self.state = RetransmitState.RETRANSMITTING
        self._interval = timers.t1
        self._t2 = timers.t2
        self._next = now + timers.t1
        self._deadline = now + 64 * timers.t1
        self._events: list[RetransmitEvent] = []
        self._outbox: list[tuple[SipResponse, Address]] = []

    def matches_ack(self, ack: SipRequest) -> bool:
        """Whether ``ack`` acknowledges our 2xx (same dialog, same CSeq number)."""
        resp = self.response
        return (
            ack.method == "ACK"
            and ack.call_id == resp.call_id
            and ack.cseq.number == resp.cseq.number
            and ack.from_.tag == resp.from_.tag
            and ack.to.tag == resp.to.tag
        )

    def receive_ack(self, ack: SipRequest, now: float) -> bool:
        """An ACK arrived; True if it is ours (a repeated one is absorbed silently)."""
        if not self.matches_ack(ack):
            return False
        if self.state is RetransmitState.RETRANSMITTING:
            self.state = RetransmitState.ACKNOWLEDGED
            self._outbox.clear()
            self._events.append(TwoXxAcknowledged(ack.call_id, ack.cseq.number, ack))
        return True

    def get_timer(self) -> float | None:
        """When ``handle_timer`` is next due; None once acknowledged or timed out."""
        if self.state is not RetransmitState.RETRANSMITTING:
            return None
        return min(self._next, self._deadline)

    def handle_timer(self, now: float) -> None:
        """Resend if due, or give up after 64*T1."""
        if self.state is not RetransmitState.RETRANSMITTING:
            return
        if now >= self._deadline:
            self.state = RetransmitState.TIMED_OUT
            self._events.append(AckTimedOut(self.response.call_id, self.response.cseq.number))
            return
        if now < self._next:
            return
        self._outbox.append((self.response, self.destination))
        # Stay on the schedule (T1, 2*T1, 4*T1, ... capped at T2) even if woken late; a
        # late wake-up sends once, not once per missed slot.
        while self._next <= now:
            self._interval = min(self._interval * 2, self._t2)
            self._next += self._interval

    def next_event(self) -> RetransmitEvent | None:
        return self._events.pop(0) if self._events else None

    def messages_to_send(self) -> list[tuple[SipResponse, Address]]:
        out, self._outbox = self._outbox, []
        return out


# ---------------------------------------------------------------------------------------------
# B2BUA: crossing from one leg to the other


def copy_request(
    request: SipRequest,
    dialog: Dialog,
    *,
    body: bytes | None = None,
    drop: Iterable[str] = (),
) -> SipRequest:
    """``request`` from one leg as the same-method request on the other leg's ``dialog``.

    Body (or the replacement ``body``, e.g. rewritten SDP) and its Content-* headers cross, as
    do the other end-to-end headers (``end_to_end_headers``); Via, Route, Contact, CSeq, tags,
    credentials and the like are the other leg's own. Use ``Dialog.ack_for`` for ACK.
    """
    if request.method in ("ACK", "CANCEL"):
        raise LocalProtocolError(f"{request.method} is not copied across legs")
    new_body = request.body if body is None else body
    crossing = end_to_end_headers(request.headers, drop)
    if not new_body:
        crossing = tuple(
            (k, v) for k, v in crossing if canonical_header_name(k) not in _CONTENT_HEADERS
        )
    return dialog.new_request(request.method, body=new_body, headers=crossing)


def relay_response(
    response: SipResponse,
    request: SipRequest,
    dialog: Dialog,
    *,
    body: bytes | None = None,
    copy: Iterable[str] = (),
) -> SipResponse:
    """One leg's ``response`` as the response to ``request`` pending on the other leg's
    ``dialog``: same status and reason, the body (or ``body``) with its Content-* headers,
    ``RELAYED_RESPONSE_HEADERS`` plus the names in ``copy``; To tag, Contact and Record-Route
    are ``dialog``'s (``Dialog.respond``)."""
    wanted = RELAYED_RESPONSE_HEADERS | {canonical_header_name(n) for n in copy}
    new_body = response.body if body is None else body
    headers = tuple(
        (k, v)
        for k, v in response.headers
        if (canon := canonical_header_name(k)) in wanted
        and (new_body or canon not in _CONTENT_HEADERS)
    )
    return dialog.respond(request, response.status, response.reason, body=new_body, headers=headers)
