"""Properties of the routing core over generated configurations, line states and events."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbx.config.model import (
    WEEKDAYS,
    CallSettings,
    ConfigSnapshot,
    DayName,
    Extension,
    IncomingRule,
    PhoneNumber,
    TenantId,
)
from pbx.routing import (
    CallRequest,
    ContactFailed,
    Decision,
    ForkAnswered,
    ForkFailed,
    FromExtension,
    FromTrunk,
    LineState,
    RingExtension,
    TimerExpired,
    TimerKind,
    next_step,
    rules_in_force,
    start_call,
)
from pbx.routing.calendar import day_kind, local_time
from tests.routing.builders import lines, snapshot, tenant, user

DAY_KINDS: tuple[DayName, ...] = (*WEEKDAYS, "holiday")
ZONES = ("Asia/Tokyo", "America/New_York", "Europe/London", "Pacific/Auckland", "UTC")
NUMBERS = ("0312345678", "0612345678")
EXTENSIONS = ("1000", "1001", "1002", "1003", "1004", "1005")
EXTERNALS = ("09012345678", "0101212345678")


def _clock(second: int) -> time:
    return time(second // 3600, second // 60 % 60, second % 60)


@st.composite
def valid_rules(draw: st.DrawFn, number: str = NUMBERS[0]) -> list[IncomingRule]:
    """Rules that never overlap within a day kind (what the loader accepts).

    The day is cut into disjoint windows; each window's day kinds are split among rules.
    """
    cuts = sorted(draw(st.sets(st.integers(0, 86399), min_size=1, max_size=8)))
    bounds = [*cuts, 86400]
    rules: list[IncomingRule] = []
    for start, stop in itertools.pairwise(bounds):
        end = draw(st.integers(start, stop - 1))
        owners = draw(st.lists(st.integers(0, 2), min_size=len(DAY_KINDS), max_size=len(DAY_KINDS)))
        for owner in set(owners):
            days = frozenset(d for d, o in zip(DAY_KINDS, owners, strict=True) if o == owner)
            if draw(st.booleans()):
                rules.append(
                    IncomingRule(
                        position=len(rules) + 1,
                        number=PhoneNumber(number),
                        targets=("1001",),
                        days=days,
                        start=_clock(start),
                        end=_clock(end),
                    )
                )
    return rules


instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)


@settings(deadline=None)
@given(rules=valid_rules(), now=instants, zone=st.sampled_from(ZONES))
def test_at_most_one_rule_matches_any_instant(
    rules: list[IncomingRule], now: datetime, zone: str
) -> None:
    assert len(rules_in_force(rules, local_time(now, zone))) <= 1


@settings(deadline=None)
@given(
    rules=valid_rules(),
    day=st.dates(min_value=datetime(2025, 1, 1).date(), max_value=datetime(2027, 12, 31).date()),
)
def test_window_edges_are_inclusive_to_the_second(rules: list[IncomingRule], day: date) -> None:
    has_holiday_rules = any("holiday" in rule.days for rule in rules)
    for rule in rules:
        start = datetime.combine(day, rule.start).replace(tzinfo=UTC)
        end = datetime.combine(day, rule.end).replace(tzinfo=UTC)
        if not day_kind(start).applies(rule, has_holiday_rules):
            assert rule not in rules_in_force(rules, start)
            continue
        assert rules_in_force(rules, start) == (rule,)
        assert rules_in_force(rules, end + timedelta(microseconds=999_999)) == (rule,)
        before, after = start - timedelta(seconds=1), end + timedelta(seconds=1)
        if before.date() == day:
            assert rule not in rules_in_force(rules, before)
        if after.date() == day:
            assert rule not in rules_in_force(rules, after)


target = st.sampled_from((*EXTENSIONS, *NUMBERS, *EXTERNALS, "009608"))
forward = st.one_of(st.none(), st.sampled_from((*EXTENSIONS, *NUMBERS, *EXTERNALS)))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ConfigSnapshot, CallRequest, LineState]:
    users = [
        user(
            ext,
            recording=draw(st.booleans()),
            busy=draw(forward),
            no_answer=draw(forward),
            offline=draw(forward),
        )
        for ext in EXTENSIONS
    ]
    incoming = [
        IncomingRule(
            position=i + 1,
            number=PhoneNumber(number),
            targets=tuple(draw(st.lists(target, min_size=1, max_size=4))),
            days=frozenset(DAY_KINDS),
            start=time(0, 0, 0),
            end=time(23, 59, 59),
        )
        for i, number in enumerate(NUMBERS)
    ]
    cfg = snapshot(
        tenant(
            numbers=NUMBERS,
            users=users,
            incoming=incoming,
            international_calls=draw(st.booleans()),
            forward_caller_id=draw(st.sampled_from(("original", "user"))),
        ),
        calls=CallSettings(max_forward_hops=draw(st.integers(0, 5))),
    )
    registered = {ext: draw(st.integers(0, 3)) for ext in EXTENSIONS}
    busy = draw(st.lists(st.sampled_from(EXTENSIONS), unique=True))
    state = lines({e: n for e, n in registered.items() if n}, busy=busy)
    if draw(st.booleans()):
        origin: FromTrunk | FromExtension = FromTrunk("carrier", "0311112222")
        dialled = draw(st.sampled_from(NUMBERS))
    else:
        origin = FromExtension(
            tenant=TenantId("acme"), extension=Extension(draw(st.sampled_from(EXTENSIONS)))
        )
        dialled = draw(target)
    return cfg, CallRequest(origin, dialled), state


NOW = datetime(2026, 11, 20, 3, 0, 0, tzinfo=UTC)


def _check_unique_contacts(decisions: list[Decision]) -> None:
    rung = [
        (fork.tenant, contact)
        for decision in decisions
        for fork in decision.start
        if isinstance(fork, RingExtension)
        for contact in fork.contacts
    ]
    assert len(rung) == len(set(rung)), f"a contact rang twice: {rung}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), data=st.data())
def test_calls_terminate_and_never_ring_a_contact_twice(
    scenario: tuple[ConfigSnapshot, CallRequest, LineState], data: st.DataObject
) -> None:
    cfg, request, state = scenario
    decision = start_call(cfg, request, NOW, state)
    decisions = [decision]
    timers = list(decision.timers)
    steps = 0
    while not decision.progress.finished:
        steps += 1
        assert steps < 200, "the call never ended"
        live = decision.progress.live
        assert live, "no fork alive but no final response"
        fork = data.draw(st.sampled_from([entry.fork for entry in live]))
        pending = [t for t in timers if t.fork_id == fork.fork_id]
        choice = data.draw(st.sampled_from(("contact", "fork", "timer", "answer")))
        if choice == "answer" and data.draw(st.integers(0, 9)) == 0:
            event: object = ForkAnswered(fork.fork_id)
        elif choice == "timer" and pending:
            event = TimerExpired(pending[0])
        elif choice == "contact" and isinstance(fork, RingExtension):
            contact = data.draw(st.sampled_from(fork.contacts))
            event = ContactFailed(
                fork.fork_id, contact, data.draw(st.sampled_from((486, 600, 408, 603)))
            )
        else:
            event = ForkFailed(fork.fork_id, data.draw(st.sampled_from((486, 404, 480, 503))))
        decision = next_step(cfg, decision.progress, event, NOW, state)  # type: ignore[arg-type]
        decisions.append(decision)
        timers.extend(decision.timers)
        # No fork starts beyond the hop budget.
        for started in decision.start:
            assert started.hops <= cfg.server.calls.max_forward_hops
    _check_unique_contacts(decisions)
    final = decisions[-1]
    assert (final.final is None) != (final.answered is None)
    if final.final is not None:
        assert 400 <= final.final < 700


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios())
def test_max_ring_always_ends_an_unanswered_call(
    scenario: tuple[ConfigSnapshot, CallRequest, LineState],
) -> None:
    cfg, request, state = scenario
    decision = start_call(cfg, request, NOW, state)
    if decision.final is not None:
        assert decision.start == ()
        return
    (max_ring,) = [t for t in decision.timers if t.kind is TimerKind.MAX_RING]
    ended = next_step(cfg, decision.progress, TimerExpired(max_ring), NOW, state)
    assert ended.final == 480
    assert set(ended.cancel) == {live.fork.fork_id for live in decision.progress.live}


def test_line_state_is_frozen() -> None:
    state = LineState(registered={}, calls={})
    assert state.contacts("acme", "1001") == ()  # type: ignore[arg-type]
