"""Each validation rule of a tenant file: one failing and one passing case (DESIGN sections 2-3).

Every failing case checks that the problem names the file, the entity in the admin's terms and
the field, so the admin can find the line to fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx.config.messages import render_message
from pbx.config.model import Extension, PhoneNumber, TenantId
from tests.config.conftest import (
    ALL_WEEK,
    INCOMING,
    TENANT_HEAD,
    USERS,
    Writer,
    loads,
    only_problem,
    problems_of,
    rule,
    tenant,
)

ACME = TenantId("acme")


def acme_file(path: Path) -> str:
    return str(path.parent / "tenants" / "acme.toml")


def user(ext: str, extra: str = "", password: str = 'password = "pw"') -> str:
    return f'[[users]]\nextension = "{ext}"\n{password}\n{extra}\n'


def four_users(extra_1001: str = "", extra_1002: str = "") -> str:
    return user("1001", extra_1001) + user("1002", extra_1002) + user("1003") + user("1004")


LIMIT_DEFAULTS = {"max_users": "10", "recording_users": "1", "international_calls": "false"}


def head(**limits: str) -> str:
    """The tenant head with some [limits] values changed."""
    text = TENANT_HEAD
    for key, value in limits.items():
        text = text.replace(f"{key} = {LIMIT_DEFAULTS[key]}", f"{key} = {value}")
    return text


# --- usage limits -------------------------------------------------------------------------------


def test_more_users_than_max_users_is_refused(write: Writer) -> None:
    path = write(acme=tenant(head=head(max_users="3"), users=four_users()))
    problem = only_problem(path)
    assert (problem.file, problem.entity, problem.field) == (
        acme_file(path),
        "tenant acme",
        "limits.max_users",
    )
    assert "4 users" in problem.message
    assert "max_users is 3" in problem.message


def test_exactly_max_users_is_accepted(write: Writer) -> None:
    snapshot = loads(write(acme=tenant(head=head(max_users="4"), users=four_users())))
    assert len(snapshot.tenants[ACME].users) == 4


def test_recording_on_while_recording_users_is_zero_is_refused(write: Writer) -> None:
    path = write(acme=tenant(head=head(recording_users="0"), users=four_users("recording = true")))
    problem = only_problem(path)
    assert (problem.file, problem.entity, problem.field) == (
        acme_file(path),
        "user 1001",
        "recording",
    )
    assert "recording_users = 0" in problem.message


def test_more_recording_users_than_allowed_is_refused(write: Writer) -> None:
    users = four_users("recording = true", "recording = true")
    problem = only_problem(write(acme=tenant(head=head(recording_users="1"), users=users)))
    assert (problem.entity, problem.field) == ("tenant acme", "limits.recording_users")
    assert "2 users have recording ON (1001, 1002)" in problem.message


def test_recording_within_recording_users_is_accepted(write: Writer) -> None:
    users = four_users("recording = true", "recording = true")
    snapshot = loads(write(acme=tenant(head=head(recording_users="2"), users=users)))
    assert snapshot.tenants[ACME].users[Extension("1001")].recording is True
    assert snapshot.tenants[ACME].limits.recording_users == 2


# --- extensions --------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["100", "10011", "9000", "9999", "abcd", "10 1", "-100"])
def test_extension_must_be_four_digits_up_to_8999(write: Writer, ext: str) -> None:
    users = USERS + user(ext)
    path = write(acme=tenant(users=users))
    problem = only_problem(path)
    assert (problem.file, problem.entity, problem.field) == (
        acme_file(path),
        f"user {ext.strip()}",
        "extension",
    )
    assert "0000-8999" in problem.message


@pytest.mark.parametrize("ext", ["0000", "8999", "0123"])
def test_extension_boundaries_are_accepted(write: Writer, ext: str) -> None:
    snapshot = loads(write(acme=tenant(users=USERS + user(ext))))
    assert Extension(ext) in snapshot.tenants[ACME].users


def test_extension_written_as_toml_integer_is_a_type_error(write: Writer) -> None:
    users = USERS + '[[users]]\nextension = 1004\npassword = "pw"\n'
    problem = only_problem(write(acme=tenant(users=users)))
    assert (problem.entity, problem.field) == ("user #4", "extension")
    assert '"1004"' in problem.message


def test_duplicate_extension_in_a_tenant_is_refused(write: Writer) -> None:
    problem = only_problem(write(acme=tenant(users=USERS + user("1002"))))
    assert problem.entity == "user 1002 (#4)"
    assert problem.field == "extension"
    assert "user #2" in problem.message


def test_two_tenants_may_use_the_same_extension(write: Writer) -> None:
    other = tenant(
        head=TENANT_HEAD.replace("acme.example", "beta.example")
        .replace("default = true", "")
        .replace("0312345678", "0311112222")
        .replace("0612345678", "0611112222"),
        incoming=INCOMING.replace("0312345678", "0311112222").replace("0612345678", "0611112222"),
        users=USERS.replace("0312345678", "0311112222"),
    )
    snapshot = loads(write(acme=tenant(), beta=other))
    assert Extension("1001") in snapshot.tenants[ACME].users
    assert Extension("1001") in snapshot.tenants[TenantId("beta")].users


# --- caller ID ---------------------------------------------------------------------------------


def test_caller_id_must_be_one_of_the_tenants_numbers(write: Writer) -> None:
    path = write(
        acme=tenant(users=USERS.replace('caller_id = "0312345678"', 'caller_id = "0399999999"'))
    )
    problem = only_problem(path)
    assert (problem.file, problem.entity, problem.field) == (
        acme_file(path),
        "user 1001",
        "caller_id",
    )
    assert "0399999999" in problem.message
    assert "0312345678, 0612345678" in problem.message


def test_caller_id_in_plus81_form_is_accepted_and_normalised(write: Writer) -> None:
    users = USERS.replace('caller_id = "0312345678"', 'caller_id = "+81612345678"')
    snapshot = loads(write(acme=tenant(users=users)))
    assert snapshot.tenants[ACME].users[Extension("1001")].caller_id == "0612345678"


# --- forwarding --------------------------------------------------------------------------------


def test_forward_to_unknown_extension_names_file_user_and_field(write: Writer) -> None:
    users = four_users('forward = { busy = "1099" }')
    path = write(acme=tenant(users=users))
    problem = only_problem(path)
    assert str(problem) == (
        f'{acme_file(path)}: user 1001: forward.busy: "1099" is not an extension of tenant acme '
        "nor a valid external number"
    )


@pytest.mark.parametrize("target", ["abc", "03123", "9999", "+", "0312345678901234567890"])
def test_forward_to_something_that_is_no_number_is_refused(write: Writer, target: str) -> None:
    problem = only_problem(
        write(acme=tenant(users=four_users(f'forward = {{ offline = "{target}" }}')))
    )
    assert (problem.entity, problem.field) == ("user 1001", "forward.offline")
    assert "nor a valid external number" in problem.message


@pytest.mark.parametrize(
    "target", ["1002", "09012345678", "0300001234", "+819012345678", "0612345678", "117"]
)
def test_forward_to_extension_or_domestic_number_is_accepted(write: Writer, target: str) -> None:
    snapshot = loads(
        write(acme=tenant(users=four_users(f'forward = {{ no_answer = "{target}" }}')))
    )
    forward = snapshot.tenants[ACME].users[Extension("1001")].forward
    assert forward.no_answer == target.replace("+81", "0")
    assert forward.busy is None
    assert forward.offline is None


@pytest.mark.parametrize(
    "target", ["0101212345678", "+12125551234", "0033010441234567890", "00330+12125551234"]
)
def test_international_forward_needs_international_calls(write: Writer, target: str) -> None:
    users = four_users(f'forward = {{ busy = "{target}" }}')
    problem = only_problem(write(acme=tenant(users=users)))
    assert (problem.entity, problem.field) == ("user 1001", "forward.busy")
    assert "international" in problem.message
    assert "international_calls is off" in problem.message

    allowed = head(international_calls="true")
    snapshot = loads(write(acme=tenant(head=allowed, users=users)))
    assert snapshot.tenants[ACME].users[Extension("1001")].forward.busy == target


def test_after_hours_announcement_is_not_a_forward_target(write: Writer) -> None:
    problem = only_problem(write(acme=tenant(users=four_users('forward = { busy = "009608" }'))))
    assert (problem.entity, problem.field) == ("user 1001", "forward.busy")
    assert "009608" in problem.message
    assert "not a forward target" in problem.message


def test_forwarding_cycle_of_mixed_kinds_is_reported_whole(write: Writer) -> None:
    users = four_users('forward = { busy = "1002" }', 'forward = { no_answer = "1001" }')
    path = write(acme=tenant(users=users))
    problem = only_problem(path)
    assert (problem.file, problem.entity, problem.field) == (
        acme_file(path),
        "user 1001",
        "forward.busy",
    )
    assert problem.message == "forwarding cycle: 1001 busy -> 1002, 1002 no_answer -> 1001"


def test_three_extension_cycle_through_offline_is_reported(write: Writer) -> None:
    users = (
        user("1001", 'forward = { offline = "1002" }')
        + user("1002", 'forward = { busy = "1003" }')
        + user("1003", 'forward = { no_answer = "1001" }')
    )
    problem = only_problem(write(acme=tenant(users=users)))
    assert problem.message == (
        "forwarding cycle: 1001 offline -> 1002, 1002 busy -> 1003, 1003 no_answer -> 1001"
    )


def test_forward_to_oneself_is_a_cycle(write: Writer) -> None:
    problem = only_problem(write(acme=tenant(users=four_users("", 'forward = { busy = "1002" }'))))
    assert (problem.entity, problem.field) == ("user 1002", "forward.busy")
    assert problem.message == "forwarding cycle: 1002 busy -> 1002"


def test_each_distinct_cycle_is_reported(write: Writer) -> None:
    users = (
        user("1001", 'forward = { busy = "1002", offline = "1003" }')
        + user("1002", 'forward = { busy = "1001" }')
        + user("1003", 'forward = { offline = "1001" }')
    )
    messages = sorted(p.message for p in problems_of(write(acme=tenant(users=users))))
    assert messages == [
        "forwarding cycle: 1001 busy -> 1002, 1002 busy -> 1001",
        "forwarding cycle: 1001 offline -> 1003, 1003 offline -> 1001",
    ]


def test_forward_chain_without_cycle_is_accepted(write: Writer) -> None:
    users = (
        user("1001", 'forward = { busy = "1002", no_answer = "1002", offline = "1003" }')
        + user("1002", 'forward = { busy = "1003", offline = "09012345678" }')
        + user("1003", 'forward = { no_answer = "0612345678" }')
    )
    snapshot = loads(write(acme=tenant(users=users)))
    forward = snapshot.tenants[ACME].users[Extension("1001")].forward
    assert (forward.busy, forward.no_answer, forward.offline) == ("1002", "1002", "1003")


# --- credentials -------------------------------------------------------------------------------


def test_user_without_any_credential_is_refused(write: Writer) -> None:
    problem = only_problem(write(acme=tenant(users=USERS + user("1004", password=""))))
    assert (problem.entity, problem.field) == ("user 1004", "password")
    assert "credential is required" in problem.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("password_ha1_md5", "abc"),
        ("password_ha1_md5", "z" * 32),
        ("password_ha1_md5", "a" * 64),
        ("password_ha1_sha256", "a" * 32),
        ("password_ha1_sha256", "g" * 64),
    ],
)
def test_ha1_must_be_hex_of_the_right_length(write: Writer, key: str, value: str) -> None:
    users = USERS + user("1004", password=f'{key} = "{value}"')
    problem = only_problem(write(acme=tenant(users=users)))
    assert (problem.entity, problem.field) == ("user 1004", key)
    assert "hexadecimal" in problem.message


def test_ha1_hashes_alone_are_accepted_and_lower_cased(write: Writer) -> None:
    hashes = f'password_ha1_md5 = "{"AB" * 16}"\npassword_ha1_sha256 = "{"cd" * 32}"'
    snapshot = loads(write(acme=tenant(users=USERS + user("1004", password=hashes))))
    config = snapshot.tenants[ACME].users[Extension("1004")]
    assert config.password is None
    assert config.password_ha1_md5 == "ab" * 16
    assert config.password_ha1_sha256 == "cd" * 32
    assert not snapshot.warnings


def test_password_and_ha1_together_are_refused(write: Writer) -> None:
    both = f'password = "pw"\npassword_ha1_md5 = "{"a" * 32}"'
    problem = only_problem(write(acme=tenant(users=USERS + user("1004", password=both))))
    assert (problem.entity, problem.field) == ("user 1004", "password")
    assert "not both" in problem.message


def test_only_md5_ha1_warns_that_sha256_phones_cannot_authenticate(write: Writer) -> None:
    md5 = f'password_ha1_md5 = "{"a" * 32}"'
    server = '[auth]\nalgorithms = ["MD5", "SHA-256"]\n'
    snapshot = loads(write(server=server, acme=tenant(users=USERS + user("1004", password=md5))))
    assert any("user 1004: password_ha1_md5: no hash for SHA-256" in w for w in snapshot.warnings)


# --- [tenant] auth_algorithms (issue 15): SHA-256 per tenant ---------------------------------

SHA_HEAD = TENANT_HEAD.replace(
    "default = true", 'default = true\nauth_algorithms = ["SHA-256", "md5"]'
)


def test_a_tenant_turns_sha256_on_for_itself_and_the_server_default_is_md5_only(
    write: Writer,
) -> None:
    snapshot = loads(write(acme=tenant(head=SHA_HEAD)))
    acme = snapshot.tenants[TenantId("acme")]
    assert snapshot.server.auth.algorithms == ("MD5",)
    assert acme.auth_algorithms == ("SHA-256", "MD5")  # offer order kept, names canonical
    assert acme.digest_algorithms(snapshot.server.auth) == ("SHA-256", "MD5")
    plain = loads(write(acme=tenant()))
    assert plain.tenants[TenantId("acme")].digest_algorithms(plain.server.auth) == ("MD5",)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ('["SHA-512"]', "auth.algorithm_unknown"),
        ('["MD5", "md5"]', "auth.algorithm_duplicate"),
        ("[]", "auth.algorithms_empty"),
    ],
)
def test_a_wrong_tenant_auth_algorithms_names_the_field(
    write: Writer, value: str, code: str
) -> None:
    head = TENANT_HEAD.replace("default = true", f"default = true\nauth_algorithms = {value}")
    problem = only_problem(write(acme=tenant(head=head)))
    assert (problem.entity, problem.field, problem.code) == ("tenant acme", "auth_algorithms", code)


def test_a_tenant_offering_only_sha256_refuses_users_with_only_an_md5_hash(write: Writer) -> None:
    head = TENANT_HEAD.replace("default = true", 'default = true\nauth_algorithms = ["SHA-256"]')
    md5 = f'password_ha1_md5 = "{"a" * 32}"'
    problem = only_problem(write(acme=tenant(head=head, users=USERS + user("1004", password=md5))))
    assert (problem.entity, problem.field) == ("user 1004", "password_ha1_md5")
    assert problem.code == "user.ha1_no_offered_algorithm"
    assert "SHA-256" in problem.message


def test_only_ha1_for_an_algorithm_the_server_does_not_offer_is_refused(write: Writer) -> None:
    server = '[auth]\nalgorithms = ["MD5"]\n'
    sha = f'password_ha1_sha256 = "{"a" * 64}"'
    problem = only_problem(
        write(server=server, acme=tenant(users=USERS + user("1004", password=sha)))
    )
    assert (problem.entity, problem.field) == ("user 1004", "password_ha1_sha256")
    assert "never authenticate" in problem.message


# --- incoming rules ----------------------------------------------------------------------------


def test_incoming_rule_for_a_number_the_tenant_does_not_have(write: Writer) -> None:
    incoming = INCOMING + rule("0399999999", "1001", ALL_WEEK, "0:00", "23:59")
    path = write(acme=tenant(incoming=incoming))
    problem = only_problem(path)
    assert (problem.file, problem.entity, problem.field) == (
        acme_file(path),
        "incoming rule #3 (number 0399999999)",
        "number",
    )
    assert "not one of the numbers of tenant acme" in problem.message


def test_after_hours_announcement_mixed_with_other_targets(write: Writer) -> None:
    incoming = rule("0312345678", "009608,1001", ALL_WEEK, "0:00", "23:59") + rule(
        "0612345678", "1003", ALL_WEEK, "0:00", "23:59"
    )
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert (problem.entity, problem.field) == ("incoming rule #1 (number 0312345678)", "targets")
    assert "009608" in problem.message
    assert "mixed with 1001" in problem.message


def test_after_hours_announcement_alone_is_accepted(write: Writer) -> None:
    incoming = rule("0312345678", "009608", ALL_WEEK, "0:00", "23:59") + rule(
        "0612345678", "1003, 09012345678 ,0300001234", ALL_WEEK, "0:00", "23:59"
    )
    snapshot = loads(write(acme=tenant(incoming=incoming)))
    rules = snapshot.tenants[ACME].incoming
    assert rules[0].targets == ("009608",)
    assert rules[1].targets == ("1003", "09012345678", "0300001234")


def test_unknown_extension_in_targets(write: Writer) -> None:
    incoming = rule("0312345678", "1001,1099", ALL_WEEK, "0:00", "23:59") + rule(
        "0612345678", "1003", ALL_WEEK, "0:00", "23:59"
    )
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert (problem.entity, problem.field) == ("incoming rule #1 (number 0312345678)", "targets")
    assert "unknown extension 1099" in problem.message


def test_international_target_needs_international_calls(write: Writer) -> None:
    incoming = rule("0312345678", "0101212345678", ALL_WEEK, "0:00", "23:59") + rule(
        "0612345678", "1003", ALL_WEEK, "0:00", "23:59"
    )
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert problem.field == "targets"
    assert "international_calls is off" in problem.message
    loads(write(acme=tenant(head=head(international_calls="true"), incoming=incoming)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("start", "8"),
        ("start", "8:0"),
        ("start", "24:00"),
        ("start", "8:60"),
        ("start", "8:00:60"),
        ("end", "ab"),
        ("end", "19:59:5"),
        ("end", "123:00"),
    ],
)
def test_malformed_time_is_refused(write: Writer, field: str, value: str) -> None:
    times = {"start": "0:00", "end": "23:59", field: value}
    incoming = rule("0312345678", "1001", ALL_WEEK, times["start"], times["end"]) + rule(
        "0612345678", "1003", ALL_WEEK, "0:00", "23:59"
    )
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert (problem.entity, problem.field) == ("incoming rule #1 (number 0312345678)", field)
    assert f'"{value}"' in problem.message


def test_both_time_spellings_of_the_manual_are_accepted(write: Writer) -> None:
    incoming = (
        rule("0312345678", "1001", ALL_WEEK, "0:00:00", "08:59:59")
        + rule("0312345678", "1002", ALL_WEEK, "09:00", "19:59")
        + rule("0312345678", "1003", ALL_WEEK, "20:00:00", "23:59")
        + rule("0612345678", "1003", ALL_WEEK, "0:00", "23:59")
    )
    snapshot = loads(write(acme=tenant(incoming=incoming)))
    rules = snapshot.tenants[ACME].rules_for(PhoneNumber("0312345678"))
    assert [(str(r.start), str(r.end)) for r in rules] == [
        ("00:00:00", "08:59:59"),
        ("09:00:00", "19:59:59"),
        ("20:00:00", "23:59:59"),
    ]
    assert not snapshot.warnings


def test_window_crossing_midnight_is_refused(write: Writer) -> None:
    incoming = rule("0312345678", "009608", ALL_WEEK, "18:00", "9:00") + rule(
        "0612345678", "1003", ALL_WEEK, "0:00", "23:59"
    )
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert (problem.entity, problem.field) == ("incoming rule #1 (number 0312345678)", "end")
    assert "crosses midnight" in problem.message
    # The manual's split of a window ending at 9:00 (issue 19): through 8:59:59, not 09:00:59.
    assert "18:00:00-23:59:59 and 0:00:00-8:59:59" in problem.message
    assert "0:00:00-8:59:59 の2つ" in render_message(problem.code, problem.params, "ja")


@pytest.mark.parametrize(
    ("end", "morning"),
    [("9:00:00", "0:00:00-9:00:00"), ("8:30", "0:00:00-8:29:59"), ("0:00", "0:00:00-0:00:59")],
)
def test_midnight_hint_reads_an_end_with_seconds_as_inclusive(
    write: Writer, end: str, morning: str
) -> None:
    incoming = rule("0312345678", "009608", ALL_WEEK, "18:00", end) + rule(
        "0612345678", "1003", ALL_WEEK, "0:00", "23:59"
    )
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert f"18:00:00-23:59:59 and {morning}" in problem.message


def test_overlapping_windows_name_both_rules(write: Writer) -> None:
    incoming = (
        rule("0312345678", "1001", '["mon", "tue"]', "8:00", "19:59")
        + rule("0312345678", "1002", '["tue", "wed"]', "19:00", "23:59")
        + rule("0612345678", "1003", ALL_WEEK, "0:00", "23:59")
    )
    path = write(acme=tenant(incoming=incoming))
    problem = only_problem(path)
    assert problem.file == acme_file(path)
    assert problem.entity == "incoming rule #2 (number 0312345678)"
    assert "incoming rule #1 (number 0312345678)" in problem.message
    assert "tue 19:00:00-19:59:59" in problem.message


def test_same_window_on_different_days_or_numbers_does_not_overlap(write: Writer) -> None:
    incoming = (
        rule("0312345678", "1001", '["mon", "tue"]', "8:00", "19:59")
        + rule("0312345678", "1002", '["wed"]', "8:00", "19:59")
        + rule("0312345678", "1002", '["mon"]', "20:00", "23:59")
        + rule("0612345678", "1003", ALL_WEEK, "0:00", "23:59")
    )
    loads(write(acme=tenant(incoming=incoming)))


def test_holiday_rules_overlap_only_with_holiday_rules(write: Writer) -> None:
    incoming = (
        rule("0312345678", "1001", ALL_WEEK, "0:00", "23:59")
        + rule("0312345678", "009608", '["holiday"]', "0:00", "23:59")
        + rule("0612345678", "1003", '["mon", "holiday"]', "0:00", "23:59")
        + rule("0612345678", "1002", '["holiday"]', "12:00", "12:30")
    )
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert problem.entity == "incoming rule #4 (number 0612345678)"
    assert "incoming rule #3 (number 0612345678) on holiday 12:00:00-12:30:59" in problem.message


def test_unknown_day_name_is_refused(write: Writer) -> None:
    incoming = rule("0312345678", "1001", '["mon", "tues"]', "0:00", "23:59") + rule(
        "0612345678", "1003", ALL_WEEK, "0:00", "23:59"
    )
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert (problem.entity, problem.field) == ("incoming rule #1 (number 0312345678)", "days")
    assert '"tues"' in problem.message
    assert 'did you mean "tue"' in problem.message


def test_day_names_are_read_case_insensitively(write: Writer) -> None:
    incoming = rule("0312345678", "1001", '["Mon", "HOLIDAY"]', "0:00", "23:59") + INCOMING
    incoming = incoming.replace(ALL_WEEK, '["tue", "wed", "thu", "fri", "sat", "sun"]', 1)
    snapshot = loads(write(acme=tenant(incoming=incoming)))
    assert snapshot.tenants[ACME].incoming[0].days == frozenset({"mon", "holiday"})


def test_parallel_forward_edges_are_named_together(write: Writer) -> None:
    users = four_users(
        'forward = { busy = "1002", offline = "1002" }', 'forward = { no_answer = "1001" }'
    )
    problem = only_problem(write(acme=tenant(users=users)))
    assert problem.message == "forwarding cycle: 1001 busy/offline -> 1002, 1002 no_answer -> 1001"


def test_bad_forward_of_a_user_with_a_bad_extension_is_still_reported(write: Writer) -> None:
    users = USERS + user("9004", 'forward = { busy = "009608" }')
    found = problems_of(write(acme=tenant(users=users)))
    assert [(p.entity, p.field) for p in found] == [
        ("user 9004", "extension"),
        ("user 9004", "forward.busy"),
    ]


# --- issue 19: a time or target written without quotes gets a hint to quote it -----------------


@pytest.mark.parametrize(
    ("key", "written", "suggestion"),
    [
        ("start", "8:00", 'start = "8:00"'),
        ("end", "9:59:59", 'end = "9:59:59"'),
        ("targets", "1001,1002", 'targets = "1001,1002"'),
    ],
)
def test_an_unquoted_time_or_target_list_gets_a_hint_to_quote_it(
    write: Writer, key: str, written: str, suggestion: str
) -> None:
    values = {"targets": '"1001"', "start": '"8:00"', "end": '"19:59"', key: written}
    body = "".join(f"{name} = {value}\n" for name, value in values.items())
    incoming = f'[[incoming]]\nnumber = "0312345678"\ndays = {ALL_WEEK}\n{body}'
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert problem.code == "file.invalid_toml_quote"
    assert problem.message.endswith(f"write the value in quotes: {suggestion}")
    assert suggestion in render_message(problem.code, problem.params, "ja")


def test_a_target_written_as_a_bare_number_gets_a_hint_to_quote_it(write: Writer) -> None:
    incoming = rule("0312345678", "1001", ALL_WEEK, "8:00", "19:59").replace(
        'targets = "1001"', "targets = 1001"
    )
    problem = only_problem(write(acme=tenant(incoming=incoming)))
    assert problem.code == "incoming.targets_type"
    assert 'in quotes, e.g. targets = "1001"' in problem.message
