"""The call record: what the call core writes and the store keeps (``call_records``)."""

from __future__ import annotations

from typing import Literal, TypeAlias

from pbx.immutable import immutable

Disposition = Literal["answered", "busy", "no_answer", "cancelled", "failed"]
DISPOSITIONS: tuple[Disposition, ...] = ("answered", "busy", "no_answer", "cancelled", "failed")
# Why the call ended (issue 16): normal clearing by a party, the caller giving up, the callee
# busy or not answering, the call refused by routing, a failure, no RTP for
# ``inactivity_seconds``, a session timer that expired or whose refresh failed, no ACK for the
# 2xx, a server shutdown, or closed at start-up after a crash.
HangupCause = Literal[
    "normal",
    "cancelled",
    "busy",
    "no_answer",
    "rejected",
    "failed",
    "rtp_timeout",
    "session_timer",
    "no_ack",
    "shutdown",
    "crash",
]
HANGUP_CAUSES: tuple[HangupCause, ...] = (
    "normal",
    "cancelled",
    "busy",
    "no_answer",
    "rejected",
    "failed",
    "rtp_timeout",
    "session_timer",
    "no_ack",
    "shutdown",
    "crash",
)
EndedBy = Literal["caller", "callee", "server"]
ENDED_BY: tuple[EndedBy, ...] = ("caller", "callee", "server")
Json: TypeAlias = str | int | float | bool | list["Json"] | dict[str, "Json"] | None


@immutable
class CallRecord:
    """One call, as kept in ``call_records`` (open while ``ended_at`` is None)."""

    id: str
    tenant: str | None
    started_at: float
    caller: str
    called: str
    answered_at: float | None = None
    ended_at: float | None = None
    disposition: Disposition | None = None
    answered_by: str | None = None
    forwarding: tuple[Json, ...] = ()  # the forwarding steps taken, in order
    trace: tuple[Json, ...] = ()  # the routing trace lines
    recording_path: str | None = None
    # The last instant known for the call; a crash closes the row there. Defaults to the
    # latest of started/answered/ended.
    last_event_at: float | None = None
    hangup_cause: HangupCause | None = None
    ended_by: EndedBy | None = None
    # The SIP Call-ID of each leg: the caller's, and the callee's (the answering leg, or the last
    # one tried), so that a record can be matched with a carrier's or a phone's log.
    caller_call_id: str | None = None
    callee_call_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.ended_at is None
