"""``pbx panel``: accounts added from the command line, in-process and as a subprocess with a
piped password, beside a running server's store."""

from __future__ import annotations

import asyncio
import io
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pbx.cli import main
from pbx.panel.passwords import verify_password
from pbx.store import DATABASE_NAME, CallRecord, Store

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "tanuki-kitsune-42"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The repository's example configuration, with its data in tmp_path/data."""
    (tmp_path / "tenants").mkdir()
    text = (REPO / "config" / "pbx.toml").read_text(encoding="utf-8")
    assert 'data_dir = "../data"' in text
    (tmp_path / "pbx.toml").write_text(text.replace('"../data"', '"data"'), encoding="utf-8")
    shutil.copy(REPO / "config" / "tenants" / "acme.toml", tmp_path / "tenants" / "acme.toml")
    return tmp_path / "pbx.toml"


def database(config: Path) -> Path:
    return config.parent / "data" / DATABASE_NAME


def rows(config: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(database(config)) as db:
        return list(db.execute(sql))


def run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    stdin: str = f"{PASSWORD}\n",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["panel", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_add_operator_with_a_piped_password(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, "add-operator", "root", "--config", str(config))
    assert (code, err) == (0, "")
    assert out.startswith("created operator 'root' (account 1) in ")
    [(name, role, tenant, hashed, disabled)] = rows(
        config, "SELECT name, role, tenant, password_hash, disabled FROM panel_accounts"
    )
    assert (name, role, tenant, disabled) == ("root", "operator", None, 0)
    assert isinstance(hashed, str)
    assert verify_password(hashed, PASSWORD)
    [(actor, audit_role, audit_tenant, action, target, detail)] = rows(
        config, "SELECT actor, role, tenant, action, target, detail FROM panel_audit"
    )
    assert str(actor).startswith("cli")
    assert (audit_role, audit_tenant, action, target) == (
        "operator",
        None,
        "account_created",
        "root",
    )
    assert detail == '{"role": "operator"}'


def test_add_admin_for_a_tenant_of_the_configuration(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        monkeypatch, capsys, "add-admin", "sato", "--tenant", "acme", "--config", str(config)
    )
    assert code == 0
    assert out.startswith("created tenant admin of acme 'sato'")
    assert rows(config, "SELECT name, role, tenant FROM panel_accounts") == [
        ("sato", "tenant_admin", "acme")
    ]
    assert rows(config, "SELECT tenant, target FROM panel_audit") == [("acme", "sato")]


def test_a_password_line_keeps_its_spaces_but_not_its_line_end(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    typed = "  spaced out words  "
    code, _, _ = run(
        monkeypatch, capsys, "add-operator", "root", "--config", str(config), stdin=f"{typed}\r\n"
    )
    assert code == 0
    [(hashed,)] = rows(config, "SELECT password_hash FROM panel_accounts")
    assert isinstance(hashed, str)
    assert verify_password(hashed, typed)


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["add-operator", "root"], "short\n", "at least 12 characters"),
        (["add-operator", "root"], "root-password-1\n", "account name"),
        (["add-operator", "root"], "", "no password on standard input"),
        (["add-operator", "root!"], f"{PASSWORD}\n", "account name has 1-64 characters"),
        (["add-admin", "sato", "--tenant", "nope"], f"{PASSWORD}\n", "no tenant 'nope'"),
    ],
)
def test_refusals_exit_1_with_a_message_and_write_nothing(
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str,
    message: str,
) -> None:
    code, out, err = run(monkeypatch, capsys, *argv, "--config", str(config), stdin=stdin)
    assert (code, out) == (1, "")
    assert err.startswith(f"pbx panel {argv[0]}: ")
    assert message in err
    if database(config).exists():
        assert rows(config, "SELECT count(*) FROM panel_accounts") == [(0,)]


def test_a_taken_name_is_refused_before_the_password_is_asked(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, capsys, "add-operator", "root", "--config", str(config))[0] == 0
    stdin = io.StringIO(f"{PASSWORD}\n")
    monkeypatch.setattr(sys, "stdin", stdin)
    code = main(["panel", "add-admin", "ROOT", "--tenant", "acme", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert "an account named 'ROOT' already exists" in err
    assert stdin.tell() == 0  # not read
    assert rows(config, "SELECT count(*) FROM panel_accounts") == [(1,)]


def test_an_invalid_configuration_is_reported(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text("[sip]\nlisten = 5\n", encoding="utf-8")
    code, _, err = run(monkeypatch, capsys, "add-operator", "root", "--config", str(config))
    assert code == 1
    assert "the configuration cannot be loaded" in err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("typed", "code", "message"),
    [
        ([PASSWORD, PASSWORD], 0, ""),
        ([PASSWORD, PASSWORD + "x"], 1, "the two passwords differ"),
    ],
)
def test_on_a_terminal_the_password_is_asked_twice_without_echo(
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    typed: list[str],
    code: int,
    message: str,
) -> None:
    prompts: list[str] = []
    answers = iter(typed)

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(sys, "stdin", FakeTerminal())
    monkeypatch.setattr("getpass.getpass", getpass)
    assert main(["panel", "add-operator", "root", "--config", str(config)]) == code
    assert prompts == ["Password for root: ", "Password again: "]
    assert message in capsys.readouterr().err


def test_list_shows_every_account_or_one_tenants(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, "list", "--config", str(config))
    assert (code, out) == (0, "no panel accounts\n")
    run(monkeypatch, capsys, "add-operator", "root", "--config", str(config))
    run(monkeypatch, capsys, "add-admin", "sato", "--tenant", "acme", "--config", str(config))
    code, out, _ = run(monkeypatch, capsys, "list", "--config", str(config))
    lines = out.splitlines()
    assert code == 0
    assert [line.split()[:2] for line in lines] == [["root", "operator"], ["sato", "admin"]]
    assert "admin of acme" in lines[1]
    assert "created 20" in lines[1]
    code, out, _ = run(monkeypatch, capsys, "list", "--tenant", "acme", "--config", str(config))
    assert [line.split()[0] for line in out.splitlines()] == ["sato"]


def pbx(config: Path, *argv: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbx", "panel", *argv, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_subprocess_with_a_piped_password(config: Path) -> None:
    done = pbx(config, "add-admin", "sato", "--tenant", "acme", stdin=f"{PASSWORD}\n")
    assert (done.returncode, done.stderr) == (0, "")
    assert "created tenant admin of acme 'sato'" in done.stdout
    again = pbx(config, "add-operator", "Sato", stdin=f"{PASSWORD}\n")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    weak = pbx(config, "add-operator", "root", stdin="password\n")
    assert weak.returncode == 1
    assert "at least 12 characters" in weak.stderr


@pytest.mark.asyncio
async def test_beside_a_running_server_its_calls_in_progress_stay_open(config: Path) -> None:
    server = await Store.open_in(config.parent / "data")
    try:
        await server.record_call(CallRecord("c1", "acme", 1.0, "09011112222", "0312345678"))
        done = await asyncio.to_thread(pbx, config, "add-operator", "root", stdin=f"{PASSWORD}\n")
        assert done.returncode == 0, done.stderr
        call = await server.call("c1")
        assert call is not None
        assert call.is_open
        # The server's writer goes on committing beside the tool's.
        await server.record_call(CallRecord("c2", "acme", 2.0, "09011112222", "0312345678"))
        assert await server.fetch("SELECT name FROM panel_accounts") == [("root",)]
    finally:
        await server.close()
