"""pbx.sip.message helpers: quoted strings and display names (RFC 3261 25.1)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pbx.sip.message import NameAddress, SipUri, quote_string, unquote_string
from pbx.sip.parse import parse_name_addr

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
