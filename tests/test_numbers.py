"""Number normalisation and classification (docs/design.md, "Numbers")."""

from __future__ import annotations

import pytest

from pbx.numbers import NumberKind, classify_number, normalize_number


@pytest.mark.parametrize(
    ("text", "kind", "digits"),
    [
        ("1001", NumberKind.EXTENSION, "1001"),
        ("0000", NumberKind.EXTENSION, "0000"),
        ("8999", NumberKind.EXTENSION, "8999"),
        ("9000", NumberKind.INCOMPLETE, "9000"),
        ("0312345678", NumberKind.DOMESTIC, "0312345678"),
        ("09012345678", NumberKind.DOMESTIC, "09012345678"),
        ("0120123456", NumberKind.DOMESTIC, "0120123456"),
        ("03-1234-5678", NumberKind.DOMESTIC, "0312345678"),
        ("０３１２３４５６７８", NumberKind.DOMESTIC, "0312345678"),
        ("+81312345678", NumberKind.DOMESTIC, "0312345678"),
        ("+819012345678", NumberKind.DOMESTIC, "09012345678"),
        ("110", NumberKind.SERVICE, "110"),
        ("119", NumberKind.SERVICE, "119"),
        ("0101212345678", NumberKind.INTERNATIONAL, "0101212345678"),
        ("+12125551234", NumberKind.INTERNATIONAL, "+12125551234"),
        ("0033010441234567890", NumberKind.INTERNATIONAL, "0033010441234567890"),
        ("00330+12125551234", NumberKind.INTERNATIONAL, "00330+12125551234"),
        ("00330312345678", NumberKind.DOMESTIC, "00330312345678"),
        ("009608", NumberKind.ANNOUNCEMENT, "009608"),
        ("03123", NumberKind.INCOMPLETE, "03123"),
        ("031234567890123", NumberKind.INCOMPLETE, "031234567890123"),
        ("alice", NumberKind.INVALID, "alice"),
        ("", NumberKind.INVALID, ""),
    ],
)
def test_classify_number(text: str, kind: NumberKind, digits: str) -> None:
    result = classify_number(text)
    assert (result.kind, result.digits) == (kind, digits)


def test_normalize_folds_full_width_and_country_code() -> None:
    assert normalize_number("＋８１ ３ １２３４ ５６７８") == "0312345678"
