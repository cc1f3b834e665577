"""RFC 4475 torture messages through the pure message layer (parse + RFC 3261 8.2 checks).

Each message is treated as one UDP datagram and given the outcome
``pbx.sip.validate.outcome_for_datagram`` computes: None (nothing sent), a status code, or
``ACCEPTED`` (well-formed and acceptable: the registrar/B2BUA will choose the status later).
EXPECT.tsv lists the acceptable outcomes per message: a code, NON400 (any final response but
400), DROP (nothing) or ANY. The mapping used here:

- DROP matches None; ANY matches everything; NON400 matches any code but 400, and ACCEPTED.
- A listed code matches that code. ACCEPTED also matches a listed code that only the application
  layer can produce (200 after registration, 401/407 challenges, 403, 404, 483): the pure layer
  rightly lets such requests through. ACCEPTED never matches 400, 405, 406, 415, 416, 420, 501
  or 505, which this layer must produce itself.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from pbx.sip.message import AbsoluteUri, SipRequest, SipResponse, SipUri
from pbx.sip.parse import parse_message
from pbx.sip.validate import ACCEPTED, outcome_for_datagram

DATA = Path(__file__).parent / "data" / "rfc4475"
# Statuses only the application (registrar, B2BUA, authentication) decides.
APPLICATION_STATUSES = frozenset({200, 401, 403, 404, 407, 483})


@dataclass(frozen=True)
class Expectation:
    name: str
    validity: str
    section: str
    preferred: str
    acceptable: tuple[str, ...]


def _load() -> list[Expectation]:
    with (DATA / "EXPECT.tsv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        Expectation(
            r["name"],
            r["valid_or_invalid"],
            r["rfc4475_section"],
            r["preferred_udp_outcome"],
            tuple(r["acceptable_udp_outcomes"].split("|")),
        )
        for r in rows
    ]


EXPECTATIONS = _load()
BY_NAME = {e.name: e for e in EXPECTATIONS}


def _matches(outcome: int | None, token: str) -> bool:
    if token == "ANY":
        return True
    if token == "DROP":
        return outcome is None
    if outcome is None:
        return False
    if token == "NON400":
        return outcome != 400
    code = int(token)
    if outcome == ACCEPTED:
        return code in APPLICATION_STATUSES
    return outcome == code


def _data(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def _request(name: str) -> SipRequest:
    msg = parse_message(_data(name))
    assert isinstance(msg, SipRequest)
    return msg


def _response(name: str) -> SipResponse:
    msg = parse_message(_data(name))
    assert isinstance(msg, SipResponse)
    return msg


def test_the_data_set_is_complete_and_byte_exact() -> None:
    sums: dict[str, str] = {}
    for line in (DATA / "SHA256SUMS").read_text(encoding="ascii").splitlines():
        digest, _, name = line.partition("  ")
        sums[name.strip()] = digest
    files = sorted(p.name for p in DATA.glob("*.dat"))
    assert len(files) == 49
    assert sorted(sums) == files
    assert sorted(f"{e.name}.dat" for e in EXPECTATIONS) == files
    for name, digest in sums.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("case", EXPECTATIONS, ids=lambda e: e.name)
def test_udp_outcome_is_acceptable(case: Expectation) -> None:
    outcome = outcome_for_datagram(_data(case.name))
    assert any(_matches(outcome, t) for t in case.acceptable), (
        f"{case.name} ({case.section}): outcome {outcome!r}, acceptable {case.acceptable}"
    )


# Where we knowingly give an acceptable outcome other than the RFC's preferred one.
NOT_PREFERRED = {
    "badaspec": "liberal: spaces just inside <> are ignored (RFC 4475 3.1.2.14 allows it)",
    "insuf": "no From/To/Call-ID to echo, so no valid response can be built: dropped",
}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(e, marks=pytest.mark.xfail(reason=NOT_PREFERRED[e.name], strict=True))
        if e.name in NOT_PREFERRED
        else e
        for e in EXPECTATIONS
    ],
    ids=lambda e: e.name,
)
def test_udp_outcome_is_the_preferred_one(case: Expectation) -> None:
    assert _matches(outcome_for_datagram(_data(case.name)), case.preferred)


# --------------------------------------------------------------------------- spot checks
def test_wsinv_fields() -> None:
    req = _request("wsinv")
    assert req.method == "INVITE"
    assert len(req.via) == 3
    assert req.via[0].transport == "UDP"
    assert req.via[0].host == "192.0.2.2"
    assert req.via[0].branch == "390skdjuw"
    assert [v.branch for v in req.via[1:]] == ["z9hG4bK9ikj8", "z9hG4bK30239"]
    assert req.cseq.number == 9
    assert req.cseq.method == "INVITE"
    assert req.max_forwards == 68
    assert len(req.body) == 150
    assert len(req.contact) == 1
    assert req.contact[0].param("q") == "0.33"
    assert req.contact[0].display_name == '"Quoted string \\"\\""'
    assert req.from_.display_name == '"J Rosenberg \\\\\\""'
    assert req.from_.tag == "98asjd8"
    assert req.to.tag == "1918181833n"
    assert req.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert req.header("NewFangledHeader") == "newfangled value continued newfangled value"
    assert req.header("Subject") == ""
    assert req.header("Route") == (
        "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    )


def test_intmeth_method_and_odd_values() -> None:
    req = _request("intmeth")
    assert req.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert req.cseq.method == req.method
    assert req.to.display_name == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'  # not cut at the NUL
    assert isinstance(req.uri, SipUri)
    assert req.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert req.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert req.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert req.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert req.headers == (("extensionHeader-!.%*+_`'~", "\ufeff大停電"),)


def test_esc01_escapes_are_kept_not_decoded() -> None:
    req = _request("esc01")
    assert isinstance(req.uri, SipUri)
    assert (req.uri.user, req.uri.host) == ("sips%3Auser%40example.com", "example.net")
    assert isinstance(req.to.uri, SipUri)
    assert req.to.uri.user == "%75se%72"
    assert isinstance(req.from_.uri, SipUri)
    assert req.from_.uri.user == "I%20have%20spaces"
    contact = req.contact[0].uri
    assert isinstance(contact, SipUri)
    assert contact.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))


def test_escnull_keeps_escaped_nuls() -> None:
    req = _request("escnull")
    assert isinstance(req.to.uri, SipUri)
    assert req.to.uri.user == "null-%00-null"
    users = [c.uri.user for c in req.contact if isinstance(c.uri, SipUri)]
    assert users == ["%00", "%00%00"]


def test_esc02_c6fntact_is_another_header() -> None:
    req = _request("esc02")
    assert req.method == "RE%47IST%45R"
    assert len(req.contact) == 2
    assert req.header("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_longreq_long_values_are_exact() -> None:
    data = _data("longreq")
    req = _request("longreq")
    tag = data.split(b";tag=")[1].split(b";")[0].decode()
    assert len(tag) > 150
    assert req.from_.tag == tag
    call_id = data.split(b"Call-ID: ")[1].split(b"\r\n")[0].decode()
    assert req.call_id == call_id
    assert len(req.via) == 34
    assert isinstance(req.to.uri, SipUri)
    assert req.to.uri.port == 6000


def test_dblreq_ignores_trailing_octets() -> None:
    req = _request("dblreq")
    assert req.method == "REGISTER"
    assert (req.cseq.number, req.cseq.method) == (8, "REGISTER")
    assert req.body == b""
    assert b"INVITE" not in req.to_bytes()


def test_semiuri_user_part() -> None:
    req = _request("semiuri")
    assert isinstance(req.uri, SipUri)
    assert req.uri.user == "user;par=u%40example.net"
    assert req.uri.host == "example.com"
    assert req.uri.params == ()


def test_transports() -> None:
    req = _request("transports")
    assert [v.transport for v in req.via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_framed_by_content_length() -> None:
    data = _data("mpart01")
    req = _request("mpart01")
    assert len(req.body) == 553
    assert b"\x00" in req.body
    start = data.index(b"\r\n\r\n") + 4
    assert req.body == data[start : start + 553]


def test_unreason_and_noreason_parse() -> None:
    resp = _response("unreason")
    assert resp.status == 200
    assert resp.reason.startswith("= 2**3 * 5**2 но сто")
    assert len(resp.body) == 154
    resp = _response("noreason")
    assert (resp.status, resp.reason) == (100, "")


def test_cparam01_param_is_a_contact_param() -> None:
    contact = _request("cparam01").contact[0]
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.params == ()
    assert contact.params == (("unknownparam", None),)


def test_cparam02_param_is_a_uri_param() -> None:
    contact = _request("cparam02").contact[0]
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.params == (("unknownparam", None),)
    assert contact.params == ()


def test_regescrt_headers_kept_in_the_contact_uri() -> None:
    contact = _request("regescrt").contact[0]
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert str(contact.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_lwsdisp_display_name() -> None:
    assert _request("lwsdisp").from_.display_name == "caller"


def test_unksm2_non_sip_schemes() -> None:
    req = _request("unksm2")
    assert req.to.uri == AbsoluteUri("isbn", "isbn:2983792873")
    assert req.from_.uri == AbsoluteUri("http", "http://www.example.com")
    assert req.contact[0].uri == AbsoluteUri("name", "name:John_Smith")


def test_inv2543_body_is_the_rest_of_the_datagram() -> None:
    data = _data("inv2543")
    req = _request("inv2543")
    assert req.body == data[data.index(b"\r\n\r\n") + 4 :]
    assert req.via[0].branch is None
    assert req.max_forwards is None


def test_bcast_second_via() -> None:
    assert _response("bcast").via[1].host == "255.255.255.255"


@pytest.mark.parametrize(
    "name",
    sorted(e.name for e in EXPECTATIONS if outcome_for_datagram(_data(e.name)) == ACCEPTED),
)
def test_accepted_messages_round_trip(name: str) -> None:
    msg = parse_message(_data(name))
    assert parse_message(msg.to_bytes()) == msg
