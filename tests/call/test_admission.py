"""Who may place a call (``pbx.call.admission``): table-driven over INVITEs and sources."""

from __future__ import annotations

import pytest

from pbx.call.admission import (
    Admitted,
    NeedsAuthentication,
    Refused,
    admit_invite,
    dialled_number,
    identify,
)
from pbx.routing.model import FromExtension, FromTrunk
from pbx.sip.message import SipRequest
from pbx.sip.parse import parse_message
from tests.routing.builders import NUMBER, snapshot, tenant, user

SNAPSHOT = snapshot(tenant(users=[user("1001"), user("1002")]))


def invite(
    uri: str = f"sip:{NUMBER}@pbx.example",
    *,
    from_: str = "sip:09011112222@carrier.example",
    contact: bool = True,
    max_forwards: int = 70,
    diversions: int = 0,
) -> SipRequest:
    text = (
        f"INVITE {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        f"From: <{from_}>;tag=a\r\n"
        f"To: <{uri}>\r\n"
        "Call-ID: c1\r\n"
        "CSeq: 1 INVITE\r\n"
        + ("Contact: <sip:x@192.0.2.1>\r\n" if contact else "")
        + "".join(f"Diversion: <sip:{i}@x>;reason=unknown\r\n" for i in range(diversions))
        + "Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


@pytest.mark.parametrize(
    ("request_", "source", "expected"),
    [
        (invite(max_forwards=0), "127.0.0.2", Refused(483)),
        (invite(contact=False), "127.0.0.2", Refused(400, "Missing Contact")),
        (invite("sip:pbx.example"), "127.0.0.2", Refused(404)),
        (invite(from_="sip:1001@elsewhere.example"), "192.0.2.9", None),
    ],
    ids=["hop-limit", "no-contact", "no-number", "phone"],
)
def test_the_first_checks_of_an_invite(
    request_: SipRequest, source: str, expected: Refused | None
) -> None:
    result = admit_invite(SNAPSHOT, request_, source)
    if expected is None:
        assert isinstance(result, NeedsAuthentication)
        assert result.tenant.id == "acme"  # the only tenant is the default one
    else:
        assert result == expected


def test_a_trunk_call_is_trusted_by_address_and_counts_prior_diversions() -> None:
    result = admit_invite(SNAPSHOT, invite(diversions=2), "127.0.0.2")
    assert isinstance(result, Admitted)
    assert result.origin == FromTrunk("carrier", "09011112222", prior_hops=2)
    assert result.tenant is not None
    assert result.tenant.id == "acme"
    assert (result.caller, result.dialled) == ("09011112222", NUMBER)


def test_an_anonymous_trunk_caller_is_recorded_as_anonymous() -> None:
    result = admit_invite(SNAPSHOT, invite(from_="sip:carrier.example"), "127.0.0.2")
    assert isinstance(result, Admitted)
    assert result.caller == "anonymous"


def test_a_phone_of_no_tenant_gets_404() -> None:
    two = snapshot(tenant("acme"), tenant("other"))  # no default tenant
    assert admit_invite(two, invite(from_="sip:1001@nowhere.example"), "192.0.2.9") == Refused(404)


@pytest.mark.parametrize(
    ("from_user", "username", "ok"),
    [("1001", "1001", True), ("1001", "1002", False), ("9999", "9999", False)],
)
def test_the_authenticated_user_must_be_the_from_user_and_a_user_of_the_tenant(
    from_user: str, username: str, ok: bool
) -> None:
    req = invite("sip:1002@acme.example", from_=f"sip:{from_user}@acme.example")
    pending = admit_invite(SNAPSHOT, req, "192.0.2.9")
    assert isinstance(pending, NeedsAuthentication)
    result = identify(pending, req, username)
    if ok:
        assert isinstance(result, Admitted)
        assert isinstance(result.origin, FromExtension)
        assert (result.caller, result.dialled) == ("1001", "1002")
    else:
        assert result == Refused(403)


def test_the_dialled_number_drops_user_parameters() -> None:
    assert dialled_number(invite(f"sip:{NUMBER};npdi@pbx.example")) == NUMBER
