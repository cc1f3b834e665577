"""Does browsing the control panel slow calls? Calls/s with and without an admin browsing.

    python -m loadtests.bench_panel [--rate 300] [--duration 30] [--rounds 2] [--users 9000]

The calls step of ``bench_calls`` (SIPp carrier on 127.0.0.2 -> number 0312345678 -> a SIPp
phone answering as extension 1001, signalling only) runs at a fixed rate, alternately quiet and
while an operator browses the panel of a second tenant with ``--users`` extension users as fast
as one client can: the users list (paged, sorted, searched), a user's edit form (its forward
pick-list holds every extension) and the JSON users API, one request after another. Each round
prints both lines side by side, so the quiet runs are the baseline measured in the same run and
their spread is the noise. Then it prints the panel's page times (p50/p99), idle and under load.

Loopback only; every process is ended by its pid. Typical run: about 3 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import http.cookiejar
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from loadtests.bench_calls import (
    CARRIER_IP,
    PHONE_IP,
    SERVER_EXTRA,
    TENANT,
    percentile,
    register,
    run_step,
)
from tests.integration.harness import REPO, RunningServer, free_port, running_server, write_config

OPERATOR = "bench-operator"
OPERATOR_PASSWORD = "bench operator password"


def big_tenant(users: int) -> str:
    lines = [
        '[tenant]\ndomain = "big.example"\n\n[limits]\n'
        f"max_users = {users}\nrecording_users = 10\n\n"
        '[[numbers]]\nnumber = "0399990000"\n'
    ]
    names = ["佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤"]
    departments = ["営業", "サポート", "経理", "開発", "総務"]
    for i in range(users):
        ext = f"{i:04d}"  # 0000-8999
        ha1 = hashlib.md5(f"{ext}:big.example:pw{ext}".encode()).hexdigest()
        lines.append(
            f'\n[[users]]\nextension = "{ext}"\npassword_ha1_md5 = "{ha1}"\n'
            f'name = "{names[i % len(names)]} {i}"\ndepartment = "{departments[i % 5]}"\n'
            'caller_id = "0399990000"\n'
        )
    return "".join(lines)


class PanelBrowser:
    """One signed-in operator with a cookie jar, fetching pages one after another."""

    def __init__(self, base: str) -> None:
        self.base = base
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def get(self, path: str) -> tuple[int, str]:
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.status, response.read().decode()

    def sign_in(self) -> None:
        _, page = self.get("/login")
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match is not None, page[:500]
        form = urllib.parse.urlencode(
            {"csrf": html.unescape(match.group(1)), "name": OPERATOR, "password": OPERATOR_PASSWORD}
        ).encode()
        with self.opener.open(self.base + "/login", data=form, timeout=30) as response:
            assert "/login" not in response.url, "sign-in failed"

    def pages(self, users: int) -> list[str]:
        last_page = max(1, users // 50)
        return [
            "/t/big/users",
            f"/t/big/users?page={last_page // 2}",
            "/t/big/users?sort=name&dir=desc",
            "/t/big/users?q=" + urllib.parse.quote("営業"),
            "/t/big/users?q=1234",
            "/t/big/users/1500",
            "/t/big/api/users?q=" + urllib.parse.quote("田中"),
        ]


def browse(
    browser: PanelBrowser, paths: list[str], stop: threading.Event, times: list[float]
) -> None:
    """Fetch ``paths`` round and round until ``stop``; adds the time of each page, in ms."""
    i = 0
    while not stop.is_set():
        started = time.perf_counter()
        status, _ = browser.get(paths[i % len(paths)])
        times.append(1000 * (time.perf_counter() - started))
        assert status == 200
        i += 1


def page_times(browser: PanelBrowser, paths: list[str], rounds: int = 5) -> list[float]:
    times: list[float] = []
    for _ in range(rounds):
        for path in paths:
            started = time.perf_counter()
            browser.get(path)
            times.append(1000 * (time.perf_counter() - started))
    return times


def add_operator(config: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pbx", "panel", "add-operator", OPERATOR, "--config", str(config)],
        input=OPERATOR_PASSWORD + "\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=300)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--users", type=int, default=9000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-panel-") as tmp:
        workdir = Path(tmp)
        root = workdir / "pbx"
        root.mkdir()
        config = write_config(
            root,
            tenants={"acme": TENANT, "big": big_tenant(args.users)},
            server_extra=SERVER_EXTRA,
            trunk=f"{CARRIER_IP}:{free_port(host=CARRIER_IP)}",
        )
        add_operator(config)
        server: RunningServer
        with running_server(config) as server:
            phone_port = free_port(host=PHONE_IP)
            register(server, phone_port, workdir)
            browser = PanelBrowser(f"http://{server.panel[0]}:{server.panel[1]}")
            browser.sign_in()
            paths = browser.pages(args.users)
            idle = page_times(browser, paths)
            run_step(50, 5, server.udp, phone_port, workdir, "warmup")
            busy: list[float] = []
            for round_no in range(1, args.rounds + 1):
                pid = server.process.pid
                quiet = run_step(
                    args.rate, args.duration, server.udp, phone_port, workdir, "quiet", pid
                )
                print(quiet.row(f"quiet{round_no}"), flush=True)
                stop = threading.Event()
                times: list[float] = []
                worker = threading.Thread(
                    target=browse, args=(browser, paths, stop, times), daemon=True
                )
                worker.start()
                try:
                    browsed = run_step(
                        args.rate, args.duration, server.udp, phone_port, workdir, "browsed", pid
                    )
                finally:
                    stop.set()
                    worker.join(timeout=60)
                busy += times
                print(browsed.row(f"browsed{round_no}"), flush=True)
                print(
                    f"          panel pages served while calls ran: {len(times)} "
                    f"({len(times) / max(1.0, browsed.wall):.1f}/s)",
                    flush=True,
                )
    idle.sort()
    busy.sort()
    print(
        f"panel page time with {args.users} users, idle: p50 {statistics.median(idle):.1f} ms, "
        f"p99 {percentile(idle, 0.99):.1f} ms; during calls: p50 "
        f"{statistics.median(busy) if busy else 0:.1f} ms, p99 {percentile(busy, 0.99):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
