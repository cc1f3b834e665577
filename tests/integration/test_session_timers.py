"""Issue 16 end to end: a call with a session timer (RFC 4028) negotiated through SIPp.

The server runs with ``[sip] min_se = 2`` (``allow_below_rfc_minimum``: the RFC's 90 s floor
would make this test last minutes). With ``[sip] session_expires = 6`` the
server lowers the 1800 s the carrier (SIPp, 127.0.0.2, ``Supported: timer``) asks to 6 s, and its
200 must say so; extension 1004 answers (127.0.0.1). The carrier refreshes once, by UPDATE or by
re-INVITE, 3 s after its ACK (relayed to 1004), then stops. Both legs must get BYE at the RFC
4028 bound (the refresh plus the interval minus a third of it: 3 + 6 - 2 = 7 s after the
answer): after the refresh kept the call up past the first bound (4 s), and before the session
would expire (9 s); the record says ``session_timer``, ended by the server. And a callee
that answers 422 (RFC 4028 section 7.4) gets the INVITE again, offering its Min-SE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import SIPP_DIR, free_port, running_server, write_config
from tests.integration.test_calls import (
    CARRIER_IP,
    PHONE_IP,
    SERVER_EXTRA,
    TENANT,
    Pbx,
    Sipps,
    carrier_call,
    closed_record,
    no_active_calls,
    phone,
    register,
    sipp_args,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

NUMBER = "0312340005"  # rings 1004
SIP_EXTRA = "session_expires = 6\nmin_se = 2\nallow_below_rfc_minimum = true"


@pytest.fixture
def sipps(tmp_path: Path) -> Iterator[Sipps]:
    group = Sipps(tmp_path)
    try:
        yield group
    finally:
        group.close()


@contextlib.contextmanager
def server_with_1004(tmp_path: Path) -> Iterator[Pbx]:
    """A server with the short lab timers of ``SIP_EXTRA`` and 1004 registered."""
    root = tmp_path / "pbx"
    config = write_config(
        root, tenants={"acme": TENANT}, server_extra=SERVER_EXTRA, sip_extra=SIP_EXTRA
    )
    with running_server(config) as server:
        port = free_port(host=PHONE_IP)
        register(server, "1004", port, tmp_path)
        yield Pbx(server, root, 0, {"1004": port})


@pytest.mark.parametrize(
    "carrier",
    ["carrier_session_timer.xml", "carrier_session_timer_reinvite.xml"],
    ids=["update", "re-invite"],
)
def test_a_refreshed_session_timer_that_stops_being_refreshed_ends_both_legs(
    tmp_path: Path, sipps: Sipps, carrier: str
) -> None:
    with server_with_1004(tmp_path) as pbx:
        phone(pbx, sipps, "1004", "phone_answer_session_timer.xml")
        caller = sipp_args(
            SIPP_DIR / carrier,
            pbx.server.udp,
            local_ip=CARRIER_IP,
            port=free_port(host=CARRIER_IP),
            service=NUMBER,
        )
        sipps.start("carrier", caller)
        sipps.wait_all(timeout=30)  # both got the BYE; the carrier checked the 200's headers
        record = closed_record(pbx, NUMBER)
        no_active_calls(pbx)
    assert (record["disposition"], record["answered_by"]) == ("answered", "1004")
    assert (record["hangup_cause"], record["ended_by"]) == ("session_timer", "server")
    assert "session timer: no refresh in 6s: hang up" in record["trace"]
    lasted = record["ended_at"] - record["answered_at"]
    print(f"session timer: answered for {lasted:.2f} s (bound 7 s after a refresh at 3 s)")
    assert 6.5 <= lasted < 9.0


def test_a_callee_wanting_a_longer_interval_gets_the_invite_again_and_answers(
    tmp_path: Path, sipps: Sipps
) -> None:
    """RFC 4028 section 7.4: 1004 answers the server's INVITE (which offers 6 s) with 422 and
    ``Min-SE: 3600``; the server ACKs it, sends the INVITE again offering 3600 s (the phone
    checks Session-Expires, Min-SE and CSeq 2), 1004 answers, and the carrier's call goes
    through to its BYE."""
    with server_with_1004(tmp_path) as pbx:
        phone(pbx, sipps, "1004", "phone_answer_422.xml")
        carrier_call(pbx, sipps, NUMBER)
        sipps.wait_all(timeout=30)
        record = closed_record(pbx, NUMBER)
        no_active_calls(pbx)
    assert (record["disposition"], record["answered_by"]) == ("answered", "1004")
    assert (record["hangup_cause"], record["ended_by"]) == ("normal", "caller")
    assert "1004: 422, Min-SE 3600s -> INVITE again offering it" in record["trace"]
