"""Issue 16 end to end: a carrier's late offer (INVITE without SDP) to 0312340009, answered by
the 009608 announcement. The server offers in its 200 (SIPp checks its relay port, PCMU, PCMA and
telephone-event), the carrier answers PCMA in the ACK on a port this test listens on, and must
hear the whole prompt as 20 ms PCMA packets before the server's BYE."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import SIPP_DIR, free_port, running_server, write_config
from tests.integration.test_calls import (
    CARRIER_IP,
    SERVER_EXTRA,
    TENANT,
    Pbx,
    Sipps,
    closed_record,
    no_active_calls,
    sipp_args,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

NUMBER = "0312340009"  # every day: the 009608 announcement


@pytest.fixture
def sipps(tmp_path: Path) -> Iterator[Sipps]:
    group = Sipps(tmp_path)
    try:
        yield group
    finally:
        group.close()


def test_a_late_offer_to_the_announcement_gets_our_offer_and_hears_the_prompt(
    tmp_path: Path, sipps: Sipps
) -> None:
    root = tmp_path / "pbx"
    config = write_config(root, tenants={"acme": TENANT}, server_extra=SERVER_EXTRA)
    with running_server(config) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        pbx = Pbx(server, root, 0, {})
        rtp.bind((CARRIER_IP, 0))
        rtp.settimeout(0.5)
        args = sipp_args(
            SIPP_DIR / "carrier_announcement_late_offer.xml",
            server.udp,
            local_ip=CARRIER_IP,
            port=free_port(host=CARRIER_IP),
            service=NUMBER,
            extra=["-set", "rtp_port", str(rtp.getsockname()[1])],
        )
        sipps.start("carrier hears 009608 (late offer)", args)
        packets: list[bytes] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                packets.append(rtp.recv(2048))
            except TimeoutError:
                if packets:
                    break
        sipps.wait_all()
        record = closed_record(pbx, NUMBER)
        no_active_calls(pbx)
    print(f"late offer to 009608: {len(packets)} packets")
    assert len(packets) >= 500  # the 12 s prompt in 20 ms packets
    assert all(len(p) == 12 + 160 and p[1] & 0x7F == 8 for p in packets)  # PCMA, as answered
    assert (record["disposition"], record["answered_by"]) == ("answered", "009608")
    assert any("009608 played" in line for line in record["trace"])
