"""The routing core: the forks a call starts with, and what to do when a fork ends.

docs/design.md section 3 ("Ringing and forwarding", "Numbers", "Time") fixes every rule; this
module carries them out as two pure functions over an immutable ``ConfigSnapshot``:

- ``start_call`` resolves the dialled string (a tenant's number through its inbound rule in force,
  an extension, or an external number) into forks, deciding busy and offline per target as the
  call reaches it;
- ``next_step`` takes one ``ForkEnded`` event and replaces what ended by its forward, or ends the
  call (486 all busy, 480 otherwise, 482 when the hop budget ran out).

Forward hops (RFC 5806 Diversion counters) count against ``max_forward_hops`` per branch. A
target reached again in the same call is never rung twice: while it rings the new branch joins
it; once it has ended, its outcome (busy, no answer, ...) is replayed, so a loop through one of
the tenant's own numbers keeps spending hops until the budget ends it with 482.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from datetime import datetime, timedelta

from pbx.config.model import ConfigSnapshot, Extension, PhoneNumber, TenantConfig, UserConfig
from pbx.immutable import immutable
from pbx.numbers import NumberKind, classify_number
from pbx.routing.calendar import describe_instant, find_rule, local_time
from pbx.routing.model import (
    Caller,
    CallProgress,
    CallRequest,
    ContactFailed,
    ContactId,
    Decision,
    DialOut,
    Diversion,
    DiversionReason,
    Fork,
    ForkAnswered,
    ForkEnded,
    ForkId,
    FromExtension,
    FromTrunk,
    LineLookup,
    LiveFork,
    Outcome,
    PlayAnnouncement,
    RingExtension,
    RingTimer,
    TimerExpired,
    TimerKind,
)

BUSY_STATUSES = frozenset({486, 600})  # a contact's answer that means "busy here"
# A contact's failure that means nobody could be offered the call there (docs/design.md 3,
# "A fork whose contacts all fail"): no answer at all (408, our Timer B), a transport error or
# an overloaded phone (503, ours for a failed connect or send), not logged in or gone (480, 404,
# 410), a gateway in between that failed (502, 504). Asterisk's DIALSTATUS CHANUNAVAIL, not BUSY.
UNREACHABLE_STATUSES = frozenset({404, 408, 410, 480, 502, 503, 504})

# Per-outcome: the status a branch ends with when there is no forward, and the Diversion reason.
_DROP_STATUS = {
    Outcome.BUSY: 486,
    Outcome.OFFLINE: 480,
    Outcome.NO_ANSWER: 480,
    Outcome.FAILED: 480,
}
_REASON: dict[Outcome, DiversionReason] = {
    Outcome.BUSY: "user-busy",
    Outcome.OFFLINE: "unavailable",
    Outcome.NO_ANSWER: "no-answer",
}
_LABEL = {
    Outcome.BUSY: "busy",
    Outcome.OFFLINE: "offline",
    Outcome.NO_ANSWER: "no answer",
    Outcome.FAILED: "failed",
}
_EXTERNAL = (NumberKind.DOMESTIC, NumberKind.SERVICE, NumberKind.INTERNATIONAL)

# Fan-out through own numbers can multiply branches at every hop; past this many targets reached
# in one decision the remaining branches end with 482 as if their hop budget had run out.
MAX_REACHES_PER_DECISION = 256


def start_call(
    cfg: ConfigSnapshot, call: CallRequest, now: datetime, state: LineLookup
) -> Decision:
    """The forks (or final response) a new call starts with, with the trace that explains it."""
    progress = CallProgress(request=call, tenant=None, number=None, started_at=now)
    planner = _Planner(cfg, progress, now, state)
    if isinstance(call.origin, FromTrunk):
        planner.route_inbound(call.origin, call.dialled)
    else:
        planner.route_internal(call.origin, call.dialled)
    return planner.decide(arm_max_ring=True)


def next_step(
    cfg: ConfigSnapshot, call: CallProgress, event: ForkEnded, now: datetime, state: LineLookup
) -> Decision:
    """What to do after ``event``: forwards to start, forks to cancel, or the final response.

    ``cfg`` must be the snapshot the call started with. Events about forks that have already
    ended, and any event after the call was answered or failed, change nothing.
    """
    if call.finished:
        return Decision(progress=call)
    planner = _Planner(cfg, call, now, state)
    if isinstance(event, TimerExpired) and event.timer.kind is TimerKind.MAX_RING:
        planner.ring_timeout()
        return planner.decide()
    fork_id = event.timer.fork_id if isinstance(event, TimerExpired) else event.fork_id
    live = call.live_fork(fork_id) if fork_id is not None else None
    if live is None:
        return Decision(progress=call)
    if isinstance(event, ForkAnswered):
        planner.answered(live, event)
    elif isinstance(event, TimerExpired):
        planner.no_answer(live)
    elif isinstance(event, ContactFailed) and isinstance(live.fork, RingExtension):
        planner.contact_failed(live, ((event.contact, event.status),))
    elif isinstance(live.fork, RingExtension):
        failed = {contact for contact, _ in live.failed}
        rest = tuple((c, event.status) for c in live.fork.contacts if c not in failed)
        planner.contact_failed(live, rest)
    else:
        planner.fork_failed(live, event.status)
    return planner.decide()


def should_record(cfg: ConfigSnapshot, call: CallRequest, answered_by: Fork) -> bool:
    """Whether answering ``answered_by`` starts recording: the answering or the calling extension
    has recording ON (docs/design.md section 3)."""
    if isinstance(answered_by, RingExtension):
        tenant = cfg.tenants.get(answered_by.tenant)
        user = tenant.users.get(answered_by.extension) if tenant else None
        if user is not None and user.recording:
            return True
    origin = call.origin
    if isinstance(origin, FromExtension):
        tenant = cfg.tenants.get(origin.tenant)
        caller = tenant.users.get(origin.extension) if tenant else None
        return caller is not None and caller.recording
    return False


def final_status(statuses: tuple[int, ...]) -> int:
    """The caller's final response once every branch has ended without an answer.

    All busy gives 486; every branch ending the same way passes that 4xx/6xx on (482, 403,
    404, 484, ...); anything else, a mix included, is 480. Server errors of a callee are never
    passed on (a 503 would make the carrier think this server is overloaded).
    """
    distinct = {486 if status == 600 else status for status in statuses}
    if len(distinct) == 1:
        (status,) = distinct
        if (400 <= status < 500 and status not in (401, 407, 408)) or status >= 600:
            return status
    return 480


@immutable
class _Path:
    """How a branch got where it is: forward hops used and the diversions on the way."""

    hops: int = 0
    diversions: tuple[Diversion, ...] = ()

    def forwarded(self, diversion: Diversion) -> _Path:
        return _Path(self.hops + 1, (diversion, *self.diversions))


def _extension_key(tenant: TenantConfig, extension: Extension) -> str:
    return f"{tenant.id}/{extension}"


class _Planner:
    """Builds one Decision; mutable only while that single pure call runs."""

    def __init__(
        self, cfg: ConfigSnapshot, progress: CallProgress, now: datetime, state: LineLookup
    ) -> None:
        self.cfg = cfg
        self.calls = cfg.server.calls
        self.progress = progress
        self.now = now
        self.state = state
        self.tenant: TenantConfig | None = (
            cfg.tenants.get(progress.tenant) if progress.tenant is not None else None
        )
        self.number = progress.number
        self.live: list[LiveFork] = list(progress.live)
        self.tried: dict[str, Outcome | None] = dict(progress.tried)
        self.statuses: list[int] = list(progress.branch_statuses)
        self.forks_started = progress.forks_started
        self.start: list[Fork] = []
        self.cancel: list[ForkId] = []
        self.timers: list[RingTimer] = []
        self.trace: list[str] = []
        self.final: int | None = None
        self.answered_by: ForkId | None = None
        self.record = False
        self.reaches = 0
        self.queue: deque[tuple[str, _Path, PhoneNumber | None]] = deque()

    # --- new calls -----------------------------------------------------------------------------

    def route_inbound(self, origin: FromTrunk, dialled: str) -> None:
        digits = classify_number(dialled).digits
        caller = _network_number(origin.caller) or "anonymous"
        tenant = self.cfg.tenant_for_number(digits)
        if tenant is None:
            self.trace.append(f"call from {caller} via {origin.trunk} to {digits}: not our number")
            self.end(404)
            return
        self.tenant, self.number = tenant, PhoneNumber(digits)
        self.trace.append(f"call from {caller} via {origin.trunk} to {digits} (tenant {tenant.id})")
        self.reach_number(self.number, _Path(hops=origin.prior_hops))

    def route_internal(self, origin: FromExtension, dialled: str) -> None:
        tenant = self.cfg.tenants.get(origin.tenant)
        user = tenant.users.get(origin.extension) if tenant else None
        if tenant is None or user is None:
            self.trace.append(f"{origin.tenant}/{origin.extension} is not a configured user")
            self.end(403)
            return
        self.tenant = tenant
        number = classify_number(dialled)
        digits = number.digits
        prefix = f"{origin.extension} dials {digits}"
        if number.kind is NumberKind.EXTENSION:
            if digits == origin.extension:
                self.trace.append(f"{prefix}: itself -> 486")
                self.end(486)
                return
            self.trace.append(f"{prefix} (tenant {tenant.id})")
            self.reach_extension(Extension(digits), _Path())
        elif number.kind in _EXTERNAL and digits in tenant.numbers:
            self.number = PhoneNumber(digits)
            self.trace.append(f"{prefix}: the tenant's own number, routed as an inbound call")
            self.reach_number(self.number, _Path())
        elif number.kind in _EXTERNAL:
            self.trace.append(prefix)
            self.dial_out(digits, number.kind, _Path())
        elif number.kind is NumberKind.ANNOUNCEMENT:
            self.trace.append(f"{prefix}: 009608 is only an inbound-rule target -> 404")
            self.end(404)
        elif number.kind is NumberKind.INCOMPLETE:
            self.trace.append(f"{prefix}: incomplete number -> 484")
            self.end(484)
        else:
            self.trace.append(f"{prefix}: not a number -> 404")
            self.end(404)

    # --- reaching targets ----------------------------------------------------------------------

    def reach(self, target: str, leg: _Path, rule_number: PhoneNumber | None = None) -> None:
        """Queue one target of a rule (``rule_number`` set) or a forward destination.

        Targets are reached breadth-first: all targets of a rule before any of their forwards,
        so a target that is both named by the rule and a forward destination rings as named.
        """
        self.queue.append((target, leg, rule_number))

    def drain(self) -> None:
        while self.queue:
            self.reach_now(*self.queue.popleft())

    def reach_now(self, target: str, leg: _Path, rule_number: PhoneNumber | None) -> None:
        tenant = self.tenant
        assert tenant is not None
        self.reaches += 1
        if leg.hops > self.calls.max_forward_hops:
            self.trace.append(
                f"{target}: forward hop budget ({self.calls.max_forward_hops}) used up -> 482"
            )
            self.end(482)
            return
        if self.reaches > MAX_REACHES_PER_DECISION:
            self.trace.append(f"{target}: over {MAX_REACHES_PER_DECISION} targets at once -> 482")
            self.end(482)
            return
        number = classify_number(target)
        digits = number.digits
        if number.kind is NumberKind.EXTENSION:
            self.reach_extension(Extension(digits), leg)
        elif number.kind is NumberKind.ANNOUNCEMENT:
            if rule_number is None:
                self.trace.append("009608 is only an inbound-rule target, not a forward -> 404")
                self.end(404)
            else:
                self.announce(leg)
        elif number.kind in _EXTERNAL and digits in tenant.numbers:
            if rule_number is not None:
                # A rule naming an own number is a hop too, so rule cycles terminate.
                self.reach(digits, _Path(leg.hops + 1, leg.diversions))
                return
            self.trace.append(f"{digits} is the tenant's own number: routed inside")
            self.reach_number(PhoneNumber(digits), leg)
        elif number.kind in _EXTERNAL:
            if rule_number is not None:
                diversion = Diversion(rule_number, None, "unconditional")
                leg = _Path(leg.hops, (diversion, *leg.diversions))
            self.dial_out(digits, number.kind, leg)
        elif number.kind is NumberKind.INCOMPLETE:
            self.trace.append(f"{digits}: incomplete number -> 484")
            self.end(484)
        else:
            self.trace.append(f"{target}: not a number -> 404")
            self.end(404)

    def reach_number(self, number: PhoneNumber, leg: _Path) -> None:
        """An inbound call to one of the tenant's numbers: the rule in force picks the targets."""
        tenant = self.tenant
        assert tenant is not None
        local = local_time(self.now, tenant.timezone)
        rule = find_rule(tenant.rules_for(number), local)
        when = describe_instant(local)
        if rule is None:
            self.trace.append(f"{when}: number {number} no rule in force -> 480")
            self.end(480)
            return
        window = f"{rule.start.strftime('%H:%M:%S')}-{rule.end.strftime('%H:%M:%S')}"
        self.trace.append(
            f"{when}: number {number} rule {rule.position} ({window}) -> {','.join(rule.targets)}"
        )
        for target in rule.targets:
            self.reach(target, leg, rule_number=number)

    def reach_extension(self, extension: Extension, leg: _Path) -> None:
        tenant = self.tenant
        assert tenant is not None
        user = tenant.users.get(extension)
        if user is None:
            self.trace.append(f"{extension}: no such extension -> 404")
            self.end(404)
            return
        origin = self.progress.request.origin
        if (
            isinstance(origin, FromExtension)
            and origin.tenant == tenant.id
            and origin.extension == extension
        ):
            self.trace.append(f"{extension} is the caller: skipped")
            return
        key = _extension_key(tenant, extension)
        if key in self.tried:
            outcome = self.tried[key]
            if outcome is None:
                self.trace.append(f"{extension} is already ringing")
                return
            self.trace.append(f"{extension} already tried in this call ({_LABEL[outcome]})")
            self.forward(user, outcome, leg)
            return
        contacts = self.state.contacts(tenant.id, extension)
        if not contacts:
            self.tried[key] = Outcome.OFFLINE
            self.forward(user, Outcome.OFFLINE, leg)
        elif self.state.calls_of(tenant.id, extension) >= self.calls.max_calls_per_user:
            self.tried[key] = Outcome.BUSY
            self.forward(user, Outcome.BUSY, leg)
        else:
            self.ring(user, contacts, leg)

    def forward(self, user: UserConfig, outcome: Outcome, leg: _Path, detail: str = "") -> None:
        """Replace a target that ended with ``outcome`` by its forward, or drop it."""
        extension = user.extension
        label = _LABEL[outcome] + detail
        destination = (
            getattr(user.forward, outcome.value) if outcome is not Outcome.FAILED else None
        )
        if destination is None:
            status = _DROP_STATUS[outcome]
            self.trace.append(f"{extension} {label}, no forward -> dropped ({status})")
            self.end(status)
            return
        self.trace.append(f"{extension} {label} -> forward {outcome.value} to {destination}")
        diversion = Diversion(self.public_number(user), extension, _REASON[outcome])
        self.reach(destination, leg.forwarded(diversion))

    def ring(self, user: UserConfig, contacts: tuple[ContactId, ...], leg: _Path) -> None:
        tenant = self.tenant
        assert tenant is not None
        fork = RingExtension(
            fork_id=self.new_fork_id(),
            tenant=tenant.id,
            extension=user.extension,
            contacts=contacts,
            caller=self.caller(),
            diversions=leg.diversions,
            hops=leg.hops,
        )
        fork = replace(fork, record=should_record(self.cfg, self.progress.request, fork))
        self.begin(fork, _extension_key(tenant, user.extension))
        count = len(contacts)
        text = f"ring {user.extension} ({count} contact{'s' if count != 1 else ''})"
        if user.forward.no_answer is not None:
            seconds = self.calls.no_answer_seconds
            self.timers.append(
                RingTimer(
                    kind=TimerKind.NO_ANSWER,
                    at=self.now + timedelta(seconds=seconds),
                    seconds=seconds,
                    fork_id=fork.fork_id,
                )
            )
            text += f", no answer after {seconds}s -> {user.forward.no_answer}"
        self.trace.append(text)

    def dial_out(self, digits: str, kind: NumberKind, leg: _Path) -> None:
        tenant = self.tenant
        assert tenant is not None
        if kind is NumberKind.INTERNATIONAL and not tenant.limits.international_calls:
            self.trace.append(f"{digits}: international calls are off for {tenant.id} -> 403")
            self.end(403)
            return
        key = f"tel:{digits}"
        if key in self.tried:
            self.trace.append(f"{digits} was already called in this call: dropped")
            return
        trunk = self.trunk_name()
        if trunk is None:
            self.trace.append(f"{digits}: no trunk configured -> 503")
            self.end(503)
            return
        fork = DialOut(
            fork_id=self.new_fork_id(),
            trunk=trunk,
            number=digits,
            caller_id=self.outbound_caller_id(leg),
            diversions=leg.diversions,
            hops=leg.hops,
        )
        fork = replace(fork, record=should_record(self.cfg, self.progress.request, fork))
        self.begin(fork, key)
        shown = fork.caller_id or "anonymous"
        via = ""
        if fork.diversions:
            last = fork.diversions[0]
            via = f", diversion {last.number} ({last.reason})"
        self.trace.append(f"dial out {digits} via {trunk} presenting {shown}{via}")

    def announce(self, leg: _Path) -> None:
        tenant = self.tenant
        assert tenant is not None
        key = f"{tenant.id}/009608"
        if key in self.tried:
            self.trace.append("009608: the announcement is already playing")
            return
        fork = PlayAnnouncement(fork_id=self.new_fork_id(), tenant=tenant.id, hops=leg.hops)
        fork = replace(fork, record=should_record(self.cfg, self.progress.request, fork))
        self.begin(fork, key)
        self.trace.append("009608: play the after-hours announcement")

    # --- events --------------------------------------------------------------------------------

    def answered(self, live: LiveFork, event: ForkAnswered) -> None:
        fork = live.fork
        self.answered_by = fork.fork_id
        self.record = should_record(self.cfg, self.progress.request, fork)
        self.remove(fork.fork_id)
        self.cancel.extend(other.fork.fork_id for other in self.live)
        by = _describe(fork) + (f" ({event.contact})" if event.contact else "")
        self.trace.append(
            f"{by} answered"
            + (", recording" if self.record else "")
            + (", cancel the others" if self.live else "")
        )
        self.live.clear()

    def contact_failed(self, live: LiveFork, failures: tuple[tuple[ContactId, int], ...]) -> None:
        fork = live.fork
        assert isinstance(fork, RingExtension)
        known: dict[ContactId, int] = dict(live.failed)
        for contact, status in failures:
            if contact in fork.contacts:
                known.setdefault(contact, status)
        failed = tuple((contact, known[contact]) for contact in fork.contacts if contact in known)
        if len(failed) < len(fork.contacts):
            self.replace_live(replace(live, failed=failed))
            return
        # Every contact has answered: offline when none could be offered the call, busy when
        # every one that could said busy, else failed (a refusal: no forward).
        self.remove(fork.fork_id)
        tenant = self.cfg.tenants[fork.tenant]
        self.tenant = tenant
        user = tenant.users[fork.extension]
        statuses = ", ".join(str(status) for _, status in failed)
        outcome = _contacts_outcome(tuple(status for _, status in failed))
        self.tried[_extension_key(tenant, fork.extension)] = outcome
        self.forward(user, outcome, _Path(fork.hops, fork.diversions), detail=f" ({statuses})")

    def fork_failed(self, live: LiveFork, status: int) -> None:
        self.remove(live.fork.fork_id)
        self.tried[_fork_key(live.fork)] = Outcome.FAILED
        self.trace.append(f"{_describe(live.fork)} failed ({status})")
        self.end(status)

    def no_answer(self, live: LiveFork) -> None:
        fork = live.fork
        if not isinstance(fork, RingExtension):
            return
        tenant = self.cfg.tenants[fork.tenant]
        user = tenant.users[fork.extension]
        if user.forward.no_answer is None:
            return
        self.remove(fork.fork_id)
        self.cancel.append(fork.fork_id)
        self.tried[_extension_key(tenant, fork.extension)] = Outcome.NO_ANSWER
        self.forward(
            user,
            Outcome.NO_ANSWER,
            _Path(fork.hops, fork.diversions),
            detail=f" after {self.calls.no_answer_seconds}s",
        )

    def ring_timeout(self) -> None:
        self.trace.append(f"nobody answered within {self.calls.max_ring_seconds}s -> 480")
        self.cancel.extend(live.fork.fork_id for live in self.live)
        self.live.clear()
        self.final = 480

    # --- helpers -------------------------------------------------------------------------------

    def end(self, status: int) -> None:
        """A branch ended without reaching anyone."""
        self.statuses.append(status)

    def begin(self, fork: Fork, key: str) -> None:
        self.start.append(fork)
        self.live.append(LiveFork(fork=fork, started_at=self.now))
        self.tried[key] = None

    def remove(self, fork_id: ForkId) -> None:
        self.live = [live for live in self.live if live.fork.fork_id != fork_id]

    def replace_live(self, updated: LiveFork) -> None:
        self.live = [
            updated if live.fork.fork_id == updated.fork.fork_id else live for live in self.live
        ]

    def new_fork_id(self) -> ForkId:
        self.forks_started += 1
        return ForkId(f"f{self.forks_started}")

    def caller(self) -> Caller:
        origin = self.progress.request.origin
        if isinstance(origin, FromTrunk):
            return Caller(_network_number(origin.caller))
        tenant = self.cfg.tenants.get(origin.tenant)
        user = tenant.users.get(origin.extension) if tenant else None
        return Caller(origin.extension, user.name if user else None)

    def public_number(self, user: UserConfig | None) -> PhoneNumber:
        """A user's number towards the network: its caller ID, else the number called."""
        if user is not None and user.caller_id:
            return user.caller_id
        if self.number is not None:
            return self.number
        tenant = self.tenant
        if tenant is not None and tenant.numbers:
            return tenant.numbers[0]
        return PhoneNumber(user.extension if user else "anonymous")

    def outbound_caller_id(self, leg: _Path) -> str | None:
        origin = self.progress.request.origin
        tenant = self.tenant
        assert tenant is not None
        if leg.diversions and tenant.forward_caller_id == "user":
            return leg.diversions[0].number
        if isinstance(origin, FromTrunk):
            return _network_number(origin.caller)
        caller = tenant.users.get(origin.extension)
        return self.public_number(caller)

    def trunk_name(self) -> str | None:
        trunks = self.cfg.server.trunks
        origin = self.progress.request.origin
        if isinstance(origin, FromTrunk) and any(t.name == origin.trunk for t in trunks):
            return origin.trunk
        return trunks[0].name if trunks else None

    def decide(self, arm_max_ring: bool = False) -> Decision:
        self.drain()
        final = self.final
        if final is None and self.answered_by is None and not self.live:
            final = final_status(tuple(self.statuses))
            listed = ", ".join(str(status) for status in self.statuses) or "none"
            self.trace.append(f"no target left to ring ({listed}) -> {final}")
        timers = list(self.timers)
        if arm_max_ring and final is None:
            seconds = self.calls.max_ring_seconds
            timers.append(
                RingTimer(TimerKind.MAX_RING, self.now + timedelta(seconds=seconds), seconds)
            )
        progress = replace(
            self.progress,
            tenant=self.tenant.id if self.tenant is not None else self.progress.tenant,
            number=self.number,
            live=tuple(self.live),
            tried=tuple(self.tried.items()),
            branch_statuses=tuple(self.statuses),
            forks_started=self.forks_started,
            answered_by=self.answered_by,
            final=final,
        )
        cancel = list(self.cancel)
        if final is not None:
            cancel.extend(
                live.fork.fork_id for live in self.live if live.fork.fork_id not in cancel
            )
        return Decision(
            progress=progress,
            start=tuple(self.start),
            cancel=tuple(cancel),
            timers=tuple(timers),
            final=final,
            answered=self.answered_by,
            record=self.record,
            trace=tuple(self.trace),
        )


def _fork_key(fork: Fork) -> str:
    if isinstance(fork, RingExtension):
        return f"{fork.tenant}/{fork.extension}"
    if isinstance(fork, DialOut):
        return f"tel:{fork.number}"
    return f"{fork.tenant}/009608"


def _describe(fork: Fork) -> str:
    if isinstance(fork, RingExtension):
        return fork.extension
    if isinstance(fork, DialOut):
        return fork.number
    return "009608"


def _network_number(number: str | None) -> str | None:
    """A caller's number as received, in national form when it is a number at all."""
    if not number:
        return None
    classified = classify_number(number)
    return classified.digits if classified.kind in _EXTERNAL else number


def _contacts_outcome(statuses: tuple[int, ...]) -> Outcome:
    """How an extension ended when every contact failed with ``statuses``: OFFLINE when all
    were unreachable, BUSY when the rest said busy, else FAILED."""
    if all(status in UNREACHABLE_STATUSES for status in statuses):
        return Outcome.OFFLINE
    if all(status in BUSY_STATUSES or status in UNREACHABLE_STATUSES for status in statuses):
        return Outcome.BUSY
    return Outcome.FAILED
