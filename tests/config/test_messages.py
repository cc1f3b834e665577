"""Problem codes and their English and Japanese texts (``pbx.config.messages``).

``CASES`` holds one configuration per code that makes the loader report it; the autouse fixture
of conftest checks the rendering of every problem made, here and in every other config test.
"""

from __future__ import annotations

import pickle
import string
from collections.abc import Callable
from pathlib import Path

import pytest

from pbx.config.load import ConfigError, load_config
from pbx.config.messages import (
    CATALOG,
    render_entity,
    render_field,
    render_line,
    render_message,
    render_problem,
)
from pbx.config.problems import ConfigProblem, Params
from tests.config.conftest import (
    ALL_WEEK,
    INCOMING,
    SERVER,
    TENANT_HEAD,
    USERS,
    Writer,
    check_rendering,
    english_left_in,
    problems_of,
    rule,
    tenant,
)

Case = Callable[[Writer], Path]


def files(server: str = SERVER, **tenants: str) -> Case:
    return lambda write: write(server, **tenants)


def server(text: str) -> Case:
    return files(SERVER + text)


def head(old: str, new: str) -> Case:
    return files(acme=tenant(head=TENANT_HEAD.replace(old, new)))


def users(text: str) -> Case:
    return files(acme=tenant(users=text))


def with_user(extra: str) -> Case:
    return users(USERS + f'[[users]]\nextension = "1004"\n{extra}\n')


def forward_of_1001(target: str) -> Case:
    return users(
        USERS.replace('password = "pw1"', f'password = "pw1"\nforward = {{ busy = "{target}" }}')
    )


def incoming(text: str) -> Case:
    return files(acme=tenant(incoming=text + rule("0612345678", "1003", ALL_WEEK, "0:00", "23:59")))


def first_rule(**fields: str) -> Case:
    values = {"number": '"0312345678"', "targets": '"1001"', "days": ALL_WEEK}
    values |= {"start": '"0:00"', "end": '"23:59"'}
    values |= fields
    body = "".join(f"{key} = {value}\n" for key, value in values.items() if value)
    return incoming("[[incoming]]\n" + body)


def other_tenant(text: str) -> str:
    return (
        text.replace("acme.example", "beta.example")
        .replace("default = true\n", "")
        .replace("0312345678", "0311112222")
        .replace("0612345678", "0611112222")
    )


def missing_pbx_toml(write: Writer) -> Path:
    return write().parent / "missing.toml"


def not_utf8(write: Writer) -> Path:
    path = write()
    (path.parent / "tenants" / "acme.toml").write_bytes(b'[tenant]\ndomain = "\xff"\n')
    return path


def empty_tenants_dir(write: Writer) -> Path:
    path = write()
    (path.parent / "tenants" / "acme.toml").unlink()
    return path


def many_cycles() -> Case:
    ring = [f"{1000 + i}" for i in range(10)]
    text = ""
    for i, ext in enumerate(ring):
        busy, no_answer, offline = (ring[(i + step) % 10] for step in (1, 2, 3))
        text += (
            f'[[users]]\nextension = "{ext}"\npassword = "pw"\nforward = {{ busy = "{busy}", '
            f'no_answer = "{no_answer}", offline = "{offline}" }}\n'
        )
    more = TENANT_HEAD.replace("max_users = 10", "max_users = 20")
    return files(acme=tenant(head=more, users=text, incoming=INCOMING.replace("1001,1002", "1000")))


HA1_MD5 = f'password_ha1_md5 = "{"a" * 32}"'
HA1_SHA = f'password_ha1_sha256 = "{"a" * 64}"'

CASES: dict[str, Case] = {
    # files
    "file.unreadable": missing_pbx_toml,
    "file.not_utf8": not_utf8,
    "file.invalid_toml": files(acme="[tenant\n"),
    "file.invalid_toml_quote": first_rule(start="8:00"),  # issue 19: a time without quotes
    "file.missing": server('[panel]\ntls_certificate = "a.pem"\ntls_key = "b.pem"\n'),
    "tenants_dir.not_directory": files('tenants_dir = "nowhere"\n' + SERVER),
    "tenants_dir.empty": empty_tenants_dir,
    # keys and types
    "key.unknown": server("[calls]\nzzzzzzzz = 1\n"),
    "key.unknown_suggest": server("[calls]\nmax_ring = 30\n"),
    "type.wrong": server('[calls]\nno_answer_seconds = "20"\n'),
    "type.not_table": files("calls = 5\n" + SERVER),
    "type.not_array_of_tables": files(acme="users = 5\n" + tenant(users="")),
    "type.entry_not_table": files(acme="users = [1]\n" + tenant(users="")),
    "value.required": head('domain = "acme.example"\n', ""),
    "value.empty": files(SERVER.replace('data_dir = "data"', 'data_dir = ""')),
    "value.too_small": server("[calls]\nmax_forward_hops = 0\n"),
    "value.out_of_range": server("[auth]\nnonce_seconds = 0\n"),
    "value.full_width": users(USERS.replace('"1002"', '"１００２"')),
    # addresses
    "address.bracket_unclosed": server('[admin]\nlisten = "[::1:8088"\n'),
    "address.port_after_bracket": server('[admin]\nlisten = "[::1]8088"\n'),
    "address.ipv6_needs_brackets": server('[admin]\nlisten = "::1:8088"\n'),
    "address.not_ip": server('[admin]\nlisten = "localhost:8088"\n'),
    "address.port_required": server('[admin]\nlisten = "127.0.0.1"\n'),
    "address.bad_port": server('[admin]\nlisten = "127.0.0.1:99999"\n'),
    # pbx.toml
    "sip.listen_empty": files(SERVER.replace('["udp:127.0.0.1:5060"]', "[]")),
    "sip.below_rfc_minimum": files(SERVER.replace("[sip]\n", "[sip]\nmin_se = 30\n")),  # issue 16
    "sip.session_expires_below_min_se": files(
        SERVER.replace("[sip]\n", "[sip]\nsession_expires = 100\nmin_se = 200\n")
    ),
    "sip.listen_transport": files(SERVER.replace('"udp:127.0.0.1:5060"', '"sctp:0.0.0.0:5060"')),
    "sip.listen_duplicate": files(
        SERVER.replace('"udp:127.0.0.1:5060"', '"udp:127.0.0.1:5060", "UDP:127.0.0.1:5060"')
    ),
    "sip.tls_needs_certificate": files(
        SERVER.replace('"udp:127.0.0.1:5060"', '"udp:127.0.0.1:5060", "tls:127.0.0.1:5061"')
    ),
    "sip.advertise_invalid": files(SERVER.replace("[sip]\n", '[sip]\nadvertise = "a_b"\n')),
    # issue #20 (edge, rtpengine)
    "sip.edge_invalid": files(SERVER.replace("[sip]\n", '[sip]\nedge = ["edge.example"]\n')),
    "media.engine_unknown": server('[media]\nengine = "asterisk"\n'),
    "media.rtpengine_format": server('[media]\nrtpengine = "127.0.0.1:2223"\n'),
    "media.kernel_forwarding_rtpengine": server(
        '[media]\nengine = "rtpengine"\nkernel_forwarding = true\n'
    ),
    "auth.algorithm_unknown": server('[auth]\nalgorithms = ["SHA-512"]\n'),
    "auth.algorithm_duplicate": server('[auth]\nalgorithms = ["MD5", "md5"]\n'),
    "auth.algorithms_empty": server("[auth]\nalgorithms = []\n"),
    "registrar.min_above_max": server("[registrar]\nmin_expires = 4000\n"),
    "registrar.default_outside": server("[registrar]\ndefault_expires = 10\n"),
    "calls.no_answer_not_below_max_ring": server("[calls]\nno_answer_seconds = 60\n"),
    "media.rtp_ports_format": server('[media]\nrtp_ports = "20000"\n'),
    "media.rtp_ports_range": server('[media]\nrtp_ports = "29999-20000"\n'),
    "admin.listen_public": server('[admin]\nlisten = "0.0.0.0:8088"\n'),
    # [storage] database (issue #20)
    "storage.database_scheme": files(
        SERVER.replace('data_dir = "data"', 'data_dir = "data"\ndatabase = "mysql://db/pbx"')
    ),
    "storage.database_name": files(
        SERVER.replace('data_dir = "data"', 'data_dir = "data"\ndatabase = "postgresql://db:5432"')
    ),
    "storage.database_password": files(
        SERVER.replace(
            'data_dir = "data"', 'data_dir = "data"\ndatabase = "postgresql://u:pw@db/pbx"'
        )
    ),
    # issue #20
    "storage.node_name": files(
        SERVER.replace('data_dir = "data"', 'data_dir = "data"\nnode = "a/b"')
    ),
    "panel.listen_same_as_admin": server('[panel]\nlisten = "127.0.0.1:8088"\n'),
    "panel.tls_pair": server('[panel]\ntls_key = "k.pem"\n'),
    "panel.listen_public_without_tls": server('[panel]\nlisten = "0.0.0.0:8089"\n'),
    "panel.idle_not_below_max": server("[panel]\nsession_idle_minutes = 720\n"),
    "trunks.name_duplicate": server('[[trunks]]\nname = "carrier"\naddress = "127.0.0.3"\n'),
    "trunks.address_duplicate": server('[[trunks]]\nname = "other"\naddress = "127.0.0.2"\n'),
    # [tenant], numbers
    "tenant.domain_invalid": head('"acme.example"', '"acme example"'),
    "tenant.timezone_unknown": head("default = true", 'default = true\ntimezone = "Asia/Tokio"'),
    "tenant.encryption_invalid": head("default = true", 'default = true\nencryption = "maybe"'),
    "tenant.encryption_rtpengine": files(
        SERVER + '[media]\nengine = "rtpengine"\n',
        acme=tenant(
            head=TENANT_HEAD.replace("default = true", 'default = true\nencryption = "require"')
        ),
    ),
    "tenant.forward_caller_id_invalid": head(
        "default = true", 'default = true\nforward_caller_id = "both"'
    ),
    "tenant.no_numbers": files(
        acme=tenant(
            head=TENANT_HEAD.split("[[numbers]]")[0],
            users=USERS.replace('caller_id = "0312345678"\n', ""),
            incoming="",
        )
    ),
    "number.invalid": head('number = "0612345678"', 'number = "12345"'),
    "number.duplicate": head('number = "0612345678"', 'number = "0312345678"'),
    # users
    "user.extension_integer": users(USERS + '[[users]]\nextension = 1004\npassword = "pw"\n'),
    "user.extension_format": users(USERS + '[[users]]\nextension = "9004"\npassword = "pw"\n'),
    "user.extension_duplicate": users(USERS + '[[users]]\nextension = "1003"\npassword = "pw"\n'),
    "user.ha1_format": with_user('password_ha1_md5 = "abc"'),
    "user.credential_missing": with_user(""),
    "user.credential_both": with_user(f'password = "pw"\n{HA1_MD5}'),
    "user.ha1_no_offered_algorithm": files(
        SERVER + '[auth]\nalgorithms = ["MD5"]\n',
        acme=tenant(users=USERS + f'[[users]]\nextension = "1004"\n{HA1_SHA}\n'),
    ),
    "user.ha1_missing_algorithm": files(
        acme=tenant(
            head=TENANT_HEAD.replace(
                "default = true", 'default = true\nauth_algorithms = ["MD5", "SHA-256"]'
            ),
            users=USERS + f'[[users]]\nextension = "1004"\n{HA1_MD5}\n',
        )
    ),
    "user.caller_id_not_of_tenant": users(USERS.replace('"0312345678"', '"0399999999"')),
    "user.recording_not_allowed": files(
        acme=tenant(
            head=TENANT_HEAD.replace("recording_users = 1", "recording_users = 0"),
            users=USERS.replace('password = "pw1"', 'password = "pw1"\nrecording = true'),
        )
    ),
    # [limits]
    "limits.max_users_exceeded": head("max_users = 10", "max_users = 2"),
    "limits.recording_users_exceeded": users(
        USERS.replace('password = "pw1"', 'password = "pw1"\nrecording = true').replace(
            'password = "pw2"', 'password = "pw2"\nrecording = true'
        )
    ),
    # forwarding and targets
    "target.invalid": forward_of_1001("1099"),
    "target.international_off": forward_of_1001("0101212345678"),
    "forward.announcement": forward_of_1001("009608"),
    "forward.cycle": forward_of_1001("1001"),
    "forward.cycles_truncated": many_cycles(),
    # [[incoming]]
    "incoming.number_not_of_tenant": first_rule(number='"0399999999"'),
    "incoming.targets_required": first_rule(targets=""),
    "incoming.targets_type": first_rule(targets="1001"),
    "incoming.targets_japanese_commas": first_rule(targets='"1001、1002"'),
    "incoming.targets_empty_entry": first_rule(targets='"1001,,1002"'),
    "incoming.target_unknown_extension": first_rule(targets='"1099"'),
    "incoming.target_duplicate": first_rule(targets='"1001,1001"'),
    "incoming.announcement_mixed": first_rule(targets='"009608,1001"'),
    "incoming.targets_empty": first_rule(targets="[]"),
    "incoming.days_required": first_rule(days=""),
    "incoming.days_empty": first_rule(days="[]"),
    "incoming.day_unknown": first_rule(days='["zzzzzz"]'),
    "incoming.day_unknown_suggest": first_rule(days='["tues"]'),
    "time.format": first_rule(start='"8"'),
    "time.invalid": first_rule(start='"8:60"'),
    "time.invalid_past_midnight": first_rule(end='"24:00"'),
    "incoming.crosses_midnight": first_rule(start='"18:00"', end='"9:00"'),
    "incoming.overlap": incoming(
        rule("0312345678", "1001", '["mon", "tue", "wed", "holiday"]', "0:00", "12:00")
        + rule("0312345678", "1002", ALL_WEEK, "0:00", "23:59")
        + rule("0312345678", "1003", '["holiday"]', "12:30", "23:59")
    ),
    "incoming.number_without_rule": incoming(""),
    "incoming.gaps": incoming(
        rule("0312345678", "1001", '["mon", "wed", "fri"]', "8:00", "19:59")
        + rule("0312345678", "1002", '["holiday"]', "9:00", "9:59")
    ),
    # across tenants
    "number.other_tenant": files(
        acme=tenant(), beta=other_tenant(tenant()).replace("0311112222", "0312345678")
    ),
    "tenant.domain_other_tenant": files(
        acme=tenant(), beta=other_tenant(tenant()).replace("beta.example", "ACME.example")
    ),
    "tenant.default_twice": files(
        acme=tenant(),
        beta=other_tenant(tenant()).replace("[tenant]\n", "[tenant]\ndefault = true\n"),
    ),
    "tenants.no_default": files(
        beta=other_tenant(tenant()),
        gamma=other_tenant(tenant())
        .replace("beta.example", "gamma.example")
        .replace("0311112222", "0322223333")
        .replace("0611112222", "0622223333"),
    ),
}


def every_problem(path: Path) -> list[ConfigProblem]:
    try:
        snapshot = load_config(path)
    except ConfigError as exc:
        return [*exc.problems, *exc.warnings]
    return list(snapshot.warning_details)


def test_every_code_has_a_case() -> None:
    assert sorted(CASES) == sorted(CATALOG)


@pytest.mark.parametrize("code", sorted(CASES))
def test_each_code_is_raised_and_rendered(write: Writer, code: str) -> None:
    found = every_problem(CASES[code](write))
    assert code in {p.code for p in found}, "\n".join(f"{p.code}: {p}" for p in found)
    for problem in found:
        assert problem.code in CATALOG
        check_rendering(problem)


@pytest.mark.parametrize("code", sorted(CATALOG))
def test_each_code_has_both_languages_with_the_same_parameters(code: str) -> None:
    message = CATALOG[code]
    fields = string.Formatter()
    english = {name for _, name, _, _ in fields.parse(message.en) if name}
    japanese = {name for _, name, _, _ in fields.parse(message.ja) if name}
    assert message.en
    assert message.ja
    assert english == japanese
    assert {name for name, _ in message.kinds} <= english
    assert not english_left_in(message.ja, {})


def test_an_unknown_code_cannot_be_rendered() -> None:
    with pytest.raises(KeyError):
        render_message("no.such.code", {}, "ja")


# --- what the admin reads ----------------------------------------------------------------------


def test_forward_problem_in_japanese(write: Writer) -> None:
    path = write(acme=tenant(users=USERS.replace('"pw1"', '"pw1"\nforward = { busy = "1099" }')))
    (problem,) = problems_of(path)
    assert problem.code == "target.invalid"
    assert dict(problem.params) == {"value": "1099", "tenant": "acme"}
    assert render_entity(problem, "ja") == "内線ユーザー 1001"
    assert render_field(problem, "ja") == "転送設定(ビジー時)"
    assert render_problem(problem, "ja") == (
        "「1099」はテナント acme の内線番号でも、正しい外線番号でもありません"
    )
    assert render_line(problem, "en") == str(problem)
    assert render_line(problem, "ja") == (
        f"{problem.file}: 内線ユーザー 1001: 転送設定(ビジー時): "
        "「1099」はテナント acme の内線番号でも、正しい外線番号でもありません"
    )


@pytest.mark.parametrize(
    ("entity", "japanese"),
    [
        ("user 1001", "内線ユーザー 1001"),
        ("user #4", "4番目の内線ユーザー"),
        ("user 1002 (#4)", "内線ユーザー 1002(4番目)"),
        ("tenant acme", "テナント acme"),
        ("number 0312345678", "電話番号 0312345678"),
        ("number #2", "2番目の電話番号"),
        ("incoming rule #2 (number 0312345678)", "2番目の着信設定(電話番号 0312345678)"),
        ("incoming rule #3", "3番目の着信設定"),
        ("trunk carrier", "トランク carrier"),
        ("trunk #1", "1番目のトランク"),
        ("[calls]", "[calls]"),
        ("", ""),
    ],
)
def test_entities_in_japanese(entity: str, japanese: str) -> None:
    problem = ConfigProblem("f", entity, "", "m", code="value.required")
    assert render_entity(problem, "ja") == japanese
    assert render_entity(problem, "en") == entity


@pytest.mark.parametrize(
    ("field", "japanese"),
    [
        ("extension", "内線番号"),
        ("name", "名前"),
        ("department", "部署"),
        ("caller_id", "発信時通知番号"),
        ("recording", "通話録音"),
        ("forward.busy", "転送設定(ビジー時)"),
        ("forward.no_answer", "転送設定(無応答時)"),
        ("forward.offline", "転送設定(オフライン時)"),
        ("limits.max_users", "最大ご利用内線ユーザーID数"),
        ("limits.recording_users", "通話録音利用ユーザー数"),
        ("limits.international_calls", "国際電話利用可否"),
        ("number", "電話番号"),
        ("incoming", "着信設定"),
        ("targets", "着信先内線ユーザー"),
        ("start", "着信時間設定(開始)"),
        ("end", "着信時間設定(終了)"),
        ("days", "曜日"),
        ("max_ring_seconds", "max_ring_seconds"),  # pbx.toml keys stay as written
        ("recordng", "recordng"),  # and so do typos
    ],
)
def test_fields_in_the_manuals_words(field: str, japanese: str) -> None:
    problem = ConfigProblem("f", "user 1001", field, "m", code="value.required")
    assert render_field(problem, "ja") == japanese


@pytest.mark.parametrize(
    ("code", "params", "japanese"),
    [
        (
            "forward.cycle",
            {"steps": "1001 busy/offline -> 1002, 1002 no_answer -> 1001"},
            "転送設定がループしています: 1001(ビジー時・オフライン時)→ 1002、1002(無応答時)→ 1001",
        ),
        (
            "incoming.gaps",
            {"gaps": "sat-sun all day, mon, wed 20:00:00-23:59:59 and 00:00:00-07:59:59"},
            "土〜日 終日、月・水 20:00:00〜23:59:59 と 00:00:00〜07:59:59 はどの着信設定にも"
            "当てはまりません(その時間の着信はお断りします: 480)",
        ),
        (
            "incoming.overlap",
            {
                "other": "incoming rule #1 (number 0312345678)",
                "days": "mon-fri, holiday",
                "start": "19:00:00",
                "end": "19:59:59",
            },
            "1番目の着信設定(電話番号 0312345678)と 月〜金・祝日 19:00:00〜19:59:59 の時間が"
            "重なっています。同じ電話番号の着信時間設定は重ねられません",
        ),
        (
            "file.invalid_toml",
            {"detail": "Expected ']' at the end of a table declaration (at line 1, column 8)"},
            "TOML の書き方に誤りがあります: 1行目 8文字目: テーブル名の後ろに ] がありません",
        ),
        (
            "file.invalid_toml",
            {"detail": "Cannot declare ('tenant',) twice (at end of document)"},
            "TOML の書き方に誤りがあります: ファイルの末尾: ('tenant',) が2回定義されています",
        ),
        (
            "type.wrong",
            {"expected": "an integer", "actual": "string", "shown": '"20"'},
            '整数で指定してください(文字列 "20" になっています)',
        ),
        (
            "user.caller_id_not_of_tenant",
            {"value": "0399999999", "tenant": "acme", "numbers": "none"},
            "「0399999999」はテナント acme の電話番号ではありません(電話番号: なし)",
        ),
    ],
)
def test_words_inside_parameters_are_translated(
    code: str, params: dict[str, str], japanese: str
) -> None:
    assert render_message(code, params, "ja") == japanese


def test_full_width_warning_in_japanese(write: Writer) -> None:
    snapshot = load_config(write(acme=tenant(users=USERS.replace('"1002"', '"１００２"'))))
    (warning,) = snapshot.warning_details
    assert warning.code == "value.full_width"
    assert render_line(warning, "ja").endswith(
        "内線ユーザー 1002: 内線番号: 全角文字を半角に直して読みました: 「１００２」→「1002」"
    )


# --- problems as values ------------------------------------------------------------------------


def test_params_are_frozen_hashable_and_picklable(write: Writer) -> None:
    path = write(acme=tenant(users=USERS.replace('"1003"', '"9003"')))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problem = info.value.problems[0]
    assert isinstance(problem.params, Params)
    with pytest.raises(TypeError):
        problem.params["value"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        problem.params._items = ()
    assert hash(problem) == hash(pickle.loads(pickle.dumps(problem)))
    assert pickle.loads(pickle.dumps(problem)) == problem
    again = pickle.loads(pickle.dumps(info.value))
    assert again.problems == info.value.problems
    assert str(again) == str(info.value)
    assert Params({"a": "1"}) == {"a": "1"}
