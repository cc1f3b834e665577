"""How long does a 通話履歴 (call history) page take with 1,000,000 call records in the store?

    python -m loadtests.bench_history [--records 1000000] [--baseline 1000] [--rounds 20]

Fills a SQLite store on disk (the server's schema, all migrations) with ``--records`` call
records in bulk (four tenants: acme holds 60 %, the others the rest, a year of calls with a
realistic mix of callers, dispositions, forwards and traces), then a second store with
``--baseline`` records of the same shape. Over each, the real panel app (``build_panel_app``,
driven in-process through httpx's ASGI transport: session check, query, template) serves the
same history pages to acme's signed-in admin, ``--rounds`` times each:

- the first page, and a filtered page (an extension, a disposition, a date range, a number);
- a deep page: keyset from the row at 50 % of acme's history (``after=``), no OFFSET;
- the worst case we know: a rare disposition within one extension's calls (the index serves the
  extension; the disposition is checked row by row).

It prints p50/p95 per page for both stores side by side; the target is under 200 ms with
1,000,000 records. Everything lives in a temporary folder, removed at the end (``--keep`` keeps
it for a second run: filling takes about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from pbx.config.holder import ConfigHolder
from pbx.config.load import load_config
from pbx.panel.accounts import PanelStore
from pbx.panel.app import PanelDeps, build_panel_app
from pbx.panel.passwords import hash_password
from pbx.panel.saving import ReloadOutcome, TenantSaver
from pbx.panel.signin import SignInThrottle
from pbx.panel.tenant_files import TenantWriter
from pbx.store import DATABASE_NAME, Store

TENANTS = {"acme": 0.6, "beta": 0.2, "gamma": 0.1, "delta": 0.1}
YEAR = 365 * 86400
START = 1_767_193_200.0  # 2026-01-01 00:00 Asia/Tokyo
PASSWORD = "bench history password"
SERVER = """\
[sip]
listen = ["udp:127.0.0.1:5060"]
[storage]
data_dir = "data"
[[trunks]]
name = "carrier"
address = "127.0.0.2:5080"
"""


def tenant_file(index: int, name: str) -> str:
    number = f"03{index}000000{index}"[:10]
    users = "".join(
        f'\n[[users]]\nextension = "{1000 + u}"\npassword = "bench-password-{u:04d}"\n'
        for u in range(1, 31)
    )
    return (
        f'[tenant]\ndomain = "{name}.example"\n'
        + ("default = true\n" if index == 0 else "")
        + f'\n[limits]\nmax_users = 50\n\n[[numbers]]\nnumber = "{number}"\n{users}'
    )


def tenant_number(index: int) -> str:
    return f"03{index}000000{index}"[:10]


def fake_records(count: int, seed: int = 13) -> Iterator[tuple[Any, ...]]:
    """``count`` call_records rows, spread over a year and the tenants by ``TENANTS``."""
    rng = random.Random(seed)
    names = list(TENANTS)
    weights = list(TENANTS.values())
    dispositions = ["answered"] * 70 + ["no_answer"] * 15 + ["busy"] * 8 + ["cancelled"] * 6
    dispositions += ["failed"]
    step = YEAR / count
    for i in range(count):
        tenant = rng.choices(names, weights)[0]
        index = names.index(tenant)
        started = START + i * step + rng.random() * step
        ext = str(1001 + rng.randrange(30))
        disposition = rng.choice(dispositions)
        inbound = rng.random() < 0.7
        caller = f"090{rng.randrange(10**8):08d}" if inbound else ext
        called = tenant_number(index) if inbound else f"03{rng.randrange(10**8):08d}"
        forwarding: list[dict[str, str]] = []
        trace = [f"call from {caller} via carrier to {called} (tenant {tenant})"]
        if inbound:
            trace.append(
                f"Tue 10:00:00 Asia/Tokyo: number {called} rule 1 (08:00:00-19:59:59) -> {ext}"
            )
            trace.append(f"ring {ext} (1 contact), no answer after 20s -> 1030")
        answered_by = None
        answered = None
        if disposition == "answered":
            answered_by = ext if inbound else called
            if rng.random() < 0.1:
                forwarding.append({"from": ext, "reason": "no-answer", "to": "1030"})
                trace.append(f"{ext} no answer after 20s -> forward no_answer to 1030")
                answered_by = "1030"
            answered = started + rng.uniform(2, 25)
            trace.append(f"{answered_by} answered")
            trace.append("caller hung up")
        ended = (answered or started) + rng.uniform(5, 600)
        recording = f"/nonexistent/recordings/c{i:07d}.wav" if rng.random() < 0.05 else None
        yield (
            f"{i:016x}",
            tenant,
            started,
            answered,
            ended,
            ended,
            caller,
            called,
            disposition,
            answered_by,
            json.dumps(forwarding),
            json.dumps(trace),
            recording,
        )


def fill(path: Path, count: int) -> float:
    """Bulk-insert ``count`` records into the (already migrated) database; seconds taken."""
    started = time.perf_counter()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA synchronous=OFF")
        rows = fake_records(count)
        while True:
            batch = [row for _, row in zip(range(50_000), rows, strict=False)]
            if not batch:
                break
            db.executemany(
                "INSERT INTO call_records (id, tenant, started_at, answered_at, ended_at,"
                " last_event_at, caller, called, disposition, answered_by, forwarding, trace,"
                " recording_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batch,
            )
            db.commit()
        db.execute("ANALYZE")
    return time.perf_counter() - started


async def prepare(root: Path, count: int) -> float:
    """The config folder and a store of ``count`` records under ``root``; fill time."""
    (root / "tenants").mkdir(parents=True, exist_ok=True)
    (root / "pbx.toml").write_text(SERVER, encoding="utf-8")
    for index, name in enumerate(TENANTS):
        text = tenant_file(index, name)
        (root / "tenants" / f"{name}.toml").write_text(text, encoding="utf-8")
    store = await Store.open(root / "data" / DATABASE_NAME)
    accounts = PanelStore(store)
    await accounts.create_account(
        "acme-admin", hash_password(PASSWORD), "tenant_admin", "acme", time.time()
    )
    await store.close()
    return fill(root / "data" / DATABASE_NAME, count)


async def measure(root: Path, rounds: int) -> dict[str, list[float]]:
    """Page times (ms) of each history page over the store under ``root``."""
    config_path = root / "pbx.toml"
    holder = ConfigHolder(load_config(config_path))
    store = await Store.open(root / "data" / DATABASE_NAME, recover_calls=False)

    async def reload() -> ReloadOutcome:
        return ReloadOutcome(True, holder.current.version)

    deps = PanelDeps(
        current=lambda: holder.current,
        accounts=PanelStore(store),
        saver=TenantSaver(config_path, TenantWriter(root / "data" / "history"), reload),
        throttle=SignInThrottle(),
        wall_clock=time.time,
    )
    app = build_panel_app(deps)
    deep = await store.fetch(
        "SELECT started_at, id FROM call_records WHERE tenant = 'acme'"
        " ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET"
        " (SELECT COUNT(*) / 2 FROM call_records WHERE tenant = 'acme')"
    )
    callers = await store.fetch(
        "SELECT caller FROM call_records WHERE tenant = 'acme' AND caller LIKE '090%' LIMIT 1"
    )
    pages = {
        "first page": "/t/acme/history",
        "extension=1001": "/t/acme/history?extension=1001",
        "disposition=busy": "/t/acme/history?disposition=busy",
        "one month": "/t/acme/history?from=2026-06-01&to=2026-06-30",
        "number (a caller)": f"/t/acme/history?number={callers[0][0]}",
        "number (our DID)": f"/t/acme/history?number={tenant_number(0)}",
        "deep page (keyset, 50 %)": f"/t/acme/history?after={deep[0][0]!r}~{deep[0][1]}",
        "ext 1001 + failed (worst)": "/t/acme/history?extension=1001&disposition=failed",
    }
    times: dict[str, list[float]] = {name: [] for name in pages}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://panel.bench") as client:
            page = await client.get("/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token is not None
            form = {"csrf": token.group(1), "name": "acme-admin", "password": PASSWORD}
            signed = await client.post("/login", data=form)
            assert signed.status_code == 303, signed.text[:300]
            for path in pages.values():  # warm the page cache once
                assert (await client.get(path)).status_code == 200
            for _ in range(rounds):
                for name, path in pages.items():
                    started = time.perf_counter()
                    response = await client.get(path)
                    times[name].append(1000 * (time.perf_counter() - started))
                    assert response.status_code == 200, (path, response.status_code)
                    assert 'data-call="' in response.text or "worst" in name, name
    finally:
        await store.close()
    return times


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"p50 {statistics.median(ordered):7.1f}  p95 {p95:7.1f}"


async def run(args: argparse.Namespace) -> int:
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-history-"))
    big, small = folder / "big", folder / "baseline"
    try:
        for root, count in ((big, args.records), (small, args.baseline)):
            if (root / "data" / DATABASE_NAME).exists():
                print(f"reusing {root} ({count:,} records)", flush=True)
                continue
            seconds = await prepare(root, count)
            size = (root / "data" / DATABASE_NAME).stat().st_size / 1e6
            print(f"filled {count:,} records in {seconds:.1f} s ({size:.0f} MB)", flush=True)
        baseline = await measure(small, args.rounds)
        loaded = await measure(big, args.rounds)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"\nhistory page times in ms over {args.rounds} rounds (acme's admin, in-process ASGI)")
    print(f"{'page':28s} {args.baseline:>9,} records        {args.records:>9,} records")
    slowest = 0.0
    for name in loaded:
        print(f"{name:28s} {summary(baseline[name])}   {summary(loaded[name])}")
        slowest = max(slowest, statistics.median(loaded[name]))
    verdict = "met" if slowest < 200 else "MISSED"
    print(f"\ntarget (every page's p50 under 200 ms with {args.records:,} records): {verdict}")
    return 0 if slowest < 200 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--keep", help="a folder to fill once and reuse (not removed)")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
