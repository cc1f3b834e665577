"""Reading the Prometheus text format back in tests."""

from __future__ import annotations


def metric_values(text: str) -> dict[str, float]:
    """Sample name (labels included, as in ``pbx_calls_total{disposition="answered"}``) ->
    value, from ``GET /metrics``'s text."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values
