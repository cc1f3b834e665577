"""When the server runs a full garbage collection (``pbx.gcpolicy``): a guard against a leak of
reference cycles that does not stop the loop under the load that grew the heap."""

from __future__ import annotations

import pytest

from pbx.gcpolicy import BusyShare, FullCollectionPolicy, memory_limit

M = 1_000_000


def policy() -> FullCollectionPolicy:
    return FullCollectionPolicy(1000.0, 1 * M, min_blocks=2 * M, min_seconds=300.0)


def test_not_before_min_seconds_even_when_the_heap_grew_fourfold() -> None:
    p = policy()
    assert not p.due(1299.0, 9 * M, busy_share=0.0, memory_share=lambda: 0.9)
    assert p.due(1300.0, 9 * M, busy_share=0.0, memory_share=lambda: 0.0)


def test_a_doubled_heap_waits_for_a_quiet_moment() -> None:
    p = policy()  # baseline 2 M (the floor: the heap at start was smaller)
    # not above twice the baseline
    assert not p.due(2000.0, 4 * M, busy_share=0.0, memory_share=lambda: 0.0)
    # doubled, but under load: later
    assert not p.due(2000.0, 5 * M, busy_share=0.9, memory_share=lambda: 0.0)
    assert not p.due(2000.0, 5 * M, busy_share=0.2, memory_share=lambda: 0.0)
    assert p.due(2000.0, 5 * M, busy_share=0.19, memory_share=lambda: 0.0)  # the load has gone


def test_a_heap_grown_fourfold_under_load_waits_while_memory_is_plentiful() -> None:
    # A busy server's heap is its calls of the last 32 s: it grows with the load. A full
    # collection of it under that load stopped the loop for 20 s at 500 calls/s (issue #21).
    p = policy()
    assert not p.due(2000.0, 8 * M + 1, busy_share=0.9, memory_share=lambda: 0.1)
    assert not p.due(2000.0, 40 * M, busy_share=0.9, memory_share=lambda: 0.49)
    assert p.due(2000.0, 40 * M, busy_share=0.1, memory_share=lambda: 0.1)  # at the quiet moment


def test_a_heap_grown_fourfold_is_collected_under_load_once_memory_is_scarce() -> None:
    # A leak under a steady load keeps growing: before memory runs out, a pause is the lesser
    # harm.
    p = policy()
    assert not p.due(2000.0, 8 * M, busy_share=0.9, memory_share=lambda: 0.9)  # not fourfold
    assert p.due(2000.0, 8 * M + 1, busy_share=0.9, memory_share=lambda: 0.5)


def test_the_next_collection_counts_from_the_last() -> None:
    p = policy()
    p.collected(2000.0, 6 * M)
    assert (p.baseline, p.last_full) == (6 * M, 2000.0)
    assert not p.due(2299.0, 30 * M, busy_share=0.0, memory_share=lambda: 0.0)
    assert not p.due(2300.0, 12 * M, busy_share=0.0, memory_share=lambda: 0.0)
    assert p.due(2300.0, 12 * M + 1, busy_share=0.0, memory_share=lambda: 0.0)
    p.collected(2400.0, 1 * M)  # most of it was garbage: the floor again
    assert p.baseline == 2 * M


def test_busy_share_is_cpu_over_the_last_window() -> None:
    share = BusyShare(window=10.0)
    assert share.add(0.0, 0.0) == 0.0
    # Busy for 10 s (0.8 of a core), then idle for 10 s.
    for step in range(1, 51):
        busy = share.add(step * 0.2, step * 0.16)
    assert busy == pytest.approx(0.8)
    for step in range(1, 51):
        quiet = share.add(10.0 + step * 0.2, 8.0 + step * 0.001)
    assert quiet < 0.02  # the busy seconds have left the window
    assert share.add(20.2, 8.05) == pytest.approx((8.05 - 8.0) / 10.2, rel=0.1)


def test_memory_limit_is_the_cgroups_when_it_sets_one() -> None:
    gib = 1 << 30
    assert memory_limit("2147483648\n", 24 * gib) == 2 * gib  # systemd MemoryMax=2G
    assert memory_limit("max\n", 24 * gib) == 24 * gib  # no limit
    assert memory_limit(None, 24 * gib) == 24 * gib  # no cgroup v2
    assert memory_limit(str(64 * gib), 24 * gib) == 24 * gib  # above the machine's
    assert memory_limit("0", 24 * gib) == 24 * gib


def test_memory_is_asked_for_only_when_a_fourfold_heap_is_under_load() -> None:
    # The server reads /proc for it: not five times a second for nothing.
    asked: list[float] = []

    def memory() -> float:
        asked.append(0.1)
        return 0.1

    p = policy()
    assert p.due(2000.0, 5 * M, busy_share=0.1, memory_share=memory)  # quiet: no need
    assert not p.due(2000.0, 5 * M, busy_share=0.9, memory_share=memory)  # only doubled
    assert asked == []
    assert not p.due(2000.0, 9 * M, busy_share=0.9, memory_share=memory)
    assert asked == [0.1]
