"""The memory attack of issue 17 at its real figures: one source, 40 messages/s, 30 s.

    python -m loadtests.bench_attacks [--seconds 30] [--rate 40] [--sources 1]

The suite (tests/integration/test_attacks.py) runs the attack for 3 s; this runs it as the issue
measured it (one source took RSS from 40 MB to 1.7 GB in 30 s) against ``pbx run`` on loopback,
with two messages, each for the whole duration on a fresh server:

- ``contacts_4000``: the issue's 55 KB OPTIONS with 4,000 Contact values (refused by the caps
  now, 400, before parsing);
- ``largest_allowed``: the biggest OPTIONS the caps let through (62 KB: 64 Via, Contact, Route
  and Record-Route values, 100 header lines, a 16,000-byte body), which is parsed and gets a
  server transaction that lives 32 s (tests/sip/test_transaction_memory.py measures what each
  keeps); the cost-charged rate limit passes about one a second of them.

It prints the server's RSS before, at its peak and at the end (read from /proc every 0.5 s), the
growth, and the answers the source got. Sources are 127.0.0.3 onwards; the server is the
subprocess of tests/integration/harness.py, ended by its pid.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.integration.harness import RunningServer, running_server, write_config
from tests.integration.test_attacks import message, rss_mb
from tests.sip.test_transaction_memory import largest_options

CONTACTS = ", ".join(f"<sip:{i}@h>" for i in range(4000))


def contacts_4000(source: str, n: int) -> bytes:
    return message(
        "OPTIONS", source, branch=f"z9hG4bK-big{source}-{n}", extra=f"Contact: {CONTACTS}\r\n"
    )


def largest_allowed(source: str, n: int) -> bytes:
    return largest_options(n)


ATTACKS: dict[str, Callable[[str, int], bytes]] = {
    "contacts_4000": contacts_4000,
    "largest_allowed": largest_allowed,
}


def _flood_counting(
    server: RunningServer,
    sources: list[str],
    rate: float,
    seconds: float,
    make: Callable[[str, int], bytes],
) -> tuple[int, Counter[str]]:
    """Like tests/integration/test_attacks.py's ``flood``, but each source also reads its
    answers; returns the bytes sent and the answers by status."""
    counts: Counter[str] = Counter()
    sent = [0] * len(sources)

    def run(index: int, source: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.setblocking(False)
            start = time.monotonic()
            n = 0
            while (elapsed := time.monotonic() - start) < seconds + 1.0:
                try:
                    while True:
                        data = sock.recv(65536)
                        counts[data.split(b" ", 2)[1].decode(errors="replace")] += 1
                except BlockingIOError:
                    pass
                if elapsed < seconds and n < elapsed * rate:
                    data = make(source, n)
                    sock.sendto(data, server.udp)
                    sent[index] += len(data)
                    n += 1
                else:
                    time.sleep(0.002)

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(sources)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(sent), counts


def run_attack(name: str, seconds: float, rate: float, sources: list[str]) -> dict[str, float]:
    make = ATTACKS[name]
    with tempfile.TemporaryDirectory(prefix="bench-attacks-") as tmp:
        config = write_config(Path(tmp))
        with running_server(config) as server:
            pid = server.process.pid
            time.sleep(1.0)  # settle after start
            base = rss_mb(pid)
            peak = base
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.wait(0.5):
                    peak = max(peak, rss_mb(pid))

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.monotonic()
            sent, answers = _flood_counting(server, sources, rate, seconds, make)
            elapsed = time.monotonic() - started
            done.set()
            sampler.join()
            end = rss_mb(pid)
            peak = max(peak, end)
    size = len(make(sources[0], 0))
    print(
        f"{name}: {len(sources)} source(s) x {rate:g}/s x {seconds:g} s of {size:,}-byte "
        f"messages ({sent / 1e6:.1f} MB in {elapsed:.1f} s): RSS {base:.1f} MB before, "
        f"{peak:.1f} MB peak, {end:.1f} MB after; growth {peak - base:+.1f} MB; "
        f"answers {dict(answers)}"
    )
    return {"base": base, "peak": peak, "end": end, "growth": peak - base}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=40.0, help="messages/s per source")
    parser.add_argument("--sources", type=int, default=1, help="from 127.0.0.3 on (max 7)")
    parser.add_argument("--attack", choices=[*ATTACKS, "all"], default="all")
    args = parser.parse_args(argv)
    sources = [f"127.0.0.{3 + i}" for i in range(min(args.sources, 7))]
    names = list(ATTACKS) if args.attack == "all" else [args.attack]
    worst = 0.0
    for name in names:
        worst = max(worst, run_attack(name, args.seconds, args.rate, sources)["growth"])
    print(f"largest RSS growth: {worst:.1f} MB (issue 17: under 50 MB)")
    return 0 if worst < 50 else 1


if __name__ == "__main__":
    raise SystemExit(main())
