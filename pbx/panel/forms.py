"""What an admin types into the panel's forms, normalised or refused with a hint (pure).

Japanese admins type full-width digits (``１００１``), full-width colons (``８：００``), the
ideographic space (U+3000), Japanese commas (``、``, ``，``, ``､``) and every kind of hyphen or
dash between the groups of a phone number (``03ー1234ー5678``, ``03−1234−5678``). Each parser
folds those (NFKC plus the hyphen and comma tables below) and returns the half-width form the
tenant files use, or raises ``FormError`` whose ``message(lang)`` says what to type.

Only the syntax is checked here. The rules (an extension that exists, a caller ID among the
tenant's numbers, a number in use twice, international calls allowed) are the config loader's,
which reports them when the edit is saved.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from pbx.errors import PbxError

__all__ = [
    "FormError",
    "Lang",
    "parse_count",
    "parse_extension",
    "parse_forward_target",
    "parse_name",
    "parse_phone_number",
    "parse_targets",
    "parse_time",
]

Lang = Literal["ja", "en"]

# code -> (Japanese, English); {placeholders} come from the error's params.
_MESSAGES: dict[str, tuple[str, str]] = {
    "extension": (
        "内線番号は 0000〜8999 の半角数字4桁で入力してください",
        "Enter the extension as 4 digits from 0000 to 8999",
    ),
    "phone_number": (
        "電話番号は数字で入力してください。例: 03-1234-5678、+81 3 1234 5678",
        "Enter the phone number in digits, e.g. 03-1234-5678 or +81 3 1234 5678",
    ),
    "forward_target": (
        "転送先は内線番号（0000〜8999）か電話番号を入力してください。転送しない場合は空欄にします",
        "Enter an extension (0000 to 8999) or a phone number as the forward target, or leave it "
        "empty for no forwarding",
    ),
    "targets_empty": (
        "着信先を1つ以上、カンマ（,）区切りで入力してください。例: 1001,1002",
        "Enter at least one target, separated by commas, e.g. 1001,1002",
    ),
    "target": (
        "着信先「{value}」は使えません。内線番号（0000〜8999）、電話番号、または時間外ガイダンスの "
        "009608 を、カンマ（,）区切りで入力してください",
        "The target {value} cannot be used: enter extensions (0000 to 8999), phone numbers or "
        "009608 (the after-hours announcement), separated by commas",
    ),
    "time": (
        "時刻は 8:00 や 23:59:59 のように、時:分 または 時:分:秒 の半角で入力してください",
        "Enter the time as H:MM or H:MM:SS, e.g. 8:00 or 23:59:59",
    ),
    "count": (
        "{minimum}〜{maximum} の半角数字で入力してください",
        "Enter a whole number from {minimum} to {maximum}",
    ),
    "name_too_long": (
        "{maximum}文字以内で入力してください（{length}文字入力されています）",
        "Enter at most {maximum} characters (you typed {length})",
    ),
    "name_control": (
        "改行・タブなどの制御文字は使えません。1行の文字で入力してください",
        "Line breaks, tabs and other control characters cannot be used: enter a single line",
    ),
}


class FormError(PbxError):
    """What the admin typed cannot be used; ``message(lang)`` says what to type instead."""

    def __init__(self, code: str, value: str = "", **params: int | str) -> None:
        if code not in _MESSAGES:
            raise ValueError(f"unknown form error code {code!r}")
        self.code = code
        self.value = value
        self.params: dict[str, int | str] = {"value": value, **params}
        super().__init__(self.message("en"))

    def message(self, lang: str = "ja") -> str:
        """The hint in Japanese (``"ja"``, the default) or English (``"en"``)."""
        japanese, english = _MESSAGES[self.code]
        return (english if lang == "en" else japanese).format(**self.params)


# Hyphens and dashes people put between the groups of a phone number. NFKC already folds the
# full-width hyphen-minus (U+FF0D) and the small hyphen-minus (U+FE63) to "-", and half-width
# katakana "ｰ" (U+FF70) to "ー" (U+30FC).
_HYPHENS = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\u30fc\u2500\u2501\ufe58"
_DROP_FROM_NUMBERS = str.maketrans("", "", _HYPHENS + "()")
# NFKC folds "，" (U+FF0C) to "," and "､" (U+FF64) to "、".
_TARGET_SEPARATORS = re.compile(r"[,、\s]+")

_EXTENSION = re.compile(r"[0-8][0-9]{3}")
_DIGITS = re.compile(r"[0-9]{3,20}")
_INTERNATIONAL = re.compile(r"\+[1-9][0-9]{6,15}")
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?")
_COUNT = re.compile(r"[0-9]{1,9}")
_AFTER_HOURS = "009608"
# Refused in names: C0/C1 controls (line breaks, tabs), format characters (bidi overrides,
# zero-width spaces), surrogates, private use, and the line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _fold(text: str) -> str:
    """NFKC, without any whitespace (U+3000 included: NFKC makes it a space)."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def parse_extension(text: str) -> str:
    """An extension: exactly 4 half-width digits, 0000-8999 (``１００１`` -> ``1001``)."""
    folded = _fold(text)
    if not _EXTENSION.fullmatch(folded):
        raise FormError("extension", text.strip())
    return folded


def _phone_digits(text: str) -> str | None:
    folded = _fold(text).translate(_DROP_FROM_NUMBERS)
    if folded.startswith("+81"):
        folded = "0" + folded[3:].removeprefix("0")  # "+81 (0)3 ..." is written too
    if _DIGITS.fullmatch(folded) or _INTERNATIONAL.fullmatch(folded):
        return folded
    return None


def parse_phone_number(text: str) -> str:
    """A phone number as digits: hyphens, parentheses and spaces removed, ``+81`` -> ``0``.

    Other country codes keep their ``+`` (``+1 212 555 0100`` -> ``+12125550100``): the
    loader reads that as an international number.
    """
    digits = _phone_digits(text)
    if digits is None:
        raise FormError("phone_number", text.strip())
    return digits


def parse_forward_target(text: str) -> str:
    """A forward target: an extension, a phone number, or ``""`` (no forwarding)."""
    folded = _fold(text)
    if not folded:
        return ""
    if len(folded) == 4 and folded.isdecimal():
        if _EXTENSION.fullmatch(folded):
            return folded
        raise FormError("forward_target", text.strip())
    digits = _phone_digits(text)
    if digits is None:
        raise FormError("forward_target", text.strip())
    return digits


def parse_targets(text: str) -> tuple[str, ...]:
    """The targets of an inbound rule: extensions, phone numbers or ``009608``.

    Separated by ``,`` ``、`` ``，`` ``､`` or spaces (so a number inside must not contain
    spaces; hyphens are fine). Duplicates are kept: the loader warns about them.
    """
    targets = []
    for part in _TARGET_SEPARATORS.split(unicodedata.normalize("NFKC", text)):
        if not part:
            continue
        folded = _fold(part)
        if folded == _AFTER_HOURS:
            targets.append(folded)
            continue
        try:
            targets.append(parse_forward_target(part))
        except FormError:
            raise FormError("target", part) from None
    if not targets:
        raise FormError("targets_empty", text.strip())
    return tuple(targets)


def parse_time(text: str) -> str:
    """A time of day ``H:MM`` or ``H:MM:SS`` (``０８：００`` -> ``8:00``); hours 0-23."""
    folded = _fold(text).replace("：", ":")
    match = _TIME.fullmatch(folded)
    if match is None:
        raise FormError("time", text.strip())
    hours, minutes = int(match[1]), int(match[2])
    seconds = None if match[3] is None else int(match[3])
    if hours > 23 or minutes > 59 or (seconds is not None and seconds > 59):
        raise FormError("time", text.strip())
    return f"{hours}:{minutes:02d}" + ("" if seconds is None else f":{seconds:02d}")


def parse_count(text: str, *, minimum: int, maximum: int) -> int:
    """A whole number within ``minimum``..``maximum`` (full-width digits accepted)."""
    folded = _fold(text)
    if not _COUNT.fullmatch(folded) or not minimum <= int(folded) <= maximum:
        raise FormError("count", text.strip(), minimum=minimum, maximum=maximum)
    return int(folded)


def parse_name(text: str, max_length: int = 64) -> str:
    """A name or department: surrounding spaces removed, one line, at most ``max_length``."""
    name = text.strip()
    if any(unicodedata.category(char) in _CONTROL_CATEGORIES for char in name):
        raise FormError("name_control", name)
    if len(name) > max_length:
        raise FormError("name_too_long", name, maximum=max_length, length=len(name))
    return name
