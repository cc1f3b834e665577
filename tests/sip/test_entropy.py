"""The pooled CSPRNG tokens: right sizes, never the same bytes twice, across pool refills."""

from __future__ import annotations

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
