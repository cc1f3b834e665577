"""SIP transactions, sans-IO (RFC 3261 section 17, updated by RFC 6026).

- INVITE client transaction: RFC 3261 17.1.1 (figure 5), with RFC 6026 section 8.4's
  "Accepted" state and timer M: a 2xx moves the transaction to Accepted, where further 2xx
  (retransmissions, other forks) are passed up to the TU, which ACKs them itself (13.2.2.4).
- Non-INVITE client transaction: RFC 3261 17.1.2 (figure 6).
- INVITE server transaction: RFC 3261 17.2.1 (figure 7), with RFC 6026 section 7.1's
  "Accepted" state and timer L: after a 2xx the transaction absorbs INVITE retransmissions,
  sends the 2xx retransmissions the TU passes down, and passes ACKs up to the TU.
- Non-INVITE server transaction: RFC 3261 17.2.2 (figure 8).
- Matching: RFC 3261 17.1.3 (client) and 17.2.3 (server, with the RFC 2543 fallback), 9.2
  (CANCEL to INVITE).
- Transport errors: RFC 3261 17.1.4 and 17.2.4.
- Timer values: RFC 3261 table 4 (appendix A), RFC 6026 section 8.11 (timers L and M).

Nothing here reads a clock or touches a socket: every verb takes ``now`` (seconds, any
monotonic origin), and the adapter sends what ``messages_to_send`` returns and calls
``handle_timer`` when ``get_timer`` says. Reliable transports (TCP, TLS, SCTP, WS) pass
``reliable=True``: no retransmission timers (A, E, G) and zero-length wait timers (D, I, J, K).

Choices made here:
- The INVITE server transaction sends 100 Trying at once, not after 200 ms (17.2.1 makes the
  100 optional only when the TU answers within 200 ms; answering at once is always allowed and
  quenches the client's retransmissions soonest).
- The 100 is withdrawn when the TU answers before it has left: a response (the 401 challenge,
  a 4xx) given in the same turn of the adapter's loop drops the still-queued 100 (17.2.1 needs it
  only when the TU will not answer within 200 ms). pyVoIP 1.6 takes a 100 to its INVITE for
  progress and never reads the 401 that follows it, so it could not place a call at all.
- The server key includes the CSeq number besides the branch. 17.2.3 matches on branch, sent-by
  and method only, but pyVoIP 1.6 reuses its first INVITE's branch in the INVITE it resends
  with credentials after a 401 (with a higher CSeq): by branch alone that new INVITE would be
  taken for a retransmission and answered with the 401 again. Retransmissions, the ACK for a
  non-2xx and the CANCEL all carry the INVITE's CSeq number, so nothing legitimate changes.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Mapping
from typing import ClassVar, Final, NamedTuple

from pbx.errors import LocalProtocolError, RemoteProtocolError
from pbx.immutable import immutable
from pbx.sip.build import build_ack_for_non2xx, build_response
from pbx.sip.message import (
    MAGIC_COOKIE,
    Address,
    SipMessage,
    SipRequest,
    SipResponse,
    Via,
)
from pbx.sip.parse import parse_message

# Transports on which the transaction layer does not retransmit (RFC 3261 17.1.1.2, 18).
RELIABLE_TRANSPORTS: Final = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})


def is_reliable_transport(transport: str) -> bool:
    """Whether a Via transport token names a reliable (stream) transport."""
    return transport.upper() in RELIABLE_TRANSPORTS


# ---------------------------------------------------------------------------------------------
# Timers


class TransactionTimer(enum.Enum):
    """The transaction timers of RFC 3261 table 4 and RFC 6026 section 8.11."""

    # The enums of the hot paths hash by identity (members are singletons and compare by
    # identity): Enum's own __hash__ is a Python call, made ~85 times a call (issue 21).
    __hash__ = object.__hash__

    A = "A"  # INVITE request retransmit (unreliable only)
    B = "B"  # INVITE transaction timeout
    D = "D"  # wait for response retransmissions after a non-2xx (client)
    E = "E"  # non-INVITE request retransmit (unreliable only)
    F = "F"  # non-INVITE transaction timeout
    G = "G"  # INVITE final response retransmit (unreliable only)
    H = "H"  # wait for ACK
    I = "I"  # wait for ACK retransmissions  # noqa: E741
    J = "J"  # wait for non-INVITE request retransmissions
    K = "K"  # wait for non-INVITE response retransmissions
    L = "L"  # RFC 6026: wait in Accepted (server)
    M = "M"  # RFC 6026: wait for 2xx retransmissions in Accepted (client)


@immutable
class SipTimers:
    """T1, T2, T4 (RFC 3261 17.1.1.1, table 4) and the floor for timer D, in seconds."""

    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum time a message remains in the network
    d: float = 32.0  # 17.1.1.2: timer D is "at least 32 seconds" on unreliable transports

    def __post_init__(self) -> None:
        if not (0 < self.t1 <= self.t2) or self.t4 <= 0 or self.d < 0:
            raise LocalProtocolError(f"bad SIP timers {self}")

    def duration(self, timer: TransactionTimer, reliable: bool) -> float | None:
        """Initial value of ``timer`` on this kind of transport; None: the timer is not used."""
        t1, t4 = self.t1, self.t4
        match timer:
            case TransactionTimer.A | TransactionTimer.E | TransactionTimer.G:
                return None if reliable else t1
            case (
                TransactionTimer.B
                | TransactionTimer.F
                | TransactionTimer.H
                | TransactionTimer.L
                | TransactionTimer.M
            ):
                return 64 * t1
            case TransactionTimer.D:
                return 0.0 if reliable else max(self.d, 64 * t1)
            case TransactionTimer.I | TransactionTimer.K:
                return 0.0 if reliable else t4
            case TransactionTimer.J:
                return 0.0 if reliable else 64 * t1


# ---------------------------------------------------------------------------------------------
# Keys (RFC 3261 17.1.3, 17.2.3)


# The keys are named tuples, not ``@immutable`` records: they are hashed and compared at every
# table lookup (about 15 times a transaction), and a tuple's hash and equality run in C, where a
# dataclass's are Python functions (issue #21). Their lengths differ (2, 6 and 8), so no key of
# one kind ever equals a key of another.
class ClientKey(NamedTuple):
    """17.1.3: a response matches the client transaction whose request had this branch and
    CSeq method."""

    branch: str
    method: str


class BranchServerKey(NamedTuple):
    """17.2.3 for RFC 3261 clients (branch with the magic cookie), plus the CSeq number (see the
    module docstring). ACK is keyed as INVITE so it finds the INVITE's transaction."""

    branch: str
    host: str
    port: int
    method: str
    cseq: int
    source: Address | None = None  # where the request came from (see server_transaction_key)


class Rfc2543ServerKey(NamedTuple):
    """17.2.3's fallback for requests without the magic cookie: Request-URI, To tag, From tag,
    Call-ID, CSeq number and top Via. For INVITE and ACK the To tag is left out (``to_tag`` is
    None): the ACK carries the tag of our response, which the INVITE lacked; the table checks
    that tag against the response instead, as 17.2.3 says."""

    request_uri: str
    to_tag: str | None
    from_tag: str | None
    call_id: str
    cseq: int
    top_via: str
    method: str
    source: Address | None = None


ServerKey = BranchServerKey | Rfc2543ServerKey
TransactionKey = ClientKey | ServerKey


def _top_via(msg: SipMessage) -> Via:
    if not msg.via:
        raise RemoteProtocolError("no Via header", status_hint=400)
    return msg.via[0]


def _default_port(transport: str) -> int:
    return 5061 if transport in ("TLS", "WSS", "TLS-SCTP") else 5060


def server_transaction_key(req: SipRequest, source: Address | None = None) -> ServerKey:
    """The key of the server transaction ``req`` belongs to (RFC 3261 17.2.3).

    The table also keys on ``source``, the address the request came from. Responses go back to
    the source (symmetric response routing), so a request from another address is never a
    retransmission to be answered elsewhere: a NAT rebinding or a second client that reuses a
    branch (RFC 4475's messages all share a few) gets a transaction of its own, and nobody can
    steer another client's transaction by guessing its branch.
    """
    via = _top_via(req)
    method = "INVITE" if req.method == "ACK" else req.method
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        port = via.port if via.port is not None else _default_port(via.transport)
        return BranchServerKey(branch, via.host.lower(), port, method, req.cseq.number, source)
    to_tag = None if method == "INVITE" else req.to.tag
    return Rfc2543ServerKey(
        request_uri=str(req.uri),
        to_tag=to_tag,
        from_tag=req.from_.tag,
        call_id=req.call_id,
        cseq=req.cseq.number,
        top_via=str(via),
        method=method,
        source=source,
    )


def invite_key_for_cancel(cancel: SipRequest, source: Address | None = None) -> ServerKey:
    """The key of the INVITE server transaction a CANCEL targets (RFC 3261 9.2, 17.2.3)."""
    if cancel.method != "CANCEL":
        raise LocalProtocolError(f"{cancel.method} is not a CANCEL")
    key = server_transaction_key(cancel, source)
    if isinstance(key, BranchServerKey):
        return BranchServerKey(key.branch, key.host, key.port, "INVITE", key.cseq, source)
    return Rfc2543ServerKey(
        key.request_uri, None, key.from_tag, key.call_id, key.cseq, key.top_via, "INVITE", source
    )


def client_transaction_key(msg: SipMessage) -> ClientKey:
    """The client transaction a response belongs to, or that a request we send creates
    (RFC 3261 17.1.3: top Via branch and CSeq method)."""
    return ClientKey(_top_via(msg).branch or "", msg.cseq.method)


# ---------------------------------------------------------------------------------------------
# Events (what the TU learns)


@immutable
class RequestReceived:
    """A new request reached a new server transaction; the TU must answer it via ``respond``."""

    key: ServerKey
    request: SipRequest
    source: Address


@immutable
class AckReceived:
    """An ACK for a 2xx (RFC 6026 7.1: passed up from Accepted; key None when it matched no
    transaction, the normal case since it has its own branch). The dialog layer handles it."""

    key: ServerKey | None
    request: SipRequest
    source: Address


@immutable
class ResponseReceived:
    """A response for a client transaction, to pass to the TU (retransmissions are absorbed,
    except 2xx to INVITE, which the TU must see to ACK again)."""

    key: ClientKey
    response: SipResponse


@immutable
class UnmatchedResponseReceived:
    """A response no client transaction claims (17.1.3: pass it to the core); e.g. a 2xx
    retransmitted after timer M."""

    response: SipResponse
    source: Address


@immutable
class TransactionTimedOut:
    """Timer B or F (no final response), or H (no ACK for our non-2xx final), fired."""

    key: TransactionKey
    timer: TransactionTimer


@immutable
class TransportFailed:
    """The transport could not deliver a message of this transaction (17.1.4, 17.2.4)."""

    key: TransactionKey


@immutable
class TransactionTerminated:
    """The transaction ended and was forgotten; always the last event of a transaction."""

    key: TransactionKey


TxEvent = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | UnmatchedResponseReceived
    | TransactionTimedOut
    | TransportFailed
    | TransactionTerminated
)


# ---------------------------------------------------------------------------------------------
# State machines


class TransactionState(enum.Enum):
    """States of the four machines (each uses a subset)."""

    __hash__ = object.__hash__  # see TransactionTimer

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    """What can happen to a transaction: a message from the network or the TU, a timer, an error."""

    __hash__ = object.__hash__  # see TransactionTimer

    RESPONSE_1XX = enum.auto()  # from the network (client)
    RESPONSE_2XX = enum.auto()
    RESPONSE_3XX_6XX = enum.auto()
    REQUEST = enum.auto()  # retransmission of the transaction's request (server)
    ACK = enum.auto()  # ACK matching an INVITE server transaction
    TU_1XX = enum.auto()  # response passed down by the TU (server)
    TU_2XX = enum.auto()
    TU_3XX_6XX = enum.auto()
    TIMER_A = enum.auto()
    TIMER_B = enum.auto()
    TIMER_D = enum.auto()
    TIMER_E = enum.auto()
    TIMER_F = enum.auto()
    TIMER_G = enum.auto()
    TIMER_H = enum.auto()
    TIMER_I = enum.auto()
    TIMER_J = enum.auto()
    TIMER_K = enum.auto()
    TIMER_L = enum.auto()
    TIMER_M = enum.auto()
    TRANSPORT_ERROR = enum.auto()


_TIMER_INPUT: Final[Mapping[TransactionTimer, Input]] = {
    t: Input[f"TIMER_{t.value}"] for t in TransactionTimer
}
_TU_INPUTS: Final = frozenset({Input.TU_1XX, Input.TU_2XX, Input.TU_3XX_6XX})


class Action(enum.Enum):
    """What a transition does, in the order listed."""

    __hash__ = object.__hash__  # see TransactionTimer

    PASS_RESPONSE = enum.auto()  # ResponseReceived to the TU
    PASS_ACK = enum.auto()  # AckReceived to the TU
    SEND_ACK = enum.auto()  # build the ACK for this non-2xx (17.1.1.3) and send it
    RESEND_ACK = enum.auto()  # send the ACK built before again
    RETRANSMIT_REQUEST = enum.auto()  # send the request again and re-arm the timer that fired
    SEND_RESPONSE = enum.auto()  # send the TU's response; it becomes the last response
    RESEND_RESPONSE = enum.auto()  # send the last response again
    RETRANSMIT_RESPONSE = enum.auto()  # send the last response again and re-arm the timer
    REPORT_TIMEOUT = enum.auto()  # TransactionTimedOut
    REPORT_TRANSPORT_ERROR = enum.auto()  # TransportFailed


_St = TransactionState
_In = Input
_Do = Action
Transitions = Mapping[tuple[TransactionState, Input], tuple[TransactionState, tuple[Action, ...]]]

# RFC 3261 17.1.1.2, figure 5, with RFC 6026 section 8.4 (figure 5 redrawn: 2xx -> Accepted,
# timer M). Responses not listed (1xx or 2xx in Completed, 1xx in Accepted, ...) are absorbed.
INVITE_CLIENT_TRANSITIONS: Final[Transitions] = {
    (_St.CALLING, _In.TIMER_A): (_St.CALLING, (_Do.RETRANSMIT_REQUEST,)),
    (_St.CALLING, _In.TIMER_B): (_St.TERMINATED, (_Do.REPORT_TIMEOUT,)),
    (_St.CALLING, _In.RESPONSE_1XX): (_St.PROCEEDING, (_Do.PASS_RESPONSE,)),
    (_St.CALLING, _In.RESPONSE_2XX): (_St.ACCEPTED, (_Do.PASS_RESPONSE,)),
    (_St.CALLING, _In.RESPONSE_3XX_6XX): (_St.COMPLETED, (_Do.SEND_ACK, _Do.PASS_RESPONSE)),
    (_St.CALLING, _In.TRANSPORT_ERROR): (_St.TERMINATED, (_Do.REPORT_TRANSPORT_ERROR,)),
    (_St.PROCEEDING, _In.RESPONSE_1XX): (_St.PROCEEDING, (_Do.PASS_RESPONSE,)),
    (_St.PROCEEDING, _In.RESPONSE_2XX): (_St.ACCEPTED, (_Do.PASS_RESPONSE,)),
    (_St.PROCEEDING, _In.RESPONSE_3XX_6XX): (_St.COMPLETED, (_Do.SEND_ACK, _Do.PASS_RESPONSE)),
    (_St.COMPLETED, _In.RESPONSE_3XX_6XX): (_St.COMPLETED, (_Do.RESEND_ACK,)),
    (_St.COMPLETED, _In.TRANSPORT_ERROR): (_St.TERMINATED, (_Do.REPORT_TRANSPORT_ERROR,)),
    (_St.COMPLETED, _In.TIMER_D): (_St.TERMINATED, ()),
    (_St.ACCEPTED, _In.RESPONSE_2XX): (_St.ACCEPTED, (_Do.PASS_RESPONSE,)),
    (_St.ACCEPTED, _In.TIMER_M): (_St.TERMINATED, ()),
}

# RFC 3261 17.1.2.2, figure 6 (RFC 4320 changes only what proxies send; nothing here).
NON_INVITE_CLIENT_TRANSITIONS: Final[Transitions] = {
    (_St.TRYING, _In.TIMER_E): (_St.TRYING, (_Do.RETRANSMIT_REQUEST,)),
    (_St.TRYING, _In.TIMER_F): (_St.TERMINATED, (_Do.REPORT_TIMEOUT,)),
    (_St.TRYING, _In.TRANSPORT_ERROR): (_St.TERMINATED, (_Do.REPORT_TRANSPORT_ERROR,)),
    (_St.TRYING, _In.RESPONSE_1XX): (_St.PROCEEDING, (_Do.PASS_RESPONSE,)),
    (_St.TRYING, _In.RESPONSE_2XX): (_St.COMPLETED, (_Do.PASS_RESPONSE,)),
    (_St.TRYING, _In.RESPONSE_3XX_6XX): (_St.COMPLETED, (_Do.PASS_RESPONSE,)),
    (_St.PROCEEDING, _In.TIMER_E): (_St.PROCEEDING, (_Do.RETRANSMIT_REQUEST,)),
    (_St.PROCEEDING, _In.TIMER_F): (_St.TERMINATED, (_Do.REPORT_TIMEOUT,)),
    (_St.PROCEEDING, _In.TRANSPORT_ERROR): (_St.TERMINATED, (_Do.REPORT_TRANSPORT_ERROR,)),
    (_St.PROCEEDING, _In.RESPONSE_1XX): (_St.PROCEEDING, (_Do.PASS_RESPONSE,)),
    (_St.PROCEEDING, _In.RESPONSE_2XX): (_St.COMPLETED, (_Do.PASS_RESPONSE,)),
    (_St.PROCEEDING, _In.RESPONSE_3XX_6XX): (_St.COMPLETED, (_Do.PASS_RESPONSE,)),
    (_St.COMPLETED, _In.TIMER_K): (_St.TERMINATED, ()),
}

# RFC 3261 17.2.1, figure 7, with RFC 6026 section 7.1 (figure 7 redrawn: 2xx -> Accepted,
# timer L; INVITE retransmissions absorbed there, ACKs passed up). Requests not listed
# (INVITE or ACK in Confirmed) are absorbed; TU responses not listed are API misuse.
INVITE_SERVER_TRANSITIONS: Final[Transitions] = {
    (_St.PROCEEDING, _In.REQUEST): (_St.PROCEEDING, (_Do.RESEND_RESPONSE,)),
    (_St.PROCEEDING, _In.TU_1XX): (_St.PROCEEDING, (_Do.SEND_RESPONSE,)),
    (_St.PROCEEDING, _In.TU_2XX): (_St.ACCEPTED, (_Do.SEND_RESPONSE,)),
    (_St.PROCEEDING, _In.TU_3XX_6XX): (_St.COMPLETED, (_Do.SEND_RESPONSE,)),
    (_St.PROCEEDING, _In.TRANSPORT_ERROR): (_St.TERMINATED, (_Do.REPORT_TRANSPORT_ERROR,)),
    (_St.COMPLETED, _In.REQUEST): (_St.COMPLETED, (_Do.RESEND_RESPONSE,)),
    (_St.COMPLETED, _In.TIMER_G): (_St.COMPLETED, (_Do.RETRANSMIT_RESPONSE,)),
    (_St.COMPLETED, _In.ACK): (_St.CONFIRMED, ()),
    (_St.COMPLETED, _In.TIMER_H): (_St.TERMINATED, (_Do.REPORT_TIMEOUT,)),
    (_St.COMPLETED, _In.TRANSPORT_ERROR): (_St.TERMINATED, (_Do.REPORT_TRANSPORT_ERROR,)),
    (_St.CONFIRMED, _In.TIMER_I): (_St.TERMINATED, ()),
    (_St.ACCEPTED, _In.REQUEST): (_St.ACCEPTED, ()),
    (_St.ACCEPTED, _In.ACK): (_St.ACCEPTED, (_Do.PASS_ACK,)),
    (_St.ACCEPTED, _In.TU_2XX): (_St.ACCEPTED, (_Do.SEND_RESPONSE,)),
    (_St.ACCEPTED, _In.TIMER_L): (_St.TERMINATED, ()),
}

# RFC 3261 17.2.2, figure 8. Request retransmissions in Trying are discarded; final responses
# from the TU in Completed are discarded (17.2.2: "MUST be discarded").
NON_INVITE_SERVER_TRANSITIONS: Final[Transitions] = {
    (_St.TRYING, _In.REQUEST): (_St.TRYING, ()),
    (_St.TRYING, _In.TU_1XX): (_St.PROCEEDING, (_Do.SEND_RESPONSE,)),
    (_St.TRYING, _In.TU_2XX): (_St.COMPLETED, (_Do.SEND_RESPONSE,)),
    (_St.TRYING, _In.TU_3XX_6XX): (_St.COMPLETED, (_Do.SEND_RESPONSE,)),
    (_St.PROCEEDING, _In.REQUEST): (_St.PROCEEDING, (_Do.RESEND_RESPONSE,)),
    (_St.PROCEEDING, _In.TU_1XX): (_St.PROCEEDING, (_Do.SEND_RESPONSE,)),
    (_St.PROCEEDING, _In.TU_2XX): (_St.COMPLETED, (_Do.SEND_RESPONSE,)),
    (_St.PROCEEDING, _In.TU_3XX_6XX): (_St.COMPLETED, (_Do.SEND_RESPONSE,)),
    (_St.PROCEEDING, _In.TRANSPORT_ERROR): (_St.TERMINATED, (_Do.REPORT_TRANSPORT_ERROR,)),
    (_St.COMPLETED, _In.REQUEST): (_St.COMPLETED, (_Do.RESEND_RESPONSE,)),
    (_St.COMPLETED, _In.TU_2XX): (_St.COMPLETED, ()),
    (_St.COMPLETED, _In.TU_3XX_6XX): (_St.COMPLETED, ()),
    (_St.COMPLETED, _In.TIMER_J): (_St.TERMINATED, ()),
    (_St.COMPLETED, _In.TRANSPORT_ERROR): (_St.TERMINATED, (_Do.REPORT_TRANSPORT_ERROR,)),
}

# Each machine lists the timers a state starts on entry (ENTRY_TIMERS) and those it keeps
# running from the state before (KEPT_TIMERS); every other timer stops on a state change.
_EMPTY: Final[frozenset[TransactionTimer]] = frozenset()
# The timers re-armed from their last interval (``_rearm_fired``); only theirs are kept.
_RETRANSMIT_TIMERS: Final = frozenset({TransactionTimer.A, TransactionTimer.E, TransactionTimer.G})


def _response_input(status: int, *, from_tu: bool) -> Input:
    if not 100 <= status <= 699:
        if from_tu:
            raise LocalProtocolError(f"status {status} out of range 100-699")
        raise RemoteProtocolError(f"status {status} out of range 100-699")
    if status < 200:
        return Input.TU_1XX if from_tu else Input.RESPONSE_1XX
    if status < 300:
        return Input.TU_2XX if from_tu else Input.RESPONSE_2XX
    return Input.TU_3XX_6XX if from_tu else Input.RESPONSE_3XX_6XX


class _Transaction:
    """The machinery the four machines share: state, timers, event queue and outbox."""

    # Slotted, and the event queue a list (an empty deque holds a 64-slot block, about 600
    # bytes): a call's transactions live 32 s after it (timers J, L, M), so at 500 calls/s the
    # table holds some 60,000 of them, and their size is the server's working set (issue #21).
    __slots__ = (
        "_deadlines",
        "_events",
        "_intervals",
        "_outbox",
        "key",
        "peer",
        "reliable",
        "state",
        "timers",
    )

    TRANSITIONS: ClassVar[Transitions]
    ENTRY_TIMERS: ClassVar[Mapping[TransactionState, tuple[TransactionTimer, ...]]]
    KEPT_TIMERS: ClassVar[Mapping[TransactionState, frozenset[TransactionTimer]]] = {}

    key: TransactionKey

    def __init__(self, peer: Address, timers: SipTimers, reliable: bool) -> None:
        self.peer = peer
        self.timers = timers
        self.reliable = reliable
        self.state = TransactionState.TERMINATED  # set for real by _start
        self._deadlines: dict[TransactionTimer, float] = {}
        self._intervals: dict[TransactionTimer, float] = {}
        self._events: list[TxEvent] = []
        self._outbox: list[tuple[SipMessage, Address]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.value} {self.key}>"

    # -- the sans-IO verbs --------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` is next due (None: no timer running)."""
        return min(self._deadlines.values()) if self._deadlines else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while self._deadlines:
            timer = min(self._deadlines, key=self._deadlines.__getitem__)
            if self._deadlines[timer] > now:
                return
            del self._deadlines[timer]
            self._input(_TIMER_INPUT[timer], now, timer=timer)

    def next_event(self) -> TxEvent | None:
        """The next event for the TU, or None."""
        return self._events.pop(0) if self._events else None

    def messages_to_send(self) -> list[tuple[SipMessage, Address]]:
        """The messages to send since the last call, with their destination."""
        out, self._outbox = self._outbox, []
        return out

    def handle_transport_error(self, now: float) -> None:
        """The transport failed to send one of this transaction's messages (17.1.4, 17.2.4)."""
        self._input(Input.TRANSPORT_ERROR, now)

    def abandon(self) -> None:
        """Forget the transaction now, without telling the peer (e.g. 9.1: no final response
        64*T1 after a CANCEL). Emits TransactionTerminated."""
        if self.state is not TransactionState.TERMINATED:
            self._enter(TransactionState.TERMINATED, 0.0)

    @property
    def terminated(self) -> bool:
        """Whether the transaction reached Terminated (it sends and reports nothing more)."""
        return self.state is TransactionState.TERMINATED

    # -- machinery ----------------------------------------------------------------------------

    def _start(self, state: TransactionState, now: float) -> None:
        self.state = state
        for timer in self.ENTRY_TIMERS.get(state, ()):
            self._arm(timer, now, None)
            if self.state is not state:
                return

    def _input(
        self,
        inp: Input,
        now: float,
        *,
        message: SipMessage | None = None,
        timer: TransactionTimer | None = None,
    ) -> None:
        entry = self.TRANSITIONS.get((self.state, inp))
        if entry is None:
            if inp in _TU_INPUTS:
                raise LocalProtocolError(
                    f"{type(self).__name__} in state {self.state.value} cannot send that "
                    "response (RFC 3261 17.2)",
                    status_hint=500,
                )
            return  # absorbed: a retransmission or a late message the RFC says to ignore
        new_state, actions = entry
        for action in actions:
            self._act(action, now, message, timer)
        if new_state is not self.state:
            self._enter(new_state, now)

    def _enter(self, state: TransactionState, now: float) -> None:
        kept = self.KEPT_TIMERS.get(state, _EMPTY)
        for timer in [t for t in self._deadlines if t not in kept]:
            del self._deadlines[timer]
        if state is TransactionState.TERMINATED:
            self.state = state
            self._deadlines.clear()
            self._events.append(TransactionTerminated(self.key))
            return
        self._start(state, now)

    def _arm(self, timer: TransactionTimer, now: float, previous: float | None) -> None:
        """Start ``timer``; a retransmit timer that fired gets its next interval (17.1.1.2,
        17.1.2.2, 17.2.1). A zero-length timer fires at once (reliable transports)."""
        if previous is None:
            interval = self.timers.duration(timer, self.reliable)
            if interval is None:
                return
        elif timer is TransactionTimer.A:
            interval = 2 * previous  # 17.1.1.2: doubles, no cap (timer B ends it)
        elif timer is TransactionTimer.E and self.state is TransactionState.PROCEEDING:
            interval = self.timers.t2  # 17.1.2.2: "reset with a value of T2 seconds"
        else:
            interval = min(2 * previous, self.timers.t2)  # E in Trying, G: capped at T2
        if timer in _RETRANSMIT_TIMERS:
            self._intervals[timer] = interval
        if interval <= 0:
            self._input(_TIMER_INPUT[timer], now, timer=timer)
        else:
            self._deadlines[timer] = now + interval

    def _rearm_fired(self, timer: TransactionTimer | None, now: float) -> None:
        if timer is None:
            raise LocalProtocolError("retransmission without a timer")
        self._arm(timer, now, self._intervals[timer])

    def _send(self, message: SipMessage) -> None:
        self._outbox.append((message, self.peer))

    def _act(
        self, action: Action, now: float, message: SipMessage | None, timer: TransactionTimer | None
    ) -> None:
        match action:
            case Action.REPORT_TIMEOUT if timer is not None:
                self._events.append(TransactionTimedOut(self.key, timer))
            case Action.REPORT_TRANSPORT_ERROR:
                self._events.append(TransportFailed(self.key))
            case _:
                self._act_side(action, now, message, timer)

    def _act_side(
        self, action: Action, now: float, message: SipMessage | None, timer: TransactionTimer | None
    ) -> None:
        raise LocalProtocolError(f"{type(self).__name__} cannot {action.name}")


class _ClientTransaction(_Transaction):
    __slots__ = ("_ack", "request")
    key: ClientKey

    def __init__(
        self,
        request: SipRequest,
        destination: Address,
        now: float,
        timers: SipTimers,
        reliable: bool,
        initial: TransactionState,
    ) -> None:
        super().__init__(destination, timers, reliable)
        self.request = request  # sent again on timers A and E
        self.key = client_transaction_key(request)
        if not self.key.branch:
            raise LocalProtocolError("a client transaction's request needs a Via branch")
        self._ack: SipRequest | None = None
        self._send(request)
        self._start(initial, now)

    def receive(self, msg: SipResponse, now: float) -> None:
        """A response matching this transaction arrived."""
        self._input(_response_input(msg.status, from_tu=False), now, message=msg)

    def _act_side(
        self, action: Action, now: float, message: SipMessage | None, timer: TransactionTimer | None
    ) -> None:
        match action:
            case Action.RETRANSMIT_REQUEST:
                self._send(self.request)
                self._rearm_fired(timer, now)
            case Action.PASS_RESPONSE if isinstance(message, SipResponse):
                self._events.append(ResponseReceived(self.key, message))
            case Action.SEND_ACK if isinstance(message, SipResponse):
                self._ack = build_ack_for_non2xx(self.request, message)
                self._send(self._ack)
            case Action.RESEND_ACK if self._ack is not None:
                self._send(self._ack)
            case _:
                super()._act_side(action, now, message, timer)


class InviteClientTransaction(_ClientTransaction):
    """RFC 3261 17.1.1 with RFC 6026 8.4: sends the INVITE, retransmits it on timer A, ACKs
    non-2xx finals itself, passes every 2xx up (the TU ACKs those)."""

    __slots__ = ()

    TRANSITIONS = INVITE_CLIENT_TRANSITIONS
    ENTRY_TIMERS: ClassVar[Mapping[TransactionState, tuple[TransactionTimer, ...]]] = {
        TransactionState.CALLING: (TransactionTimer.A, TransactionTimer.B),
        TransactionState.COMPLETED: (TransactionTimer.D,),
        TransactionState.ACCEPTED: (TransactionTimer.M,),
    }

    def __init__(
        self,
        request: SipRequest,
        destination: Address,
        now: float,
        timers: SipTimers | None = None,
        *,
        reliable: bool = False,
    ) -> None:
        if request.method != "INVITE":
            raise LocalProtocolError(f"InviteClientTransaction for {request.method}")
        super().__init__(
            request, destination, now, timers or SipTimers(), reliable, TransactionState.CALLING
        )


class NonInviteClientTransaction(_ClientTransaction):
    """RFC 3261 17.1.2: sends the request, retransmits it on timer E until a final response."""

    __slots__ = ()

    TRANSITIONS = NON_INVITE_CLIENT_TRANSITIONS
    ENTRY_TIMERS: ClassVar[Mapping[TransactionState, tuple[TransactionTimer, ...]]] = {
        TransactionState.TRYING: (TransactionTimer.E, TransactionTimer.F),
        TransactionState.COMPLETED: (TransactionTimer.K,),
    }
    KEPT_TIMERS: ClassVar[Mapping[TransactionState, frozenset[TransactionTimer]]] = {
        TransactionState.PROCEEDING: frozenset({TransactionTimer.E, TransactionTimer.F}),
    }

    def __init__(
        self,
        request: SipRequest,
        destination: Address,
        now: float,
        timers: SipTimers | None = None,
        *,
        reliable: bool = False,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"NonInviteClientTransaction for {request.method}")
        super().__init__(
            request, destination, now, timers or SipTimers(), reliable, TransactionState.TRYING
        )


class _ServerTransaction(_Transaction):
    __slots__ = ("_last_bytes", "cseq", "last_to_tag")
    key: ServerKey

    def __init__(
        self,
        request: SipRequest,
        source: Address,
        timers: SipTimers,
        reliable: bool,
        initial: TransactionState,
    ) -> None:
        super().__init__(source, timers, reliable)
        # What answering retransmissions needs: the key, the CSeq (to check the TU's response)
        # and the last response. The request itself goes to the TU in RequestReceived and is
        # not kept: a server transaction lives 32 s over UDP (timers J, H), and the parsed
        # request was most of what it held (harden, issue 17 item 2; tests/sip/
        # test_transaction_memory.py measures it).
        self.key = server_transaction_key(request, source)
        self.cseq = request.cseq
        # The last response as sent (bytes) and its To tag (RFC 2543 ACK matching): a parsed
        # response echoing 64 Via values held ~6 times its size. A retransmission parses the
        # bytes again, which only a retransmitted request or timer G asks for.
        self._last_bytes: bytes | None = None
        self.last_to_tag: str | None = None
        self._events.append(RequestReceived(self.key, request, source))
        self._start(initial, 0.0)

    def receive(self, msg: SipRequest, now: float) -> None:
        """A request matching this transaction arrived: a retransmission, or the ACK."""
        inp = Input.ACK if msg.method == "ACK" else Input.REQUEST
        self._input(inp, now, message=msg)

    def respond(self, resp: SipResponse, now: float) -> None:
        """Send the TU's response to the request (RFC 3261 17.2.1, 17.2.2)."""
        if resp.cseq != self.cseq:
            raise LocalProtocolError(f"response CSeq {resp.cseq} is not {self.cseq}")
        self._input(_response_input(resp.status, from_tu=True), now, message=resp)

    @property
    def last_response(self) -> SipResponse | None:
        """The last response sent, parsed again from the bytes kept."""
        if self._last_bytes is None:
            return None
        parsed = parse_message(self._last_bytes)
        if not isinstance(parsed, SipResponse):  # pragma: no cover - we wrote a response
            raise LocalProtocolError("a server transaction kept a request")
        return parsed

    def _keep(self, response: SipResponse) -> None:
        self._last_bytes = response.to_bytes()
        self.last_to_tag = response.to.tag

    def _act_side(
        self, action: Action, now: float, message: SipMessage | None, timer: TransactionTimer | None
    ) -> None:
        match action:
            case Action.SEND_RESPONSE if isinstance(message, SipResponse):
                self._keep(message)
                self._send(message)
            case Action.RESEND_RESPONSE if self.last_response is not None:
                self._send(self.last_response)
            case Action.RESEND_RESPONSE:
                pass  # nothing sent yet (cannot happen: the INVITE's 100 is sent at once)
            case Action.RETRANSMIT_RESPONSE if self.last_response is not None:
                self._send(self.last_response)
                self._rearm_fired(timer, now)
            case Action.PASS_ACK if isinstance(message, SipRequest):
                self._events.append(AckReceived(self.key, message, self.peer))
            case _:
                super()._act_side(action, now, message, timer)


class InviteServerTransaction(_ServerTransaction):
    """RFC 3261 17.2.1 with RFC 6026 7.1: answers 100 Trying at once, retransmits a non-2xx
    final on timer G until the ACK, sends the TU's 2xx (and its retransmissions) from Accepted."""

    __slots__ = ("trying",)

    TRANSITIONS = INVITE_SERVER_TRANSITIONS
    ENTRY_TIMERS: ClassVar[Mapping[TransactionState, tuple[TransactionTimer, ...]]] = {
        TransactionState.COMPLETED: (TransactionTimer.G, TransactionTimer.H),
        TransactionState.CONFIRMED: (TransactionTimer.I,),
        TransactionState.ACCEPTED: (TransactionTimer.L,),
    }

    def __init__(
        self,
        request: SipRequest,
        source: Address,
        timers: SipTimers | None = None,
        *,
        reliable: bool = False,
    ) -> None:
        if request.method != "INVITE":
            raise LocalProtocolError(f"InviteServerTransaction for {request.method}")
        super().__init__(
            request, source, timers or SipTimers(), reliable, TransactionState.PROCEEDING
        )
        # 17.2.1: "MUST generate a 100 (Trying) response unless it knows that the TU will
        # generate a provisional or final response within 200 ms": sent at once, always.
        trying = build_response(request, 100)
        self._keep(trying)
        self.trying: SipResponse | None = trying  # until the TU's first response
        self._send(trying)


class NonInviteServerTransaction(_ServerTransaction):
    """RFC 3261 17.2.2: passes the request up once and answers retransmissions with the last
    response sent."""

    __slots__ = ()

    TRANSITIONS = NON_INVITE_SERVER_TRANSITIONS
    ENTRY_TIMERS: ClassVar[Mapping[TransactionState, tuple[TransactionTimer, ...]]] = {
        TransactionState.COMPLETED: (TransactionTimer.J,),
    }

    def __init__(
        self,
        request: SipRequest,
        source: Address,
        timers: SipTimers | None = None,
        *,
        reliable: bool = False,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError(f"NonInviteServerTransaction for {request.method}")
        super().__init__(request, source, timers or SipTimers(), reliable, TransactionState.TRYING)


ClientTransaction = InviteClientTransaction | NonInviteClientTransaction
ServerTransaction = InviteServerTransaction | NonInviteServerTransaction
Transaction = ClientTransaction | ServerTransaction


# ---------------------------------------------------------------------------------------------
# The table the adapter drives


class TransactionTable:
    """Every live transaction by key: routes messages to them, runs their timers, collects what
    they send. Pure; the adapter does, per datagram, timer wake-up or TU action:

        events = table.receive(msg, source, now, reliable=...)   # or respond/send_request/...
        for event in events: ...                                 # to the TU
        for msg, address in table.messages_to_send(): ...        # to the transport
        deadline = table.next_deadline()                         # re-arm one loop.call_at
        # and at the deadline: events = table.handle_timers(now)

    Deadlines live in slots of ``SLOT_SECONDS`` (a timer wheel): an entry is appended to its
    slot's list, and only the slots' numbers are kept in a heap. Under load the table holds
    about four timers a call for 32 s (timers J, K, L, M), a heap of 100,000+ entries whose
    every push and pop sifted through scattered tuples; appending costs the same whatever the
    size (issue #21). ``_scheduled`` holds each transaction's one live deadline (its current
    ``get_timer()``); entries that no longer match it are stale and skipped when their slot
    comes. Timers still fire exactly at or after their deadline, in deadline order, and
    ``next_deadline`` is exact (kept, and found again only when the earliest timer goes).

    Transactions are also indexed by peer (``_by_peer``), so a transport failure reaches the
    transactions of that peer without a scan of every live one (about 64,000 at 500 calls/s):
    a TCP trunk that goes down under load fails each call's transactions in microseconds.
    """

    SLOT_SECONDS: Final = 0.02

    def __init__(self, timers: SipTimers | None = None) -> None:
        self.timers = timers or SipTimers()
        self._transactions: dict[TransactionKey, Transaction] = {}
        # peer -> its live transactions' keys (an insertion-ordered dict as an ordered set)
        self._by_peer: dict[Address, dict[TransactionKey, None]] = {}
        self._scheduled: dict[TransactionKey, float] = {}
        # slot number -> its entries (deadline, key), in the order they were scheduled
        self._slots: dict[int, list[tuple[float, TransactionKey]]] = {}
        self._slot_heap: list[int] = []  # the numbers of the slots in ``_slots``
        self._entries = 0  # entries in all slots, stale ones included
        # The earliest live deadline, None when no timer runs; _UNKNOWN: look it up again.
        self._earliest: float | object | None = None
        self._outbox: list[tuple[SipMessage, Address]] = []
        # Counters for metrics: requests received again (absorbed by their transaction) and
        # messages we sent again (timers A, E, G, and answers to received retransmissions).
        self.retransmissions_received = 0
        self.retransmissions_sent = 0

    def __len__(self) -> int:
        return len(self._transactions)

    def __contains__(self, key: object) -> bool:
        return key in self._transactions

    def get(self, key: TransactionKey) -> Transaction | None:
        """The live transaction with ``key``, if any."""
        return self._transactions.get(key)

    # -- input --------------------------------------------------------------------------------

    def receive(
        self, msg: SipMessage, source: Address, now: float, *, reliable: bool = False
    ) -> list[TxEvent]:
        """Route an incoming message: to its transaction, to a new server transaction, or up
        to the TU as an ACK for a 2xx or an unmatched response. ``reliable``: it came over a
        stream transport (used for a new server transaction)."""
        if isinstance(msg, SipResponse):
            client = self._transactions.get(client_transaction_key(msg))
            if not isinstance(client, InviteClientTransaction | NonInviteClientTransaction):
                return [UnmatchedResponseReceived(msg, source)]
            client.receive(msg, now)
            return self._after(client)
        key = server_transaction_key(msg, source)
        found = self._transactions.get(key)
        server = (
            found
            if isinstance(found, InviteServerTransaction | NonInviteServerTransaction)
            else None
        )
        if msg.method == "ACK":
            if not isinstance(server, InviteServerTransaction) or not _ack_matches(server, msg):
                return [AckReceived(None, msg, source)]  # 17.2.3: for a 2xx: to the TU
            server.receive(msg, now)
            return self._after(server)
        if server is not None:
            self.retransmissions_received += 1
            sent = len(self._outbox)
            server.receive(msg, now)
            events = self._after(server)
            self.retransmissions_sent += len(self._outbox) - sent
            return events
        new: ServerTransaction
        if msg.method == "INVITE":
            new = InviteServerTransaction(msg, source, self.timers, reliable=reliable)
        else:
            new = NonInviteServerTransaction(msg, source, self.timers, reliable=reliable)
        self._transactions[key] = new
        self._add_peer(source, key)
        return self._after(new)

    def send_request(
        self, request: SipRequest, destination: Address, now: float, *, reliable: bool = False
    ) -> ClientKey:
        """Start a client transaction for ``request`` (not ACK) towards ``destination``."""
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = InviteClientTransaction(request, destination, now, self.timers, reliable=reliable)
        else:
            tx = NonInviteClientTransaction(
                request, destination, now, self.timers, reliable=reliable
            )
        if tx.key in self._transactions:
            raise LocalProtocolError(f"client transaction {tx.key} already exists")
        self._transactions[tx.key] = tx
        self._add_peer(destination, tx.key)
        events = self._after(tx)
        if events:  # only a zero-length timer could do this, and none starts in Calling/Trying
            raise LocalProtocolError(f"unexpected events starting {tx.key}: {events}")
        return tx.key

    def respond(self, key: ServerKey, response: SipResponse, now: float) -> list[TxEvent]:
        """Send the TU's response through the server transaction ``key``."""
        tx = self._transactions.get(key)
        if not isinstance(tx, InviteServerTransaction | NonInviteServerTransaction):
            raise LocalProtocolError(f"no server transaction {key}", status_hint=481)
        if isinstance(tx, InviteServerTransaction) and tx.trying is not None:
            # The TU answers before our 100 left (module docstring): the 100 is withdrawn.
            trying, tx.trying = tx.trying, None
            self._outbox = [entry for entry in self._outbox if entry[0] is not trying]
        tx.respond(response, now)
        return self._after(tx)

    def send_stateless(self, msg: SipMessage, destination: Address) -> None:
        """Queue a message outside any transaction (the ACK for a 2xx, a stateless reply)."""
        self._outbox.append((msg, destination))

    def transport_failed(self, destination: Address, now: float) -> list[TxEvent]:
        """Messages to ``destination`` cannot be delivered (TCP connection refused or lost):
        every transaction talking to it is told (17.1.4, 17.2.4), oldest first."""
        events: list[TxEvent] = []
        for key in list(self._by_peer.get(destination, ())):
            tx = self._transactions[key]
            tx.handle_transport_error(now)
            events.extend(self._after(tx))
        return events

    def abandon(self, key: TransactionKey) -> list[TxEvent]:
        """Forget transaction ``key`` now (see ``_Transaction.abandon``)."""
        tx = self._transactions.get(key)
        if tx is None:
            return []
        tx.abandon()
        return self._after(tx)

    def find_invite_for_cancel(
        self, cancel: SipRequest, source: Address | None = None
    ) -> InviteServerTransaction | None:
        """The live INVITE server transaction a CANCEL from ``source`` targets (RFC 3261 9.2)."""
        tx = self._transactions.get(invite_key_for_cancel(cancel, source))
        return tx if isinstance(tx, InviteServerTransaction) else None

    # -- timers and output --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timers`` is next due (None: no timer running)."""
        earliest = self._earliest
        if earliest is _UNKNOWN:
            earliest = self._earliest = self._find_earliest()
        return earliest  # type: ignore[return-value]

    def _find_earliest(self) -> float | None:
        """The earliest live deadline: the first slot holding a live entry (stale entries of
        the slots looked at are dropped on the way)."""
        slots, heap = self._slots, self._slot_heap
        while heap:
            slot = heap[0]
            live = self._live(slots[slot])
            self._entries -= len(slots[slot]) - len(live)
            if live:
                slots[slot] = live
                return min(deadline for deadline, _ in live)
            heapq.heappop(heap)
            del slots[slot]
        return None

    def handle_timers(self, now: float) -> list[TxEvent]:
        """Fire every timer due at ``now``, earliest first."""
        events: list[TxEvent] = []
        slots, heap, scheduled = self._slots, self._slot_heap, self._scheduled
        while heap:
            slot = heap[0]
            if (slot - 1) * self.SLOT_SECONDS > now:
                break  # this slot (so every later one) is not due yet
            bucket = slots[slot]
            due = [entry for entry in bucket if entry[0] <= now]
            if not due:
                break  # the slot ``now`` falls in; nothing in it is due yet
            if len(due) == len(bucket):
                heapq.heappop(heap)
                del slots[slot]
            else:
                slots[slot] = [entry for entry in bucket if entry[0] > now]
            self._entries -= len(due)
            due.sort(key=_deadline_of)  # stable: equal deadlines in the order scheduled
            for deadline, key in due:
                if scheduled.get(key) != deadline:
                    continue  # stale: the transaction re-armed or ended since
                del scheduled[key]
                if deadline == self._earliest:
                    self._earliest = _UNKNOWN
                tx = self._transactions[key]
                sent = len(self._outbox)
                tx.handle_timer(now)
                events.extend(self._after(tx))
                self.retransmissions_sent += len(self._outbox) - sent
        return events

    def messages_to_send(self) -> list[tuple[SipMessage, Address]]:
        """Everything to send since the last call, in order, with destinations."""
        out, self._outbox = self._outbox, []
        return out

    def _after(self, tx: Transaction) -> list[TxEvent]:
        # The transaction's outbox and events are taken as they are (same module; most
        # steps leave one of them empty, and nothing new is made for it).
        if tx._outbox:
            self._outbox.extend(tx._outbox)
            tx._outbox = []
        events = tx._events
        if events:
            tx._events = []
        else:
            events = []
        key = tx.key
        scheduled = self._scheduled
        if tx.terminated:
            if self._transactions.pop(key, None) is not None:
                peers = self._by_peer[tx.peer]
                del peers[key]
                if not peers:
                    del self._by_peer[tx.peer]
            self._unschedule(scheduled.pop(key, None))
            return events
        deadline = tx.get_timer()
        if deadline is None:
            self._unschedule(scheduled.pop(key, None))
            return events
        old = scheduled.get(key)
        if old != deadline:
            scheduled[key] = deadline
            self._unschedule(old)
            earliest = self._earliest
            if earliest is None or (
                earliest is not _UNKNOWN and deadline < earliest  # type: ignore[operator]
            ):
                self._earliest = deadline
            slot = int(deadline // self.SLOT_SECONDS)
            bucket = self._slots.get(slot)
            if bucket is None:
                self._slots[slot] = [(deadline, key)]
                heapq.heappush(self._slot_heap, slot)
            else:
                bucket.append((deadline, key))
            self._entries += 1
            if self._entries > 64 + 4 * len(scheduled):
                self._compact()
        return events

    def _add_peer(self, peer: Address, key: TransactionKey) -> None:
        keys = self._by_peer.get(peer)
        if keys is None:
            self._by_peer[peer] = {key: None}
        else:
            keys[key] = None

    def _unschedule(self, deadline: float | None) -> None:
        """A live deadline is no longer: if it was the earliest, that is looked up again."""
        if deadline is not None and deadline == self._earliest:
            self._earliest = _UNKNOWN

    def _compact(self) -> None:
        """Drop the stale entries of every slot (many re-armed timers: memory stays bounded)."""
        for slot in list(self._slots):
            live = self._live(self._slots[slot])
            if live:
                self._slots[slot] = live
            else:
                del self._slots[slot]
        self._slot_heap = list(self._slots)
        heapq.heapify(self._slot_heap)
        self._entries = sum(len(bucket) for bucket in self._slots.values())

    def _live(
        self, bucket: list[tuple[float, TransactionKey]]
    ) -> list[tuple[float, TransactionKey]]:
        """The entries of a slot that are still their transaction's deadline (not stale)."""
        scheduled = self._scheduled
        return [entry for entry in bucket if scheduled.get(entry[1]) == entry[0]]

    @property
    def timer_entries(self) -> int:
        """Entries held in the timer slots, stale ones included (bounded: ``_compact``)."""
        return self._entries


_UNKNOWN: Final = object()  # TransactionTable._earliest: to be looked up again


def _deadline_of(entry: tuple[float, TransactionKey]) -> float:
    return entry[0]


def _ack_matches(tx: InviteServerTransaction, ack: SipRequest) -> bool:
    """17.2.3: an RFC 2543 ACK matches only if its To tag is that of the response we sent."""
    if isinstance(tx.key, BranchServerKey):
        return True
    return tx.last_to_tag is not None and tx.last_to_tag == ack.to.tag
