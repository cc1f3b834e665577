"""``[sip] session_expires`` / ``min_se`` / ``allow_below_rfc_minimum`` (issue 16, RFC 4028)."""

from __future__ import annotations

import pytest

from tests.config.conftest import SERVER, Writer, loads, only_problem


def test_defaults_are_the_rfc_values(write: Writer) -> None:
    sip = loads(write()).server.sip
    assert (sip.session_expires, sip.min_se, sip.allow_below_rfc_minimum) == (1800, 90, False)


def test_values_at_or_above_90_are_taken(write: Writer) -> None:
    sip = loads(
        write(server=SERVER.replace("[sip]\n", "[sip]\nsession_expires = 600\nmin_se = 120\n"))
    ).server.sip
    assert (sip.session_expires, sip.min_se) == (600, 120)


def test_below_90_only_with_the_explicit_flag(write: Writer) -> None:
    text = "[sip]\nsession_expires = 4\nmin_se = 2\nallow_below_rfc_minimum = true\n"
    sip = loads(write(server=SERVER.replace("[sip]\n", text))).server.sip
    assert (sip.session_expires, sip.min_se, sip.allow_below_rfc_minimum) == (4, 2, True)


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("min_se = 30\n", "min_se", "allow_below_rfc_minimum"),
        ("session_expires = 60\n", "session_expires", "RFC 4028"),
        ("session_expires = 100\nmin_se = 200\n", "session_expires", "min_se (200)"),
        ("min_se = 0\nallow_below_rfc_minimum = true\n", "min_se", "1-86400"),
        ('session_expires = "1800"\n', "session_expires", "integer"),
    ],
)
def test_bad_values_name_the_field(write: Writer, text: str, field: str, fragment: str) -> None:
    problem = only_problem(write(server=SERVER.replace("[sip]\n", "[sip]\n" + text)))
    assert (problem.entity, problem.field) == ("[sip]", field)
    assert fragment in problem.message
