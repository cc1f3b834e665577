"""The README's "Getting started", followed as a newcomer would (issue 19).

The section's commands run in order, in a copy of ``config/`` (the data folder beside it):
``bash scripts/run.sh`` as what it executes once installed (``pbx run``: ``test_deploy`` shows
that run.sh installs once and then only starts), ``.venv/bin/pbx`` as this checkout's ``pbx``,
everything else (``sipp``, ``ls``) as written. The softphones are real baresip processes from
Debian, configured with the values of the section's table: they register, 1001 places the first
internal call to 1002, and 1004 answers the carrier's call through the demo trunk. The demo's
fixed ports (SIP 5060, admin 8088, panel 8089 on loopback) are used, as the README says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pbx.admin_client import call_admin
from tests.integration.harness import REPO, stop_process

pytestmark = pytest.mark.integration

README = REPO / "README.md"
BARESIP_MODULES = "/usr/lib/baresip/modules"


def section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Getting started")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(kind: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"```{kind}\n(.*?)```", section(), re.S)]


def commands() -> list[str]:
    return [line for block in blocks("sh") for line in block.splitlines() if line.strip()]


def table() -> dict[str, str]:
    """The softphone table: field -> the first `value` of its row."""
    rows = re.findall(r"^\| ([^|]+) \| `([^`]+)`", section(), re.M)
    return {field.strip(): value for field, value in rows}


def test_the_section_is_what_this_test_runs() -> None:
    assert commands() == [
        "bash scripts/run.sh",
        ".venv/bin/pbx status --config config/pbx.toml",
        "sipp -sn uac -i 127.0.0.2 -p 5080 -s 0612345678 -m 1 -timeout 30s -timeout_error "
        "127.0.0.1:5060",
        ".venv/bin/pbx calls --config config/pbx.toml --limit 5",
        ".venv/bin/pbx calls --config config/pbx.toml --extension 1004 --format csv",
        "ls data/recordings/",
        ".venv/bin/pbx check-config --config config/pbx.toml",
        ".venv/bin/pbx reload --config config/pbx.toml",
    ]


class Phone:
    """A baresip 1.0 softphone set up from the README's values; answers calls by itself."""

    def __init__(self, folder: Path, user: str, password: str, sip_port: int) -> None:
        values = table()
        self.folder = folder
        folder.mkdir(parents=True)
        (folder / "config").write_text(
            "\n".join(
                (
                    f"sip_listen 127.0.0.1:{sip_port}",
                    "audio_player aubridge,play",
                    "audio_source ausine,440",
                    "audio_alert aubridge,alert",
                    "ausrc_srate 48000",
                    "auplay_srate 48000",
                    "ausrc_channels 2",
                    "auplay_channels 1",
                    f"module_path {BARESIP_MODULES}",
                    "module g711.so",
                    "module ausine.so",
                    "module aubridge.so",
                    "module account.so",
                    "module menu.so",
                    f"rtp_ports {sip_port * 2}-{sip_port * 2 + 99}",
                    "",
                )
            ),
            encoding="utf-8",
        )
        server = values["SIP server / registrar / proxy"]
        port = values["port, transport"]
        self.account = f"<sip:{user}@{server}:{port};transport=udp>;auth_pass={password}"
        (folder / "accounts").write_text(
            self.account + ";regint=600;answermode=auto\n", encoding="utf-8"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> None:
        with (self.folder / "out.log").open("wb") as log:
            self.process = subprocess.Popen(
                ["baresip", "-f", str(self.folder), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return (self.folder / "out.log").read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert time.monotonic() < deadline, f"no {text!r}:\n{self.output()[-2000:]}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=5)


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A README command; ``.venv/bin/pbx`` is this checkout's pbx."""
    pbx = f"{sys.executable} -m pbx"
    line = command.replace(".venv/bin/pbx", pbx)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        ["bash", "-c", line],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path


def registered(config: Path) -> set[str]:
    _, rows = call_admin(config, "GET", "/registrations")
    return {row["extension"] for row in rows}


def test_getting_started_with_baresip(checkout: Path) -> None:
    cmds = commands()
    assert cmds[0] == "bash scripts/run.sh"
    # What run.sh executes once installed (scripts/run.sh: exec .venv/bin/pbx run --config ...).
    run_sh = (REPO / "scripts" / "run.sh").read_text(encoding="utf-8")
    assert 'exec .venv/bin/pbx run --config config/pbx.toml "$@"' in run_sh
    config = checkout / "config" / "pbx.toml"
    server = subprocess.Popen(
        [sys.executable, "-m", "pbx", "run", "--config", "config/pbx.toml", "--log-json"],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    phones: list[Phone] = []
    try:
        assert server.stderr is not None
        for raw in server.stderr:
            if json.loads(raw).get("event") == "server_started":
                break
        else:
            pytest.fail("the server did not start")
        values = table()
        password = values["password"]  # acme-1001-secret: the others follow its pattern
        assert password == "acme-1001-secret"
        passwords = {ext: password.replace("1001", ext) for ext in ("1001", "1002", "1004")}
        callee = Phone(checkout / "p1002", "1002", passwords["1002"], 17100)
        answerer = Phone(checkout / "p1004", "1004", passwords["1004"], 17120)
        caller = Phone(checkout / "p1001", "1001", passwords["1001"], 17140)
        phones += [callee, answerer, caller]
        assert caller.account in section()  # the README's baresip line, as written
        callee.start()
        answerer.start()
        deadline = time.monotonic() + 20
        while registered(config) != {"1002", "1004"}:
            assert time.monotonic() < deadline, callee.output()[-2000:]
            time.sleep(0.1)
        status = run(cmds[1], checkout)
        assert status.returncode == 0, status.stderr
        assert "acme/1002" in status.stdout
        assert "acme/1004" in status.stdout

        # 3. The first internal call: 1001 dials 1002, talks, hangs up (baresip quits at -t).
        caller.start("-e", "/dial 1002", "-t", "6")
        caller.wait_for("Call established")
        callee.wait_for("Call established")
        assert caller.process is not None
        caller.process.wait(timeout=20)
        callee.wait_for("terminated")

        # 4. Through the demo trunk: SIPp as the carrier calls 0612345678, 1004 answers.
        trunk = run(cmds[2], checkout)
        assert trunk.returncode == 0, trunk.stdout[-2000:] + trunk.stderr
        answerer.wait_for("Call established")

        # 5. The records and the recording.
        deadline = time.monotonic() + 10
        while True:
            listed = run(cmds[3], checkout)
            assert listed.returncode == 0, listed.stderr
            rows = [json.loads(line) for line in listed.stdout.splitlines()]
            if len(rows) == 2 and all(r["ended_at"] for r in rows):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        trunk_call, internal = rows
        assert (internal["caller"], internal["called"]) == ("1001", "1002")
        assert (internal["disposition"], internal["answered_by"]) == ("answered", "1002")
        assert internal["recording"] is not None
        assert Path(internal["recording"]).stat().st_size > 44
        assert (trunk_call["called"], trunk_call["answered_by"]) == ("0612345678", "1004")
        csv_rows = run(cmds[4], checkout).stdout.splitlines()
        assert csv_rows[0].startswith("id,tenant,started_at")
        assert len(csv_rows) == 2
        listing = run(cmds[5], checkout)
        assert listing.stdout.strip() == Path(internal["recording"]).name

        # 6. Add a user by file, check, reload.
        (snippet,) = blocks("toml")
        tenant = checkout / "config" / "tenants" / "acme.toml"
        tenant.write_text(tenant.read_text(encoding="utf-8") + "\n" + snippet, encoding="utf-8")
        checked = run(cmds[6], checkout)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "OK: configuration valid (1 tenants, 5 users)" in checked.stdout
        reloaded = run(cmds[7], checkout)
        assert reloaded.returncode == 0, reloaded.stderr
        assert reloaded.stdout.startswith("reloaded: configuration version 2 ")
    finally:
        for phone in phones:
            phone.stop()
        stop_process(server)
