"""Tenant file edits keep the admin's comments and order; the writer saves atomically.

``data/acme.toml`` is ``config/tenants/acme.toml`` copied byte-exact (commit b2308b5).
"""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from pbx.config.model import ConfigSnapshot, Extension, TenantId
from pbx.panel.tenant_files import (
    PasswordRequired,
    StaleFile,
    TenantFileError,
    TenantText,
    TenantWriter,
    UnknownVersion,
    UserEdit,
    UserExists,
    UserNotFound,
    file_digest,
    new_tenant,
    put_user,
    read_tenant,
    remove_user,
    set_limits,
    set_numbers,
)
from pbx.sip.digest import compute_ha1
from tests.config.conftest import SERVER, loads

DATA = Path(__file__).parent / "data"
ACME_BYTES = (DATA / "acme.toml").read_bytes()
ACME = ACME_BYTES.decode("utf-8")
REALM = "acme.example"
NUMBERS = ["0312345678", "0612345678"]

SATO = UserEdit(
    "1001",
    name="佐藤",
    department="営業",
    caller_id="0312345678",
    recording=True,
    forward_busy="1002",
    forward_no_answer="09012345678",
    forward_offline="1003",
)
TANAKA = UserEdit("1004", name="田中", department="大阪支店", caller_id="0612345678")


def comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.lstrip().startswith("#")]


def inline_comments(text: str) -> list[str]:
    return [line.split("#", 1)[1] for line in text.splitlines() if " # " in line or "  #" in line]


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """The lines removed and the lines added (without the diff's context)."""
    removed: list[str] = []
    added: list[str] = []
    for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        (removed if line.startswith("-") else added).append(line[1:])
    return removed, added


def load_tenant(tmp_path: Path, text: str, name: str = "acme") -> ConfigSnapshot:
    root = tmp_path / "config"
    (root / "tenants").mkdir(parents=True, exist_ok=True)
    (root / "pbx.toml").write_text(SERVER, encoding="utf-8")
    (root / "tenants" / f"{name}.toml").write_bytes(text.encode("utf-8"))
    return loads(root / "pbx.toml")


# --- the fixture itself --------------------------------------------------------------------


def test_fixture_is_the_demo_tenant_byte_for_byte() -> None:
    demo = Path(__file__).parents[2] / "config" / "tenants" / "acme.toml"
    assert demo.read_bytes() == ACME_BYTES


def test_read_tenant_gives_text_and_digest_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_bytes(ACME_BYTES)
    assert read_tenant(path) == TenantText(path, ACME, file_digest(ACME_BYTES))
    assert file_digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_read_tenant_refuses_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes("名前".encode("shift_jis"))
    with pytest.raises(TenantFileError, match="not UTF-8"):
        read_tenant(path)


# --- edits that change nothing give back the same bytes --------------------------------------


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: set_limits(t, max_users=10, recording_users=2, international_calls=False),
        lambda t: set_numbers(t, NUMBERS),
        lambda t: set_numbers(t, ["03-1234-5678", "+81 6 1234 5678"]),
        lambda t: put_user(t, SATO, replacing="1001"),
        lambda t: put_user(t, TANAKA, replacing="1004"),
    ],
    ids=["limits", "numbers", "numbers-written-otherwise", "user-1001", "user-1004"],
)
def test_edit_with_the_current_values_changes_no_byte(edit: Callable[[str], str]) -> None:
    assert edit(ACME) == ACME


# --- [limits] --------------------------------------------------------------------------------


def test_set_limits_changes_only_the_values_and_keeps_the_comment_column() -> None:
    text = set_limits(ACME, max_users=100, recording_users=3, international_calls=True)
    removed, added = changed_lines(ACME, text)
    assert removed == [
        "max_users = 10                   # the most extension users (billed on this)",
        "recording_users = 2              # how many users may have recording ON",
        "international_calls = false      # OFF by default",
    ]
    assert added == [
        "max_users = 100                  # the most extension users (billed on this)",
        "recording_users = 3              # how many users may have recording ON",
        "international_calls = true       # OFF by default",
    ]
    back = set_limits(text, max_users=10, recording_users=2, international_calls=False)
    assert back == ACME


def test_set_limits_creates_the_table_after_tenant() -> None:
    start = ACME.index("[limits]")
    without = ACME[:start] + ACME[ACME.index("[[numbers]]") :]
    text = set_limits(without, max_users=5, recording_users=0, international_calls=False)
    _, added = changed_lines(without, text)
    assert added == [
        "",
        "[limits]",
        "max_users = 5",
        "recording_users = 0",
        "international_calls = false",
    ]
    assert text.index("[tenant]") < text.index("[limits]") < text.index("[[numbers]]")
    assert comments(text) == comments(ACME)
    assert tomllib.loads(text)["limits"] == {
        "max_users": 5,
        "recording_users": 0,
        "international_calls": False,
    }


def test_set_limits_adds_a_missing_key_in_its_place() -> None:
    text = ACME.replace(
        "recording_users = 2              # how many users may have recording ON\n", ""
    )
    text = set_limits(text, max_users=10, recording_users=0, international_calls=False)
    limits = text[text.index("[limits]") : text.index("[[numbers]]")]
    assert limits.splitlines()[1:4] == [
        "max_users = 10                   # the most extension users (billed on this)",
        "recording_users = 0",
        "international_calls = false      # OFF by default",
    ]


# --- [[numbers]] -----------------------------------------------------------------------------


def test_set_numbers_appends_a_new_number_after_the_last_one_and_removes_it_again() -> None:
    text = set_numbers(ACME, [*NUMBERS, "0398765432"])
    removed, added = changed_lines(ACME, text)
    assert removed == []
    assert added == ["", "[[numbers]]", 'number = "0398765432"']
    assert text.index('"0398765432"') < text.index("# Extension users")
    assert comments(text) == comments(ACME)
    assert set_numbers(text, NUMBERS) == ACME


def test_set_numbers_keeps_the_entries_that_stay_and_their_comments() -> None:
    commented = ACME.replace(
        '[[numbers]]\nnumber = "0612345678"', '# Osaka\n[[numbers]]\nnumber = "0612345678"'
    )
    text = set_numbers(commented, ["0612345678", "0311112222"])
    assert '# Osaka\n[[numbers]]\nnumber = "0612345678"' in text
    assert [n["number"] for n in tomllib.loads(text)["numbers"]] == ["0612345678", "0311112222"]


def test_set_numbers_removing_an_entry_removes_the_comment_right_above_it() -> None:
    commented = ACME.replace(
        '[[numbers]]\nnumber = "0612345678"', '# Osaka\n[[numbers]]\nnumber = "0612345678"'
    )
    text = set_numbers(commented, ["0312345678"])
    assert "# Osaka" not in text
    assert comments(text) == comments(ACME)


def test_set_numbers_all_removed_then_added_back_gives_the_same_bytes() -> None:
    empty = set_numbers(ACME, [])
    assert "[[numbers]]" not in empty
    assert comments(empty) == comments(ACME)
    assert set_numbers(empty, NUMBERS) == ACME


def test_set_numbers_creates_the_section_after_limits() -> None:
    text = set_numbers(new_tenant("shop.example"), ["03-1111-2222"])
    assert text.endswith(
        'international_calls = false      # OFF by default\n\n[[numbers]]\nnumber = "0311112222"\n'
    )


# --- [[users]] -------------------------------------------------------------------------------


def test_put_user_adds_after_the_last_user_with_hashed_password() -> None:
    ito = UserEdit(
        "1005",
        name="伊藤",
        department="経理",
        caller_id="0312345678",
        recording=True,
        forward_busy="1001",
        forward_offline="09011112222",
        password="秘密-pw",
    )
    text = put_user(ACME, ito, replacing=None)
    removed, added = changed_lines(ACME, text)
    assert removed == []
    assert added == [
        "[[users]]",
        'extension = "1005"',
        f'password_ha1_md5 = "{compute_ha1("MD5", "1005", REALM, "秘密-pw")}"',
        f'password_ha1_sha256 = "{compute_ha1("SHA-256", "1005", REALM, "秘密-pw")}"',
        'name = "伊藤"',
        'department = "経理"',
        'caller_id = "0312345678"',
        "recording = true",
        'forward = { busy = "1001", offline = "09011112222" }',
        "",
    ]
    assert text.index('"1005"') > text.index('"1004"')
    assert text.index('"1005"') < text.index("# Inbound rules of 0312345678")
    assert "秘密-pw" not in text
    assert remove_user(text, "1005") == ACME


def test_remove_user_then_adding_it_back_gives_the_same_bytes_but_for_the_credentials() -> None:
    text = remove_user(ACME, "1004")
    assert "田中" not in text
    assert comments(text) == comments(ACME)
    back = put_user(text, replace(TANAKA, password="pw"), replacing=None)
    removed, added = changed_lines(ACME, back)
    assert removed == ['password = "acme-1004-secret"']
    assert [line.split(" =")[0] for line in added] == ["password_ha1_md5", "password_ha1_sha256"]


def test_remove_the_first_user_keeps_the_section_comment() -> None:
    text = remove_user(ACME, "1001")
    assert "佐藤" not in text
    assert comments(text) == comments(ACME)
    assert 'hex of H(extension:realm:password).\n[[users]]\nextension = "1002"' in text


def test_remove_a_user_takes_its_own_comments_only() -> None:
    commented = ACME.replace(
        '[[users]]\nextension = "1003"',
        '# Support desk, moved in April\n[[users]]\nextension = "1003"',
    ).replace(
        'forward = { offline = "09012345678" }\n',
        'forward = { offline = "09012345678" }\n# 1003 answers the support line\n',
    )
    text = remove_user(commented, "1003")
    assert comments(text) == comments(ACME)
    assert remove_user(ACME, "1003") == text


def test_remove_every_user_keeps_every_other_comment() -> None:
    text = ACME
    for extension in ("1002", "1004", "1001", "1003"):
        text = remove_user(text, extension)
    assert "[[users]]" not in text
    assert comments(text) == comments(ACME)
    assert "users" not in tomllib.loads(text)


def test_put_user_edits_in_place_and_removes_emptied_keys() -> None:
    edit = UserEdit("1001", name="佐藤 花子", caller_id="0312345678", forward_no_answer="1004")
    text = put_user(ACME, edit, replacing="1001")
    removed, added = changed_lines(ACME, text)
    assert removed == [
        'name = "佐藤"',
        'department = "営業"',
        "recording = true",
        'forward = { busy = "1002", no_answer = "09012345678", offline = "1003" }',
    ]
    assert added == ['name = "佐藤 花子"', 'forward = { no_answer = "1004" }']
    assert put_user(text, SATO, replacing="1001") == ACME


def test_put_user_adds_missing_keys_in_the_conventional_order() -> None:
    edit = UserEdit(
        "1004",
        name="田中",
        department="大阪支店",
        caller_id="0612345678",
        recording=True,
        forward_busy="1001",
    )
    text = put_user(ACME, edit, replacing="1004")
    entry = tomllib.loads(text)["users"][3]
    assert list(entry) == [
        "extension",
        "password",
        "name",
        "department",
        "caller_id",
        "recording",
        "forward",
    ]
    assert put_user(text, TANAKA, replacing="1004") == ACME


def test_put_user_renames_an_extension_with_a_plain_password() -> None:
    renamed = replace(SATO, extension="1011")
    text = put_user(ACME, renamed, replacing="1001")
    assert changed_lines(ACME, text) == (['extension = "1001"'], ['extension = "1011"'])
    assert put_user(text, SATO, replacing="1011") == ACME


def test_put_user_new_password_replaces_the_plain_one_in_its_place() -> None:
    edit = replace(SATO, password="新しいパスワード")
    text = put_user(ACME, edit, replacing="1001")
    user = tomllib.loads(text)["users"][0]
    assert list(user)[:3] == ["extension", "password_ha1_md5", "password_ha1_sha256"]
    assert "password" not in user
    assert user["password_ha1_md5"] == compute_ha1("MD5", "1001", REALM, "新しいパスワード")
    assert user["password_ha1_sha256"] == compute_ha1("SHA-256", "1001", REALM, "新しいパスワード")


def test_put_user_hashes_with_the_new_extension_and_the_domain_as_the_loader_reads_it() -> None:
    text = ACME.replace('domain = "acme.example"', 'domain = "ACME.Example."')
    edit = replace(SATO, extension="2001", password="pw")
    user = tomllib.loads(put_user(text, edit, replacing="1001"))["users"][0]
    assert user["extension"] == "2001"
    assert user["password_ha1_md5"] == compute_ha1("MD5", "2001", REALM, "pw")


def test_put_user_rename_with_only_hashes_needs_a_password() -> None:
    hashed = put_user(ACME, replace(SATO, password="pw"), replacing="1001")
    kept = put_user(hashed, SATO, replacing="1001")  # same extension: hashes kept
    assert kept == hashed
    with pytest.raises(PasswordRequired, match="1011"):
        put_user(hashed, replace(SATO, extension="1011"), replacing="1001")
    moved = put_user(hashed, replace(SATO, extension="1011", password="pw2"), replacing="1001")
    user = tomllib.loads(moved)["users"][0]
    assert user["password_ha1_md5"] == compute_ha1("MD5", "1011", REALM, "pw2")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: put_user(ACME, SATO, replacing="1999"), UserNotFound),
        (lambda: remove_user(ACME, "1999"), UserNotFound),
        (lambda: put_user(ACME, UserEdit("1002", password="pw"), replacing=None), UserExists),
        (lambda: put_user(ACME, UserEdit("1002"), replacing="1001"), UserExists),
        (lambda: put_user(ACME, UserEdit("1009"), replacing=None), PasswordRequired),
        (
            lambda: put_user("[tenant]\n", UserEdit("1001", password="pw"), replacing=None),
            TenantFileError,
        ),
        (
            lambda: set_limits(
                "[tenant\n", max_users=1, recording_users=0, international_calls=False
            ),
            TenantFileError,
        ),
    ],
    ids=[
        "edit-unknown",
        "remove-unknown",
        "add-existing",
        "rename-onto-existing",
        "new-without-password",
        "no-domain",
        "not-toml",
    ],
)
def test_edits_refuse_with_a_clear_error(
    call: Callable[[], object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        call()


def test_user_written_with_full_width_digits_is_found() -> None:
    text = ACME.replace('extension = "1004"', 'extension = "１００４"')
    assert "田中" not in remove_user(text, "1004")


def test_japanese_names_and_quotes_survive() -> None:
    edit = UserEdit(
        "1002",
        name='鈴木 "スズ" 一郎',
        department="東京本社／第２営業部",
        caller_id="0312345678",
        forward_no_answer="1004",
    )
    text = put_user(ACME, edit, replacing="1002")
    user = tomllib.loads(text)["users"][1]
    assert user["name"] == '鈴木 "スズ" 一郎'
    assert user["department"] == "東京本社／第２営業部"
    assert "東京本社／第２営業部" in text  # written as is, not escaped


def test_crlf_file_keeps_crlf_on_added_lines() -> None:
    crlf = ACME.replace("\n", "\r\n")
    text = put_user(crlf, replace(TANAKA, extension="1005", password="pw"), replacing=None)
    assert "\n" not in text.replace("\r\n", "")


# --- the loader accepts the results ------------------------------------------------------------


def test_loader_accepts_every_edit(tmp_path: Path) -> None:
    text = set_limits(ACME, max_users=6, recording_users=2, international_calls=True)
    text = set_numbers(text, [*NUMBERS, "0398765432"])
    text = put_user(
        text,
        UserEdit(
            "1005",
            name="伊藤",
            caller_id="0398765432",
            forward_busy="+1 212 555 0100",
            password="pw5",
        ),
        replacing=None,
    )
    text = put_user(text, replace(TANAKA, password="pw4"), replacing="1004")
    text = remove_user(text, "1003")
    text = put_user(text, replace(SATO, forward_offline=""), replacing="1001")
    text = text.replace('forward = { no_answer = "1004" }', 'forward = { no_answer = "1005" }')
    text = text.replace('targets = "1003"', 'targets = "1005"')  # the rules are the loader's
    snapshot = load_tenant(tmp_path, text)
    tenant = snapshot.tenants[TenantId("acme")]
    assert tenant.limits.max_users == 6
    assert tenant.numbers == ("0312345678", "0612345678", "0398765432")
    assert sorted(tenant.users) == ["1001", "1002", "1004", "1005"]
    ito = tenant.users[Extension("1005")]
    assert ito.name == "伊藤"
    assert ito.password is None
    assert ito.password_ha1_md5 == compute_ha1("MD5", "1005", REALM, "pw5")
    assert ito.password_ha1_sha256 == compute_ha1("SHA-256", "1005", REALM, "pw5")
    assert tenant.users[Extension("1004")].password_ha1_sha256 == compute_ha1(
        "SHA-256", "1004", REALM, "pw4"
    )


def test_loader_accepts_a_new_tenant_with_numbers_and_users(tmp_path: Path) -> None:
    text = new_tenant("shop.example", default=True, max_users=3, recording_users=1)
    text = set_numbers(text, ["03-1111-2222"])
    text = put_user(
        text,
        UserEdit("2001", name="山田", caller_id="0311112222", recording=True, password="pw"),
        replacing=None,
    )
    text = put_user(text, UserEdit("2002", forward_offline="2001", password="pw2"), replacing=None)
    snapshot = load_tenant(tmp_path, text, name="shop")
    tenant = snapshot.tenants[TenantId("shop")]
    assert tenant.domain == "shop.example"
    assert tenant.timezone == "Asia/Tokyo"
    assert tenant.default
    assert tenant.limits.max_users == 3
    assert sorted(tenant.users) == ["2001", "2002"]


def test_new_tenant_is_commented_like_the_demo_tenant() -> None:
    text = new_tenant("shop.example", timezone="Asia/Seoul", max_users=20)
    head = ACME[ACME.index("[tenant]") : ACME.index("[[numbers]]")]
    expected = (
        head.replace('"acme.example"', '"shop.example"')
        .replace('"Asia/Tokyo"', '"Asia/Seoul"')
        .replace("default = true    ", "default = false   ")
        .replace("max_users = 10  ", "max_users = 20  ")
        .replace("recording_users = 2", "recording_users = 0")
    )
    assert text.endswith(expected.rstrip("\n") + "\n")
    assert text.startswith("# ")
    assert tomllib.loads(text) == {
        "tenant": {
            "domain": "shop.example",
            "timezone": "Asia/Seoul",
            "default": False,
            "qualify_seconds": 30,
            "forward_caller_id": "original",
        },
        "limits": {"max_users": 20, "recording_users": 0, "international_calls": False},
    }


# --- TenantWriter ----------------------------------------------------------------------------

NOW = 1_750_000_000.25  # 2025-06-15T15:06:40.25Z


@pytest.fixture
def tenants(tmp_path: Path) -> Path:
    folder = tmp_path / "tenants"
    folder.mkdir()
    (folder / "acme.toml").write_bytes(ACME_BYTES)
    return folder


@pytest.fixture
def writer(tmp_path: Path) -> TenantWriter:
    return TenantWriter(tmp_path / "history", keep=3)


def test_write_replaces_the_file_and_keeps_the_previous_version(
    tenants: Path, writer: TenantWriter
) -> None:
    path = tenants / "acme.toml"
    current = read_tenant(path)
    text = set_limits(current.text, max_users=20, recording_users=2, international_calls=False)
    digest = writer.write(path, text, expected_digest=current.digest, now=NOW)
    assert digest == file_digest(text.encode())
    assert path.read_bytes() == text.encode()
    [version] = writer.versions("acme")
    assert version.name == f"20250615T150640.250000Z-{current.digest[:12]}.toml"
    assert version.stamp.isoformat() == "2025-06-15T15:06:40.250000+00:00"
    assert version.digest == current.digest[:12]
    assert writer.read_version("acme", version.name) == ACME
    assert [p.name for p in tenants.iterdir()] == ["acme.toml"]  # no temp file left


def test_stale_write_is_refused_and_the_file_unchanged(tenants: Path, writer: TenantWriter) -> None:
    path = tenants / "acme.toml"
    read = read_tenant(path)
    edited_by_git = ACME.replace("max_users = 10", "max_users = 12")
    path.write_text(edited_by_git, encoding="utf-8")
    with pytest.raises(StaleFile, match="changed since it was read") as info:
        writer.write(path, remove_user(read.text, "1004"), expected_digest=read.digest, now=NOW)
    assert info.value.found == file_digest(edited_by_git.encode())
    assert path.read_text(encoding="utf-8") == edited_by_git
    assert writer.versions("acme") == []


def test_new_tenant_must_not_exist_yet(tenants: Path, writer: TenantWriter) -> None:
    text = new_tenant("shop.example")
    digest = writer.write(tenants / "shop.toml", text, expected_digest=None, now=NOW)
    assert read_tenant(tenants / "shop.toml").digest == digest
    assert writer.versions("shop") == []
    with pytest.raises(StaleFile):
        writer.write(tenants / "acme.toml", text, expected_digest=None, now=NOW)
    with pytest.raises(StaleFile):  # a file that went away is stale too
        writer.write(tenants / "gone.toml", text, expected_digest=digest, now=NOW)
    assert (tenants / "acme.toml").read_bytes() == ACME_BYTES


def test_unchanged_text_writes_nothing(tenants: Path, writer: TenantWriter) -> None:
    path = tenants / "acme.toml"
    digest = file_digest(ACME_BYTES)
    assert writer.write(path, ACME, expected_digest=digest, now=NOW) == digest
    assert writer.versions("acme") == []


def test_history_keeps_the_newest_versions(tenants: Path, writer: TenantWriter) -> None:
    path = tenants / "acme.toml"
    digest = file_digest(ACME_BYTES)
    texts = [ACME]
    for step in range(1, 6):
        text = set_limits(ACME, max_users=10 + step, recording_users=2, international_calls=False)
        digest = writer.write(path, text, expected_digest=digest, now=NOW + step)
        texts.append(text)
    versions = writer.versions("acme")
    assert len(versions) == 3
    assert [v.stamp.timestamp() for v in versions] == [NOW + 5, NOW + 4, NOW + 3]
    assert [writer.read_version("acme", v.name) for v in versions] == texts[4:1:-1]


def test_remove_moves_the_file_into_history(tenants: Path, writer: TenantWriter) -> None:
    path = tenants / "acme.toml"
    with pytest.raises(StaleFile):
        writer.remove(path, expected_digest="0" * 64, now=NOW)
    writer.remove(path, expected_digest=file_digest(ACME_BYTES), now=NOW)
    assert not path.exists()
    [version] = writer.versions("acme")
    assert writer.read_version("acme", version.name) == ACME


@pytest.mark.parametrize(
    ("tenant", "name"),
    [
        ("acme", "../tenants/acme.toml"),
        ("acme", "/etc/passwd"),
        ("acme", "20250615T150640.250000Z-000000000000.toml"),
        ("..", "x.toml"),
        ("a/b", "x.toml"),
    ],
)
def test_read_version_only_reads_listed_versions(
    tenants: Path, writer: TenantWriter, tenant: str, name: str
) -> None:
    path = tenants / "acme.toml"
    writer.write(path, ACME + "\n", expected_digest=file_digest(ACME_BYTES), now=NOW)
    with pytest.raises((UnknownVersion, TenantFileError)):
        writer.read_version(tenant, name)


def test_write_fsyncs_the_temp_file_and_the_folder_before_and_after_replace(
    tenants: Path, writer: TenantWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: Path) -> None:
        events.append(f"replace:{Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tenants / "acme.toml"
    writer.write(path, ACME + "\n", expected_digest=file_digest(ACME_BYTES), now=NOW)
    history, own = events[:3], events[3:]
    assert history[0] == "fsync-file"
    assert history[1].startswith("replace:20250615T150640")
    assert own[-3:] == ["fsync-file", "replace:acme.toml", "fsync-dir"]
    assert events.count("fsync-dir") >= 2  # the history folder and the tenants folder


def test_failed_write_leaves_the_file_and_no_temp_file(
    tenants: Path, writer: TenantWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def replace(src: str, dst: Path) -> None:
        if Path(dst).name == "acme.toml":
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    path = tenants / "acme.toml"
    with pytest.raises(OSError, match="disk full"):
        writer.write(path, ACME + "\n", expected_digest=file_digest(ACME_BYTES), now=NOW)
    assert path.read_bytes() == ACME_BYTES
    assert [p.name for p in tenants.iterdir()] == ["acme.toml"]


def test_replaced_file_keeps_its_mode(tenants: Path, writer: TenantWriter) -> None:
    path = tenants / "acme.toml"
    path.chmod(0o640)
    writer.write(path, ACME + "\n", expected_digest=file_digest(ACME_BYTES), now=NOW)
    assert path.stat().st_mode & 0o777 == 0o640
