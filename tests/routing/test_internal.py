"""Calls placed by extensions: to extensions, to own numbers, out through the trunk."""

from __future__ import annotations

from datetime import datetime

import pytest

from pbx.config.model import ConfigSnapshot, Extension, TenantId
from pbx.routing import (
    Caller,
    CallRequest,
    ContactId,
    Decision,
    DialOut,
    FromTrunk,
    LineState,
    RingExtension,
    should_record,
    start_call,
)
from tests.routing.builders import (
    NUMBER,
    forks,
    from_ext,
    lines,
    manual_rules,
    rule,
    snapshot,
    tenant,
    tokyo,
    user,
)

NOON = tokyo("2026-11-20 12:00:00")
NIGHT = tokyo("2026-11-20 03:00:00")
USERS = [
    user("1001", recording=True, name="佐藤"),
    user("1002", caller_id=None),
    user("1003", caller_id="0312340000"),
]
ACME = snapshot(tenant(numbers=[NUMBER, "0312340000"], users=USERS, incoming=manual_rules()))
ONLINE = lines(["1001", "1002", "1003"])


def dial(
    dialled: str,
    caller: str = "1001",
    cfg: ConfigSnapshot = ACME,
    at: datetime = NOON,
    state: LineState = ONLINE,
    tenant_id: str = "acme",
) -> Decision:
    return start_call(cfg, CallRequest(from_ext(caller, tenant_id), dialled), at, state)


def test_extension_to_extension_presents_the_calling_extension() -> None:
    decision = dial("1002")
    (fork,) = decision.start
    assert isinstance(fork, RingExtension)
    assert fork.extension == "1002"
    assert fork.contacts == ("1002-a",)
    assert fork.caller == Caller("1001", "佐藤")
    assert fork.record is True  # the calling extension records
    assert decision.trace[0] == "1001 dials 1002 (tenant acme)"


@pytest.mark.parametrize(
    ("dialled", "final"),
    [
        ("1001", 486),  # itself
        ("1099", 404),  # no such extension
        ("03123", 484),  # incomplete
        ("9000", 484),  # not an extension, could grow into a number
        ("alice", 404),
        ("009608", 404),  # the announcement is only an inbound-rule target
    ],
)
def test_dial_errors(dialled: str, final: int) -> None:
    decision = dial(dialled)
    assert decision.start == ()
    assert decision.final == final


@pytest.mark.parametrize(
    ("caller", "number", "presented"),
    [
        ("1001", "09012345678", NUMBER),
        ("1003", "0120123456", "0312340000"),
        ("1002", "110", NUMBER),  # no caller_id of its own: the tenant's first number
        ("1001", "+81612345678", NUMBER),
        ("1001", "00330312345678", NUMBER),  # carrier prefix, domestic
    ],
)
def test_external_numbers_go_out_presenting_the_users_caller_id(
    caller: str, number: str, presented: str | None
) -> None:
    decision = dial(number, caller=caller)
    (out,) = decision.start
    assert isinstance(out, DialOut)
    assert out.caller_id == presented
    assert out.diversions == ()
    assert out.trunk == "carrier"
    assert out.number == number.replace("+81", "0")


@pytest.mark.parametrize("number", ["0101212345678", "+12125551234", "0033010441234567890"])
def test_international_calls_are_refused_while_the_tenant_has_them_off(number: str) -> None:
    decision = dial(number)
    assert decision.start == ()
    assert decision.final == 403
    assert "international calls are off for acme -> 403" in decision.trace[-2]


@pytest.mark.parametrize("number", ["0101212345678", "+12125551234", "0033010441234567890"])
def test_international_calls_go_out_when_allowed(number: str) -> None:
    cfg = snapshot(tenant(users=USERS, incoming=manual_rules(), international_calls=True))
    decision = dial(number, cfg=cfg)
    assert forks(decision) == (f"out:{number}",)


def test_international_forward_target_is_refused_when_off() -> None:
    cfg = snapshot(
        tenant(
            users=[user("1001", offline="0101212345678")],
            incoming=[rule(1, "1001", "0:00:00", "23:59:59")],
        )
    )
    decision = start_call(
        cfg, CallRequest(FromTrunk("carrier", "0311112222"), NUMBER), NOON, lines()
    )
    assert decision.final == 403


def test_dialing_an_own_number_reaches_it_as_an_inbound_call() -> None:
    decision = dial(NUMBER)
    assert forks(decision) == ("1002",)  # 1001 is the caller: not rung
    assert "1001 is the caller: skipped" in decision.trace
    assert any("number 0312345678 rule 1" in line for line in decision.trace)
    assert forks(dial(NUMBER, at=NIGHT)) == ("009608",)
    assert dial("0312340000").final == 480  # a number without rules


def test_recording_when_either_side_records() -> None:
    ring_1002 = dial("1002").start[0]
    ring_1001 = dial("1001", caller="1002").start[0]
    ring_1003 = dial("1003", caller="1002").start[0]
    assert should_record(ACME, CallRequest(from_ext("1001"), "1002"), ring_1002)
    assert should_record(ACME, CallRequest(from_ext("1002"), "1001"), ring_1001)
    assert not should_record(ACME, CallRequest(from_ext("1002"), "1003"), ring_1003)
    out = dial("09012345678").start[0]
    assert out.record is True
    assert dial("09012345678", caller="1002").start[0].record is False


BETA_NUMBER = "0598765432"
TWO = snapshot(
    tenant("acme", users=[user("1001", recording=True), user("1002")], incoming=manual_rules()),
    tenant(
        "beta",
        numbers=[BETA_NUMBER],
        users=[
            user("1001", caller_id=BETA_NUMBER, busy="1002"),
            user("1002", caller_id=BETA_NUMBER),
        ],
        incoming=[rule(1, "1001", "0:00:00", "23:59:59", number=BETA_NUMBER)],
    ),
)


def test_two_tenants_with_the_same_extension_stay_apart() -> None:
    state = LineState(
        registered={
            (TenantId("acme"), Extension("1001")): (ContactId("acme-1001"),),
            (TenantId("beta"), Extension("1001")): (ContactId("beta-1001"),),
            (TenantId("beta"), Extension("1002")): (ContactId("beta-1002"),),
        },
        calls={(TenantId("acme"), Extension("1001")): 1},  # acme's 1001 is on a call
    )
    inbound = start_call(
        TWO, CallRequest(FromTrunk("carrier", "0311112222"), BETA_NUMBER), NOON, state
    )
    (fork,) = inbound.start
    assert isinstance(fork, RingExtension)
    assert (fork.tenant, fork.extension, fork.contacts) == ("beta", "1001", ("beta-1001",))
    assert fork.record is False  # acme's 1001 records, beta's does not
    internal = start_call(TWO, CallRequest(from_ext("1002", "beta"), "1001"), NOON, state)
    assert [(getattr(f, "tenant", None), getattr(f, "contacts", None)) for f in internal.start] == [
        ("beta", ("beta-1001",))
    ]
    acme = start_call(TWO, CallRequest(from_ext("1002", "acme"), "1001"), NOON, state)
    assert acme.final == 486  # acme's 1001 is busy and has no busy forward


def test_unknown_calling_user_is_refused() -> None:
    assert dial("1002", caller="1999").final == 403
