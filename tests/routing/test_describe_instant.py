"""The instant written into routing traces (cached per wall-clock second and zone)."""

from __future__ import annotations

from datetime import UTC, datetime

from pbx.routing.calendar import describe_instant, local_time


def test_the_same_instant_in_two_zones_is_described_in_each() -> None:
    now = datetime(2026, 11, 23, 0, 30, 5, tzinfo=UTC)  # Mon 23 Nov 2026, 09:30:05 in Tokyo
    tokyo = describe_instant(local_time(now, "Asia/Tokyo"))
    new_york = describe_instant(local_time(now, "America/New_York"))
    # 23 November is Labour Thanksgiving Day in Japan; in New York it is still the 22nd.
    assert tokyo == "Mon 09:30:05 Asia/Tokyo (holiday: Labor Thanksgiving Day)"
    assert new_york == "Sun 19:30:05 America/New_York"
    assert describe_instant(local_time(now, "Asia/Tokyo")) == tokyo
