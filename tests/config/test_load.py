"""Loading as a whole: snapshot, server settings, normalisation, warnings, cross-tenant rules."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from types import MappingProxyType

import pytest

from pbx.config.load import ConfigError, load_config
from pbx.config.model import Extension, ListenSpec, PhoneNumber, TenantId, Trunk
from tests.config.conftest import (
    ALL_WEEK,
    INCOMING,
    SERVER,
    TENANT_HEAD,
    USERS,
    Writer,
    loads,
    only_problem,
    problems_of,
    rule,
    tenant,
)


def other_tenant(
    domain: str = "beta.example", numbers: tuple[str, str] = ("0311112222", "0611112222")
) -> str:
    """A valid second tenant (not default) with its own domain and numbers."""
    a, b = numbers

    def renumber(text: str) -> str:
        return text.replace("0312345678", "<A>").replace("0612345678", b).replace("<A>", a)

    return tenant(
        head=renumber(TENANT_HEAD.replace("acme.example", domain).replace("default = true\n", "")),
        users=renumber(USERS),
        incoming=renumber(INCOMING),
    )


# --- the snapshot ------------------------------------------------------------------------------


def test_snapshot_is_frozen_and_indexed(write: Writer) -> None:
    path = write(acme=tenant(), beta=other_tenant())
    snapshot = load_config(path, version=7)
    assert snapshot.version == 7
    assert isinstance(snapshot.tenants, MappingProxyType)
    assert isinstance(snapshot.tenants[TenantId("acme")].users, MappingProxyType)
    assert isinstance(snapshot.tenant_by_number, MappingProxyType)
    assert snapshot.tenant_by_number == {
        "0312345678": "acme",
        "0612345678": "acme",
        "0311112222": "beta",
        "0611112222": "beta",
    }
    assert dict(snapshot.tenant_by_domain) == {"acme.example": "acme", "beta.example": "beta"}
    assert snapshot.default_tenant == "acme"
    assert snapshot.tenant_for_domain("BETA.example") is snapshot.tenants[TenantId("beta")]
    assert snapshot.tenant_for_domain("192.0.2.1") is snapshot.tenants[TenantId("acme")]
    assert snapshot.tenant_for_number("0611112222") is snapshot.tenants[TenantId("beta")]
    with pytest.raises(TypeError):
        snapshot.tenants[TenantId("x")] = snapshot.tenants[TenantId("acme")]  # type: ignore[index]


def test_tenant_values_are_parsed(write: Writer) -> None:
    acme = loads(write()).tenants[TenantId("acme")]
    assert acme.id == "acme"
    assert acme.domain == "acme.example"
    assert acme.timezone == "Asia/Tokyo"
    assert acme.default is True
    assert acme.limits.max_users == 10
    assert acme.numbers == ("0312345678", "0612345678")
    assert list(acme.users) == ["1001", "1002", "1003"]
    first = acme.incoming[0]
    assert first.position == 1
    assert first.number == "0312345678"
    assert first.targets == ("1001", "1002")
    assert first.days == frozenset({"mon", "tue", "wed", "thu", "fri", "sat", "sun"})
    assert (first.start, first.end) == (time(0, 0, 0), time(23, 59, 59))


def test_only_tenant_is_the_default_even_unmarked(write: Writer) -> None:
    snapshot = loads(write(beta=other_tenant()))
    assert snapshot.default_tenant == "beta"


def test_no_default_among_several_tenants_is_a_warning(write: Writer) -> None:
    snapshot = loads(
        write(beta=other_tenant(), gamma=other_tenant("g.example", ("0322223333", "0622223333")))
    )
    assert snapshot.default_tenant is None
    assert any("default = true" in w for w in snapshot.warnings)


def test_digest_is_stable_and_follows_the_bytes(write: Writer) -> None:
    path = write()
    first = load_config(path).digest
    assert load_config(path).digest == first
    assert len(first) == 64
    tenant_file = path.parent / "tenants" / "acme.toml"
    tenant_file.write_text(
        tenant_file.read_text(encoding="utf-8") + "\n# comment\n", encoding="utf-8"
    )
    assert load_config(path).digest != first


# --- server settings ---------------------------------------------------------------------------

FULL_SERVER = """\
tenants_dir = "customers"
[sip]
listen = ["udp:0.0.0.0:5060", "tcp:[::]:5061", "udp:[::1]:5070"]
advertise = "192.0.2.10"
[auth]
algorithms = ["SHA-256", "MD5"]
[registrar]
min_expires = 30
max_expires = 7200
max_contacts = 3
[calls]
no_answer_seconds = 15
max_ring_seconds = 45
max_calls_per_user = 2
max_forward_hops = 4
[security]
ban_after_failures = 5
ban_window_seconds = 60
ban_seconds = 120
max_requests_per_second = 20
[media]
rtp_ports = "30000-30999"
inactivity_seconds = 30
[admin]
listen = "[::1]:9000"
[storage]
data_dir = "../var"
[[trunks]]
name = "carrier"
address = "127.0.0.2:5080"
[[trunks]]
name = "backup"
address = "127.0.0.3"
"""


def test_server_settings_are_parsed(tmp_path: Path) -> None:
    root = tmp_path / "etc"
    (root / "customers").mkdir(parents=True)
    (root / "pbx.toml").write_text(FULL_SERVER, encoding="utf-8")
    (root / "customers" / "acme.toml").write_text(tenant(), encoding="utf-8")
    server = loads(root / "pbx.toml").server
    assert server.sip.listen == (
        ListenSpec("udp", "0.0.0.0", 5060),
        ListenSpec("tcp", "::", 5061),
        ListenSpec("udp", "::1", 5070),
    )
    assert server.sip.advertise == "192.0.2.10"
    assert server.auth.algorithms == ("SHA-256", "MD5")
    assert (server.registrar.min_expires, server.registrar.max_expires) == (30, 7200)
    assert server.registrar.max_contacts == 3
    assert server.calls.no_answer_seconds == 15
    assert server.calls.max_ring_seconds == 45
    assert server.calls.max_calls_per_user == 2
    assert server.calls.max_forward_hops == 4
    assert server.security.ban_after_failures == 5
    assert server.security.max_requests_per_second == 20
    assert (server.media.rtp_port_min, server.media.rtp_port_max) == (30000, 30999)
    assert server.media.inactivity_seconds == 30
    assert (server.admin.host, server.admin.port) == ("::1", 9000)
    assert server.storage.data_dir == (tmp_path / "var").resolve()
    assert server.trunks == (
        Trunk("carrier", "127.0.0.2", 5080),
        Trunk("backup", "127.0.0.3", 5060),
    )
    assert server.path == root / "pbx.toml"


def test_server_defaults_follow_the_design(write: Writer) -> None:
    server = loads(write(server="")).server
    assert server.sip.listen == (
        ListenSpec("udp", "0.0.0.0", 5060),
        ListenSpec("tcp", "0.0.0.0", 5060),
    )
    # MD5 only by default (issue 15: baresip 1.0 gives up on a SHA-256 challenge).
    assert server.auth.algorithms == ("MD5",)
    assert server.calls.no_answer_seconds == 20
    assert server.calls.max_ring_seconds == 60
    assert server.calls.max_calls_per_user == 1
    assert server.calls.max_forward_hops == 5
    assert (server.admin.host, server.admin.port) == ("127.0.0.1", 8088)
    assert (server.media.rtp_port_min, server.media.rtp_port_max) == (20000, 29999)
    assert server.trunks == ()


@pytest.mark.parametrize(
    ("text", "entity", "field", "fragment"),
    [
        ('[sip]\nlisten = ["sctp:0.0.0.0:5060"]\n', "[sip]", "listen", '"sctp:0.0.0.0:5060"'),
        ('[sip]\nlisten = ["udp:example.com:5060"]\n', "[sip]", "listen", "not an IP address"),
        ('[sip]\nlisten = ["udp:0.0.0.0:99999"]\n', "[sip]", "listen", "not a port"),
        ('[sip]\nlisten = ["udp:::1:5060"]\n', "[sip]", "listen", "brackets"),
        ('[sip]\nlisten = "udp:0.0.0.0:5060,tcp"\n', "[sip]", "listen", "not a port"),
        ("[sip]\nlisten = 5060\n", "[sip]", "listen", "must be an array of strings"),
        ('[sip]\nlistne = ["udp:0.0.0.0:5060"]\n', "[sip]", "listne", 'did you mean "listen"'),
        ('[auth]\nalgorithms = ["MD5", "SHA-512"]\n', "[auth]", "algorithms", '"SHA-512"'),
        ('[calls]\nno_answer_seconds = "20"\n', "[calls]", "no_answer_seconds", "integer"),
        ("[calls]\nmax_forward_hops = 0\n", "[calls]", "max_forward_hops", "at least 1"),
        ("[calls]\nmax_calls_per_user = true\n", "[calls]", "max_calls_per_user", "boolean"),
        ("[registrar]\nmin_expires = 4000\n", "[registrar]", "min_expires", "max_expires"),
        ('[media]\nrtp_ports = "29999-20000"\n', "[media]", "rtp_ports", "LOW < HIGH"),
        ('[media]\nrtp_ports = "20000"\n', "[media]", "rtp_ports", "LOW-HIGH"),
        ('[admin]\nlisten = "localhost:8088"\n', "[admin]", "listen", "not an IP address"),
        ('[admin]\nlisten = "127.0.0.1"\n', "[admin]", "listen", "port is required"),
        ('[[trunks]]\nname = "c"\naddress = "carrier.example:5060"\n', "trunk c", "address", "IP"),
        ('[[trunks]]\naddress = "127.0.0.2:5080"\n', "trunk #1", "name", "required"),
        (
            '[[trunks]]\nname = "a"\naddress = "127.0.0.2"\n'
            '[[trunks]]\nname = "b"\naddress = "127.0.0.2:5090"\n',
            "trunk b",
            "address",
            "trunk a",
        ),
        ("[stroage]\n", "", "stroage", 'did you mean "storage"'),
        ("[calls]\nmax_ring = 30\n", "[calls]", "max_ring", "max_ring_seconds"),
    ],
)
def test_server_problems_name_section_and_key(
    write: Writer, text: str, entity: str, field: str, fragment: str
) -> None:
    path = write(server=text)
    problem = only_problem(path)
    assert (problem.file, problem.entity, problem.field) == (str(path), entity, field)
    assert fragment in problem.message


def test_admin_on_a_public_address_is_a_warning(write: Writer) -> None:
    snapshot = loads(write(server='[admin]\nlisten = "0.0.0.0:8088"\n'))
    assert any("[admin]: listen" in w and "loopback" in w for w in snapshot.warnings)


def test_no_answer_not_shorter_than_max_ring_is_a_warning(write: Writer) -> None:
    snapshot = loads(write(server="[calls]\nno_answer_seconds = 60\nmax_ring_seconds = 60\n"))
    assert any("[calls]: no_answer_seconds" in w for w in snapshot.warnings)


def test_missing_pbx_toml_is_one_problem(tmp_path: Path) -> None:
    problem = only_problem(tmp_path / "nope.toml")
    assert problem.file == str(tmp_path / "nope.toml")
    assert "cannot read" in problem.message


def test_missing_tenants_dir_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "pbx.toml").write_text('tenants_dir = "custs"\n', encoding="utf-8")
    problem = only_problem(tmp_path / "pbx.toml")
    assert problem.field == "tenants_dir"
    assert "not a directory" in problem.message


def test_toml_syntax_error_names_the_file_and_other_files_are_still_checked(write: Writer) -> None:
    path = write(acme="[tenant\n", beta=other_tenant().replace('"beta.example"', "nope"))
    found = problems_of(path)
    assert [p.file for p in found] == [
        str(path.parent / "tenants" / "acme.toml"),
        str(path.parent / "tenants" / "beta.toml"),
    ]
    assert all("invalid TOML" in p.message for p in found)


# --- tenant file shape -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "entity", "field", "fragment"),
    [
        ('domain = "acme.example"', 'domian = "acme.example"', "tenant acme", "domian", "domain"),
        (
            'domain = "acme.example"',
            'domain = "acme example"',
            "tenant acme",
            "domain",
            "domain name",
        ),
        ('domain = "acme.example"', "", "tenant acme", "domain", "required"),
        ("default = true", 'default = "yes"', "tenant acme", "default", "true or false"),
        ("max_users = 10", 'max_users = "10"', "tenant acme", "limits.max_users", "integer"),
        ("max_users = 10", "", "tenant acme", "limits.max_users", "required"),
        (
            "recording_users = 1",
            "recording_user = 1",
            "tenant acme",
            "limits.recording_user",
            "unknown",
        ),
        (
            "international_calls = false",
            "international_calls = 0",
            "tenant acme",
            "limits.international_calls",
            "true or false",
        ),
        (
            '[[numbers]]\nnumber = "0612345678"',
            '[[numbers]]\nnumber = "12345"',
            "number 12345",
            "number",
            "not a phone number",
        ),
        (
            '[[numbers]]\nnumber = "0612345678"',
            '[[numbers]]\nnumber = "0312345678"',
            "number 0312345678",
            "number",
            "listed twice",
        ),
    ],
)
def test_tenant_problems_name_entity_and_field(
    write: Writer, old: str, new: str, entity: str, field: str, fragment: str
) -> None:
    head = TENANT_HEAD.replace(old, new)
    incoming = INCOMING if "0612345678" in head else INCOMING.split("[[incoming]]")[1]
    if "0612345678" not in head:
        incoming = "[[incoming]]" + incoming
    path = write(acme=tenant(head=head, incoming=incoming))
    found = [p for p in problems_of(path) if p.field == field]
    assert found, "\n".join(str(p) for p in problems_of(path))
    problem = found[0]
    assert (problem.file, problem.entity) == (str(path.parent / "tenants" / "acme.toml"), entity)
    assert fragment in problem.message


def test_unknown_timezone_is_refused(write: Writer) -> None:
    head = TENANT_HEAD.replace("default = true", 'default = true\ntimezone = "Asia/Tokio"')
    problem = only_problem(write(acme=tenant(head=head)))
    assert (problem.entity, problem.field) == ("tenant acme", "timezone")


def test_user_unknown_key_and_forward_unknown_kind(write: Writer) -> None:
    users = USERS.replace(
        'password = "pw2"', 'password = "pw2"\nrecordng = true\nforward = { bussy = "1001" }'
    )
    found = problems_of(write(acme=tenant(users=users)))
    assert [(p.entity, p.field) for p in found] == [
        ("user 1002", "recordng"),
        ("user 1002", "forward.bussy"),
    ]
    assert 'did you mean "recording"' in found[0].message
    assert 'did you mean "busy"' in found[1].message


# --- normalisation -----------------------------------------------------------------------------


def test_full_width_digits_and_colons_are_normalised_with_a_warning(write: Writer) -> None:
    users = USERS.replace('extension = "1002"', 'extension = "１００２"')
    incoming = INCOMING.replace('start = "0:00"', 'start = "０：００"', 1).replace(
        'number = "0612345678"', 'number = "０６１２３４５６７８"'
    )
    path = write(acme=tenant(users=users, incoming=incoming))
    snapshot = loads(path)
    acme = snapshot.tenants[TenantId("acme")]
    assert Extension("1002") in acme.users
    assert acme.incoming[0].start == time(0, 0)
    assert acme.incoming[1].number == "0612345678"
    file = str(path.parent / "tenants" / "acme.toml")
    assert (
        f'{file}: user 1002: extension: full-width characters normalised: "１００２" -> "1002"'
        in snapshot.warnings
    )
    assert (
        f"{file}: incoming rule #1 (number 0312345678): start: full-width characters normalised: "
        '"０：００" -> "0:00"'
    ) in snapshot.warnings
    assert any(
        "incoming rule #2 (number 0612345678): number: full-width" in w for w in snapshot.warnings
    )
    detail = snapshot.warning_details[0]
    assert detail.severity == "warning"
    assert str(detail) == snapshot.warnings[0]


def test_plus81_numbers_become_national(write: Writer) -> None:
    head = TENANT_HEAD.replace('number = "0612345678"', 'number = "+81612345678"')
    incoming = INCOMING.replace('number = "0312345678"', 'number = "+81312345678"')
    snapshot = loads(write(acme=tenant(head=head, incoming=incoming)))
    acme = snapshot.tenants[TenantId("acme")]
    assert acme.numbers == ("0312345678", "0612345678")
    assert acme.incoming[0].number == "0312345678"
    assert snapshot.tenant_by_number[PhoneNumber("0612345678")] == "acme"
    assert not snapshot.warnings


# --- gaps --------------------------------------------------------------------------------------


def test_gaps_in_the_week_are_a_compact_warning(write: Writer) -> None:
    weekdays = '["mon", "tue", "wed", "thu", "fri"]'
    incoming = rule("0312345678", "1001", weekdays, "0:00", "19:59") + rule(
        "0612345678", "1003", ALL_WEEK, "0:00", "23:59"
    )
    path = write(acme=tenant(incoming=incoming))
    snapshot = loads(path)
    assert snapshot.warnings == (
        f"{path.parent / 'tenants' / 'acme.toml'}: number 0312345678: incoming: no rule covers "
        "sat-sun all day, mon-fri 20:00:00-23:59:59 (calls then are refused with 480)",
    )


def test_manual_example_schedule_has_no_gap(write: Writer) -> None:
    incoming = (
        rule("0312345678", "1001,1002", ALL_WEEK, "8:00", "19:59")
        + rule("0312345678", "1003", ALL_WEEK, "20:00", "23:59")
        + rule("0312345678", "009608", ALL_WEEK, "0:00", "7:59")
        + rule("0612345678", "1003", ALL_WEEK, "0:00", "23:59")
    )
    assert loads(write(acme=tenant(incoming=incoming))).warnings == ()


def test_holiday_gaps_are_checked_only_when_a_number_has_holiday_rules(write: Writer) -> None:
    incoming = (
        rule("0312345678", "1001", ALL_WEEK, "0:00", "23:59")
        + rule("0612345678", "1003", ALL_WEEK, "0:00", "23:59")
        + rule("0612345678", "1002", '["holiday"]', "9:00", "16:59:59")
    )
    snapshot = loads(write(acme=tenant(incoming=incoming)))
    assert len(snapshot.warnings) == 1
    assert snapshot.warnings[0].endswith(
        "number 0612345678: incoming: no rule covers holiday 00:00:00-08:59:59 and "
        "17:00:00-23:59:59 (calls then are refused with 480)"
    )


def test_number_without_rules_is_a_warning(write: Writer) -> None:
    incoming = rule("0312345678", "1001", ALL_WEEK, "0:00", "23:59")
    snapshot = loads(write(acme=tenant(incoming=incoming)))
    assert snapshot.warnings[0].endswith(
        "number 0612345678: incoming: no incoming rule: every call to this number is refused (480)"
    )


def test_split_days_in_gap_warning(write: Writer) -> None:
    incoming = rule("0312345678", "1001", '["tue", "thu", "fri", "sat"]', "0:00", "23:59") + rule(
        "0612345678", "1003", ALL_WEEK, "0:00", "23:59"
    )
    snapshot = loads(write(acme=tenant(incoming=incoming)))
    assert "no rule covers mon, wed, sun all day (" in snapshot.warnings[0]


# --- across tenants ----------------------------------------------------------------------------


def test_number_of_two_tenants_is_refused(write: Writer) -> None:
    path = write(acme=tenant(), beta=other_tenant(numbers=("0312345678", "0611112222")))
    problem = only_problem(path)
    assert (problem.file, problem.entity, problem.field) == (
        str(path.parent / "tenants" / "beta.toml"),
        "number 0312345678",
        "number",
    )
    assert "tenant acme" in problem.message


def test_number_of_two_tenants_is_refused_across_spellings(write: Writer) -> None:
    path = write(acme=tenant(), beta=other_tenant(numbers=("+81312345678", "0611112222")))
    assert "also a number of tenant acme" in only_problem(path).message


def test_domain_of_two_tenants_is_refused(write: Writer) -> None:
    path = write(acme=tenant(), beta=other_tenant(domain="ACME.example"))
    problem = only_problem(path)
    assert (problem.entity, problem.field) == ("tenant beta", "domain")
    assert '"acme.example" is also the domain of tenant acme' in problem.message


def test_two_default_tenants_are_refused(write: Writer) -> None:
    beta = other_tenant().replace("[tenant]\n", "[tenant]\ndefault = true\n")
    problem = only_problem(write(acme=tenant(), beta=beta))
    assert (problem.entity, problem.field) == ("tenant beta", "default")
    assert "tenant acme" in problem.message


# --- every problem at once ---------------------------------------------------------------------


def test_every_problem_is_reported_at_once(write: Writer) -> None:
    server = SERVER + "[calls]\nmax_ring_seconds = -1\n"
    head = TENANT_HEAD.replace("max_users = 10", "max_users = 2").replace(
        "recording_users = 1", "recording_users = 0"
    )
    users = (
        USERS.replace('caller_id = "0312345678"', 'caller_id = "0399999999"\nrecording = true')
        + '[[users]]\nextension = "9000"\npassword = "x"\n'
        + '[[users]]\nextension = "1004"\npassword = "x"\n'
        + 'forward = { busy = "1099", offline = "1004" }\n'
    )
    incoming = (
        rule("0312345678", "009608,1001", '["mon", "someday"]', "8:00", "7:00")
        + rule("0312345678", "1001", ALL_WEEK, "0:00", "23:59")
        + rule("0312345678", "1002", ALL_WEEK, "12:00", "12:30")
        + rule("0399999999", "1001", ALL_WEEK, "0:00", "23:59")
        + rule("0612345678", "1003", ALL_WEEK, "0:00", "24:00")
    )
    beta = other_tenant(domain="acme.example", numbers=("0612345678", "0611112222"))
    path = write(server=server, acme=tenant(head=head, users=users, incoming=incoming), beta=beta)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    seen = {(p.entity, p.field) for p in info.value.problems}
    expected = {
        ("[calls]", "max_ring_seconds"),
        ("tenant acme", "limits.max_users"),
        ("user 1001", "caller_id"),
        ("user 1001", "recording"),
        ("user 9000", "extension"),
        ("user 1004", "forward.busy"),
        ("user 1004", "forward.offline"),
        ("incoming rule #1 (number 0312345678)", "targets"),
        ("incoming rule #1 (number 0312345678)", "days"),
        ("incoming rule #1 (number 0312345678)", "end"),
        ("incoming rule #3 (number 0312345678)", "start-end"),
        ("incoming rule #4 (number 0399999999)", "number"),
        ("incoming rule #5 (number 0612345678)", "end"),
        ("number 0612345678", "number"),
        ("tenant beta", "domain"),
    }
    assert expected <= seen, sorted(expected - seen)
    assert len(info.value.problems) == len(expected)
    assert str(info.value).startswith(f"{len(expected)} configuration problems:\n")


# --- shapes and spellings ----------------------------------------------------------------------


def test_users_written_as_a_table_instead_of_an_array_is_a_type_error(write: Writer) -> None:
    text = tenant(users='[users]\nextension = "1001"\npassword = "x"\n')
    found = problems_of(write(acme=text))
    assert any(p.field == "users" and "array of tables ([[users]])" in p.message for p in found)


def test_entry_that_is_not_a_table_is_named_by_position(write: Writer) -> None:
    text = "users = [1]\n" + tenant(users="")
    found = problems_of(write(acme=text))
    assert (found[0].entity, found[0].field) == ("user #1", "")


def test_targets_as_array_japanese_commas_and_duplicates(write: Writer) -> None:
    incoming = (
        '[[incoming]]\nnumber = "0312345678"\ntargets = ["1001", "1002"]\n'
        f"days = {ALL_WEEK}\nstart = 00:00:00\nend = 23:59:59\n"
        + rule("0612345678", "1003、1001,1003", ALL_WEEK, "0:00", "23:59")
    )
    snapshot = loads(write(acme=tenant(incoming=incoming)))
    acme = snapshot.tenants[TenantId("acme")]
    assert acme.incoming[0].targets == ("1001", "1002")
    assert acme.incoming[0].end == time(23, 59, 59)
    assert acme.incoming[1].targets == ("1003", "1001")
    assert [w.split(": ", 3)[2:] for w in snapshot.warnings] == [
        ["targets", 'Japanese commas "、" read as ","'],
        ["targets", "1003 is listed twice"],
    ]


def test_rtpengine_media_settings(write: Writer) -> None:  # issue #20
    extra = (
        '\n[media]\nengine = "rtpengine"\nrtpengine = "udp:127.0.0.9:2300"\n'
        'rtpengine_recording_dir = "rec"\n'
    )
    path = write(server=SERVER + extra)
    media = loads(path).server.media
    assert media.engine == "rtpengine"
    assert media.rtpengine == ("127.0.0.9", 2300)
    assert media.rtpengine_recording_dir == (path.parent / "rec").resolve()
    assert loads(write()).server.media.rtpengine_recording_dir is None


def test_kernel_forwarding_is_off_unless_asked_for(write: Writer) -> None:  # issue #21
    assert loads(write()).server.media.kernel_forwarding is False
    path = write(server=SERVER + "\n[media]\nkernel_forwarding = true\n")
    assert loads(path).server.media.kernel_forwarding is True
    with pytest.raises(ConfigError, match="kernel_forwarding"):
        load_config(write(server=SERVER + '\n[media]\nkernel_forwarding = "yes"\n'))
