"""Log lines about bad input: truncated, and rate-limited per source with a suppressed count.

Pure, time passed in. A malformed message used to be logged with its offending value in full:
29 MB of datagrams wrote 204 MB of log in 10 s (issue 17, item 4). Now every such line carries at
most ``MAX_VALUE_CHARS`` of any value (``truncate``), and each source may write a burst of
``burst`` lines and then one every ``1/rate`` seconds (a token bucket); the lines it was refused
are counted and the next line let through carries that count as ``suppressed``. A global bucket
bounds the total over all sources (spoofed UDP sources are free to make up).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MAX_VALUE_CHARS = 160


def truncate(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """``str(value)`` cut to ``limit`` characters, saying how much was cut."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...(+{len(text) - limit} chars)"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    suppressed: int = 0


class LogLimiter:
    """Whether a line about bad input from a source may be written now."""

    def __init__(
        self,
        *,
        burst: float = 5.0,
        rate: float = 0.5,
        total_burst: float = 50.0,
        total_rate: float = 20.0,
        max_sources: int = 10_000,
    ) -> None:
        self.burst, self.rate = burst, rate
        self.total_burst, self.total_rate = total_burst, total_rate
        self.max_sources = max_sources
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._total = _Bucket(total_burst, 0.0)
        self.suppressed_total = 0  # every line refused, for a metric

    def allow(self, source: str, now: float) -> int | None:
        """None: do not log. Otherwise the number of lines suppressed for ``source`` since its
        last line (log it with the line)."""
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._sources[source] = bucket
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)  # least recently seen; loses only a count
        else:
            self._sources.move_to_end(source)
        _refill(bucket, now, self.burst, self.rate)
        _refill(self._total, now, self.total_burst, self.total_rate)
        if bucket.tokens < 1.0 or self._total.tokens < 1.0:
            bucket.suppressed += 1
            self.suppressed_total += 1
            return None
        bucket.tokens -= 1.0
        self._total.tokens -= 1.0
        suppressed, bucket.suppressed = bucket.suppressed, 0
        return suppressed

    def __len__(self) -> int:
        return len(self._sources)


def _refill(bucket: _Bucket, now: float, burst: float, rate: float) -> None:
    if now > bucket.at:
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
    bucket.at = now
