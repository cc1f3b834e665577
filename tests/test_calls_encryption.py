"""``GET /calls`` says how each side of a call is protected (issue #18): the pure field, and the
admin API's document accepts calls with and without it."""

from __future__ import annotations

from typing import Any, cast

import pytest
from jsonschema import ValidationError

from pbx.call.encryption import call_encryption
from tests.test_admin_api import CALLS, response_validator


def test_the_field_says_each_side_and_null_before_an_answer() -> None:
    assert call_encryption(True, True, None) == {
        "caller": {"tls": True, "srtp": True, "encrypted": True},
        "callee": None,
    }
    # A phone on TLS + SRTP answered by the plain carrier trunk (or the other way round).
    assert call_encryption(True, True, (False, False)) == {
        "caller": {"tls": True, "srtp": True, "encrypted": True},
        "callee": {"tls": False, "srtp": False, "encrypted": False},
    }
    assert call_encryption(True, False, (True, True))["caller"]["encrypted"] is False  # type: ignore[index]


@pytest.mark.parametrize(
    "encryption",
    [
        call_encryption(True, True, (True, True)),
        call_encryption(False, False, None),
        None,  # a call view without the field (an older server) still validates
    ],
)
def test_the_document_describes_the_field(encryption: dict[str, object] | None) -> None:
    calls: list[dict[str, Any]] = [dict(cast(dict[str, Any], call)) for call in CALLS]
    if encryption is not None:
        calls[0]["encryption"] = encryption
    response_validator("/calls", "GET", 200, "application/json").validate(calls)


def test_the_document_refuses_a_malformed_field() -> None:
    bad = {"caller": {"tls": "yes"}, "callee": None}
    calls = [{**cast(dict[str, Any], CALLS[0]), "encryption": bad}]
    with pytest.raises(ValidationError):
        response_validator("/calls", "GET", 200, "application/json").validate(calls)
