"""Registrations/s the store commits: SQLite vs PostgreSQL in the same run (issue #20).

What the registrar does for each REGISTER that changes a binding, without SIP: one
``write_bindings`` (an upsert of the binding), and the 200 waits for its commit. ``--phones``
registrations are kept in flight at once (phones do not wait for each other; the writer groups
what arrives during a commit). PostgreSQL is a private server on a Unix socket of this machine
(``pbx.pg_local``, fsync off as in the tests: a lower bound on what a durable server costs);
SQLite is the file in a temporary folder (WAL, synchronous=NORMAL, as the server runs it). Both
run in this one process, one after the other, on the same 2-core machine as the database server.
This is the store's ceiling, not the server's: the SIP path (parsing, digest) costs far more per
REGISTER (loadtests/bench_register.py measures that end to end).

    python -m loadtests.bench_store [--seconds 5] [--phones 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from pbx.config.model import Extension, TenantId
from pbx.pg_local import LocalPostgres
from pbx.registrar import Binding
from pbx.sip.message import SipUri
from pbx.store import DATABASE_NAME, Store


def _binding(n: int, now: float) -> Binding:
    ext = f"{1000 + n % 9000}"
    return Binding(
        tenant=TenantId("acme"),
        extension=Extension(ext),
        uri=SipUri("sip", f"10.0.{n // 250 % 250}.{n % 250}", ext, port=5060),
        source_host="198.51.100.7",
        source_port=40000 + n % 20000,
        transport="UDP",
        connection_id=None,
        call_id=f"reg-{n}",
        cseq=1,
        registered_at=now,
        expires_at=now + 600,
        user_agent="bench",
    )


async def _run(store: Store, seconds: float, phones: int) -> tuple[int, float, int]:
    done = 0
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def phone(index: int) -> None:
        nonlocal done
        n = index
        while time.monotonic() < deadline:
            b = _binding(n, time.time())
            started = time.monotonic()
            await store.write_bindings((b,), ())
            latencies.append(time.monotonic() - started)
            done += 1
            n += phones  # the next phone of this slot

    started = time.monotonic()
    await asyncio.gather(*(phone(i) for i in range(phones)))
    took = time.monotonic() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    return done, took, int(p99 * 1000)


async def _measure(kind: str, opener: object, seconds: float, phones: int) -> str:
    store = await opener()  # type: ignore[operator]
    try:
        count, took, p99 = await _run(store, seconds, phones)
        commits = store.stats.commits
    finally:
        await store.close()
    return (
        f"{kind:<11} {count / took:9.0f} registrations/s  ({count} in {took:.1f} s,"
        f" {commits} commits, p99 commit wait {p99} ms, {phones} in flight)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--phones", type=int, default=200)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp, LocalPostgres() as pg:
        url = pg.create_database("bench")

        async def both() -> None:
            def lite() -> object:
                return Store.open(Path(tmp) / DATABASE_NAME)

            def postgres() -> object:
                return Store.open_url(url)

            print(await _measure("sqlite", lite, args.seconds, args.phones))
            print(await _measure("postgresql", postgres, args.seconds, args.phones))

        asyncio.run(both())


if __name__ == "__main__":
    main()
