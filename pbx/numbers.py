"""Dialled numbers: normalisation and classification (docs/design.md, "Numbers").

Pure functions shared by config validation (forward targets, caller IDs) and the routing core
(what a dialled string is). Japanese numbering: national numbers are ``0`` plus 9 or 10 digits,
``010`` is the international prefix, ``00XY``/``00XYZ`` select a carrier, ``1XX`` are service
numbers, ``+81`` is Japan itself.
"""

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from dataclasses import dataclass

# The special inbound-rule target that plays the after-hours announcement.
AFTER_HOURS_TARGET = "009608"

_SEPARATORS = str.maketrans("", "", " -().")
_EXTENSION = re.compile(r"[0-8][0-9]{3}")
_DOMESTIC = re.compile(r"0[1-9][0-9]{8,9}")
_SERVICE = re.compile(r"1[0-9]{2}")
_INTERNATIONAL = re.compile(r"010[1-9][0-9]{4,14}")
_CARRIER = re.compile(r"00[1-9][0-9]{1,2}")


class NumberKind(enum.Enum):
    EXTENSION = "extension"  # 4 digits, 0000-8999
    DOMESTIC = "domestic"  # 0 + 9 or 10 digits, optionally after a carrier prefix
    SERVICE = "service"  # 1XX (110, 119, 117, ...)
    INTERNATIONAL = "international"  # 010..., +CC (CC != 81), or either after 00XY / 00XYZ
    ANNOUNCEMENT = "announcement"  # 009608
    INCOMPLETE = "incomplete"  # digits that could still become a number: answer 484
    INVALID = "invalid"  # not a number at all: answer 404


@dataclass(frozen=True, slots=True)
class ClassifiedNumber:
    kind: NumberKind
    digits: str  # normalised: half-width, no separators, +81 folded to 0, + kept otherwise


def normalize_number(text: str) -> str:
    """Half-width digits, visual separators removed, ``+81…`` folded to the national ``0…``."""
    digits = unicodedata.normalize("NFKC", text).strip().translate(_SEPARATORS)
    if digits.startswith("+81"):
        digits = "0" + digits[3:]
    return digits


def _classify_plain(digits: str) -> NumberKind | None:
    if _DOMESTIC.fullmatch(digits) and not digits.startswith("010"):
        return NumberKind.DOMESTIC
    if _INTERNATIONAL.fullmatch(digits):
        return NumberKind.INTERNATIONAL
    if digits.startswith("+") and digits[1:].isdigit() and 7 <= len(digits) - 1 <= 15:
        return NumberKind.INTERNATIONAL
    return None


@functools.lru_cache(maxsize=4096)
def classify_number(text: str) -> ClassifiedNumber:
    """What a dialled string or a configured target is (see the module docstring).

    Pure, with an immutable answer, and asked about the same numbers by every call (admission,
    routing, the trace: six times a call): the latest answers are kept (issue 21)."""
    digits = normalize_number(text)
    if digits == AFTER_HOURS_TARGET:
        return ClassifiedNumber(NumberKind.ANNOUNCEMENT, digits)
    if _EXTENSION.fullmatch(digits):
        return ClassifiedNumber(NumberKind.EXTENSION, digits)
    if _SERVICE.fullmatch(digits):
        return ClassifiedNumber(NumberKind.SERVICE, digits)
    kind = _classify_plain(digits)
    if kind is not None:
        return ClassifiedNumber(kind, digits)
    # A carrier-selection prefix (00XY or 00XYZ) followed by a number in its own right.
    for size in (4, 5):
        prefix, rest = digits[:size], digits[size:]
        if _CARRIER.fullmatch(prefix):
            kind = _classify_plain(rest)
            if kind is not None:
                return ClassifiedNumber(kind, digits)
    body = digits[1:] if digits.startswith("+") else digits
    if body.isdigit() and len(body) <= 20:
        return ClassifiedNumber(NumberKind.INCOMPLETE, digits)
    return ClassifiedNumber(NumberKind.INVALID, digits)


def is_external(kind: NumberKind) -> bool:
    """Whether a number of this kind is dialled out through the trunk."""
    return kind in (NumberKind.DOMESTIC, NumberKind.SERVICE, NumberKind.INTERNATIONAL)
