"""pbx.sip.edge: a request relayed by a trusted edge (issue #20) names its real source and Path."""

from __future__ import annotations

import pytest

from pbx.errors import RemoteProtocolError
from pbx.sip.edge import first_hop, path_echo, path_of, request_origin
from pbx.sip.message import SipRequest
from pbx.sip.parse import parse_message

EDGE = ("127.0.0.10", 5060)
EDGES = frozenset({"127.0.0.10"})
PATH = "<sip:127.0.0.10:5060;lr;received=sip:192.0.2.7:40123>"


def register(*, vias: list[str], extra: str = "") -> SipRequest:
    lines = [
        "REGISTER sip:acme.example SIP/2.0",
        *(f"Via: {via}" for via in vias),
        "From: <sip:1001@acme.example>;tag=a",
        "To: <sip:1001@acme.example>",
        "Call-ID: c1",
        "CSeq: 1 REGISTER",
        "Contact: <sip:1001@10.0.0.2:5060>",
        *([extra] if extra else []),
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, SipRequest)
    return msg


EDGE_VIA = "SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bKedge"
PHONE_VIA = "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKphone;rport=40123;received=192.0.2.7"


def test_the_real_source_is_the_edges_received_and_rport_of_the_via_below_its_own() -> None:
    req = register(vias=[EDGE_VIA, PHONE_VIA])
    assert request_origin(req, EDGE, EDGES) == ("192.0.2.7", 40123)


def test_without_received_the_sent_by_of_the_via_below_is_the_source() -> None:
    req = register(vias=[EDGE_VIA, "SIP/2.0/UDP 127.0.0.20:5070;branch=z9hG4bKp"])
    assert request_origin(req, EDGE, EDGES) == ("127.0.0.20", 5070)


def test_a_sender_that_is_not_an_edge_is_its_own_source_whatever_its_vias_say() -> None:
    req = register(vias=[EDGE_VIA, PHONE_VIA])
    assert request_origin(req, ("198.51.100.1", 5060), EDGES) == ("198.51.100.1", 5060)
    assert request_origin(req, EDGE, frozenset()) == EDGE  # no edge configured


def test_an_edge_request_with_one_via_is_the_edges_own() -> None:
    req = register(vias=[EDGE_VIA])
    assert request_origin(req, EDGE, EDGES) == EDGE


def test_path_is_honoured_only_from_an_edge() -> None:
    req = register(vias=[EDGE_VIA, PHONE_VIA], extra=f"Path: {PATH}")
    assert path_of(req, EDGE, EDGES) == (PATH,)
    assert path_of(req, ("198.51.100.1", 5060), EDGES) == ()


def test_the_first_hop_of_a_path_and_its_transport() -> None:
    assert first_hop((PATH,)) == (("127.0.0.10", 5060), False)
    assert first_hop(("<sip:[::1]:5070;transport=tcp;lr>", PATH)) == (("::1", 5070), True)
    with pytest.raises(RemoteProtocolError):
        first_hop(("<tel:+81312345678>",))


def test_path_goes_back_in_the_200_only_when_the_phone_supports_it() -> None:
    plain = register(vias=[EDGE_VIA, PHONE_VIA])
    supported = register(vias=[EDGE_VIA, PHONE_VIA], extra="Supported: outbound, path")
    assert path_echo(plain, (PATH,)) == ()
    assert path_echo(supported, (PATH,)) == (("Path", PATH),)
    assert path_echo(supported, ()) == ()
