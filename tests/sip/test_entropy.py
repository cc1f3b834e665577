"""The pooled CSPRNG tokens: right sizes, never the same bytes twice, across pool refills."""

from __future__ import annotations

import pytest

from pbx.sip import entropy


def test_tokens_have_the_asked_size_and_do_not_repeat_across_refills() -> None:
    # 3 draws' worth of 12-byte tokens: the pool is refilled on the way.
    tokens = [entropy.token_bytes(12) for _ in range(3 * 4096 // 12)]
    assert {len(t) for t in tokens} == {12}
    assert len(set(tokens)) == len(tokens)


def test_a_token_larger_than_a_draw() -> None:
    big = entropy.token_bytes(10_000)
    assert len(big) == 10_000
    assert len(set(big)) > 200  # random bytes, not a constant fill


def test_hex() -> None:
    text = entropy.token_hex(8)
    assert len(text) == 16
    int(text, 16)


def test_randbits_stays_in_range_and_uses_every_bit() -> None:
    values = [entropy.randbits(31) for _ in range(2000)]
    assert all(0 <= v < 2**31 for v in values)
    # The top bit of 31 is set about half the time: the shift keeps the high bits, not zeros.
    high = sum(v >> 30 for v in values)
    assert 800 < high < 1200
    assert len(set(values)) == len(values)
    assert {entropy.randbits(1) for _ in range(200)} == {0, 1}


def test_randbits_needs_a_bit() -> None:
    with pytest.raises(ValueError, match="at least one bit"):
        entropy.randbits(0)
