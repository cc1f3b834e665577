"""How fast a binding committed by node a reaches node b's memory (issue #20, shared bindings).

Two ``Store`` nodes on one private PostgreSQL (``pbx.pg_local``, Unix socket, fsync off), node b
with a ``BindingSync``, all in this one process, without SIP. Three figures:

1. one at a time: from node a's ``apply_bindings`` call until node b holds the binding
   (commit + NOTIFY + b's reload), median and p99 of ``--samples``;
2. a burst of ``--aors`` distinct AORs written with ``--phones`` in flight: node a's commit rate,
   and when node b holds them all;
3. the same burst's commit rate without the NOTIFY (the store told it is not PostgreSQL), so the
   notification's cost shows.

    python -m loadtests.bench_binding_sync [--samples 200] [--aors 5000] [--phones 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from pbx.binding_sync import BindingSync
from pbx.config.model import Extension, TenantId
from pbx.pg_local import LocalPostgres
from pbx.registrar import Binding, Registrations
from pbx.sip.message import SipUri
from pbx.store import Store

NOW = time.time()


def _binding(n: int) -> Binding:
    ext = str(10_000 + n)
    return Binding(
        tenant=TenantId("acme"),
        extension=Extension(ext),
        uri=SipUri("sip", f"10.{n // 62_500 % 250}.{n // 250 % 250}.{n % 250}", ext, port=5060),
        source_host="198.51.100.7",
        source_port=40_000 + n % 20_000,
        transport="UDP",
        connection_id=None,
        call_id=f"reg-{n}",
        cseq=1,
        registered_at=NOW,
        expires_at=NOW + 3600,
    )


async def _until(sync: BindingSync, done: Any) -> None:
    while not done():
        sync.applied.clear()
        await sync.applied.wait()


async def _burst(store: Store, bindings: list[Binding], phones: int) -> float:
    gate = asyncio.Semaphore(phones)

    async def one(b: Binding) -> None:
        async with gate:
            await store.apply_bindings((b,), ())

    started = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bindings))
    return time.perf_counter() - started


async def run(url: str, quiet_url: str, samples: int, aors: int, phones: int) -> None:
    a = await Store.open_url(url, node="a")
    b = await Store.open_url(url, node="b")
    memory = Registrations()
    sync = BindingSync(url, b, lambda: memory, time.time)
    await sync.start()
    try:
        await _until(sync, lambda: sync.reloads >= 1)
        took: list[float] = []
        for n in range(samples):
            x = _binding(n)
            started = time.perf_counter()
            await a.apply_bindings((x,), ())
            await _until(sync, lambda x=x: bool(memory.bindings_of(x.tenant, x.extension)))
            took.append(time.perf_counter() - started)
        took.sort()
        p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
        print(
            f"one at a time ({samples}): a's apply_bindings -> b's memory:"
            f" median {statistics.median(took) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"
        )
        burst = [_binding(samples + n) for n in range(aors)]
        started = time.perf_counter()
        wrote = await _burst(a, burst, phones)
        await _until(sync, lambda: len(memory) >= samples + aors)
        held = time.perf_counter() - started
        print(
            f"burst of {aors} AORs, {phones} in flight: a committed {aors / wrote:,.0f}/s;"
            f" b held them all {held - wrote:.2f} s after a's last commit"
        )
    finally:
        await sync.close()
        await a.close()
        await b.close()
    quiet = await Store.open_url(quiet_url, node="a")
    quiet._backend.dialect = "sqlite"  # no NOTIFY: the comparison
    try:
        wrote = await _burst(quiet, [_binding(n) for n in range(aors)], phones)
        print(f"the same burst without NOTIFY: {aors / wrote:,.0f}/s")
    finally:
        quiet._backend.dialect = "postgresql"
        await quiet.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--aors", type=int, default=5000)
    parser.add_argument("--phones", type=int, default=200)
    args = parser.parse_args()
    with LocalPostgres() as server:
        url, quiet = server.create_database("sync"), server.create_database("quiet")
        asyncio.run(run(url, quiet, args.samples, args.aors, args.phones))


if __name__ == "__main__":
    main()
