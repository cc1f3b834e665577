"""The keep-alive core (pbx.keepalive) with time passed in: schedule, spread, verdicts."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable

from pbx.keepalive import (
    FIRST_PROBE_SECONDS,
    ContactAnsweredAgain,
    ContactStoppedAnswering,
    KeepAlive,
    Probe,
    probe_phase,
    probe_timeout,
)

INTERVAL = 30.0
PHONE = ("acme", "1001", "sip:1001@10.0.0.1:5060")


def run_until(ka: KeepAlive, until: float, answer: bool = False) -> list[tuple[float, Probe]]:
    """Fire every timer up to ``until``; answer each probe at once when ``answer``."""
    sent: list[tuple[float, Probe]] = []
    while (due := ka.get_timer()) is not None and due <= until:
        ka.handle_timer(due)
        for probe in ka.probes_to_send():
            sent.append((due, probe))
            if answer:
                assert ka.answered(probe.token, due + 0.01)
    return sent


def events(ka: KeepAlive) -> list[object]:
    out: list[object] = []
    while (event := ka.next_event()) is not None:
        out.append(event)
    return out


def test_a_fresh_contact_is_probed_soon_then_every_interval_at_its_phase() -> None:
    ka = KeepAlive()
    ka.track(PHONE, INTERVAL, 100.0)
    sent = run_until(ka, 200.0, answer=True)
    times = [t for t, _ in sent]
    assert times[0] == 100.0 + FIRST_PROBE_SECONDS
    phase = probe_phase(PHONE, INTERVAL)
    assert all(abs((t - phase) % INTERVAL) < 1e-6 for t in times[1:])
    assert [round(b - a, 6) for a, b in itertools.pairwise(times[1:])] == [INTERVAL] * (
        len(times) - 2
    )
    assert all(p.attempt == 1 for _, p in sent)
    assert events(ka) == []


def test_an_answering_contact_that_goes_silent_is_down_within_interval_plus_one_retry() -> None:
    ka = KeepAlive()
    ka.track(PHONE, INTERVAL, 0.0)
    run_until(ka, 50.0, answer=True)
    assert ka.answered_once(PHONE)
    silent_from = 50.0  # the phone is killed here: no more answers
    sent = run_until(ka, silent_from + INTERVAL + 2 * probe_timeout(INTERVAL))
    assert [p.attempt for _, p in sent] == [1, 2]  # the probe and its one retry
    assert sent[0][1].token == sent[1][1].token  # the retry is a retransmission
    assert events(ka) == [ContactStoppedAnswering(PHONE)]
    # Probes go on; the first answer brings it back.
    due = ka.get_timer()
    assert due is not None
    assert due <= silent_from + 2 * INTERVAL
    ka.handle_timer(due)
    (probe,) = ka.probes_to_send()
    assert ka.answered(probe.token, due + 0.1)
    assert events(ka) == [ContactAnsweredAgain(PHONE)]


def test_a_contact_that_never_answered_is_never_judged_by_keep_alives() -> None:
    # pyVoIP 1.6 ignores OPTIONS: it must still get its calls.
    ka = KeepAlive()
    ka.track(PHONE, INTERVAL, 0.0)
    sent = run_until(ka, 10 * INTERVAL)
    assert len(sent) >= 18  # probed (and retried) all along
    assert events(ka) == []
    assert not ka.answered_once(PHONE)


def test_any_answer_counts_and_an_unknown_token_is_not_an_answer() -> None:
    ka = KeepAlive()
    ka.track(PHONE, INTERVAL, 0.0)
    ka.handle_timer(FIRST_PROBE_SECONDS)
    (probe,) = ka.probes_to_send()
    assert not ka.answered("qualify-other", 1.5)
    assert ka.answered(probe.token, 1.5)  # the adapter calls this for a 404/405/501 too
    assert not ka.answered(probe.token, 1.6)  # a late copy of the answer: no probe out
    assert ka.answered_once(PHONE)


def test_traffic_on_the_tcp_connection_answers_the_probe_out() -> None:
    ka = KeepAlive()
    ka.track(PHONE, INTERVAL, 0.0, connection_id="7")
    ka.heard_on_connection("7", 0.5)  # no probe out yet: nothing to answer
    assert not ka.answered_once(PHONE)
    ka.handle_timer(FIRST_PROBE_SECONDS)
    assert ka.probes_to_send()
    ka.heard_on_connection("7", 1.2)  # e.g. a CRLF pong
    assert ka.answered_once(PHONE)
    assert ka.forget_connection("7") == [PHONE]
    assert not ka.is_tracked(PHONE)
    assert ka.forget_connection("7") == []


def test_a_refresh_clears_down_and_keeps_the_phase() -> None:
    ka = KeepAlive()
    ka.track(PHONE, INTERVAL, 0.0)
    run_until(ka, 5.0, answer=True)
    run_until(ka, 80.0)
    assert events(ka) == [ContactStoppedAnswering(PHONE)]
    ka.track(PHONE, INTERVAL, 80.0)  # REGISTER refresh: the phone is back
    run_until(ka, 200.0)  # silent again: reported again
    assert events(ka) == [ContactStoppedAnswering(PHONE)]


def test_interval_zero_or_forget_stops_the_checks_and_a_new_interval_moves_the_phase() -> None:
    ka = KeepAlive()
    ka.track(PHONE, INTERVAL, 0.0)
    ka.track(PHONE, 0, 0.0)
    assert len(ka) == 0
    assert run_until(ka, 100.0) == []
    ka.track(PHONE, INTERVAL, 0.0, fresh=False)
    ka.track(PHONE, 60.0, 0.0, fresh=False)
    (first, _), *_ = run_until(ka, 100.0, answer=True)
    assert abs(first - probe_phase(PHONE, 60.0)) < 1e-6
    ka.forget(PHONE)
    ka.forget(PHONE)
    assert ka.get_timer() is not None  # stale entries are skipped, not searched for
    assert run_until(ka, 500.0) == []


def test_ten_thousand_loaded_contacts_are_spread_evenly_over_the_interval() -> None:
    ka = KeepAlive()
    keys: list[Hashable] = [
        ("acme", f"{n:04d}", f"sip:{n}@10.0.{n // 250}.1") for n in range(10_000)
    ]
    for key in keys:
        ka.track(key, INTERVAL, 1000.0, fresh=False)  # loaded at start-up: no burst
    sent = run_until(ka, 1000.0 + INTERVAL, answer=True)
    assert len(sent) == 10_000
    per_second = Counter(int(t - 1000.0) for t, _ in sent)
    # 333 a second on average; no second more than 25 % above it.
    assert max(per_second.values()) < 10_000 / INTERVAL * 1.25
    assert len(per_second) == INTERVAL


def test_probe_timeout_is_a_quarter_of_the_interval_at_most_four_seconds() -> None:
    assert probe_timeout(2.0) == 0.5
    assert probe_timeout(30.0) == 4.0
    assert probe_timeout(3600.0) == 4.0
