"""Counters and gauges rendered in the Prometheus text exposition format (version 0.0.4).

A tiny registry instead of a client library: the server is single-threaded (one event loop), so
plain dict increments are safe and cost almost nothing on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

LabelValues = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(labels: LabelValues) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in labels)
    return "{" + inner + "}"


def _key(labels: dict[str, str]) -> LabelValues:
    """Label values in name order; one label (every SIP message counts one) needs no sorting."""
    return tuple(labels.items()) if len(labels) < 2 else tuple(sorted(labels.items()))


class Metric:
    """One metric family; ``read`` (when given) supplies its unlabelled value at scrape time."""

    def __init__(
        self, name: str, help_text: str, kind: str, read: Callable[[], float] | None = None
    ) -> None:
        self.name = name
        self.help = help_text
        self.kind = kind
        self.read = read
        self.values: dict[LabelValues, float] = {}

    def render(self) -> Iterable[str]:
        if self.read is not None:
            self.values[()] = float(self.read())
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        if not self.values:
            # Exposed from the start (as 0), so rate() and alerts see the series at once.
            yield f"{self.name} 0"
        for labels, value in sorted(self.values.items()):
            number = int(value) if float(value).is_integer() else value
            yield f"{self.name}{_format_labels(labels)} {number}"


class Counter(Metric):
    def __init__(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text, "counter", read)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = _key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def set_total(self, value: float, **labels: str) -> None:
        """Set the total of a counter kept elsewhere (by a collector, see Registry.on_render)."""
        self.values[_key(labels)] = value


class Gauge(Metric):
    """A gauge set directly, or read from a callback at scrape time."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> None:
        super().__init__(name, help_text, "gauge", read)

    def set(self, value: float, **labels: str) -> None:
        self.values[_key(labels)] = value


class Registry:
    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}
        self._collectors: list[Callable[[], None]] = []

    def on_render(self, collect: Callable[[], None]) -> None:
        """Call ``collect`` before each render: it sets several metrics from one reading."""
        self._collectors.append(collect)

    def counter(
        self, name: str, help_text: str, read: Callable[[], float] | None = None
    ) -> Counter:
        metric = Counter(name, help_text, read)
        self.metrics[name] = metric
        return metric

    def gauge(self, name: str, help_text: str, read: Callable[[], float] | None = None) -> Gauge:
        metric = Gauge(name, help_text, read)
        self.metrics[name] = metric
        return metric

    def render(self) -> str:
        for collect in self._collectors:
            collect()
        lines: list[str] = []
        for metric in self.metrics.values():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
