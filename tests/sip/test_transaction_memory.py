"""Issue 17 item 2: a server transaction keeps what answering retransmissions needs (its key,
the CSeq, the last response as bytes), not the parsed request.

Measured with ``tracemalloc`` over 50 transactions of the largest OPTIONS the message caps let
through (64 Via, 64 Contact, 64 Route, 64 Record-Route values, 100 header lines, a 16,000-byte
body: 62.4 KB; the issue's 4,000-Contact OPTIONS is now refused by the caps). On main's code a
transaction kept about 127 KB (the parsed request); now about 7 KB.
"""

from __future__ import annotations

import gc
import tracemalloc

from pbx.sip.build import build_response
from pbx.sip.limits import MessageCaps, check_caps
from pbx.sip.message import SipRequest, SipResponse
from pbx.sip.parse import parse_message
from pbx.sip.transaction import RequestReceived, TransactionTable

SOURCE = ("192.0.2.9", 5060)


def _lines(name: str, values: list[str], per_line: int) -> list[str]:
    return [
        f"{name}: " + ", ".join(values[i : i + per_line]) for i in range(0, len(values), per_line)
    ]


def largest_options(n: int) -> bytes:
    """The biggest OPTIONS ``check_caps`` accepts: every counted header at 64 values, header
    lines padded to the 100-line cap, the body at 16,000 bytes, under 65,536 bytes in all."""
    vias = [f"SIP/2.0/UDP 10.0.{i}.1:5060;branch=z9hG4bK-{n}-{i:02d}-{'x' * 20}" for i in range(64)]
    contacts = [f"<sip:u{i:02d}-{'c' * 40}@10.0.{i}.1:5060;transport=udp>" for i in range(64)]
    routes = [f"<sip:proxy{i:02d}-{'r' * 40}.example.com;lr>" for i in range(64)]
    head = [
        "OPTIONS sip:1001@acme.example SIP/2.0",
        *_lines("Via", vias, 16),
        "Max-Forwards: 70",
        f"From: <sip:1001@acme.example>;tag=t{n}",
        "To: <sip:1001@acme.example>",
        f"Call-ID: big-{n}@192.0.2.9",
        "CSeq: 1 OPTIONS",
        *_lines("Contact", contacts, 16),
        *_lines("Route", routes, 16),
        *_lines("Record-Route", routes, 16),
        "Content-Type: text/plain",
    ]
    body = b"x" * 16_000
    best = b""
    for pad in range(100):
        padding = [f"X-Pad-{i}: " + "p" * 3_900 for i in range(pad)]
        lines = [*head, *padding, f"Content-Length: {len(body)}"]
        msg = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        if len(msg) > MessageCaps().max_message_bytes or len(lines) - 1 > 100:
            break
        best = msg
    return best


def retained_per_transaction(count: int = 50) -> tuple[int, float]:
    table = TransactionTable()
    messages = [largest_options(i) for i in range(count)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for raw in messages:
            request = parse_message(raw, source=SOURCE)
            assert isinstance(request, SipRequest)
            [event] = table.receive(request, SOURCE, 0.0)
            assert isinstance(event, RequestReceived)
            table.respond(event.key, build_response(request, 200, to_tag="t"), 0.0)
            table.messages_to_send()
            del request, event
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(table) == count  # all alive: timer J holds them 32 s
    return len(messages[0]), (after - before) / count


def test_the_largest_message_the_caps_allow_passes_them() -> None:
    raw = largest_options(0)
    assert check_caps(raw, MessageCaps()) is None
    assert len(raw) > 60_000


def test_a_server_transaction_keeps_a_few_kb_not_the_parsed_request() -> None:
    size, retained = retained_per_transaction()
    print(f"{size}-byte OPTIONS: {retained / 1000:.1f} KB retained per server transaction")
    assert retained < 16_000  # main: ~127 KB


def test_a_retransmitted_request_still_gets_the_last_response() -> None:
    table = TransactionTable()
    request = parse_message(largest_options(1), source=SOURCE)
    assert isinstance(request, SipRequest)
    [event] = table.receive(request, SOURCE, 0.0)
    assert isinstance(event, RequestReceived)
    answer = build_response(request, 200, to_tag="t")
    table.respond(event.key, answer, 0.0)
    first = table.messages_to_send()
    assert table.receive(parse_message(largest_options(1), source=SOURCE), SOURCE, 1.0) == []
    [(again, address)] = table.messages_to_send()
    assert address == SOURCE
    assert isinstance(again, SipResponse)
    assert again.to_bytes() == first[0][0].to_bytes()
