"""The injectable clock: one reading per event, a fake that moves only when told."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from pbx.clock import FakeClock, Instant
from pbx.system_clock import SystemClock


def test_instant_gives_its_wall_time_as_utc() -> None:
    assert Instant(5.0, 0.0).utc == datetime(1970, 1, 1, tzinfo=UTC)


def test_fake_clock_moves_both_readings_only_when_advanced() -> None:
    clock = FakeClock(monotonic=10.0, wall=100.0)
    assert clock.now() == Instant(10.0, 100.0)
    clock.advance(2.5)
    assert (clock.monotonic(), clock.wall()) == (12.5, 102.5)


@pytest.mark.asyncio
async def test_system_clock_reads_the_running_loops_time() -> None:
    loop = asyncio.get_running_loop()
    before = loop.time()
    reading = SystemClock().now()
    assert before <= reading.monotonic <= loop.time()
    assert reading.wall > 1_600_000_000


def test_a_bound_system_clock_reads_its_loop_while_it_runs_then_any_other() -> None:
    clock = SystemClock()
    seen: list[tuple[float, float, float]] = []

    class Loop(asyncio.SelectorEventLoop):
        """A loop whose time is far from the monotonic clock, to tell the readings apart."""

        def time(self) -> float:
            return super().time() + 1e6

    async def read() -> None:
        loop = asyncio.get_running_loop()
        clock.bind(loop)
        seen.append((loop.time(), clock.monotonic(), clock.now().monotonic))

    first = Loop()
    try:
        first.run_until_complete(read())
    finally:
        first.close()
    before, monotonic, now = seen[0]
    assert before <= monotonic <= now < before + 60  # the bound loop's time
    # The loop has stopped: another loop's time is read (here none runs: time.monotonic).
    assert clock.monotonic() < before - 1e5

    async def other() -> float:
        return clock.monotonic() - asyncio.get_running_loop().time()

    assert abs(asyncio.run(other())) < 1.0
