"""SDES: SRTP keys in SDP ``a=crypto`` lines (RFC 4568), for the relay's SRTP legs (issue #18).

Pure: parsing and writing ``a=crypto:<tag> <suite> inline:<key||salt>[|lifetime][|MKI:len]
[session params]``. The suites taken are ``AES_CM_128_HMAC_SHA1_80`` and ``_32`` (RFC 4568
6.2.1-6.2.2: a 16-octet key and a 14-octet salt, 30 octets in base64). A line we cannot use
(another suite, a wrong key length, several keys, an MKI, a session parameter such as
``UNENCRYPTED_SRTP`` or ``KDR``) is passed over; an offer with no line left is refused (488).

Each side's line carries the key *that side sends with* (RFC 4568 section 5.1): the relay
decrypts a party's packets with the key in the party's own SDP, and encrypts what it sends that
party with a key of its own, fresh per leg (drawn by the adapter and handed in).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

__all__ = [
    "KEY_SALT_LENGTH",
    "SAVP_PROFILES",
    "SUITES",
    "Crypto",
    "format_crypto",
    "parse_crypto",
    "usable_crypto",
]

SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
KEY_SALT_LENGTH = 30  # 128-bit master key + 112-bit master salt
SAVP_PROFILES = frozenset({"RTP/SAVP", "RTP/SAVPF"})
_LIFETIME_RE = re.compile(r"(?:2\^)?[0-9]{1,20}")
_TAG_RE = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class Crypto:
    """One usable ``a=crypto`` line: its tag, suite and 30-octet master key and salt."""

    tag: int
    suite: str
    key_salt: bytes

    def __repr__(self) -> str:  # keys never reach a log line
        return f"Crypto(tag={self.tag}, suite={self.suite})"


def parse_crypto(value: str) -> Crypto | None:
    """The line's key if we can use it (see the module docstring), else None."""
    parts = value.split()
    if len(parts) != 3 or not _TAG_RE.fullmatch(parts[0]):
        return None  # session parameters, or a malformed line
    tag, suite, key_params = parts
    if suite not in SUITES or not key_params.startswith("inline:") or ";" in key_params:
        return None  # another suite, or more than one key
    fields = key_params[len("inline:") :].split("|")
    if len(fields) > 2:
        return None  # an MKI
    if len(fields) == 2 and (":" in fields[1] or not _LIFETIME_RE.fullmatch(fields[1])):
        return None  # an MKI without lifetime, or junk
    try:
        key_salt = base64.b64decode(fields[0], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(key_salt) != KEY_SALT_LENGTH:
        return None
    return Crypto(int(tag), suite, key_salt)


def usable_crypto(values: list[str]) -> Crypto | None:
    """The first usable line among a stream's ``a=crypto`` values (the offerer's order)."""
    for value in values:
        crypto = parse_crypto(value)
        if crypto is not None:
            return crypto
    return None


def format_crypto(crypto: Crypto) -> str:
    """The value of an ``a=crypto`` line for ``crypto``."""
    return f"{crypto.tag} {crypto.suite} inline:{base64.b64encode(crypto.key_salt).decode()}"
