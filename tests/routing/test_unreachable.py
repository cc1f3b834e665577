"""Issue 15: a fork whose every contact fails without anyone offered the call takes the
extension's offline forward (docs/design.md 3, "A fork whose contacts all fail")."""

from __future__ import annotations

import pytest

from pbx.routing.model import ContactFailed, DialOut, RingExtension
from pbx.routing.router import BUSY_STATUSES, UNREACHABLE_STATUSES
from tests.routing.builders import forks, lines, rule, snapshot, tenant, user
from tests.routing.test_forwarding import ACME, MOBILE, PLAIN, drive, inbound

ALL_DAY = ("0:00:00", "23:59:59")
# The number rings 1001 alone; 1001 has two contacts (an app and a desk phone).
ALONE = snapshot(
    tenant(
        users=[user("1001", busy="1002", offline="1003"), user("1002"), user("1003")],
        incoming=[rule(1, "1001", *ALL_DAY)],
    )
)


@pytest.mark.parametrize(
    ("statuses", "outcome", "forward"),
    [
        ((408, 408), "offline (408, 408)", " -> forward offline to 1003"),  # Timer B
        ((503, 408), "offline (503, 408)", " -> forward offline to 1003"),  # transport error
        ((480, 404), "offline (480, 404)", " -> forward offline to 1003"),  # not logged in
        ((486, 503), "busy (486, 503)", " -> forward busy to 1002"),  # the one reached: busy
        ((600, 486), "busy (600, 486)", " -> forward busy to 1002"),
        ((603, 408), "failed (603, 408)", ", no forward -> dropped (480)"),  # a refusal
        ((488, 503), "failed (488, 503)", ", no forward -> dropped (480)"),
    ],
)
def test_how_an_extension_ends_when_every_contact_fails(
    statuses: tuple[int, int], outcome: str, forward: str
) -> None:
    state = lines({"1001": 2, "1002": 1, "1003": 1})
    call = drive(inbound(ALONE, state=state), ALONE, state)
    decision = call.fail_contacts("1001", *statuses)
    assert f"1001 {outcome}{forward}" in decision.trace


def test_unreachable_contacts_take_the_offline_forward_with_the_unavailable_reason() -> None:
    # The demo tenant: 1001 (offline -> 1003) rings with 1002; its only phone is dead.
    call = drive(inbound(ACME, state=lines({"1001": 1, "1002": 1, "1003": 1})))
    first = call.ring("1001")
    decision = call.send(ContactFailed(first.fork_id, first.contacts[0], 503))
    (ring,) = decision.start
    assert isinstance(ring, RingExtension)
    assert ring.extension == "1003"
    assert ring.diversions[0].reason == "unavailable"
    assert decision.final is None
    assert "1001 offline (503) -> forward offline to 1003" in decision.trace
    assert call.progress.live_fork(call.ring("1002").fork_id) is not None  # 1002 rings on


def test_one_contact_unreachable_waits_for_the_others() -> None:
    call = drive(inbound(PLAIN, state=lines({"1001": 2})), PLAIN)
    first = call.ring("1001")
    decision = call.send(ContactFailed(first.fork_id, first.contacts[0], 408))
    assert (decision.start, decision.final, decision.cancel) == ((), None, ())


def test_all_unreachable_without_an_offline_forward_ends_with_480() -> None:
    call = drive(inbound(PLAIN, state=lines({"1001": 1, "1002": 1})), PLAIN)
    decision = call.fail_contacts("1001", 408)
    assert decision.final is None  # 1002 still rings: the call goes on
    assert "1001 offline (408), no forward -> dropped (480)" in decision.trace
    assert call.fail_contacts("1002", 503).final == 480


def test_offline_forward_to_the_trunk_after_a_dead_contact() -> None:
    cfg = snapshot(
        tenant(users=[user("1001", offline=MOBILE)], incoming=[rule(1, "1001", *ALL_DAY)])
    )
    call = drive(inbound(cfg, state=lines({"1001": 1})), cfg, lines({"1001": 1}))
    decision = call.fail_contacts("1001", 408)
    (out,) = decision.start
    assert isinstance(out, DialOut)
    assert out.number == MOBILE
    assert out.diversions[0].reason == "unavailable"
    assert forks(decision) == (f"out:{MOBILE}",)


def test_busy_and_unreachable_statuses_do_not_overlap() -> None:
    assert not BUSY_STATUSES & UNREACHABLE_STATUSES
    assert {408, 503} <= UNREACHABLE_STATUSES
