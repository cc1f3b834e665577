"""``pbx simulate``: the decision, the forwards busy/offline users lead to, and the trace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pbx.cli import main

REPO = Path(__file__).resolve().parents[2]

TENANT = """
[tenant]
domain = "acme.example"
timezone = "Asia/Tokyo"
forward_caller_id = "original"

[limits]
max_users = 10
recording_users = 1

[[numbers]]
number = "0312345678"

[[users]]
extension = "1001"
password = "secret-1001"
caller_id = "0312345678"
recording = true
forward = { busy = "1002", no_answer = "09012345678", offline = "1003" }

[[users]]
extension = "1002"
password = "secret-1002"
caller_id = "0312345678"

[[users]]
extension = "1003"
password = "secret-1003"
caller_id = "0312345678"
forward = { offline = "09087654321" }

[[incoming]]
number = "0312345678"
targets = "1001,1002"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "8:00"
end = "19:59"

[[incoming]]
number = "0312345678"
targets = "1003"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "20:00"
end = "23:59"

[[incoming]]
number = "0312345678"
targets = "009608"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "0:00"
end = "7:59"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    shutil.copy(REPO / "config" / "pbx.toml", tmp_path / "pbx.toml")
    (tmp_path / "tenants").mkdir()
    (tmp_path / "tenants" / "acme.toml").write_text(TENANT, encoding="utf-8")
    return tmp_path / "pbx.toml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["simulate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_simulate_prints_the_forks_the_forwards_and_the_trace(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "--config", str(config), "--number", "0312345678", "--at", "2026-11-20T12:00:00",
        "--busy", "1001",
    )  # fmt: skip
    assert code == 0
    assert "call to 0312345678 (tenant acme) at Fri 12:00:00 Asia/Tokyo" in out
    assert "rule 1 (08:00:00-19:59:59, mon,tue,wed,thu,fri,sat,sun) -> 1001,1002" in out
    assert "  f1: ring 1002 [1002@acme.example]" in out
    assert (
        "  Fri 12:00:00 Asia/Tokyo: number 0312345678 rule 1 (08:00:00-19:59:59) -> 1001,1002"
        in out
    )
    assert "  1001 busy -> forward busy to 1002" in out
    assert "rule 2" not in out
    assert "rule 3" not in out
    assert "after 60s (max ring):" in out


def test_simulate_follows_offline_chains_out_to_the_trunk(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "--config", str(config), "--number", "0312345678", "--at", "2026-11-20T21:30:00",
        "--offline", "1003", "--json",
    )  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert report["rule"]["position"] == 2
    (fork,) = report["forks"]
    assert fork["kind"] == "dial_out"
    assert fork["number"] == "09087654321"
    assert fork["diversions"] == [
        {"number": "0312345678", "extension": "1003", "reason": "unavailable"}
    ]
    assert report["final"] is None
    assert "1003 offline -> forward offline to 09087654321" in report["trace"]
    assert report["if_unanswered"][-1]["final"] == 480


def test_simulate_reads_offsets_and_defaults_to_tenant_local_time(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, naive, _ = run(
        capsys, "--config", str(config), "--number", "0312345678", "--at", "2026-11-20T07:59:59",
        "--json",
    )  # fmt: skip
    _, utc, _ = run(
        capsys, "--config", str(config), "--number", "0312345678", "--at", "2026-11-19T23:00:00Z",
        "--json",
    )  # fmt: skip
    assert json.loads(naive)["forks"][0]["kind"] == "announcement"
    utc_report = json.loads(utc)
    assert utc_report["local_time"] == "Fri 08:00:00 Asia/Tokyo"
    assert [f["extension"] for f in utc_report["forks"]] == ["1001", "1002"]
    assert utc_report["forks"][0]["record"] is True


def test_simulate_all_busy_without_forward_ends_with_486(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(
        capsys,
        "--config", str(config), "--number", "0312345678", "--at", "2026-11-20T21:00:00",
        "--busy", "1003",
    )  # fmt: skip
    assert "final response: 486" in out


def test_simulate_rejects_a_bad_instant(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "--config", str(config), "--number", "0312345678", "--at", "friday noon"
    )
    assert code == 2
    assert "not an ISO-8601 date-time" in err


def test_simulate_reports_an_invalid_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(REPO / "config" / "pbx.toml", tmp_path / "pbx.toml")
    (tmp_path / "tenants").mkdir()
    (tmp_path / "tenants" / "acme.toml").write_text("[tenant]\n", encoding="utf-8")
    code, _, err = run(
        capsys, "--config", str(tmp_path / "pbx.toml"), "--number", "0312345678", "--at",
        "2026-11-20T12:00:00",
    )  # fmt: skip
    assert code == 1
    assert "configuration is invalid" in err


def test_simulate_the_shipped_demo_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "--config", str(REPO / "config" / "pbx.toml"), "--number", "0312345678",
        "--at", "2026-11-20T12:00:00", "--offline", "1001", "1003",
    )  # fmt: skip
    assert code == 0
    assert "1001 offline -> forward offline to 1003" in out
    assert "1003 offline -> forward offline to 09012345678" in out
