"""Panel passwords (argon2id) and generated SIP passwords (pure).

Panel passwords are hashed with argon2-cffi's ``PasswordHasher`` at its defaults (argon2id,
RFC 9106's second recommended option: t=3, m=64 MiB, p=4). One hash or verification costs about
50 ms of CPU and 64 MiB of memory: the web layer runs it in a thread (``asyncio.to_thread``),
never on the event loop, and only after the sign-in throttle has allowed the attempt.

Passwords are NFKC-normalised before hashing and checking (NIST SP 800-63B, 5.1.1.2: a password
typed with the input method in full-width mode is the same password).

SIP passwords are digest secrets a phone keeps, and someone types them into the phone once:
16 characters from an alphabet without look-alikes (no 0/O, 1/l/I), about 93 bits.
"""

from __future__ import annotations

import functools
import secrets
import unicodedata
from typing import Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a megabyte form field is not a password
SIP_PASSWORD_LENGTH = 16
SIP_PASSWORD_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_DIGITS = frozenset("23456789")

_hasher = PasswordHasher()


class Chooser(Protocol):
    """What ``generate_sip_password`` needs of a random source (``secrets``, ``random.Random``)."""

    def choice(self, seq: str, /) -> str: ...


def _normalised(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (about 50 ms of CPU: call it in a thread)."""
    return _hasher.hash(_normalised(password))


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash`` (about 50 ms of CPU: call it in a thread).

    A malformed or foreign hash does not match anything.
    """
    try:
        return _hasher.verify(password_hash, _normalised(password))
    except (VerificationError, InvalidHashError):
        return False


def verify_no_account(password: str) -> bool:
    """Spend the time of one verification and return False: the answer for an unknown name.

    A wrong name then costs as much time as a wrong password (no account enumeration by timing).
    """
    verify_password(_dummy_hash(), password)
    return False


@functools.cache
def _dummy_hash() -> str:
    # Made on first use: 50 ms at import is not free.
    return _hasher.hash(secrets.token_urlsafe(16))


def needs_rehash(password_hash: str) -> bool:
    """Whether a hash was made with other parameters than today's (rehash after sign-in)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def generate_sip_password(rng: Chooser = secrets, length: int = SIP_PASSWORD_LENGTH) -> str:
    """A random SIP password: ``length`` characters without look-alikes, a digit and a letter."""
    if length < 2:
        raise ValueError("a SIP password needs room for a digit and a letter")
    while True:
        # Drawing again until both kinds appear keeps every accepted password equally likely.
        password = "".join(rng.choice(SIP_PASSWORD_ALPHABET) for _ in range(length))
        digits = sum(c in _DIGITS for c in password)
        if 0 < digits < length:
            return password


def password_problem(password: str, account_name: str | None = None) -> str | None:
    """Why ``password`` cannot be a panel password, or None when it can.

    At least 12 characters, of any kinds (length is what makes a password strong; NIST SP
    800-63B, 5.1.1.2, asks for no composition rules), not a run of a few repeated characters,
    and not containing the account's name.
    """
    normalised = _normalised(password)
    if len(normalised) < MIN_PASSWORD_LENGTH:
        return f"the password must have at least {MIN_PASSWORD_LENGTH} characters"
    if len(normalised) > MAX_PASSWORD_LENGTH:
        return f"the password must have at most {MAX_PASSWORD_LENGTH} characters"
    if normalised.strip() == "":
        return "the password must not be only spaces"
    if len(set(normalised)) < 4:
        return "the password repeats too few characters"
    if account_name and _normalised(account_name).casefold() in normalised.casefold():
        return "the password must not contain the account name"
    return None
