"""The memo of parsed header values (issue #21): the same values as parsing afresh, bounded,
short header lines only, errors never kept."""

from __future__ import annotations

import pytest

from pbx.sip.message import NameAddress, SipRequest, SipUri
from pbx.sip.parse import (
    MEMO_ENTRIES,
    MEMO_TEXT_LENGTH,
    SipParseError,
    clear_memos,
    memo_entries,
    parse_message,
    parse_name_addr,
)

INVITE = (
    "INVITE sip:0312345678@pbx.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    "From: <sip:1001@acme.example>;tag=1928301774\r\n"
    "To: <sip:0312345678@acme.example>\r\n"
    "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:1001@192.0.2.10:5060;transport=udp>\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def invite(**replace: str) -> bytes:
    text = INVITE
    for old, new in replace.items():
        text = text.replace(old, new)
    return text.encode()


@pytest.fixture(autouse=True)
def _empty_memos() -> None:
    clear_memos()


def test_messages_with_the_same_header_text_share_its_value() -> None:
    first = parse_message(invite())
    second = parse_message(invite(a84b4c76e66710="other-call"))
    assert isinstance(first, SipRequest)
    assert isinstance(second, SipRequest)
    assert second.from_ is first.from_
    assert second.to is first.to
    assert second.contact[0] is first.contact[0]
    assert second.uri is first.uri
    assert second.cseq is first.cseq
    assert second.from_ == NameAddress(
        SipUri("sip", "acme.example", "1001"), None, (("tag", "1928301774"),)
    )


def test_a_memoized_via_is_stamped_per_message_and_never_changed() -> None:
    first = parse_message(invite(), source=("198.51.100.1", 5070))
    second = parse_message(invite(), source=("198.51.100.2", 5080))
    assert first.via[0].received == "198.51.100.1"
    assert second.via[0].received == "198.51.100.2"
    assert parse_message(invite()).via[0].received is None


def test_the_public_parsers_parse_afresh() -> None:
    text = "<sip:1001@acme.example>;tag=1"
    before = memo_entries()
    assert parse_name_addr(text) is not parse_name_addr(text)
    assert memo_entries() == before


def test_a_full_memo_is_emptied_before_it_grows() -> None:
    for n in range(MEMO_ENTRIES):
        parse_message(invite(z9hG4bK776asdhds=f"z9hG4bKbound{n}"))
    # Via line, From, To, Contact, CSeq and Request-URI: only the Via memo had new texts.
    assert memo_entries() == MEMO_ENTRIES + 5
    parse_message(invite(z9hG4bK776asdhds="z9hG4bKbound-new"))
    assert memo_entries() == 1 + 5


def test_long_header_lines_are_parsed_but_not_kept() -> None:
    user = "u" * MEMO_TEXT_LENGTH
    first = parse_message(invite(**{"sip:1001@acme.example": f"sip:{user}@acme.example"}))
    assert first.from_.uri == SipUri("sip", "acme.example", user)
    assert memo_entries() == 5  # Via, To, Contact, CSeq and Request-URI; not From
    again = parse_message(invite(**{"sip:1001@acme.example": f"sip:{user}@acme.example"}))
    assert again.from_ == first.from_
    assert again.from_ is not first.from_


@pytest.mark.parametrize(
    ("old", "bad"),
    [
        ("<sip:1001@acme.example>;tag", "<sip:1001@acme.example;tag"),
        ("SIP/2.0/UDP 192.0.2.10:5060", "SIP/2.0/UDP 192.0.2.10:99999"),
        ("Contact: <sip:1001@", "Contact: <sip:1001@@"),
    ],
)
def test_malformed_values_are_refused_every_time(old: str, bad: str) -> None:
    data = invite(**{old: bad})
    for _ in range(2):
        with pytest.raises(SipParseError) as caught:
            parse_message(data)
        assert caught.value.status_hint == 400
    assert memo_entries() <= 5
