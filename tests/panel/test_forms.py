"""What a Japanese admin types: normalised to the tenant files' form, or refused with a hint."""

from __future__ import annotations

import pytest

from pbx.errors import PbxError
from pbx.panel.forms import (
    FormError,
    parse_count,
    parse_extension,
    parse_forward_target,
    parse_name,
    parse_phone_number,
    parse_targets,
    parse_time,
)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("1001", "1001"),
        ("１００１", "1001"),
        (" 1001\u3000", "1001"),
        ("0000", "0000"),
        ("８９９９", "8999"),
    ],
)
def test_extension_is_normalised(typed: str, expected: str) -> None:
    assert parse_extension(typed) == expected


@pytest.mark.parametrize("typed", ["", "9000", "100", "10011", "1O01", "１００", "10-01", "+1001"])
def test_extension_is_refused_with_the_rule(typed: str) -> None:
    with pytest.raises(FormError) as info:
        parse_extension(typed)
    assert info.value.code == "extension"
    assert info.value.message("ja") == "内線番号は 0000〜8999 の半角数字4桁で入力してください"
    assert "0000 to 8999" in info.value.message("en")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("0312345678", "0312345678"),
        ("03-1234-5678", "0312345678"),
        ("０３－１２３４－５６７８", "0312345678"),
        ("03ー1234ー5678", "0312345678"),  # katakana prolonged sound mark
        ("03ｰ1234ｰ5678", "0312345678"),  # its half-width form
        ("03−1234−5678", "0312345678"),  # minus sign
        ("03‐1234‐5678", "0312345678"),  # hyphen
        ("03–1234—5678", "0312345678"),  # en and em dash
        ("03 1234 5678", "0312345678"),
        ("03\u30001234\u30005678", "0312345678"),
        ("(03) 1234-5678", "0312345678"),
        ("（０３）１２３４－５６７８", "0312345678"),
        ("090-1234-5678", "09012345678"),
        ("+81 3-1234-5678", "0312345678"),
        ("+81 (0)3 1234 5678", "0312345678"),
        ("＋８１９０１２３４５６７８", "09012345678"),
        ("+1 212 555 0100", "+12125550100"),
        ("010-1-212-555-0100", "01012125550100"),
        ("110", "110"),
    ],
)
def test_phone_number_is_normalised(typed: str, expected: str) -> None:
    assert parse_phone_number(typed) == expected


@pytest.mark.parametrize(
    "typed", ["", "   ", "abc", "03-1234-567８x", "12", "03.1234.5678", "++81312345678", "+0312"]
)
def test_phone_number_is_refused_with_an_example(typed: str) -> None:
    with pytest.raises(FormError) as info:
        parse_phone_number(typed)
    assert info.value.code == "phone_number"
    assert "03-1234-5678" in info.value.message("ja")
    assert info.value.message("en").startswith("Enter the phone number")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("", ""),
        ("\u3000 ", ""),
        ("1002", "1002"),
        ("１００２", "1002"),
        ("090-1234-5678", "09012345678"),
        ("+81 90 1234 5678", "09012345678"),
    ],
)
def test_forward_target_is_an_extension_a_number_or_nothing(typed: str, expected: str) -> None:
    assert parse_forward_target(typed) == expected


@pytest.mark.parametrize("typed", ["9001", "abc", "10", "1002,1003"])
def test_forward_target_is_refused(typed: str) -> None:
    with pytest.raises(FormError) as info:
        parse_forward_target(typed)
    assert info.value.code == "forward_target"
    assert "転送先" in info.value.message("ja")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("1001,1002", ("1001", "1002")),
        ("1001、1002", ("1001", "1002")),
        ("１００１，１００２", ("1001", "1002")),
        ("1001､1002", ("1001", "1002")),
        ("1001 1002", ("1001", "1002")),
        ("1001\u30001002", ("1001", "1002")),
        (" 1001 , 1002 ,, ", ("1001", "1002")),
        ("009608", ("009608",)),
        ("００９６０８", ("009608",)),
        ("03-0000-1234、0300005678", ("0300001234", "0300005678")),
        ("1001,1001", ("1001", "1001")),  # a duplicate is the loader's warning
    ],
)
def test_targets_are_split_and_normalised(typed: str, expected: tuple[str, ...]) -> None:
    assert parse_targets(typed) == expected


def test_targets_name_the_bad_one() -> None:
    with pytest.raises(FormError) as info:
        parse_targets("1001、abc")
    assert info.value.code == "target"
    assert "「abc」" in info.value.message("ja")
    assert "abc" in info.value.message("en")


@pytest.mark.parametrize("typed", ["", " 、 ", ",,"])
def test_targets_need_at_least_one(typed: str) -> None:
    with pytest.raises(FormError) as info:
        parse_targets(typed)
    assert info.value.code == "targets_empty"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("8:00", "8:00"),
        ("08:00", "8:00"),
        ("８：００", "8:00"),
        ("０８：５９：５９", "8:59:59"),
        ("0:00:00", "0:00:00"),
        (" 23:59 ", "23:59"),
        ("19：59", "19:59"),
    ],
)
def test_time_is_normalised(typed: str, expected: str) -> None:
    assert parse_time(typed) == expected


@pytest.mark.parametrize(
    "typed", ["", "8", "8:0", "24:00", "8:60", "8:00:60", "800", "8時", "a:bc"]
)
def test_time_is_refused(typed: str) -> None:
    with pytest.raises(FormError) as info:
        parse_time(typed)
    assert info.value.code == "time"
    assert "8:00" in info.value.message("ja")


@pytest.mark.parametrize(
    ("typed", "expected"), [("10", 10), ("１０", 10), (" 0 ", 0), ("０", 0), ("100", 100)]
)
def test_count_is_normalised(typed: str, expected: int) -> None:
    assert parse_count(typed, minimum=0, maximum=100) == expected


@pytest.mark.parametrize("typed", ["", "-1", "101", "1.5", "十", "1e2", "１０１"])
def test_count_is_refused_with_its_range(typed: str) -> None:
    with pytest.raises(FormError) as info:
        parse_count(typed, minimum=0, maximum=100)
    assert info.value.code == "count"
    assert info.value.message("ja") == "0〜100 の半角数字で入力してください"
    assert info.value.message("en") == "Enter a whole number from 0 to 100"


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("佐藤", "佐藤"),
        ("\u3000佐藤 花子 ", "佐藤 花子"),
        ("", ""),
        ("ｻﾄｳ", "ｻﾄｳ"),  # names are kept as typed, only trimmed
        ('O\'Brien "Bob"', 'O\'Brien "Bob"'),
    ],
)
def test_name_is_trimmed(typed: str, expected: str) -> None:
    assert parse_name(typed) == expected


@pytest.mark.parametrize("typed", ["佐藤\n花子", "a\tb", "a\x00b", "a\u202eb", "a\u2028b"])
def test_name_refuses_control_characters(typed: str) -> None:
    with pytest.raises(FormError) as info:
        parse_name(typed)
    assert info.value.code == "name_control"
    assert "制御文字" in info.value.message("ja")


def test_name_refuses_too_long() -> None:
    assert parse_name("あ" * 64) == "あ" * 64
    with pytest.raises(FormError) as info:
        parse_name("あ" * 65)
    assert info.value.message("ja") == "64文字以内で入力してください（65文字入力されています）"
    with pytest.raises(FormError):
        parse_name("abcd", max_length=3)


def test_form_error_is_a_pbx_error_with_an_english_str() -> None:
    error = FormError("extension", "x")
    assert isinstance(error, PbxError)
    assert str(error) == error.message("en")
    assert error.message() == error.message("ja")
    with pytest.raises(ValueError, match="unknown form error code"):
        FormError("nonsense")
