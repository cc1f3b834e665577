"""Busy, offline and no-answer forwarding, chains, hop budget, final statuses, recording."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from pbx.config.model import CallSettings, ConfigSnapshot, Extension, PhoneNumber
from pbx.routing import (
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
    FromTrunk,
    LineState,
    RingExtension,
    RingTimer,
    TimerExpired,
    TimerKind,
    next_step,
    start_call,
)
from tests.routing.builders import (
    NUMBER,
    forks,
    from_ext,
    from_trunk,
    lines,
    manual_rules,
    rule,
    snapshot,
    tenant,
    tokyo,
    user,
)

OSAKA = "0612345678"
MOBILE = "09012345678"
NOON = tokyo("2026-11-20 12:00:00")
EVENING = tokyo("2026-11-20 21:00:00")

# The demo tenant's users (config/tenants/acme.toml), daytime rule rings 1001 and 1002.
ACME_USERS = [
    user("1001", recording=True, busy="1002", no_answer=MOBILE, offline="1003", name="佐藤"),
    user("1002", no_answer="1004"),
    user("1003", offline=MOBILE),
    user("1004", caller_id=OSAKA),
]
ACME = snapshot(
    tenant(
        numbers=[NUMBER, OSAKA],
        users=ACME_USERS,
        incoming=[*manual_rules(), rule(4, "1004", "0:00:00", "23:59:59", number=OSAKA)],
    )
)
PLAIN = snapshot(tenant(users=[user("1001"), user("1002")], incoming=manual_rules()))
EVERYONE = ["1001", "1002", "1003", "1004"]


def inbound(
    cfg: ConfigSnapshot = ACME,
    at: datetime = NOON,
    state: LineState | None = None,
    number: str = NUMBER,
    caller: str = "09011112222",
) -> Decision:
    state = state if state is not None else lines(EVERYONE)
    return start_call(cfg, CallRequest(from_trunk(caller), number), at, state)


@dataclass
class Call:
    """Drives one call through next_step, as the call engine would."""

    cfg: ConfigSnapshot
    decision: Decision
    state: LineState = field(default_factory=LineState)
    at: datetime = NOON
    all_timers: list[RingTimer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.all_timers.extend(self.decision.timers)

    @property
    def progress(self) -> CallProgress:
        return self.decision.progress

    def ring(self, extension: str) -> RingExtension:
        """The live extension fork of ``extension``."""
        fork = self.fork(extension)
        assert isinstance(fork, RingExtension)
        return fork

    def fork(self, extension_or_number: str) -> Fork:
        for live in self.progress.live:
            fork = live.fork
            name = (
                fork.extension if isinstance(fork, RingExtension) else getattr(fork, "number", "")
            )
            if name == extension_or_number:
                return fork
        raise AssertionError(f"{extension_or_number} is not ringing")

    def send(self, event: ForkEnded) -> Decision:
        self.decision = next_step(self.cfg, self.progress, event, self.at, self.state)
        self.all_timers.extend(self.decision.timers)
        return self.decision

    def fail_contacts(self, extension: str, *statuses: int) -> Decision:
        fork = self.fork(extension)
        assert isinstance(fork, RingExtension)
        for contact, status in zip(fork.contacts, statuses, strict=False):
            self.send(ContactFailed(fork.fork_id, contact, status))
        return self.decision

    def no_answer(self, extension: str) -> Decision:
        fork_id = self.fork(extension).fork_id
        timers = [t for t in self.all_timers if t.fork_id == fork_id]
        assert timers, f"no no-answer timer for {extension}"
        return self.send(TimerExpired(timers[0]))


def drive(decision: Decision, cfg: ConfigSnapshot = ACME, state: LineState | None = None) -> Call:
    return Call(cfg, decision, state if state is not None else lines(EVERYONE))


# --- busy and offline, decided when the call reaches the target ---------------------------------


def test_everyone_free_rings_both_targets_with_no_answer_timers() -> None:
    decision = inbound()
    assert forks(decision) == ("1001", "1002")
    kinds = sorted(t.kind.value for t in decision.timers)
    assert kinds == ["max_ring", "no_answer", "no_answer"]
    assert all(t.seconds == 20 for t in decision.timers if t.kind is TimerKind.NO_ANSWER)
    assert "ring 1001 (1 contact), no answer after 20s -> 09012345678" in decision.trace


def test_busy_extension_forwarding_to_a_ringing_target_rings_it_once() -> None:
    decision = inbound(state=lines(EVERYONE, busy=["1001"]))
    assert forks(decision) == ("1002",)
    assert "1001 busy -> forward busy to 1002" in decision.trace
    assert "1002 is already ringing" in decision.trace


def test_offline_extension_is_replaced_by_its_offline_forward() -> None:
    decision = inbound(state=lines(["1002", "1003"]))
    assert forks(decision) == ("1002", "1003")
    ring_1003 = decision.start[1]
    assert isinstance(ring_1003, RingExtension)
    assert ring_1003.hops == 1
    assert ring_1003.diversions == (
        Diversion(PhoneNumber(NUMBER), Extension("1001"), "unavailable"),
    )
    assert "1001 offline -> forward offline to 1003" in decision.trace


def test_forward_chain_ends_on_an_external_number_with_diversions() -> None:
    decision = inbound(state=lines(["1002"]))  # 1001 -> 1003 (offline) -> mobile
    assert forks(decision) == ("1002", f"out:{MOBILE}")
    out = decision.start[1]
    assert isinstance(out, DialOut)
    assert out.trunk == "carrier"
    assert out.caller_id == "09011112222"  # the original caller (forward_caller_id = original)
    assert out.hops == 2
    assert [(d.extension, d.reason) for d in out.diversions] == [
        ("1003", "unavailable"),
        ("1001", "unavailable"),
    ]


def test_forward_caller_id_user_presents_the_forwarding_users_number() -> None:
    cfg = snapshot(
        tenant(
            users=[user("1001", caller_id="0312340000", offline=MOBILE)],
            numbers=[NUMBER, "0312340000"],
            incoming=[rule(1, "1001", "0:00:00", "23:59:59")],
            forward_caller_id="user",
        )
    )
    decision = inbound(cfg, state=lines([]))
    (out,) = decision.start
    assert isinstance(out, DialOut)
    assert out.caller_id == "0312340000"
    assert out.diversions == (
        Diversion(PhoneNumber("0312340000"), Extension("1001"), "unavailable"),
    )


@pytest.mark.parametrize(
    ("busy", "registered", "final"),
    [
        (["1001", "1002"], ["1001", "1002"], 486),  # all busy, no forward
        ([], [], 480),  # all offline
        (["1001"], ["1001"], 480),  # one busy, one offline: a mix
    ],
)
def test_targets_without_forwards_end_the_call(
    busy: list[str], registered: list[str], final: int
) -> None:
    decision = inbound(PLAIN, state=lines(registered, busy=busy))
    assert decision.start == ()
    assert decision.final == final
    assert decision.timers == ()
    assert decision.trace[-1].endswith(f"-> {final}")


def test_busy_at_max_calls_per_user_only() -> None:
    cfg = snapshot(
        tenant(users=[user("1001"), user("1002")], incoming=manual_rules()),
        calls=CallSettings(max_calls_per_user=2),
    )
    decision = inbound(cfg, state=lines(["1001", "1002"], busy=["1001"]))  # 1 call of 2
    assert forks(decision) == ("1001", "1002")


# --- what happens as forks end ----------------------------------------------------------------


def test_extension_is_busy_only_when_all_its_contacts_say_busy() -> None:
    call = drive(inbound(PLAIN, state=lines({"1001": 2, "1002": 1})), PLAIN)
    first = call.ring("1001")
    decision = call.send(ContactFailed(first.fork_id, first.contacts[0], 486))
    assert decision.start == ()
    assert decision.final is None
    assert decision.cancel == ()
    assert call.progress.live_fork(first.fork_id) is not None  # the app still rings
    decision = call.send(ContactFailed(first.fork_id, first.contacts[1], 600))
    assert decision.final is None  # 1002 still rings
    assert "1001 busy (486, 600), no forward -> dropped (486)" in decision.trace
    decision = call.fail_contacts("1002", 486)
    assert decision.final == 486


def test_contacts_failing_without_all_being_busy_is_not_busy() -> None:
    call = drive(inbound(PLAIN, state=lines({"1001": 2})), PLAIN)
    decision = call.fail_contacts("1001", 486, 603)  # 603 Decline: a refusal, not busy
    assert decision.final == 480
    assert "1001 failed (486, 603), no forward -> dropped (480)" in decision.trace


def test_busy_by_contacts_follows_the_busy_forward() -> None:
    call = drive(inbound())
    decision = call.fail_contacts("1002", 486)  # 1002 has no busy forward: dropped
    assert decision.start == ()
    decision = call.fail_contacts("1001", 486)  # 1001 busy -> 1002, which already ended busy
    assert "1001 busy (486) -> forward busy to 1002" in decision.trace
    assert "1002 already tried in this call (busy)" in decision.trace
    assert decision.final == 486


def test_no_answer_replaces_only_forks_with_a_no_answer_forward() -> None:
    cfg = snapshot(
        tenant(
            users=[user("1001", no_answer="1003"), user("1002"), user("1003")],
            incoming=manual_rules(),
        )
    )
    decision = inbound(cfg)
    assert [t.fork_id for t in decision.timers if t.kind is TimerKind.NO_ANSWER] == ["f1"]
    call = drive(decision, cfg)
    decision = call.no_answer("1001")
    assert decision.cancel == (ForkId("f1"),)
    assert forks(decision) == ("1003",)
    assert "1001 no answer after 20s -> forward no_answer to 1003" in decision.trace
    assert {getattr(live.fork, "extension", None) for live in call.progress.live} == {
        "1002",
        "1003",
    }


def test_no_answer_forward_to_an_external_number() -> None:
    call = drive(inbound())
    decision = call.no_answer("1001")
    (out,) = decision.start
    assert isinstance(out, DialOut)
    assert out.number == MOBILE
    assert out.caller_id == "09011112222"
    assert out.diversions == (Diversion(PhoneNumber(NUMBER), Extension("1001"), "no-answer"),)
    assert out.record is False  # neither the callee (external) nor the caller is an extension


def test_forward_to_an_own_number_routes_inside_as_an_inbound_call() -> None:
    call = drive(inbound())
    decision = call.no_answer("1002")  # an extension forward first, as a contrast
    assert forks(decision) == ("1004",)
    assert not any("routed inside" in line for line in decision.trace)
    cfg = snapshot(
        tenant(
            numbers=[NUMBER, OSAKA],
            users=[user("1001", no_answer=OSAKA), user("1004")],
            incoming=[
                rule(1, "1001", "0:00:00", "23:59:59"),
                rule(2, "1004", "0:00:00", "23:59:59", number=OSAKA),
            ],
        )
    )
    call = drive(inbound(cfg, state=lines(["1001", "1004"])), cfg)
    decision = call.no_answer("1001")
    assert forks(decision) == ("1004",)
    assert "0612345678 is the tenant's own number: routed inside" in decision.trace
    assert any("number 0612345678 rule 2" in line for line in decision.trace)
    assert not any(isinstance(f, DialOut) for f in decision.start)  # never hairpinned


def test_max_ring_ends_the_call_with_480_and_cancels_everything() -> None:
    decision = inbound()
    (max_ring,) = [t for t in decision.timers if t.kind is TimerKind.MAX_RING]
    call = drive(decision)
    decision = call.send(TimerExpired(max_ring))
    assert decision.final == 480
    assert set(decision.cancel) == {ForkId("f1"), ForkId("f2")}
    assert decision.trace == ("nobody answered within 60s -> 480",)


def test_outbound_fork_failure_status_is_passed_on_when_it_is_the_only_branch() -> None:
    cfg = snapshot(tenant(users=[], incoming=[rule(1, MOBILE, "0:00:00", "23:59:59")]))
    decision = inbound(cfg)
    (out,) = decision.start
    assert isinstance(out, DialOut)
    assert out.diversions == (Diversion(PhoneNumber(NUMBER), None, "unconditional"),)
    call = drive(decision, cfg)
    assert call.send(ForkFailed(out.fork_id, 486)).final == 486
    call = drive(decision, cfg)
    assert call.send(ForkFailed(out.fork_id, 503)).final == 480  # never a 503 upstream


def test_answer_cancels_the_other_forks_and_decides_recording() -> None:
    call = drive(inbound())
    decision = call.send(ForkAnswered(call.fork("1001").fork_id, ContactId("1001-a")))
    assert decision.answered == "f1"
    assert decision.record is True  # 1001 has recording ON
    assert decision.cancel == (ForkId("f2"),)
    call = drive(inbound())
    decision = call.send(ForkAnswered(call.fork("1002").fork_id))
    assert decision.record is False
    assert decision.cancel == (ForkId("f1"),)
    # Anything after the answer changes nothing.
    assert call.send(ForkFailed(ForkId("f1"), 487)) == Decision(progress=call.progress)


def test_stale_events_change_nothing() -> None:
    call = drive(inbound())
    decision = call.send(ForkFailed(ForkId("f9"), 486))
    assert decision.start == ()
    assert decision.final is None
    assert decision.trace == ()
    call.fail_contacts("1001", 486)  # 1001 busy -> 1002 already ringing
    stale = [t for t in call.all_timers if t.fork_id == "f1"]
    assert call.send(TimerExpired(stale[0])).start == ()


# --- the hop budget ---------------------------------------------------------------------------

LOOP = snapshot(
    tenant(
        numbers=[NUMBER, OSAKA],
        users=[user("1005", offline=OSAKA, busy=OSAKA), user("1006", busy=NUMBER)],
        incoming=[
            rule(1, "1006", "0:00:00", "23:59:59"),
            rule(2, "1005", "0:00:00", "23:59:59", number=OSAKA),
        ],
    )
)


def test_loop_through_an_own_number_is_stopped_by_the_hop_budget() -> None:
    decision = inbound(LOOP, number=OSAKA, state=lines([]))
    assert decision.start == ()
    assert decision.final == 482
    forwards = [line for line in decision.trace if "-> forward offline to" in line]
    assert len(forwards) == 6  # hops 1..5 allowed, the 6th is refused
    assert "1005: forward hop budget (5) used up -> 482" not in decision.trace
    assert decision.trace[-2] == "0612345678: forward hop budget (5) used up -> 482"


def test_hop_budget_is_configurable() -> None:
    cfg = snapshot(*LOOP.tenants.values(), calls=CallSettings(max_forward_hops=2))
    decision = inbound(cfg, number=OSAKA, state=lines([]))
    assert decision.final == 482
    assert len([line for line in decision.trace if "forward offline to" in line]) == 3


def test_busy_loop_found_while_ringing_is_stopped_by_the_hop_budget() -> None:
    # 1006 rings; busy -> own number 0312345678 -> rule rings 1006 again: already tried, busy.
    call = drive(inbound(LOOP, state=lines(["1006"])), LOOP)
    assert forks(call.decision) == ("1006",)
    decision = call.fail_contacts("1006", 486)
    assert decision.start == ()
    assert decision.final == 482
    assert decision.trace.count("1006 already tried in this call (busy)") == 5


def test_hops_made_before_the_call_reached_us_count() -> None:
    request = CallRequest(FromTrunk("carrier", "09011112222", prior_hops=5), OSAKA)
    decision = start_call(LOOP, request, NOON, lines(["1005"]))
    assert forks(decision) == ("1005",)  # ringing is not a hop
    call = drive(decision, LOOP, lines(["1005"]))
    assert call.fail_contacts("1005", 486).final == 482


def test_rule_pointing_at_its_own_number_terminates() -> None:
    cfg = snapshot(tenant(users=[], incoming=[rule(1, NUMBER, "0:00:00", "23:59:59")]))
    decision = inbound(cfg)
    assert decision.final == 482


# --- recording ----------------------------------------------------------------------------------


def test_recording_flag_per_fork() -> None:
    decision = inbound()
    record = {
        fork.extension: fork.record for fork in decision.start if isinstance(fork, RingExtension)
    }
    assert record == {"1001": True, "1002": False}


def test_internal_call_forwarded_out_presents_the_callers_public_number() -> None:
    cfg = snapshot(
        tenant(
            numbers=[NUMBER, OSAKA],
            users=[user("1001", caller_id=OSAKA), user("1002", busy=MOBILE)],
        )
    )
    request = CallRequest(from_ext("1001"), "1002")
    decision = start_call(cfg, request, NOON, lines(["1001", "1002"], busy=["1002"]))
    (out,) = decision.start
    assert isinstance(out, DialOut)
    assert out.caller_id == OSAKA  # the calling extension's caller_id, not "1001"
    assert out.diversions == (Diversion(PhoneNumber(NUMBER), Extension("1002"), "user-busy"),)


def test_trunk_caller_in_international_form_is_shown_nationally() -> None:
    decision = inbound(caller="+819011112222", state=lines(["1002"]))
    ring = next(f for f in decision.start if isinstance(f, RingExtension))
    assert ring.caller.number == "09011112222"
    out = next(f for f in decision.start if isinstance(f, DialOut))
    assert out.caller_id == "09011112222"


# --- table: (state, events) -> the last decision ---------------------------------------------

# Script steps: ("fail", ext, status...) one status per contact; ("no_answer", ext); ("max_ring",);
# ("answer", ext). Expected: forks started by the last step, extensions/numbers it cancels, final.
BOTH = {"1001": 1, "1002": 1, "1004": 1}
TWO_APPS = {"1001": 2, "1002": 1}
TABLE = [
    ("1002 busy, 1001 rings", BOTH, ["1002"], [], ("1001",), (), None),
    ("1001 busy by contacts", TWO_APPS, [], [("fail", "1001", 486, 600)], (), (), None),
    ("1001 one contact busy", TWO_APPS, [], [("fail", "1001", 486)], (), (), None),
    ("1001 no answer", BOTH, [], [("no_answer", "1001")], (f"out:{MOBILE}",), ("1001",), None),
    ("1002 no answer", BOTH, [], [("no_answer", "1002")], ("1004",), ("1002",), None),
    ("forward rings then busy", {"1002": 1, "1003": 1}, [], [("fail", "1003", 486)], (), (), None),
    ("all end busy", BOTH, [], [("fail", "1002", 486), ("fail", "1001", 486)], (), (), 486),
    ("mobile fails after no answer", BOTH, [],
     [("no_answer", "1001"), ("fail", MOBILE, 404), ("fail", "1002", 486)], (), (), 480),
    ("max ring", BOTH, [], [("max_ring",)], (), ("1001", "1002"), 480),
    ("answer", BOTH, [], [("answer", "1002")], (), ("1001",), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("registered", "busy", "script", "started", "cancelled", "final"),
    [case[1:] for case in TABLE],
    ids=[case[0] for case in TABLE],
)
def test_event_table(
    registered: Any,
    busy: list[str],
    script: list[Any],
    started: Any,
    cancelled: Any,
    final: int | None,
) -> None:
    state = lines(registered, busy=busy)
    call = drive(inbound(state=state), state=state)
    names = {}
    for live in call.progress.live:
        fork = live.fork
        names[fork.fork_id] = (
            fork.extension if isinstance(fork, RingExtension) else getattr(fork, "number", "")
        )
    for step in script:
        if step[0] == "fail" and step[1].startswith("0"):
            call.send(ForkFailed(call.fork(step[1]).fork_id, step[2]))
        elif step[0] == "fail":
            call.fail_contacts(step[1], *step[2:])
        elif step[0] == "no_answer":
            call.no_answer(step[1])
        elif step[0] == "max_ring":
            (timer,) = [t for t in call.all_timers if t.kind is TimerKind.MAX_RING]
            call.send(TimerExpired(timer))
        else:
            call.send(ForkAnswered(call.fork(step[1]).fork_id))
        for fork in call.decision.start:
            names[fork.fork_id] = (
                fork.extension if isinstance(fork, RingExtension) else getattr(fork, "number", "")
            )
    decision = call.decision
    assert forks(decision) == started
    assert tuple(names[f] for f in decision.cancel) == cancelled
    assert decision.final == final
