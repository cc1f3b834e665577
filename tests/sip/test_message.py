"""pbx.sip.message helpers: quoted strings and display names (RFC 3261 25.1)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.sip.message import NameAddress, SipResponse, SipUri, quote_string, unquote_string
from pbx.sip.parse import parse_message, parse_name_addr

URI = SipUri("sip", "acme.example", "1001")


def test_quote_string_escapes_backslash_and_quote() -> None:
    assert quote_string('a "b" \\c') == '"a \\"b\\" \\\\c"'
    assert quote_string("line\r\nbreak") == '"line  break"'
    assert quote_string("佐藤") == '"佐藤"'


def test_unquote_string() -> None:
    assert unquote_string('"J Rosenberg \\\\\\""') == 'J Rosenberg \\"'
    assert unquote_string('"plain"') == "plain"
    assert unquote_string("token text") == "token text"
    assert unquote_string('"') == '"'


def test_display_text() -> None:
    assert parse_name_addr('"Sato \\"T\\"" <sip:1001@acme.example>').display_text == 'Sato "T"'
    assert parse_name_addr("Bob <sip:bob@example.com>").display_text == "Bob"
    assert parse_name_addr("<sip:bob@example.com>").display_text is None


@given(st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=30))
def test_quoted_display_names_survive_the_wire(name: str) -> None:
    addr = NameAddress(URI, quote_string(name), (("tag", "1"),))
    parsed = parse_name_addr(str(addr))
    assert parsed == addr
    assert parsed.display_text == name
    assert unquote_string(quote_string(name)) == name


# -- serialised once (issue 21) ----------------------------------------------------------------

_RESPONSE = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
    b"Call-ID: x@example.com\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def test_a_message_is_serialised_once_and_a_changed_copy_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pbx.sip.message as message_module

    response = parse_message(_RESPONSE)
    assert isinstance(response, SipResponse)
    calls: list[int] = []
    real = message_module.serialize_response

    def counting(msg: SipResponse) -> bytes:
        calls.append(msg.status)
        return real(msg)

    monkeypatch.setattr(message_module, "serialize_response", counting)
    first = response.to_bytes()
    assert response.to_bytes() is first  # kept: sent, kept by its transaction, resent
    assert calls == [200]
    ringing = dataclasses.replace(response, status=180, reason="Ringing")
    assert ringing.to_bytes().startswith(b"SIP/2.0 180 Ringing\r\n")
    assert calls == [200, 180]
    # The kept bytes change neither equality nor hash nor repr.
    assert dataclasses.replace(response) == response
    assert hash(dataclasses.replace(response)) == hash(response)
    assert "_wire" not in repr(response)


def test_the_tag_and_the_branch_are_read_once_and_a_changed_copy_reads_its_own() -> None:
    address = parse_name_addr("<sip:a@example.com>;tag=one")
    assert address.tag == "one"
    assert address.tag == "one"  # kept
    assert address.with_tag("two").tag == "two"
    assert dataclasses.replace(address, params=(("tag", "three"),)).tag == "three"
    assert dataclasses.replace(address, params=()).tag is None
    assert dataclasses.replace(address) == address
    response = parse_message(_RESPONSE)
    via = response.via[0]
    assert via.branch == "z9hG4bK1"
    changed = dataclasses.replace(via, params=(("branch", "z9hG4bK2"),))
    assert changed.branch == "z9hG4bK2"
    assert via.branch == "z9hG4bK1"
    assert "_branch" not in repr(via)
    assert "_tag" not in repr(address)
