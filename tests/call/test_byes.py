"""The shutdown's BYE counter: done at the final answer, not at the transaction's end."""

from __future__ import annotations

from pbx.call.byes import ByeCounter
from pbx.sip.message import SipResponse
from pbx.sip.parse import parse_message
from pbx.sip.transaction import (
    ClientKey,
    ResponseReceived,
    TransactionTerminated,
)

KEY = ClientKey("z9hG4bK-bye", "BYE")


def response(status: int) -> ResponseReceived:
    message = parse_message(
        (
            f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-bye\r\n"
            "From: <sip:a@h>;tag=a\r\nTo: <sip:b@h>;tag=b\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, SipResponse)
    return ResponseReceived(KEY, message)


def test_the_last_final_answer_ends_the_wait_once() -> None:
    counter = ByeCounter()
    calls: list[int] = []
    first = counter.track(lambda: calls.append(counter.pending))
    second = counter.track(lambda: calls.append(counter.pending))
    assert counter.pending == 2
    first(response(100))  # a provisional answer is not the end
    first(response(200))
    assert (counter.pending, calls) == (1, [])
    first(response(200))  # a retransmitted answer counts once
    first(TransactionTerminated(KEY))  # and so does the transaction's end after it
    assert counter.pending == 1
    second(TransactionTerminated(KEY))  # never answered: its transaction's end
    assert (counter.pending, calls) == (0, [0])
