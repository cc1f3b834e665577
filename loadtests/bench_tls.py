"""SIP over TLS and SRTP beside UDP and RTP, in one run (issue #18).

    python -m loadtests.bench_tls [--registers 300] [--packets 200000]

1. Authenticated REGISTERs per second through ``pbx run`` on loopback (one client, one
   REGISTER after another: challenge, then the answer with credentials): over UDP, over TLS on
   one reused connection, and over TLS with a new connection (and handshake) for each REGISTER.
   The client is a single Python thread, so these are latency-bound rates, the same client
   for each transport: the ratio is the point.
2. The relay's own CPU per packet, plain RTP to plain RTP against SRTP to SRTP (decrypt with the
   sender's key, encrypt with the receiver's) and SRTP to RTP (the carrier bridge): the relay's
   receive handler is called directly with a sending transport that only counts, so the
   kernel's share is left out. "calls/core" is one core's packets per second over 100 (50
   packets/s each way per call): an upper bound beside ``bench_relay``'s measured figure.

Measured on the shared 2-CPU development VM (2026-12-07, others' tests running): REGISTERs/s
UDP 841, TLS reused 696, TLS new connection each 20; relay CPU per packet RTP->RTP 0.20 µs,
SRTP<->SRTP 4.76 µs (~2,100 calls/core by CPU), SRTP->RTP 3.37 µs (~2,970 calls/core).

The 50 ms per new TLS connection was the client's, not the server's. Timed per phase (200
connections, medians): making the client's context 31.7 ms, TCP connect 0.6 ms, TLS handshake
2.1 ms, REGISTER challenge + answer 4.4 ms. ``ssl.create_default_context()`` loads the system's
CA store on every call, and the test client made one per connection (without verifying with
it). The client now builds a bare ``SSLContext`` (0.25 ms). TCP_NODELAY was not the cause: both
asyncio and uvloop set it on accepted sockets, and the TLS listener sets it itself now that it
accepts its own sockets. After the fix, same run: UDP 1,089/s, TLS reused 534/s, TLS new
connection each 159/s (before, same day: 826, 746 and 26/s; the VM is shared, so the ratios
move from run to run).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from pylibsrtp import Policy, Session

from pbx.media.relay import MediaSession, PortPool, Side
from pbx.media.rtp import RtpPacket
from pbx.media.sdes import Crypto
from tests.integration.harness import running_server, write_config
from tests.integration.sip_client import SipUdpClient
from tests.integration.test_tls import SipTlsClient
from tests.tlscerts import make_certificate


def register_rates(count: int) -> dict[str, float]:
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_certificate(root, "sip")
        config = write_config(
            root,
            listen='["udp:127.0.0.1:0", "tcp:127.0.0.1:0", "tls:127.0.0.1:0"]',
            sip_extra='tls_certificate = "sip.crt"\ntls_key = "sip.key"',
            server_extra=(
                '[auth]\nalgorithms = ["MD5"]\n[security]\nmax_requests_per_second = 100000\n'
            ),
        )
        with running_server(config) as server:
            with SipUdpClient(server.udp, "1001", "secret1001", "acme.example") as udp:
                started = time.perf_counter()
                for _ in range(count):
                    assert udp.register().status == 200
                rates["UDP"] = count / (time.perf_counter() - started)
            tls = SipTlsClient(server.tls, "1002", "secret1002", "acme.example")
            try:
                started = time.perf_counter()
                for _ in range(count):
                    assert tls.register().status == 200
                rates["TLS, reused connection"] = count / (time.perf_counter() - started)
            finally:
                tls.close()
            started = time.perf_counter()
            for _ in range(count):
                fresh = SipTlsClient(server.tls, "1003", "secret1003", "acme.example")
                try:
                    assert fresh.register().status == 200
                finally:
                    fresh.close()
            rates["TLS, new connection each"] = count / (time.perf_counter() - started)
    return rates


class _CountingTransport:
    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent += 1


async def relay_cost(packets: int) -> dict[str, float]:
    """Relay CPU seconds per packet for plain, SRTP<->SRTP and SRTP->RTP."""
    phone_key = bytes(range(30))
    other_key = bytes(range(30, 60))
    results: dict[str, float] = {}
    for mode in ("RTP -> RTP", "SRTP -> SRTP", "SRTP -> RTP"):
        session = await MediaSession.open(PortPool(33000, 33999), "127.0.0.1")
        try:
            session.set_remote(Side.A, "127.0.0.1", 9)
            session.set_remote(Side.B, "127.0.0.1", 11)
            tx = _CountingTransport()
            session.b.rtp.transport = tx
            protocol = session._protocols[(Side.A, False)]
            if mode != "RTP -> RTP":
                session.set_crypto(Side.A, Crypto(1, "AES_CM_128_HMAC_SHA1_80", phone_key))
            if mode == "SRTP -> SRTP":
                session.set_crypto(Side.B, Crypto(1, "AES_CM_128_HMAC_SHA1_80", other_key))
            sender = Session(Policy(key=phone_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
            stream = [
                bytes(RtpPacket(0, seq & 0xFFFF, seq * 160, 0x1234, b"\xff" * 160))
                for seq in range(packets)
            ]
            if mode != "RTP -> RTP":
                stream = [sender.protect(p) for p in stream]
            source = ("127.0.0.1", 9)
            started = time.process_time()
            for data in stream:
                protocol.datagram_received(data, source)
            spent = time.process_time() - started
            assert tx.sent == packets, (mode, tx.sent)
            results[mode] = spent / packets
        finally:
            session.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registers", type=int, default=300)
    parser.add_argument("--packets", type=int, default=200_000)
    args = parser.parse_args(argv)
    rates = register_rates(args.registers)
    print(f"Authenticated REGISTERs per second ({args.registers} each, one client):")
    for name, rate in rates.items():
        print(f"  {name:28s} {rate:8.0f}/s")
    costs = asyncio.run(relay_cost(args.packets))
    print(f"Relay CPU per packet ({args.packets} packets, handler only, no kernel):")
    for name, cost in costs.items():
        per_core = 1.0 / cost
        print(
            f"  {name:14s} {cost * 1e6:6.2f} µs  {per_core:10.0f} packets/s/core"
            f"  {per_core / 100:8.0f} calls/core"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
