"""loadtests/bench_transport_failures.py: its in-process measurement runs (small sizes) and
checks on the way that every failure reached what it concerns: each closed connection's
binding and each failed peer's binding offline, each failed peer's transaction ended, the
other live transactions untouched, and each newcomer at the connection cap evicted one."""

from __future__ import annotations

import pytest

from loadtests.bench_transport_failures import measure


@pytest.mark.asyncio
async def test_the_failures_benchmark_measures_a_filled_service() -> None:
    figures = await measure(bindings=200, transactions=1_000, failures=20)
    assert figures["live transactions"] == 1_000
    assert figures["bindings"] == 220  # 200 phones and one at each failed peer
    assert figures["connection closed (µs)"] > 0
    assert figures["send failed (µs)"] > 0
    assert figures["new connection at the cap (µs)"] > 0
