"""The call record: what the call core writes and the store keeps (``call_records``)."""

from __future__ import annotations

from typing import Literal, TypeAlias

from pbx.immutable import immutable

Disposition = Literal["answered", "busy", "no_answer", "cancelled", "failed"]
DISPOSITIONS: tuple[Disposition, ...] = ("answered", "busy", "no_answer", "cancelled", "failed")
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

    @property
    def is_open(self) -> bool:
        return self.ended_at is None
