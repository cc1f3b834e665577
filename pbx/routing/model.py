"""Plain data the routing core takes and returns (docs/design.md section 3, STYLE.md section 4).

The call engine describes a call with a ``CallRequest`` and the lines with a ``LineState``; the
core answers with a ``Decision``: forks to start or cancel, timers to arm, the final response, and
the trace. The engine keeps ``Decision.progress`` and hands it back with every ``ForkEnded`` event.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import field
from datetime import datetime
from types import MappingProxyType
from typing import Literal, NewType, Protocol

from pbx.config.model import Extension, PhoneNumber, TenantId
from pbx.immutable import immutable

ContactId = NewType("ContactId", str)  # one registered binding of an extension (registrar's id)
ForkId = NewType("ForkId", str)  # "f1", "f2", ... in the order forks are started within a call

LineKey = tuple[TenantId, Extension]

# RFC 5806 section 3 diversion reasons that our forwards produce.
DiversionReason = Literal["user-busy", "no-answer", "unavailable", "unconditional"]


# --- what the call is ------------------------------------------------------------------------


@immutable
class FromTrunk:
    """The call came in from a carrier trunk."""

    trunk: str  # the trunk's name
    caller: str | None = None  # the external caller's number (national form); None: withheld
    # Forward hops already made before the call reached us (Diversion counters / History-Info
    # entries of the incoming INVITE): loops through the carrier use up the same budget.
    prior_hops: int = 0


@immutable
class FromExtension:
    """The call was placed by a registered extension of a tenant."""

    tenant: TenantId
    extension: Extension


@immutable
class CallRequest:
    """A new call: who is calling and what they dialled (the Request-URI's user part)."""

    origin: FromTrunk | FromExtension
    dialled: str


# --- the lines ---------------------------------------------------------------------------------


def _freeze_contacts(
    items: Mapping[LineKey, tuple[ContactId, ...]] | None,
) -> Mapping[LineKey, tuple[ContactId, ...]]:
    return MappingProxyType({key: tuple(value) for key, value in (items or {}).items() if value})


class LineLookup(Protocol):
    """What the routing core asks about the lines: contacts and call counts of one extension.

    ``LineState`` is the plain-value implementation (tests, ``pbx simulate``). The call engine
    passes a view that looks up only the extensions a decision reaches, so a decision costs the
    same whether the tenant has ten users or ten thousand.
    """

    def contacts(self, tenant: TenantId, extension: Extension) -> tuple[ContactId, ...]: ...

    def calls_of(self, tenant: TenantId, extension: Extension) -> int: ...


@immutable
class LineState:
    """Who is registered (their contacts) and how many calls each extension is on, per tenant.

    ``calls`` counts the calls an extension takes part in (placing or answered), not calls merely
    ringing it: at ``max_calls_per_user`` it is busy.
    """

    registered: Mapping[LineKey, tuple[ContactId, ...]] = field(default_factory=dict)
    calls: Mapping[LineKey, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "registered", _freeze_contacts(self.registered))
        object.__setattr__(self, "calls", MappingProxyType(dict(self.calls)))

    def contacts(self, tenant: TenantId, extension: Extension) -> tuple[ContactId, ...]:
        """The extension's registered contacts (empty: offline)."""
        return self.registered.get((tenant, extension), ())

    def calls_of(self, tenant: TenantId, extension: Extension) -> int:
        """How many calls the extension is on now."""
        return self.calls.get((tenant, extension), 0)


# --- what the core decides ---------------------------------------------------------------------


@immutable
class Caller:
    """Who the callee's phone is told is calling."""

    number: str | None  # an extension, an external number, or None when withheld
    name: str | None = None


@immutable
class Diversion:
    """One forward on the way to a fork (RFC 5806 Diversion / RFC 7044 History-Info entry)."""

    number: PhoneNumber  # the forwarding party's public number (its caller_id, else the DID)
    extension: Extension | None  # the forwarding extension; None for an inbound rule's forward
    reason: DiversionReason


@immutable
class RingExtension:
    """Ring every listed contact of an extension in parallel (one fork, many client legs)."""

    fork_id: ForkId
    tenant: TenantId
    extension: Extension
    contacts: tuple[ContactId, ...]
    caller: Caller
    diversions: tuple[Diversion, ...] = ()  # most recent first, as in the header
    hops: int = 0  # forward hops used to get here
    record: bool = False  # whether recording starts if this fork answers


@immutable
class DialOut:
    """Place an outbound call through a trunk."""

    fork_id: ForkId
    trunk: str
    number: str  # digits to send, as dialled/configured (national form, or international)
    caller_id: PhoneNumber | str | None  # the number presented (From); None: withheld
    diversions: tuple[Diversion, ...] = ()  # most recent first, as in the header
    hops: int = 0
    record: bool = False


@immutable
class PlayAnnouncement:
    """Answer and play the tenant's after-hours announcement (target ``009608``)."""

    fork_id: ForkId
    tenant: TenantId
    prompt: str = "009608"
    hops: int = 0
    record: bool = False


Fork = RingExtension | DialOut | PlayAnnouncement


class TimerKind(enum.Enum):
    NO_ANSWER = "no_answer"  # one fork rang no_answer_seconds: replace it by its forward
    MAX_RING = "max_ring"  # the call rang max_ring_seconds unanswered: end it with 480


@immutable
class RingTimer:
    """A timer to arm; when it fires, pass ``TimerExpired(timer)`` to ``next_step``."""

    kind: TimerKind
    at: datetime  # when it is due (the decision's ``now`` + seconds)
    seconds: float  # relative to the ``now`` of the decision that armed it
    fork_id: ForkId | None = None  # the fork a no-answer timer is for


# --- what happened -----------------------------------------------------------------------------


@immutable
class ContactFailed:
    """One contact of an extension fork answered with a final failure (or could not be reached:
    report 408 for a timeout, 503 for a transport error)."""

    fork_id: ForkId
    contact: ContactId
    status: int


@immutable
class ForkFailed:
    """A whole fork failed: an outbound call's final failure, an announcement that could not
    play, or every remaining contact of an extension fork at once."""

    fork_id: ForkId
    status: int


@immutable
class TimerExpired:
    """A timer from a decision fired. Timers of forks that have ended are ignored."""

    timer: RingTimer


@immutable
class ForkAnswered:
    """A fork answered (2xx): the call is connected; the others are cancelled."""

    fork_id: ForkId
    contact: ContactId | None = None


ForkEnded = ContactFailed | ForkFailed | TimerExpired | ForkAnswered


class Outcome(enum.Enum):
    """How a target ended, remembered so that reaching it again replays the same forward."""

    BUSY = "busy"
    OFFLINE = "offline"
    NO_ANSWER = "no_answer"
    FAILED = "failed"  # every contact failed, not all of them busy: no forward


@immutable
class LiveFork:
    """A fork still ringing, with the contacts that have failed so far."""

    fork: Fork
    failed: tuple[tuple[ContactId, int], ...] = ()
    started_at: datetime | None = None


@immutable
class CallProgress:
    """What has happened in a call so far; returned in every Decision, handed back as is."""

    request: CallRequest
    tenant: TenantId | None
    number: PhoneNumber | None  # the tenant's number the call was made to, if any
    started_at: datetime
    live: tuple[LiveFork, ...] = ()
    # Targets reached so far ("acme/1001", "tel:0312345678") and how they ended (None: ringing).
    tried: tuple[tuple[str, Outcome | None], ...] = ()
    branch_statuses: tuple[int, ...] = ()  # how branches that reached nobody ended (486, 480, ...)
    forks_started: int = 0
    answered_by: ForkId | None = None
    final: int | None = None

    @property
    def finished(self) -> bool:
        """The call was answered or has received its final failure."""
        return self.answered_by is not None or self.final is not None

    def live_fork(self, fork_id: ForkId) -> LiveFork | None:
        """The live fork with this id, or None if it has ended (or never existed)."""
        for live in self.live:
            if live.fork.fork_id == fork_id:
                return live
        return None


@immutable
class Decision:
    """What the call engine does now. Carry out ``cancel``, then ``start``, then arm ``timers``;
    if ``final`` is set, answer the caller with it (every fork is cancelled)."""

    progress: CallProgress
    start: tuple[Fork, ...] = ()
    cancel: tuple[ForkId, ...] = ()
    timers: tuple[RingTimer, ...] = ()
    final: int | None = None  # the call ends unanswered with this status
    answered: ForkId | None = None  # set on ForkAnswered: this fork won
    record: bool = False  # with ``answered``: start recording now
    trace: tuple[str, ...] = ()
