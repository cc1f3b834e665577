"""Panel password hashing (argon2id), its checks, and generated SIP passwords."""

from __future__ import annotations

import random

import pytest

from pbx.panel.passwords import (
    SIP_PASSWORD_ALPHABET,
    generate_sip_password,
    hash_password,
    needs_rehash,
    password_problem,
    verify_no_account,
    verify_password,
)


def test_hash_is_argon2id_salted_and_verifies_only_its_password() -> None:
    first, second = hash_password("tanuki-kitsune-42"), hash_password("tanuki-kitsune-42")
    assert first.startswith("$argon2id$")
    assert first != second  # a fresh salt each time
    assert verify_password(first, "tanuki-kitsune-42")
    assert verify_password(second, "tanuki-kitsune-42")
    assert not verify_password(first, "tanuki-kitsune-43")
    assert not needs_rehash(first)


def test_full_width_typing_is_the_same_password() -> None:
    # The input method left in full-width mode: NFKC makes it the same characters.
    assert verify_password(hash_password("tanuki-kitsune-42"), "ｔａｎｕｋｉ－ｋｉｔｓｕｎｅ－４２")


@pytest.mark.parametrize(
    "stored",
    ["", "not a hash", "$argon2id$v=19$m=65536,t=3,p=4$broken", "$2b$12$bcryptbcryptbcrypt"],
)
def test_malformed_hash_matches_nothing_and_asks_for_a_rehash(stored: str) -> None:
    assert not verify_password(stored, "tanuki-kitsune-42")
    assert needs_rehash(stored)


def test_weaker_parameters_ask_for_a_rehash() -> None:
    from argon2 import PasswordHasher

    old = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("tanuki-kitsune-42")
    assert verify_password(old, "tanuki-kitsune-42")
    assert needs_rehash(old)


def test_unknown_account_answer_is_false() -> None:
    assert verify_no_account("tanuki-kitsune-42") is False


@pytest.mark.parametrize(
    ("password", "name", "problem"),
    [
        ("short-pw-11", None, "at least 12 characters"),
        ("x" * 1025, None, "at most 1024 characters"),
        ("            ", None, "only spaces"),
        ("abababababab", None, "too few characters"),
        ("tanaka-secret-2026", "Tanaka", "account name"),
        ("ＴＡＮＡＫＡ-secret-2026", "tanaka", "account name"),
        ("１２３４５６７８９０１", None, "at least 12 characters"),  # 11 after NFKC
    ],
)
def test_password_problems(password: str, name: str | None, problem: str) -> None:
    found = password_problem(password, name)
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    ("password", "name"),
    [
        ("correcthorsebattery", None),  # one class of characters is fine: length counts
        ("123456789012", "root"),
        ("これは十二文字のパスワードです", "root"),
        ("tanuki-kitsune-42", "yamada"),
        ("abcd" * 256, None),  # 1024 characters
    ],
)
def test_acceptable_passwords(password: str, name: str | None) -> None:
    assert password_problem(password, name) is None


def test_sip_password_is_16_unambiguous_characters_with_a_digit_and_a_letter() -> None:
    rng = random.Random(7)
    for _ in range(500):
        password = generate_sip_password(rng)
        assert len(password) == 16
        assert set(password) <= set(SIP_PASSWORD_ALPHABET)
        assert any(c.isdigit() for c in password)
        assert any(c.isalpha() for c in password)
    assert not set("0O1lI") & set(SIP_PASSWORD_ALPHABET)


def test_sip_password_draws_again_until_it_has_both_kinds() -> None:
    class Scripted:
        def __init__(self, text: str) -> None:
            self.chars = iter(text)

        def choice(self, seq: str, /) -> str:
            return next(self.chars)

    # All letters, then all digits, then a mix: only the mix is accepted.
    assert generate_sip_password(Scripted("abcd" + "2345" + "ab2c"), length=4) == "ab2c"


def test_sip_passwords_from_secrets_differ() -> None:
    assert len({generate_sip_password() for _ in range(50)}) == 50
