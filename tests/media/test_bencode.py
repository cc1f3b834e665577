"""Bencode (issue #20): round trips, rtpengine's unsorted replies, malformed input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx.media.bencode import BencodeError, Decoded, Value, decode, encode

values: st.SearchStrategy[Decoded] = st.recursive(
    st.integers() | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def test_encodes_the_ng_request_with_sorted_keys() -> None:
    request: dict[str, Value] = {
        "command": "offer",
        "call-id": b"c1",
        "replace": ["origin"],
        "n": -3,
    }
    assert encode(request) == b"d7:call-id2:c17:command5:offer1:ni-3e7:replacel6:originee"


def test_decodes_a_reply_whose_keys_are_not_sorted() -> None:
    assert decode(b"d6:result2:ok3:sdp1:xe") == {b"result": b"ok", b"sdp": b"x"}
    assert decode(b"d3:sdp1:x6:result2:oke") == {b"result": b"ok", b"sdp": b"x"}


@given(values)
def test_round_trip(value: Decoded) -> None:
    assert decode(encode(value)) == value


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"i12",
        b"i-0e",
        b"i03e",
        b"ie",
        b"i1x2e",
        b"5:abc",
        b"-1:a",
        b"3abc",
        b"l",
        b"li1e",
        b"d3:abc",
        b"di1e1:ae",
        b"d1:a",
        b"x",
        b"i1ei2e",
        b"l" * 40 + b"e" * 40,
    ],
)
def test_malformed_input_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


@given(st.binary(max_size=40))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    with contextlib.suppress(BencodeError):
        decode(data)


def test_values_without_an_encoding() -> None:
    with pytest.raises(BencodeError):
        encode(True)
    with pytest.raises(BencodeError):
        encode(1.5)  # type: ignore[arg-type]
