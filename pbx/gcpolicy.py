"""When the server runs a full garbage collection: pure, time and figures passed in.

Under load the server freezes what survives (``gc.freeze``) and collects only the youngest
generation (``pbx.server``), so reference cycles among frozen objects wait for a full, unfrozen
collection. That one scans every object and holds the event loop for 0.5-2 s under load: longer
than a phone or a trunk waits before it retransmits, and long enough for calls to fail (issue
#21: one of 1,649 ms at 500 calls/s, and 492 of 35,000 calls failed). Cycles are rare (a few
hundred objects per five minutes of load), so the collection is only a guard against a leak:

- it is due once the heap (allocated blocks) has grown ``growth`` times since the last one
  (counting from at least ``min_blocks``: a heap that grows to 2 million blocks under load is
  not a leak), and at most every ``min_seconds``;
- a due collection waits for a quiet moment: the process used less than ``quiet_share`` of a
  core over the last window. A heap that doubled because the load grew (the morning's calls)
  is collected at night, not under the load that made it;
- unless the heap has grown ``urgent_growth`` times *and* the process holds
  ``urgent_memory_share`` of the memory it may use (its cgroup's limit, or the machine's): a
  leak under a steady load keeps growing and gets there, and then memory matters more than one
  pause. A heap grown fourfold alone is no sign of a leak: a busy server's heap is mostly the
  calls of the last 32 s (their transactions linger, RFC 3261 timers J, L, M), so it grows
  with the load, and a full collection of it stopped the loop for 20 s at 500 calls/s (13,192
  of 35,000 calls failed; ``loadtests/bench_calls``, issue #21).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field


@dataclass
class FullCollectionPolicy:
    """Whether a full collection is due (``due``); ``collected`` after running one."""

    started: InitVar[float]  # monotonic seconds: the first collection is counted from here
    blocks: InitVar[int]  # the heap at start
    growth: float = 2.0  # due once the heap has doubled ...
    urgent_growth: float = 4.0  # ... (at once, under load too, once it has grown fourfold)
    min_blocks: int = 2_000_000  # ... from at least this many allocated blocks ...
    min_seconds: float = 300.0  # ... and not more often than this ...
    quiet_share: float = 0.2  # ... at a moment the process uses under a fifth of a core
    urgent_memory_share: float = 0.5  # the fourfold heap: only once memory is this scarce
    baseline: int = field(init=False)
    last_full: float = field(init=False)

    def __post_init__(self, started: float, blocks: int) -> None:
        self.collected(started, blocks)

    def due(
        self, now: float, blocks: int, busy_share: float, memory_share: Callable[[], float]
    ) -> bool:
        """``blocks``: the heap now; ``busy_share``: the process's CPU over the last window,
        as a share of one core; ``memory_share``: gives its resident memory as a share of the
        memory it may use (asked only for a heap grown fourfold under load)."""
        if now - self.last_full < self.min_seconds or blocks <= self.growth * self.baseline:
            return False
        if busy_share < self.quiet_share:
            return True
        return (
            blocks > self.urgent_growth * self.baseline
            and memory_share() >= self.urgent_memory_share
        )

    def collected(self, now: float, blocks: int) -> None:
        """A full collection ran at ``now`` and left ``blocks``: the next is counted from it."""
        self.baseline = max(self.min_blocks, blocks)
        self.last_full = now


@dataclass
class BusyShare:
    """The process's CPU time over the last ``window`` seconds as a share of one core, from
    samples of (monotonic time, CPU seconds) taken by the caller."""

    window: float = 10.0  # seconds
    _samples: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, now: float, cpu: float) -> float:
        """Record a sample; the share over the samples kept (0.0 until two are)."""
        samples = self._samples
        samples.append((now, cpu))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        first_time, first_cpu = samples[0]
        elapsed = now - first_time
        return (cpu - first_cpu) / elapsed if elapsed > 0 else 0.0


def memory_limit(cgroup_max: str | None, physical: int) -> int:
    """The memory the process may use, in bytes: its cgroup's ``memory.max`` when that is a
    number below the machine's memory (a systemd ``MemoryMax=``, a container's limit), else
    the machine's memory (``physical``)."""
    text = (cgroup_max or "").strip()
    if text.isdigit() and 0 < int(text) < physical:
        return int(text)
    return physical
