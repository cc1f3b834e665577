"""The routing core: pure answers to "where does this call ring?" (docs/design.md section 3).

``start_call`` gives the forks a new call starts with; ``next_step`` says what to do when one of
them ends. Both are pure: the caller passes the configuration snapshot, the time and the line
state, and carries out the returned ``Decision``.
"""

from __future__ import annotations

from pbx.routing.calendar import find_rule, holiday_name, is_holiday, rules_in_force
from pbx.routing.model import (
    Caller,
    CallProgress,
    CallRequest,
    ContactFailed,
    ContactId,
    Decision,
    DialOut,
    Diversion,
    Fork,
    ForkAnswered,
    ForkEnded,
    ForkFailed,
    ForkId,
    FromExtension,
    FromTrunk,
    LineLookup,
    LineState,
    LiveFork,
    Outcome,
    PlayAnnouncement,
    RingExtension,
    RingTimer,
    TimerExpired,
    TimerKind,
)
from pbx.routing.router import final_status, next_step, should_record, start_call

__all__ = [
    "CallProgress",
    "CallRequest",
    "Caller",
    "ContactFailed",
    "ContactId",
    "Decision",
    "DialOut",
    "Diversion",
    "Fork",
    "ForkAnswered",
    "ForkEnded",
    "ForkFailed",
    "ForkId",
    "FromExtension",
    "FromTrunk",
    "LineLookup",
    "LineState",
    "LiveFork",
    "Outcome",
    "PlayAnnouncement",
    "RingExtension",
    "RingTimer",
    "TimerExpired",
    "TimerKind",
    "final_status",
    "find_rule",
    "holiday_name",
    "is_holiday",
    "next_step",
    "rules_in_force",
    "should_record",
    "start_call",
]
